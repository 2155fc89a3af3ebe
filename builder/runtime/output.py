"""Streaming a container's combined stdout and stderr to the caller as it arrives."""

from __future__ import annotations

import os
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
        while data := os.read(fd, chunk):
            emit(data)
    finally:
        os.close(fd)


def stdin_fd(stdin: BinaryIO | int | None) -> int | None:
    """The descriptor of a caller's stdin (a file or a descriptor), None for none."""
    if stdin is None or isinstance(stdin, int):
        return stdin
    return stdin.fileno()
