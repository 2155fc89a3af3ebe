"""Transfer progress: tqdm bars on a terminal, one line per blob in logs, nothing with ``-q``.

Transfers call ``start``/``advance``/``done`` from worker threads; every
implementation is thread-safe. Lines look like docker's (``ab12cd34ef56: Pull
complete``) so that CI logs read the same.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Protocol, TextIO

if TYPE_CHECKING:
    from tqdm import tqdm


class Progress(Protocol):
    def start(self, key: str, label: str, total: int) -> None:
        """A transfer of ``total`` bytes begins (again, after a restart from zero)."""

    def advance(self, key: str, n: int) -> None:
        """``n`` more bytes moved."""

    def done(self, key: str, status: str) -> None:
        """The transfer ended: "Pull complete", "Already exists", "Pushed", "Mounted from x"."""

    def message(self, text: str) -> None:
        """A line that is not about one blob (the digest at the end of a pull)."""

    def close(self) -> None:
        """No more transfers; remove bars."""


class NullProgress:
    """``-q``: nothing at all."""

    def start(self, key: str, label: str, total: int) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def done(self, key: str, status: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class LineProgress:
    """Not a terminal (CI logs): one line per blob when it finishes, none while it moves."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._lock = threading.Lock()

    def start(self, key: str, label: str, total: int) -> None:
        pass

    def advance(self, key: str, n: int) -> None:
        pass

    def done(self, key: str, status: str) -> None:
        self.message(f"{key}: {status}")

    def message(self, text: str) -> None:
        with self._lock:
            print(text, file=self._stream, flush=True)

    def close(self) -> None:
        pass


class TqdmProgress:
    """A terminal: one tqdm bar per blob in flight, a status line when each one ends."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._bars: dict[str, tqdm] = {}

    def start(self, key: str, label: str, total: int) -> None:
        from tqdm import tqdm

        with self._lock:
            old = self._bars.pop(key, None)
            if old is not None:
                old.close()
            self._bars[key] = tqdm(
                total=total, desc=f"{key}: {label}", unit="B", unit_scale=True, unit_divisor=1024,
                file=self._stream, leave=False, dynamic_ncols=True, mininterval=0.2,
            )

    def advance(self, key: str, n: int) -> None:
        bar = self._bars.get(key)
        if bar is not None:
            with self._lock:
                bar.update(n)

    def done(self, key: str, status: str) -> None:
        with self._lock:
            bar = self._bars.pop(key, None)
            if bar is not None:
                bar.close()
        self.message(f"{key}: {status}")

    def message(self, text: str) -> None:
        from tqdm import tqdm

        with self._lock:
            tqdm.write(text, file=self._stream)

    def close(self) -> None:
        with self._lock:
            for bar in self._bars.values():
                bar.close()
            self._bars.clear()


def choose_progress(quiet: bool, stream: TextIO | None = None) -> Progress:
    """The right reporter for where output goes."""
    if quiet:
        return NullProgress()
    out = stream or sys.stdout
    if out.isatty():
        return TqdmProgress(out)
    return LineProgress(out)
