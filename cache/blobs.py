"""Content-addressed blob files: ``blobs/sha256/<hex>``, written atomically, verified on read.

A blob is written to ``tmp/`` (same file system), hashed while written,
fsynced, renamed into place, and its directory fsynced: a crash leaves either
no file or a complete one. Temp files carry the writer's pid so that a later
writer can sweep those of dead processes. Files are never changed once in place.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from builder.errors import DigestMismatchError, StoreError
from builder.fileio import BLOB_PIECE, write_all
from builder.image.digest import Digest, VerifyingReader, is_digest

CHUNK = 1 << 20
STALE_TMP_SECONDS = 60


@dataclass(frozen=True)
class WrittenBlob:
    """A blob now in the store, as its writer computed it."""

    digest: Digest
    size: int


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def temp_name(tmp_dir: Path, suffix: str = "") -> Path:
    """A fresh temp path naming its owner's pid (``<pid>-<random><suffix>``)."""
    return tmp_dir / f"{os.getpid()}-{os.urandom(16).hex()}{suffix}"


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """A temp entry whose owner died; one not named by a pid once nobody touched it for a minute.

    Age alone never condemns a live owner's entry: a RUN step's upper dir or a
    large download can stay in tmp/ far longer than a minute.
    """
    pid_text = path.name.split("-", 1)[0]
    if pid_text.isdigit():
        return int(pid_text) != os.getpid() and not pid_alive(int(pid_text))
    try:
        age = (now or time.time()) - path.lstat().st_mtime
    except FileNotFoundError:
        return False
    return age > STALE_TMP_SECONDS


def set_aside(path: Path, tmp_dir: Path) -> Path | None:
    """Move ``path`` out of sight atomically into ``tmp_dir`` under this process's pid, to be
    removed there: if the process dies first, the next writer's sweep removes it. Its new
    path; None if there was nothing."""
    aside = temp_name(tmp_dir, ".gone")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return None
    return aside


def sweep_temp(tmp_dir: Path) -> list[Path]:
    """Remove stale temp files and directories (left by killed processes); return them."""
    removed = []
    now = time.time()
    with contextlib.suppress(FileNotFoundError):
        for entry in tmp_dir.iterdir():
            if is_stale_temp(entry, now):
                remove_tree(entry)
                removed.append(entry)
    return removed


def sweep_dot_entries(root: Path, older_than: float = 3600) -> None:
    """Remove the dot-named entries of ``root`` (being made, or going) older than ``older_than``
    seconds: what a killed process left half made or half removed (git checkouts, cache mounts)."""
    if not root.is_dir():
        return
    now = time.time()
    for entry in os.scandir(root):
        if entry.name.startswith("."):
            with contextlib.suppress(OSError):
                if now - entry.stat(follow_symlinks=False).st_mtime > older_than:
                    remove_tree(Path(entry.path))


def remove_tree(path: Path) -> None:
    """Remove a file or directory tree, whatever its permissions; missing is fine."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, onerror=_force_remove)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _force_remove(func, path, _exc) -> None:
    parent = os.path.dirname(path)
    with contextlib.suppress(OSError):
        os.chmod(parent, 0o755)
    with contextlib.suppress(FileNotFoundError):
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path, onerror=_force_remove)
        else:
            os.unlink(path)




class BlobFiles:
    """The ``blobs/`` tree of a store root; knows nothing of the database."""

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        (root / "sha256").mkdir(parents=True, exist_ok=True)
        tmp_dir.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / Digest(digest).hex

    def exists(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def open(self, digest: str, size: int | None = None) -> BinaryIO:
        """Open a blob for reading; reading it to the end verifies its digest."""
        try:
            raw = open(self.path(digest), "rb")  # noqa: SIM115 - the caller closes the reader
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from the store (run `pybuild store check`)") from None
        return VerifyingReader(raw, digest, size, f"stored blob {digest}")  # type: ignore[return-value]  # a file-like reader, no typing.BinaryIO subclass

    def write(self, stream: BinaryIO, expected: str | None = None, size: int | None = None) -> WrittenBlob:
        """Copy a stream into the store; with ``expected``, refuse content with another digest."""
        tmp = temp_name(self.tmp_dir, ".blob")
        # A VerifyingReader for the same digest already hashes every byte and raises at EOF.
        pre_verified = (
            expected is not None and isinstance(stream, VerifyingReader) and stream.expected == expected
        )
        hasher = None if pre_verified else hashlib.sha256()
        written = 0
        # io streams fill one reused buffer (no bytes object per chunk); others are read().
        buffer = memoryview(bytearray(CHUNK if size is None else min(CHUNK, size + 1)))
        readinto = stream.readinto if isinstance(stream, io.RawIOBase | io.BufferedIOBase) else None
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                while True:
                    if readinto is not None:
                        n = readinto(buffer) or 0
                        chunk: memoryview | bytes = buffer[:n]
                    else:
                        chunk = stream.read(CHUNK)
                        n = len(chunk)
                    if not n:
                        break
                    written += n
                    if size is not None and written > size:
                        raise DigestMismatchError(str(expected), f"more than {size} bytes", "blob")
                    if hasher is not None:
                        hasher.update(chunk)
                    write_all(fd, chunk, BLOB_PIECE)
                os.fsync(fd)
            finally:
                os.close(fd)
            if hasher is not None:
                digest = Digest.from_hasher(hasher)
            else:
                assert expected is not None  # pre_verified
                digest = Digest(expected)
            if expected is not None and digest != expected:
                raise DigestMismatchError(expected, digest, "blob")
            if size is not None and written != size:
                raise DigestMismatchError(
                    str(expected or digest), f"{written} bytes instead of {size}", "blob"
                )
            return self._install(tmp, digest, written)
        except OSError as err:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise StoreError(f"cannot write a blob into {self.root}: {err.strerror or err}") from None
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise

    def write_bytes(self, data: bytes, expected: str | None = None) -> WrittenBlob:
        import io

        return self.write(io.BytesIO(data), expected, len(data) if expected else None)

    def _install(self, tmp: Path, digest: Digest, size: int) -> WrittenBlob:
        final = self.path(digest)
        if final.is_file():
            # Written twice (another process, or an earlier crash): identical content by definition.
            tmp.unlink()
            return WrittenBlob(digest, size)
        tmp.chmod(0o444)
        try:
            os.rename(tmp, final)
        except OSError as err:
            raise StoreError(f"cannot store blob {digest}: {err}") from None
        fsync_dir(final.parent)
        return WrittenBlob(digest, size)

    def delete(self, digest: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(digest).unlink()

    def __iter__(self) -> Iterator[Digest]:
        for entry in sorted((self.root / "sha256").iterdir()):
            name = "sha256:" + entry.name
            if is_digest(name):
                yield Digest(name)

    def stray_files(self) -> list[Path]:
        """Entries under blobs/ that are not named like a blob."""
        return [e for e in (self.root / "sha256").iterdir() if not is_digest("sha256:" + e.name)]
