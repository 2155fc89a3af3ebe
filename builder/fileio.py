"""Writing file content the way that is cheapest for the kernel we run on.

Page-cache writes go in pieces of at most :data:`WRITE_PIECE`: one large write
makes the kernel fill large folios, and where those come from memory a
hypervisor has taken back (a VM's free page reporting), filling them costs
three to four times the CPU. Measured on the bench machine: a 524 MB pull took
1.2 s of system time in 1 MiB writes and 0.33 s in 128 KiB writes; 256 KiB
writes were already slow again. On other machines the extra system calls cost
nothing measurable.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO, Protocol

WRITE_PIECE = 128 << 10


class Reader(Protocol):
    """What a tar reader needs of its stream: an open file, or a wrapper that hashes or counts
    what passes through (HashingReader), which is no full BinaryIO."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def write_all(fd: int, data: memoryview | bytes | bytearray) -> None:
    """Write all of ``data`` to ``fd``."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:WRITE_PIECE]):]


def open_binary(path: Path) -> BinaryIO:
    """``open(path, "rb")`` as a typed opener for ``functools.partial`` (the caller closes it)."""
    return open(path, "rb")


def read_regular(path: Path, limit: int) -> bytes:
    """A small file (an index.json) of a directory others may have written into, read whole:
    never through a symlink, never a FIFO or a device (a link to /dev/zero ate memory until
    the OOM killer), never more than ``limit`` bytes. FileNotFoundError when it is absent;
    ValueError, saying why, when it is not such a file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise ValueError("a symbolic link") from None
        if err.errno == errno.ENOENT:
            raise FileNotFoundError(err.errno, err.strerror, str(path)) from None
        raise ValueError(err.strerror) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError("not a regular file")
        if st.st_size > limit:
            raise ValueError(f"larger than {limit} bytes")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def real_dirs(root: Path, relative: str) -> None:
    """``root/relative`` made as directories, each one checked to be a real directory: a symlink
    planted there (a shared cache, a layout unpacked from someone's tar) would send what is
    written into it out of ``root``. ValueError, naming the part, when one is not."""
    root.mkdir(parents=True, exist_ok=True)
    path = root
    for part in Path(relative).parts:
        path = path / part
        try:
            os.mkdir(path)
            continue
        except FileExistsError:
            pass
        mode = os.lstat(path).st_mode
        if stat.S_ISLNK(mode):
            raise ValueError(f"{path.relative_to(root)} is a symbolic link")
        if not stat.S_ISDIR(mode):
            raise ValueError(f"{path.relative_to(root)} is not a directory")


def open_regular(path: Path) -> BinaryIO:
    """``open(path, "rb")`` of a file that must be a regular one (links followed: its content
    is checked by digest): a FIFO planted there would block the reader forever, a device never
    end. FileNotFoundError when absent; ValueError when it is not a regular file."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: Path, limit: int) -> bytes:
    """A small text file the user names or a context holds (a Dockerfile, an ignore file), read
    whole, links followed as docker follows them: a pipe too (``-f <(...)``), but never a device
    (a Dockerfile linked to /dev/zero in a cloned repository ate memory until the OOM killer) nor
    more than ``limit`` bytes. OSError as open() raises them; ValueError, saying why, else."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            raise ValueError("it is a device, not a file")
        os.set_blocking(fd, True)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValueError(f"it is larger than {limit >> 20} MiB")
    return data
