"""Layer compression: gzip through ISA-L (fast, gzip-compatible) and zstd through zstandard.

Output is deterministic for a given input and level: no file name, mtime 0,
single-threaded, so two machines produce the same compressed digest.
"""

from __future__ import annotations

import io
import shutil
import zlib
from typing import BinaryIO

import zstandard
from isal import igzip

from builder.errors import ImageError, UsageError
from builder.image.mediatypes import Compression

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
BZIP2_MAGIC = b"BZh"
XZ_MAGIC = b"\xfd7zXZ\x00"
# The compressions docker's CLI takes for a context tar (and ADD unpacks)
ARCHIVE_MAGICS = (GZIP_MAGIC, BZIP2_MAGIC, XZ_MAGIC, ZSTD_MAGIC)
CHUNK = 1 << 20

# ISA-L levels are 0-3; 1 is about 15x faster than zlib's default here for ~12% more bytes.
DEFAULT_GZIP_LEVEL = 1
DEFAULT_ZSTD_LEVEL = 3
# BuildKit's compression-level: gzip takes Go's compress/gzip levels (-2 Huffman only, -1 its
# default, 0 stored, 1 fastest .. 9 smallest); zstd any integer, which klauspost/compress
# rounds to one of its four encoders (EncoderLevelFromZstd), about zstd's levels 1, 3, 7, 11.
GZIP_LEVELS = range(-2, 10)


def zstd_level(level: int) -> int:
    """The zstd level BuildKit's encoder compresses at for ``compression-level=level``."""
    if level < 3:
        return 1
    if level < 6:
        return 3
    if level < 10:
        return 7
    return 11


def parse_compression_level(value: str | None, compression: Compression | None, where: str) -> int | None:
    """BuildKit's ``compression-level``: an integer; for gzip (the default compression) one of Go's
    levels, -2 to 9, which BuildKit finds out only when it compresses."""
    if value is None:
        return None
    try:
        level = int(value)
    except ValueError:
        raise UsageError(f"invalid {where}: compression-level={value!r} is not an integer") from None
    if compression in (None, Compression.GZIP) and level not in GZIP_LEVELS:
        raise UsageError(f"invalid {where}: compression-level={level} is not a gzip level "
                         "(-2 to 9: 0 stores, 1 is fastest, 9 smallest)")
    return level


def detect(head: bytes) -> Compression:
    """Guess the compression of a blob from its first bytes (docker-archive layers are unlabelled)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    return Compression.NONE


def open_decompressed(stream: BinaryIO, compression: Compression, what: str = "layer") -> BinaryIO:
    """A readable stream of the uncompressed bytes; closing it closes ``stream``.

    Corrupt input raises :class:`ImageError` ("corrupt gzip ``what``"), never a codec's own error."""
    if compression is Compression.NONE:
        return stream
    if compression is Compression.GZIP:
        return _ClosingGzip(stream, what)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    if compression is Compression.ZSTD:
        reader = zstandard.ZstdDecompressor().stream_reader(stream, read_size=CHUNK, closefd=True)
        return _CheckedZstd(reader, what)
    raise ImageError(f"unknown compression {compression!r}")


class _ClosingGzip(igzip.IGzipFile):
    """igzip reader that also closes the underlying stream and reports corruption clearly."""

    def __init__(self, stream: BinaryIO, what: str = "layer") -> None:
        super().__init__(fileobj=stream, mode="rb")
        self._stream = stream
        self._what = what

    def read(self, size: int | None = -1) -> bytes:
        try:
            return super().read(size)
        except (EOFError, OSError) as err:
            raise ImageError(f"corrupt gzip {self._what}: {err}") from None

    def read1(self, size: int = -1) -> bytes:
        try:
            return super().read1(size)
        except (EOFError, OSError) as err:
            raise ImageError(f"corrupt gzip {self._what}: {err}") from None

    def readinto(self, b):
        try:
            return super().readinto(b)
        except (EOFError, OSError) as err:
            raise ImageError(f"corrupt gzip {self._what}: {err}") from None

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stream.close()


def compressor(dst: BinaryIO, compression: Compression, level: int | None = None) -> BinaryIO:
    """A writable stream that compresses into ``dst``. Close it to flush (``dst`` stays open).

    ``level`` is BuildKit's ``compression-level`` (see :data:`GZIP_LEVELS`, :func:`zstd_level`);
    None is pybuild's default: ISA-L's fast gzip, zstd level 3."""
    if compression is Compression.NONE:
        return _NoClose(dst)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    if compression is Compression.GZIP:
        if level is not None:
            return _ZlibGzip(dst, level)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
        # filename="": no FNAME header (it would be the temp file's name; digests must not depend on it)
        return igzip.IGzipFile(fileobj=dst, filename="", mode="wb", compresslevel=DEFAULT_GZIP_LEVEL, mtime=0)  # type: ignore[return-value]  # a file object, no typing.BinaryIO subclass
    if compression is Compression.ZSTD:
        lvl = DEFAULT_ZSTD_LEVEL if level is None else zstd_level(level)
        cctx = zstandard.ZstdCompressor(level=lvl, write_content_size=False)
        return cctx.stream_writer(dst, closefd=False)
    raise ImageError(f"unknown compression {compression!r}")


class _ZlibGzip(io.RawIOBase):
    """gzip at one of Go's levels, through zlib (ISA-L has four levels of its own): the header
    has no name and mtime 0, so the same input gives the same bytes."""

    def __init__(self, dst: BinaryIO, level: int) -> None:
        if level not in GZIP_LEVELS:
            raise ImageError(f"gzip compression level {level} is not between -2 and 9")
        strategy = zlib.Z_HUFFMAN_ONLY if level == -2 else zlib.Z_DEFAULT_STRATEGY
        self._dst = dst
        self._z = zlib.compressobj(max(level, -1) if level != -2 else 1, zlib.DEFLATED, 31, 8, strategy)

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self._dst.write(self._z.compress(b))
        return len(b)

    def close(self) -> None:
        if not self.closed:
            self._dst.write(self._z.flush())
        super().close()


def compress_stream(
    src: BinaryIO, dst: BinaryIO, compression: Compression, level: int | None = None
) -> None:
    with compressor(dst, compression, level) as out:
        shutil.copyfileobj(src, out, CHUNK)


class _CheckedZstd(io.BufferedReader):
    """zstd reader whose corruption errors say what was corrupt."""

    def __init__(self, raw, what: str) -> None:
        super().__init__(raw, CHUNK)
        self._what = what

    def read(self, size: int | None = -1) -> bytes:
        try:
            return super().read(size)
        except zstandard.ZstdError as err:
            raise ImageError(f"corrupt zstd {self._what}: {err}") from None

    def read1(self, size: int = -1) -> bytes:
        try:
            return super().read1(size)
        except zstandard.ZstdError as err:
            raise ImageError(f"corrupt zstd {self._what}: {err}") from None

    def readinto(self, b):
        try:
            return super().readinto(b)
        except zstandard.ZstdError as err:
            raise ImageError(f"corrupt zstd {self._what}: {err}") from None

    def peek(self, size: int = 0) -> bytes:
        try:
            return super().peek(size)
        except zstandard.ZstdError as err:
            raise ImageError(f"corrupt zstd {self._what}: {err}") from None


class _NoClose(io.RawIOBase):
    def __init__(self, dst: BinaryIO) -> None:
        self._dst = dst

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        return self._dst.write(b)
