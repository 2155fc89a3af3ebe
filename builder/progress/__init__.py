"""What a build prints while it runs: one line per step for CI logs, a live view on a terminal.

``plain`` prints BuildKit-like lines (``#4 [build 2/5] RUN make`` ... ``#4 DONE 1.3s``
or ``#4 CACHED``) that stay readable when stages interleave; ``tty`` draws BuildKit's
live view (:mod:`builder.progress.tty`: every running step on its own line with its
timer and last output lines, finished ones collapsed); ``rawjson`` prints BuildKit's
``SolveStatus`` events, one JSON object a line (:mod:`builder.progress.rawjson`);
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
import hashlib
import io
import os
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TextIO

from builder.progress import rawjson
from builder.progress.tty import REDRAW, TERM_LINES, Job, Screen, clean, frame

LINE_MAX = 32 * 1024
"""Characters of output with no line end shown as one line: a step printing megabytes
without a newline is shown as it comes, and memory stays bounded."""

DEFAULT_STEP_LOG_MAX_SIZE = 2 * 1024 * 1024
"""BuildKit's default per-step log limit (``BUILDKIT_STEP_LOG_MAX_SIZE``)."""

TRANSFER_INTERVAL = 5.0
"""Seconds between two lines about one blob still moving (BuildKit's plain mode: 5 s)."""

_LINE_ENDS = re.compile(r"(\r\n|\r|\n)")


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
    RAWJSON = "rawjson"
    QUIET = "quiet"


class StepState(enum.Enum):
    RUNNING = "running"
    DONE = "done"
    CACHED = "cached"
    ERROR = "error"
    CANCELED = "canceled"


@dataclass
class StepStatus:
    """A transfer of a step (a blob pulled or pushed), or a line about it (``Digest: ...``):
    BuildKit's VertexStatus."""

    id: str
    label: str = ""
    total: int = 0
    current: int = 0
    started: float = field(default_factory=time.monotonic)
    completed: float | None = None
    shown: float = field(default_factory=time.monotonic)
    """When plain mode last printed a line about it, or rawjson an event."""


@dataclass
class StepHandle:
    """One step in progress; ``tail`` keeps its last output lines for error messages."""

    number: int
    label: str
    started: float = field(default_factory=time.monotonic)
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))
    stamped: deque[str] = field(default_factory=lambda: deque(maxlen=10))
    """The last output lines with BuildKit's timestamps (``0.312 text``), for the error's end."""
    counted: bool = True
    """A step of the Dockerfile (set_total counted it), not the export's push."""
    visible: bool = True
    """Shown at all: BuildKit has no vertex for ENV, LABEL, ... (they change the config only)."""
    shown: int = 0
    """Bytes of output printed so far (the log limit counts them)."""
    clipped: bool = False
    finished: float | None = None
    state: StepState = StepState.RUNNING
    error: str = ""
    statuses: dict[str, StepStatus] = field(default_factory=dict)
    output_bytes: int = 0
    """Bytes of output so far, shown or not (the tty view shows the busiest steps' output)."""
    _partial: str = ""
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))

    @property
    def digest(self) -> str:
        """The step's vertex digest in rawjson events: unique in the build (BuildKit's is the
        digest of the LLB operation, which pybuild does not have)."""
        return "sha256:" + hashlib.sha256(f"{self.number}\0{self.label}".encode()).hexdigest()

    def feed(self, data: bytes) -> list[str]:
        """The lines ``data`` completes; a character split between two chunks stays whole."""
        self.output_bytes += len(data)
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
        self._keep(lines)
        return lines

    def _keep(self, lines: list[str]) -> None:
        self.tail.extend(lines)
        if lines:
            stamp = _elapsed(time.monotonic() - self.started)
            self.stamped.extend(f"{stamp} {line}" for line in lines)

    def flush(self) -> list[str]:
        """The last line when the output ended without a line end."""
        rest = (self._partial + self._decoder.decode(b"", final=True)).rstrip("\r")
        self._partial = ""
        if rest:
            self._keep([rest])
            return [rest]
        return []

    def partial(self) -> str:
        """The line being written (no end yet): a tty shows it as the last output line."""
        return self._partial.rstrip("\r")


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
        self._draw_lock = threading.Lock()
        """Held while a tty frame is written (after ``_lock`` is let go: steps do not wait
        for a slow terminal); taken before ``_lock`` when both are."""
        self._counter = 0
        self._blocks = False  # a step's lines were printed (plain): the next one's follow a blank line
        self._handles: list[StepHandle] = []
        self._screen: Screen | None = Screen(self.stream) if mode is ProgressMode.TTY else None
        self._ticker: threading.Thread | None = None
        self._closed = threading.Event()
        self._total = 0
        self._color = not os.environ.get("NO_COLOR")
        self.started = time.monotonic()
        self._wall = time.time() - self.started  # monotonic + this = wall clock, for rawjson

    def set_total(self, total: int) -> None:
        """The number of steps the build will show; again when a probe finds it needs fewer."""
        with self._lock:
            self._total = total
        self._start_view()

    # -- the tty view

    def _start_view(self) -> None:
        if self._screen is None or self._ticker is not None or self._closed.is_set():
            return
        self._ticker = threading.Thread(target=self._tick, name="progress-view", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        """Redraw the tty view every :data:`REDRAW` s at most: the clocks run while a step
        prints nothing (a long compile looks alive), and a step printing fast costs one frame
        a tick, not one a line."""
        while not self._closed.wait(REDRAW):
            if not self._redraw():
                return

    def _frame(self, final: bool = False) -> list[str]:
        """The tty view's lines now (call with ``_lock`` held)."""
        assert self._screen is not None
        now = time.monotonic()
        jobs: list[Job] = []
        for h in self._handles:
            name = h.label
            if h.state is StepState.ERROR:
                name = "ERROR " + name
            elif h.state is StepState.CANCELED:
                name = "CANCELED " + name
            elif h.state is StepState.CACHED:
                name = "CACHED " + name
            term: tuple[str, ...] = ()
            if h.finished is None and h.output_bytes:
                last = [*h.tail][-TERM_LINES:]
                if (partial := h.partial()):
                    last = [*last, partial][-TERM_LINES:]
                term = tuple(clean(line) for line in last)
            state = {StepState.ERROR: "error", StepState.CANCELED: "canceled"}.get(h.state, "done")
            jobs.append(Job(name, (h.finished or now) - h.started, h.finished is not None, state,
                            term=term, activity=h.output_bytes))
            for s in h.statuses.values():
                text = f"{_bytes(s.current)} / {_bytes(s.total)}" if s.total else ""
                jobs.append(Job(f"=> {s.id} {s.label}".rstrip(), (s.completed or now) - s.started,
                                s.completed is not None, status=text))
        finished = sum(1 for h in self._handles if h.finished is not None)
        total = self._total + sum(1 for h in self._handles if not h.counted)
        total = max(total, len(self._handles))
        header = f"[+] Building {now - self.started:.1f}s ({finished}/{total})"
        if final and finished == total and finished:
            header += " FINISHED"
        width, height = self._screen.size()
        return frame(jobs, header, width, height, final=final, color=self._color)

    def _redraw(self, above: list[str] | None = None, final: bool = False) -> bool:
        """Draw the view (and ``above`` over it); False when the terminal is gone."""
        if self._screen is None:
            return False
        with self._draw_lock:
            with self._lock:
                lines = self._frame(final) if self._handles or final else []
            try:
                self._screen.draw(lines, above or ())
            except OSError:  # the terminal went away: the build goes on unseen
                self._screen = None
                self.mode = ProgressMode.QUIET
                return False
        return True

    # -- events

    def _print(self, line: str) -> None:
        if self.mode in (ProgressMode.QUIET, ProgressMode.RAWJSON):
            return
        try:
            print(line, file=self.stream, flush=True)
        except OSError:  # stderr closed (`2>&-`) or its reader gone: the build goes on unseen
            self.mode = ProgressMode.QUIET

    def _emit(self, event: dict[str, object]) -> None:
        """One rawjson line (call with ``_lock`` held: lines never interleave)."""
        try:
            self.stream.write(rawjson.encode(event))
            self.stream.flush()
        except OSError:
            self.mode = ProgressMode.QUIET

    def message(self, text: str) -> None:
        """A line that is about no step (a lock waited for): above the tty view."""
        if self.mode is ProgressMode.TTY and self._screen is not None:  # once closed: a plain line
            self._redraw(above=[text])
            return
        with self._lock:
            if self.mode is ProgressMode.RAWJSON:
                self._emit(rawjson.warning(text, level=0))
            self._print(text)

    def warning(self, text: str) -> None:
        if self.mode is ProgressMode.TTY and self._screen is not None:
            self._redraw(above=[f"WARN: {text}"])
            return
        with self._lock:
            if self.mode is ProgressMode.RAWJSON:
                self._emit(rawjson.warning(text))
            self._print(f"WARN: {text}")

    def _mode(self, handle: StepHandle) -> ProgressMode:
        """How ``handle`` is shown: not at all when it is not a step BuildKit shows."""
        return self.mode if handle.visible else ProgressMode.QUIET

    def start(self, label: str, *, counted: bool = True, visible: bool = True) -> StepHandle:
        """A step begins; ``visible=False``: one BuildKit has no vertex for (ENV, LABEL, ...),
        which shows nothing but still keeps its output for an error."""
        with self._lock:
            if not visible:
                return StepHandle(0, label, counted=False, visible=False)
            self._counter += 1
            handle = StepHandle(self._counter, label, counted=counted)
            if self._mode(handle) is not ProgressMode.QUIET:
                self._handles.append(handle)
            if self._mode(handle) is ProgressMode.PLAIN:
                # a blank line between two steps' blocks, as BuildKit's plain output
                self._print(f"\n#{handle.number} {label}" if self._blocks else f"#{handle.number} {label}")
                self._blocks = True
            elif self._mode(handle) is ProgressMode.RAWJSON:
                self._emit(rawjson.vertex(handle, self._wall))
        self._start_view()
        return handle

    def output(self, handle: StepHandle, data: bytes) -> None:
        with self._lock:
            lines = handle.feed(data)
            if self._mode(handle) is ProgressMode.PLAIN:
                self._print_lines(handle, lines)
            elif self._mode(handle) is ProgressMode.RAWJSON:
                self._emit_log(handle, data)

    def _emit_log(self, handle: StepHandle, data: bytes) -> None:
        """``data`` as a rawjson log event, up to the log limit (then BuildKit's clip line)."""
        if handle.clipped or not data:
            return
        if self.log_limit is not None and handle.shown + len(data) > self.log_limit:
            data = data[:self.log_limit - handle.shown]
            handle.clipped = True
        handle.shown += len(data)
        if data:
            self._emit(rawjson.log(handle, data, self._wall))
        if handle.clipped:
            assert self.log_limit is not None
            note = f"\n[output clipped, log limit {_size_text(self.log_limit)} reached]\n".encode()
            self._emit(rawjson.log(handle, note, self._wall))

    def status(self, handle: StepHandle, text: str) -> None:
        """A line about ``handle`` that is not its process's output (a blob pulled for a FROM)."""
        with self._lock:
            if self._mode(handle) is ProgressMode.PLAIN:
                self._print(f"#{handle.number} {text}")
                return
            now = time.monotonic()
            status = StepStatus(text, started=now, completed=now)
            if self._mode(handle) is ProgressMode.RAWJSON:
                self._emit(rawjson.status(handle, status, self._wall))
            else:
                handle.statuses[text] = status

    # -- transfers (a FROM's pull, a push)

    def transfer_started(self, handle: StepHandle, key: str, label: str, total: int) -> None:
        with self._lock:
            status = handle.statuses[key] = StepStatus(key, label, total)
            if self._mode(handle) is ProgressMode.RAWJSON:
                self._emit(rawjson.status(handle, status, self._wall))

    def transfer_moved(self, handle: StepHandle, key: str, n: int) -> None:
        """``n`` more bytes: plain mode says so every :data:`TRANSFER_INTERVAL` s, rawjson
        every :data:`REDRAW` s, the tty view at its next frame."""
        with self._lock:
            status = handle.statuses.get(key)
            if status is None:
                return
            status.current += n
            now = time.monotonic()
            if self._mode(handle) is ProgressMode.PLAIN and now - status.shown >= TRANSFER_INTERVAL:
                status.shown = now
                self._print(f"#{handle.number} {key}: {status.label} {_bytes(status.current)} / "
                            f"{_bytes(status.total)} {now - status.started:.1f}s")
            elif self._mode(handle) is ProgressMode.RAWJSON and now - status.shown >= REDRAW:
                status.shown = now
                self._emit(rawjson.status(handle, status, self._wall))

    def transfer_ended(self, handle: StepHandle, key: str, text: str) -> None:
        """The transfer ended: ``text`` is how (``Pull complete``, ``Already exists``)."""
        with self._lock:
            now = time.monotonic()
            status = handle.statuses.get(key)
            if self._mode(handle) is ProgressMode.PLAIN:
                handle.statuses.pop(key, None)
                self._print(f"#{handle.number} {key}: {text}" if status is None else
                            f"#{handle.number} {key}: {text} {_bytes(status.total)} {now - status.started:.1f}s")
                return
            if status is None:
                status = handle.statuses[key] = StepStatus(key, started=now)
            status.label, status.completed = text, now
            status.current = status.total
            if self._mode(handle) is ProgressMode.RAWJSON:
                self._emit(rawjson.status(handle, status, self._wall))

    def end_output(self, handle: StepHandle) -> None:
        """The step's process has exited: its last line, even with no line end, is shown and
        is in ``handle.tail`` for the error message."""
        with self._lock:
            rest = handle.flush()
            if self._mode(handle) is ProgressMode.PLAIN:
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

    def _finish(self, handle: StepHandle, state: StepState, error: str = "") -> None:
        """Mark ``handle`` ended (call with ``_lock`` held); rawjson says so."""
        handle.finished, handle.state, handle.error = time.monotonic(), state, error
        if self._mode(handle) is ProgressMode.RAWJSON:
            self._emit(rawjson.vertex(handle, self._wall))

    def done(self, handle: StepHandle, *, cached: bool = False, note: str = "") -> None:
        with self._lock:
            rest = handle.flush()
            if self._mode(handle) is ProgressMode.PLAIN:
                self._print_lines(handle, rest)
                extra = f" ({note})" if note else ""
                if cached:
                    self._print(f"#{handle.number} CACHED{extra}")
                else:
                    self._print(f"#{handle.number} DONE {time.monotonic() - handle.started:.1f}s{extra}")
            self._finish(handle, StepState.CACHED if cached else StepState.DONE)

    def failed(self, handle: StepHandle, reason: str) -> None:
        with self._lock:
            rest = handle.flush()
            if self._mode(handle) is ProgressMode.PLAIN:
                self._print_lines(handle, rest)
                self._print(f"#{handle.number} ERROR: {reason}")
            self._finish(handle, StepState.ERROR, reason)

    def canceled(self, handle: StepHandle) -> None:
        """A step stopped because the build was (Ctrl-C, another stage failed): not its failure."""
        with self._lock:
            rest = handle.flush()
            if self._mode(handle) is ProgressMode.PLAIN:
                self._print_lines(handle, rest)
                self._print(f"#{handle.number} CANCELED")
            # BuildKit's error of a canceled vertex ends with "context canceled"
            self._finish(handle, StepState.CANCELED, "context canceled")

    def close(self) -> None:
        """End the view: the tty's last frame lists every step (FINISHED when all ended)."""
        if self._closed.is_set():
            return
        self._closed.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
            self._redraw(final=True)
        self._screen = None


class StepTransfers:
    """The blob transfers of one step (a FROM pulling its base), reported as the registry code
    reports them (``builder.registry.progress.Progress``) and shown as the step's: in plain
    mode docker's words (``ab12cd34ef56: Pull complete``) with BuildKit's sizes and times, and
    a line every :data:`TRANSFER_INTERVAL` seconds while a blob moves, so that a CI log does
    not sit silent through a long pull; in the tty view a line per blob with its bytes."""

    def __init__(self, progress: Progress, handle: StepHandle) -> None:
        self._progress = progress
        self._handle = handle

    def start(self, key: str, label: str, total: int) -> None:
        self._progress.transfer_started(self._handle, key, label, total)

    def advance(self, key: str, n: int) -> None:
        self._progress.transfer_moved(self._handle, key, n)

    def done(self, key: str, status: str) -> None:
        self._progress.transfer_ended(self._handle, key, status)

    def message(self, text: str) -> None:
        self._progress.status(self._handle, text)

    def close(self) -> None:
        pass
