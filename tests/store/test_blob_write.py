"""BlobFiles.write: every kind of stream lands byte for byte, and a wrong one never lands."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from builder.errors import DigestMismatchError
from builder.image.digest import Digest
from cache.blobs import CHUNK, BlobFiles


class Trickle(io.RawIOBase):
    """A raw stream that answers each readinto with at most ``step`` bytes, like a socket."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__()
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


class ReadOnly:
    """Not an io stream: only ``read``."""

    def __init__(self, data: bytes) -> None:
        self._stream = io.BytesIO(data)

    def read(self, n: int = -1) -> bytes:
        return self._stream.read(n)


@pytest.fixture
def blobs(tmp_path: Path) -> BlobFiles:
    return BlobFiles(tmp_path / "blobs", tmp_path / "tmp")


DATA = os.urandom(2 * CHUNK + 12345)


@pytest.mark.parametrize("make", [
    lambda d: Trickle(d, 65536 + 7), lambda d: Trickle(d, 3 * CHUNK), ReadOnly, io.BytesIO,
    lambda d: io.BufferedReader(Trickle(d, 1000), 4096),
], ids=["trickle", "big-reads", "read-only", "bytesio", "buffered"])
def test_every_stream_lands_whole_and_read_only(blobs: BlobFiles, make) -> None:  # type: ignore[no-untyped-def]
    written = blobs.write(make(DATA), Digest.of(DATA), len(DATA))
    path = blobs.path(written.digest)
    assert written.size == len(DATA) and path.read_bytes() == DATA
    assert path.stat().st_mode & 0o777 == 0o444
    assert list(blobs.tmp_dir.iterdir()) == []
    # Without an expected digest the write names the content itself.
    assert blobs.write(make(b"small")).digest == Digest.of(b"small")


@pytest.mark.parametrize("make", [lambda d: Trickle(d, 4096), ReadOnly], ids=["raw", "read-only"])
@pytest.mark.parametrize("case", ["wrong", "longer", "shorter"])
def test_wrong_streams_never_land(blobs: BlobFiles, make, case: str) -> None:  # type: ignore[no-untyped-def]
    body = {"wrong": DATA[:-1] + b"!", "longer": DATA + b"x", "shorter": DATA[:-1]}[case]
    with pytest.raises(DigestMismatchError):
        blobs.write(make(body), Digest.of(DATA), len(DATA))
    assert list(blobs) == [] and list(blobs.tmp_dir.iterdir()) == []
