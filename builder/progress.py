"""What a build prints while it runs: one line per step for CI logs, a live view on a terminal.

``plain`` prints BuildKit-like lines (``#4 [build 2/5] RUN make`` ... ``#4 DONE 1.3s``
or ``#4 CACHED``) that stay readable when stages interleave; ``tty`` keeps a
tqdm bar of finished steps with the running step's last output line;
``quiet`` prints nothing but errors. Reporters are shared by the parallel
stages, so every method takes the lock.
"""

from __future__ import annotations

import enum
import io
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO


class ProgressMode(enum.Enum):
    AUTO = "auto"
    PLAIN = "plain"
    TTY = "tty"
    QUIET = "quiet"


@dataclass
class StepHandle:
    """One step in progress; ``output`` keeps the tail for error messages."""

    number: int
    label: str
    started: float = field(default_factory=time.monotonic)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    _partial: str = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + data.decode("utf-8", errors="replace")
        lines = text.split("\n")
        self._partial = lines.pop()
        self.tail.extend(lines)
        return lines

    def flush(self) -> list[str]:
        if self._partial:
            self.tail.append(self._partial)
            rest, self._partial = [self._partial], ""
            return rest
        return []


class Progress:
    """Thread-safe step reporting for one build."""

    def __init__(self, mode: ProgressMode = ProgressMode.AUTO, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        if self.stream is None:  # stderr was closed (`2>&-`): nothing to show progress on
            self.stream, mode = io.StringIO(), ProgressMode.QUIET
        if mode is ProgressMode.AUTO:
            mode = ProgressMode.TTY if self.stream.isatty() else ProgressMode.PLAIN
        self.mode = mode
        self._lock = threading.Lock()
        self._counter = 0
        self._bar = None
        self._total = 0
        self.started = time.monotonic()

    def set_total(self, total: int) -> None:
        self._total = total
        if self.mode is ProgressMode.TTY:
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="step", dynamic_ncols=True,
                             bar_format="{desc} [{n_fmt}/{total_fmt}] {elapsed}")

    def _print(self, line: str) -> None:
        if self.mode is ProgressMode.QUIET:
            return
        try:
            if self._bar is not None:
                self._bar.write(line, file=self.stream)
            else:
                print(line, file=self.stream, flush=True)
        except OSError:  # stderr closed (`2>&-`) or its reader gone: the build goes on unseen
            self.mode = ProgressMode.QUIET

    def message(self, text: str) -> None:
        with self._lock:
            self._print(text)

    def warning(self, text: str) -> None:
        with self._lock:
            if self.mode is not ProgressMode.QUIET:
                self._print(f"WARN: {text}")

    def start(self, label: str) -> StepHandle:
        with self._lock:
            self._counter += 1
            handle = StepHandle(self._counter, label)
            if self.mode is ProgressMode.PLAIN:
                self._print(f"#{handle.number} {label}")
            elif self._bar is not None:
                self._bar.set_description_str(label[:70])
            return handle

    def output(self, handle: StepHandle, data: bytes) -> None:
        with self._lock:
            lines = handle.feed(data)
            if self.mode is ProgressMode.PLAIN:
                for line in lines:
                    self._print(f"#{handle.number} {time.monotonic() - handle.started:.2f} {line}")
            elif self._bar is not None and lines:
                self._bar.set_description_str(f"{handle.label[:40]} | {lines[-1][:60]}")

    def done(self, handle: StepHandle, *, cached: bool = False, note: str = "") -> None:
        with self._lock:
            rest = handle.flush()
            if self.mode is ProgressMode.PLAIN:
                for line in rest:
                    self._print(f"#{handle.number} {time.monotonic() - handle.started:.2f} {line}")
                extra = f" ({note})" if note else ""
                if cached:
                    self._print(f"#{handle.number} CACHED{extra}")
                else:
                    self._print(f"#{handle.number} DONE {time.monotonic() - handle.started:.1f}s{extra}")
            if self._bar is not None:
                self._bar.update(1)

    def failed(self, handle: StepHandle, reason: str) -> None:
        with self._lock:
            handle.flush()
            if self.mode is ProgressMode.PLAIN:
                self._print(f"#{handle.number} ERROR: {reason}")

    def canceled(self, handle: StepHandle) -> None:
        """A step stopped because the build was (Ctrl-C, another stage failed): not its failure."""
        with self._lock:
            handle.flush()
            if self.mode is ProgressMode.PLAIN:
                self._print(f"#{handle.number} CANCELED")

    def close(self) -> None:
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
