"""Streaming a container's stdout and stderr to the caller as they arrive.

A RUN step's output is one stream (stderr in order with stdout, as a build log
shows it); ``pybuild run`` keeps stderr apart, as ``docker run`` does, so that
``pybuild run img cmd > out 2> err`` splits them.
"""

from __future__ import annotations

import errno
import os
import selectors
from collections.abc import Callable
from typing import BinaryIO

Sink = Callable[[bytes], None] | BinaryIO


def writer(sink: Sink) -> Callable[[bytes], None]:
    """A function that hands each chunk to ``sink``: a callback or a binary file."""
    if callable(sink):
        return sink
    write, flush = sink.write, getattr(sink, "flush", None)

    def _write(chunk: bytes) -> None:
        write(chunk)
        if flush is not None:
            flush()

    return _write


def pump(fd: int, sink: Sink, chunk: int = 65536) -> None:
    """Copy ``fd`` to ``sink`` until every writer has closed it; closes ``fd``."""
    emit = writer(sink)
    try:
        while data := _read(fd, chunk):
            emit(data)
    finally:
        os.close(fd)


def _read(fd: int, chunk: int) -> bytes:
    """A pipe's next bytes, or a pseudo-terminal master's: EIO there means no one holds the other end."""
    try:
        return os.read(fd, chunk)
    except OSError as err:
        if err.errno == errno.EIO:
            return b""
        raise


class Outputs:
    """The pipes a container's process writes to: ``stdout`` and ``stderr`` (the same pipe
    when the caller gives no stderr sink), with their write ends for the runtime's process.
    With ``terminal``, one pseudo-terminal instead, whose other end goes to ``stdout``.

    With ``start_notice``, a third pipe on which the shim says the container's process has
    started: what the pipes carry before that is the runtime's own words (``runc create``
    shares the container's stdio), held back so that a start error, which pybuild reports
    from the runtime's log, is not printed twice. Held output is handed on once the notice
    comes, in order, or by :meth:`release` when no error explains it.
    """

    def __init__(self, stdout: Sink, stderr: Sink | None = None, *, terminal: bool = False,
                 start_notice: bool = False) -> None:
        self._streams: list[tuple[int, Sink]] = []
        self._writers: list[int] = []
        self._notice: int | None = None
        self.notice_fd: int | None = None
        self._held: list[tuple[Callable[[bytes], None], bytes]] = []
        try:
            for sink in (stdout,) if stderr is None or terminal else (stdout, stderr):
                read_end, write_end = os.openpty() if terminal else os.pipe()
                self._streams.append((read_end, sink))
                self._writers.append(write_end)
            if start_notice:
                self._notice, self.notice_fd = os.pipe()
                self._writers.append(self.notice_fd)
        except BaseException:
            self.close()
            raise
        self.stdout_fd = self._writers[0]
        self.stderr_fd = self._writers[len(self._streams) - 1]

    def close_writers(self) -> None:
        """Once the runtime's process has its copies: the pipes end when the container's do."""
        for fd in self._writers:
            os.close(fd)
        self._writers = []

    def close(self) -> None:
        """Close every end still open (after a failed start)."""
        self.close_writers()
        for fd, _ in self._streams:
            os.close(fd)
        self._streams = []
        if self._notice is not None:
            os.close(self._notice)
            self._notice = None

    def pump(self, chunk: int = 65536) -> None:
        """Copy each pipe to its sink until every writer has closed them all; closes them."""
        if len(self._streams) == 1 and self._notice is None:
            fd, sink = self._streams.pop()
            pump(fd, sink, chunk)
            return
        emits = {fd: writer(sink) for fd, sink in self._streams}
        started = self._notice is None
        with selectors.DefaultSelector() as selector:
            for fd in emits:
                selector.register(fd, selectors.EVENT_READ)
            if self._notice is not None:
                selector.register(self._notice, selectors.EVENT_READ)
            try:
                while emits:
                    for key, _ in selector.select():
                        fd = key.fd
                        data = _read(fd, chunk)
                        if fd == self._notice:
                            if data and not started:
                                started = True
                                self.release()
                            if not data:
                                selector.unregister(fd)
                        elif not data:
                            selector.unregister(fd)
                            del emits[fd]
                        elif started:
                            emits[fd](data)
                        else:
                            self._held.append((emits[fd], data))
            finally:
                self.close()

    def release(self) -> None:
        """Hand on what was held back before the start notice."""
        held, self._held = self._held, []
        for emit, data in held:
            emit(data)


def stdin_fd(stdin: BinaryIO | int | None) -> int | None:
    """The descriptor of a caller's stdin (a file or a descriptor), None for none."""
    if stdin is None or isinstance(stdin, int):
        return stdin
    return stdin.fileno()
