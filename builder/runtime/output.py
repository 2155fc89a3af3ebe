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
    With ``terminal``, one pseudo-terminal instead, whose other end goes to ``stdout``."""

    def __init__(self, stdout: Sink, stderr: Sink | None = None, *, terminal: bool = False) -> None:
        self._streams: list[tuple[int, Sink]] = []
        self._writers: list[int] = []
        try:
            for sink in (stdout,) if stderr is None or terminal else (stdout, stderr):
                read_end, write_end = os.openpty() if terminal else os.pipe()
                self._streams.append((read_end, sink))
                self._writers.append(write_end)
        except BaseException:
            self.close()
            raise
        self.stdout_fd = self._writers[0]
        self.stderr_fd = self._writers[-1]

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

    def pump(self, chunk: int = 65536) -> None:
        """Copy each pipe to its sink until every writer has closed them all; closes them."""
        if len(self._streams) == 1:
            fd, sink = self._streams.pop()
            pump(fd, sink, chunk)
            return
        emits = {fd: writer(sink) for fd, sink in self._streams}
        with selectors.DefaultSelector() as selector:
            for fd in emits:
                selector.register(fd, selectors.EVENT_READ)
            try:
                while emits:
                    for key, _ in selector.select():
                        fd = key.fd
                        data = _read(fd, chunk)
                        if data:
                            emits[fd](data)
                        else:
                            selector.unregister(fd)
                            del emits[fd]
            finally:
                for fd, _ in self._streams:
                    os.close(fd)
                self._streams = []


def stdin_fd(stdin: BinaryIO | int | None) -> int | None:
    """The descriptor of a caller's stdin (a file or a descriptor), None for none."""
    if stdin is None or isinstance(stdin, int):
        return stdin
    return stdin.fileno()
