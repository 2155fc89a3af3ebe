"""Content digests (``sha256:<hex>``) and streams that verify them while reading."""

from __future__ import annotations

import hashlib
import re
from typing import BinaryIO

from builder.errors import DigestMismatchError, ImageError

_DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")


class Digest(str):
    """A validated ``sha256:<64 hex>`` string, usable anywhere a str is."""

    __slots__ = ()

    def __new__(cls, value: str) -> Digest:
        if isinstance(value, Digest):
            return value
        if not isinstance(value, str) or not _DIGEST_RE.match(value):
            raise ImageError(f"invalid digest {value!r}: expected sha256:<64 lowercase hex digits>")
        return super().__new__(cls, value)

    @property
    def algorithm(self) -> str:
        return "sha256"

    @property
    def hex(self) -> str:
        return self[7:]

    @property
    def short(self) -> str:
        """The 12-hex-digit form docker prints in tables."""
        return self[7:19]

    @classmethod
    def of(cls, data: bytes) -> Digest:
        return cls("sha256:" + hashlib.sha256(data).hexdigest())

    @classmethod
    def from_hasher(cls, hasher: hashlib._Hash) -> Digest:
        return cls("sha256:" + hasher.hexdigest())


def is_digest(value: str) -> bool:
    return bool(_DIGEST_RE.match(value))


class HashingReader:
    """Wraps a stream, hashing (sha256) and counting every byte read through it."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._hasher = hashlib.sha256()
        self.size = 0

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._hasher.update(data)
        self.size += len(data)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._raw.readinto(buffer)  # type: ignore[attr-defined]  # BinaryIO has no readinto; the streams given have
        if n:
            view = memoryview(buffer)[:n]
            self._hasher.update(view)
            self.size += n
        return n or 0

    def readable(self) -> bool:
        return True

    def digest(self) -> Digest:
        return Digest.from_hasher(self._hasher)

    def close(self) -> None:
        self._raw.close()

    def __enter__(self) -> HashingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class VerifyingReader(HashingReader):
    """A HashingReader that raises DigestMismatchError at end of stream if the content is wrong.

    The check happens when ``read`` returns b"" (EOF), so a consumer that reads
    to the end can never accept corrupt data silently. ``expected_size`` also
    stops a stream that is longer than announced before it is fully read.
    """

    def __init__(
        self, raw: BinaryIO, expected: str, expected_size: int | None = None, what: str = "blob",
        hint: str = "",
    ) -> None:
        super().__init__(raw)
        self.expected = Digest(expected)
        self.expected_size = expected_size
        self.what = what
        self.hint = hint  # what to do about a mismatch, where the source knows (the store does)

    def _check(self, eof: bool) -> None:
        if self.expected_size is not None and self.size > self.expected_size:
            raise DigestMismatchError(
                self.expected, f"more than {self.expected_size} bytes", self.what, self.hint
            )
        # All the announced bytes read: verify now, as a consumer that reads exactly that many
        # (a tar writer) never asks for the EOF; the error then names the blob and the hint.
        if eof or self.size == self.expected_size:
            actual = self.digest()
            if actual != self.expected:
                raise DigestMismatchError(self.expected, actual, self.what, self.hint)

    def read(self, n: int | None = -1) -> bytes:
        data = super().read(-1 if n is None else n)
        # read() / read(-1) returns everything up to EOF in one call: verify now.
        self._check(eof=(not data and n != 0) or n is None or n < 0)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        got = super().readinto(buffer)
        self._check(eof=got == 0 and len(buffer) != 0)
        return got
