"""What a build prints while it runs: one line per step for CI logs, a live view on a terminal.

``plain`` prints BuildKit-like lines (``#4 [build 2/5] RUN make`` ... ``#4 DONE 1.3s``
or ``#4 CACHED``) that stay readable when stages interleave; ``tty`` keeps a
tqdm bar of finished steps with the running step's last output line;
``quiet`` prints nothing but errors. Reporters are shared by the parallel
stages, so every method takes the lock.

A step's output is read as a terminal shows it: UTF-8 decoded across chunk
boundaries, ``\r`` (a progress bar redrawing) ends a line as ``\n`` does, and
a line with no end is cut every :data:`LINE_MAX` characters. As BuildKit does,
plain mode prints at most ``BUILDKIT_STEP_LOG_MAX_SIZE`` bytes of one step
(2 MiB; -1 for no limit), then ``[output clipped, log limit 2MiB reached]``;
the step's last lines are still kept for its error message.
"""

from __future__ import annotations

import codecs
import enum
import io
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

LINE_MAX = 32 * 1024
"""Characters of output with no line end shown as one line: a step printing megabytes
without a newline is shown as it comes, and memory stays bounded."""

DEFAULT_STEP_LOG_MAX_SIZE = 2 * 1024 * 1024
"""BuildKit's default per-step log limit (``BUILDKIT_STEP_LOG_MAX_SIZE``)."""

TICK = 0.5
"""Seconds between two redraws of the tty view's clock."""

TRANSFER_INTERVAL = 5.0
"""Seconds between two lines about one blob still moving (BuildKit's plain mode: 5 s)."""

_LINE_ENDS = re.compile(r"(\r\n|\r|\n)")
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x1f\x7f]")


def step_log_limit(value: str | None) -> int | None:
    """The per-step log limit of ``BUILDKIT_STEP_LOG_MAX_SIZE``: bytes, None for none (-1);
    unset or not a number is the default, as BuildKit reads it."""
    try:
        limit = int((value or "").strip())
    except ValueError:
        return DEFAULT_STEP_LOG_MAX_SIZE
    return None if limit < 0 else limit


def _size_text(size: int) -> str:
    """``2MiB``, ``512KiB``, ``1000B``: the limit as BuildKit's clip message names it."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift:
            value = size / (1 << shift)
            return f"{value:g}{unit}"
    return f"{size}B"


def _bytes(size: float) -> str:
    """``3.40MB``: a transfer's size as BuildKit's plain lines give it (decimal units)."""
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.2f}{unit}" if unit != "B" else f"{int(size)}B"
        size /= 1000
    raise AssertionError("unreachable")


def _elapsed(seconds: float) -> str:
    """BuildKit's timestamp of an output line: ``0.312``, ``12.31``, ``123.4``."""
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.2f}" if seconds < 100 else f"{seconds:.1f}"


class ProgressMode(enum.Enum):
    AUTO = "auto"
    PLAIN = "plain"
    TTY = "tty"
    QUIET = "quiet"


@dataclass
class StepHandle:
    """One step in progress; ``tail`` keeps its last output lines for error messages."""

    number: int
    label: str
    started: float = field(default_factory=time.monotonic)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    counted: bool = True
    """A step of the Dockerfile (the tty view counts it), not the export's push."""
    shown: int = 0
    """Bytes of output printed so far (the log limit counts them)."""
    clipped: bool = False
    _partial: str = ""
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` completes; a character split between two chunks stays whole."""
        text = self._partial + self._decoder.decode(data)
        if text.endswith("\r"):  # maybe the first half of a \r\n: wait for the next chunk
            text, self._partial = text[:-1], "\r"
        else:
            self._partial = ""
        pieces = _LINE_ENDS.split(text)
        lines = [line for line, end in zip(pieces[0::2], pieces[1::2], strict=False) if line or end != "\r"]
        rest = pieces[-1]
        while len(rest) > LINE_MAX:
            lines.append(rest[:LINE_MAX])
            rest = rest[LINE_MAX:]
        self._partial = rest + self._partial
        self.tail.extend(lines)
        return lines

    def flush(self) -> list[str]:
        """The last line when the output ended without a line end."""
        rest = (self._partial + self._decoder.decode(b"", final=True)).rstrip("\r")
        self._partial = ""
        if rest:
            self.tail.append(rest)
            return [rest]
        return []


class Progress:
    """Thread-safe step reporting for one build."""

    def __init__(self, mode: ProgressMode = ProgressMode.AUTO, stream: TextIO | None = None,
                 log_limit: int | None = DEFAULT_STEP_LOG_MAX_SIZE) -> None:
        self.stream = stream or sys.stderr
        self.log_limit = log_limit
        if self.stream is None:  # stderr was closed (`2>&-`): nothing to show progress on
            self.stream, mode = io.StringIO(), ProgressMode.QUIET
        if mode is ProgressMode.AUTO:
            mode = ProgressMode.TTY if self.stream.isatty() else ProgressMode.PLAIN
        self.mode = mode
        self._lock = threading.Lock()
        self._counter = 0
        self._bar = None
        self._ticker: threading.Thread | None = None
        self._closed = threading.Event()
        self._total = 0
        self.started = time.monotonic()

    def set_total(self, total: int) -> None:
        """The number of steps the build will show; again when a probe finds it needs fewer."""
        with self._lock:
            self._total = total
            if self.mode is not ProgressMode.TTY:
                return
            if self._bar is not None:  # one view: a second bar would stay drawn, stale, on the screen
                self._bar.total = total
                self._bar.refresh()
                return
            from tqdm import tqdm

            self._bar = tqdm(total=total, file=self.stream, unit="step", dynamic_ncols=True,
                             bar_format="{desc} [{n_fmt}/{total_fmt}] {elapsed}")
            self._ticker = threading.Thread(target=self._tick, name="progress-clock", daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        """Redraw the tty view every :data:`TICK` s: a step printing nothing (a long compile,
        ``sleep``) does not freeze its clock, which would look like a hang."""
        while not self._closed.wait(TICK):
            with self._lock:
                if self._bar is None:
                    return
                try:
                    self._bar.refresh()
                except OSError:  # the terminal went away: the build goes on unseen
                    return

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

    def start(self, label: str, *, counted: bool = True) -> StepHandle:
        with self._lock:
            self._counter += 1
            handle = StepHandle(self._counter, label, counted=counted)
            if self.mode is ProgressMode.PLAIN:
                self._print(f"#{handle.number} {label}")
            elif self._bar is not None:
                self._bar.set_description_str(label[:70])
            return handle

    def output(self, handle: StepHandle, data: bytes) -> None:
        with self._lock:
            lines = handle.feed(data)
            if self.mode is ProgressMode.PLAIN:
                self._print_lines(handle, lines)
            elif self._bar is not None and lines:
                last = _CONTROL.sub("", lines[-1])  # no colour or cursor move from a step in the bar
                self._bar.set_description_str(f"{handle.label[:40]} | {last[:60]}")

    def status(self, handle: StepHandle, text: str) -> None:
        """A line about ``handle`` that is not its process's output (a blob pulled for a FROM)."""
        with self._lock:
            if self.mode is ProgressMode.PLAIN:
                self._print(f"#{handle.number} {text}")
            elif self._bar is not None:
                self._bar.set_description_str(f"{handle.label[:40]} | {text[:60]}")

    def end_output(self, handle: StepHandle) -> None:
        """The step's process has exited: its last line, even with no line end, is shown and
        is in ``handle.tail`` for the error message."""
        with self._lock:
            rest = handle.flush()
            if self.mode is ProgressMode.PLAIN:
                self._print_lines(handle, rest)

    def _print_lines(self, handle: StepHandle, lines: list[str]) -> None:
        """Print output lines of ``handle`` in plain mode, up to the log limit (one write)."""
        if handle.clipped or not lines:
            return
        stamp = f"#{handle.number} {_elapsed(time.monotonic() - handle.started)} "
        shown = []
        for line in lines:
            size = len(line.encode("utf-8", errors="replace")) + 1
            if self.log_limit is not None and handle.shown + size > self.log_limit:
                handle.clipped = True
                shown.append(f"{stamp}[output clipped, log limit {_size_text(self.log_limit)} reached]")
                break
            handle.shown += size
            shown.append(stamp + line)
        self._print("\n".join(shown))

    def done(self, handle: StepHandle, *, cached: bool = False, note: str = "") -> None:
        with self._lock:
            rest = handle.flush()
            if self.mode is ProgressMode.PLAIN:
                self._print_lines(handle, rest)
                extra = f" ({note})" if note else ""
                if cached:
                    self._print(f"#{handle.number} CACHED{extra}")
                else:
                    self._print(f"#{handle.number} DONE {time.monotonic() - handle.started:.1f}s{extra}")
            if self._bar is not None and handle.counted:
                self._bar.update(1)

    def failed(self, handle: StepHandle, reason: str) -> None:
        with self._lock:
            rest = handle.flush()
            if self.mode is ProgressMode.PLAIN:
                self._print_lines(handle, rest)
                self._print(f"#{handle.number} ERROR: {reason}")

    def canceled(self, handle: StepHandle) -> None:
        """A step stopped because the build was (Ctrl-C, another stage failed): not its failure."""
        with self._lock:
            rest = handle.flush()
            if self.mode is ProgressMode.PLAIN:
                self._print_lines(handle, rest)
                self._print(f"#{handle.number} CANCELED")

    def close(self) -> None:
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None


@dataclass
class _Transfer:
    """One blob transfer of a step, with what was last shown of it."""

    label: str
    total: int
    moved: int = 0
    started: float = field(default_factory=time.monotonic)
    shown: float = field(default_factory=time.monotonic)


class StepTransfers:
    """The blob transfers of one step (a FROM pulling its base), reported as the registry code
    reports them (``builder.registry.progress.Progress``) and shown as lines of that step:
    docker's words (``ab12cd34ef56: Pull complete``) with BuildKit's sizes and times, and a
    line every :data:`TRANSFER_INTERVAL` seconds while a blob moves, so that a CI log does
    not sit silent through a long pull."""

    def __init__(self, progress: Progress, handle: StepHandle) -> None:
        self._progress = progress
        self._handle = handle
        self._transfers: dict[str, _Transfer] = {}
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int) -> None:
        with self._lock:
            self._transfers[key] = _Transfer(label, total)

    def advance(self, key: str, n: int) -> None:
        with self._lock:
            transfer = self._transfers.get(key)
            if transfer is None:
                return
            transfer.moved += n
            now = time.monotonic()
            if now - transfer.shown < TRANSFER_INTERVAL:
                return
            transfer.shown = now
            text = (f"{key}: {transfer.label} {_bytes(transfer.moved)} / {_bytes(transfer.total)} "
                    f"{now - transfer.started:.1f}s")
        self._progress.status(self._handle, text)

    def done(self, key: str, status: str) -> None:
        with self._lock:
            transfer = self._transfers.pop(key, None)
        if transfer is None:
            self._progress.status(self._handle, f"{key}: {status}")
        else:
            self._progress.status(self._handle, f"{key}: {status} {_bytes(transfer.total)} "
                                                f"{time.monotonic() - transfer.started:.1f}s")

    def message(self, text: str) -> None:
        self._progress.status(self._handle, text)

    def close(self) -> None:
        pass
