"""The live view of ``--progress tty``, drawn as BuildKit's console display draws it.

A header (``[+] Building 12.3s (8/10)``), then one line per step in the order the steps
started, each with its timer: the running ones side by side (parallel stages each on their
own line), the finished ones collapsed to one line (blue; red for an error, yellow when
canceled). Below a step, its transfers (``=> => ab12cd34ef56 1.20MB / 3.40MB``) and, while it
runs, its last output lines (``=> => # ...``, faint). When the steps do not fit the terminal,
the last ones and every running one are shown. The caller redraws at most every
:data:`REDRAW` seconds, so a step printing thousands of lines costs one frame per tick.

The view only computes frames (lists of lines that fit the width: no line wraps, or the
cursor moves of the next frame would miss); :class:`Screen` puts them on the terminal.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

REDRAW = 0.1
"""Seconds between two frames at most (BuildKit's display limiter: 100 ms)."""

TERM_LINES = 6
"""Output lines shown under a running step (BuildKit's terminal height for a vertex)."""

_CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-_]|[\x00-\x1f\x7f]")

_COLORS = {"done": "\x1b[34m", "error": "\x1b[31m", "canceled": "\x1b[33m"}
_FAINT = "\x1b[2m"
_RESET = "\x1b[0m"


@dataclass(frozen=True)
class Job:
    """One line of the view: a step, or one transfer of a step (``sub``)."""

    name: str
    seconds: float
    completed: bool
    state: str = "done"
    """done, error or canceled: the colour of the finished line."""
    status: str = ""
    """A transfer's bytes (``1.20MB / 3.40MB``), shown when the line has room."""
    term: tuple[str, ...] = ()
    """The last output lines of a running step."""
    activity: int = 0
    """Bytes the step printed: with too little room, the busiest steps show their output."""


def cells(text: str) -> int:
    """Columns ``text`` takes on a terminal (East Asian wide characters take two)."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
               for c in text)


def cut(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns."""
    if len(text) <= width and text.isascii():
        return text
    used, out = 0, []
    for c in text:
        w = 2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
        if used + w > width:
            break
        used += w
        out.append(c)
    return "".join(out)


def clean(line: str) -> str:
    """A step's output line with no colour, cursor move or tab to break the view."""
    return _CONTROL.sub("", line.replace("\t", "    "))


def _wrap_height(jobs: list[Job], limit: int) -> list[Job]:
    """The last ``limit`` jobs, with running ones from above the cut taking the places of
    finished ones (BuildKit's wrapHeight): a running step never scrolls out of sight."""
    if limit <= 0:
        return []
    if len(jobs) <= limit:
        return jobs
    shown = jobs[len(jobs) - limit:]
    hidden_running = [j for j in jobs[:len(jobs) - limit] if not j.completed]
    if not hidden_running:
        return shown
    room = len(hidden_running)
    kept = []
    for job in shown:
        if not job.completed or room <= 0:
            kept.append(job)
        room -= 1
    free = len(shown) - len(kept)
    return hidden_running[len(hidden_running) - free:] + kept if free else kept


def frame(jobs: Sequence[Job], header: str, width: int, height: int, *, final: bool = False,
          color: bool = True) -> list[str]:
    """The lines of one frame, each at most ``width - 1`` columns (the last column would wrap
    on some terminals). ``final``: every job, no output lines (the view's last frame)."""
    width = max(width, 20)
    jobs = list(jobs)
    show_term: set[int] = set()
    hidden = 0
    if not final:
        running = sum(1 for j in jobs if not j.completed)
        free = height - 2 - running
        for i in sorted((i for i, j in enumerate(jobs) if j.term and not j.completed),
                        key=lambda i: -jobs[i].activity):
            if free <= TERM_LINES + 3:
                break
            show_term.add(id(jobs[i]))
            hidden += len(jobs[i].term)
            free -= TERM_LINES + 3
        jobs = _wrap_height(jobs, height - 2 - hidden)
    lines = [cut(header, width - 1)]
    for job in jobs:
        seconds = job.seconds if job.seconds >= 0.05 else 0.0
        timer = f" {seconds:3.1f}s"
        prefix = " => "
        left = width - len(prefix) - len(timer) - 1
        status = job.status
        if status and left - cells(status) - 1 >= 12:
            left -= cells(status) + 1
        else:
            status = ""
        if left < 12:  # too narrow for this line
            continue
        body = prefix + cut(job.name, left) + (" " + status if status else "")
        line = body + " " * max(0, width - 1 - len(timer) - cells(body)) + timer
        if job.completed and color:
            line = _COLORS.get(job.state, "") + line + _RESET
        lines.append(line)
        if id(job) in show_term:
            for out in job.term:
                text = cut(" => => # " + out, width - 1)
                lines.append(_FAINT + text + _RESET if color else text)
    return lines


class Screen:
    """Draws frames over the previous one: the cursor goes back up the lines drawn last time,
    each line is rewritten and cleared to its end, and what the last frame had below is
    erased. Lines printed with :meth:`print` go above the view, which is redrawn under them."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._drawn = 0
        self._last: list[str] = []

    def size(self) -> tuple[int, int]:
        try:
            size = os.get_terminal_size(self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            return 80, 24
        return (size.columns or 80), (size.lines or 24)

    def _home(self) -> str:
        return (f"\x1b[{self._drawn}A" if self._drawn else "") + "\r"

    def draw(self, lines: list[str], above: Sequence[str] = ()) -> None:
        """Replace the view with ``lines``; ``above``: lines to print first, kept for good."""
        if lines == self._last and not above:
            return
        parts = ["\x1b[?25l", self._home()]
        if above:
            parts.append("\x1b[J")
            parts.extend(line + "\n" for line in above)
        parts.extend(line + "\x1b[K\n" for line in lines)
        parts.append("\x1b[J\x1b[?25h")
        self.stream.write("".join(parts))
        self.stream.flush()
        self._drawn, self._last = len(lines), lines
