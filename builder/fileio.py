"""Writing file content the way that is cheapest for the kernel we run on.

Page-cache writes go in pieces of at most :data:`WRITE_PIECE`, and those of
downloaded blobs in :data:`BLOB_PIECE`. The kernel sizes page-cache folios by
the write: a large folio needs contiguous free memory, which in a VM whose free
memory the hypervisor takes back (free page reporting, as in Firecracker) is
the memory it has to fault in again, at three to five times the CPU; 32 KiB
(order 3, the largest order the kernel does not count as costly to allocate)
is what Go's io.Copy writes. Measured on the bench machine (kernel 6.18): a
524 MB pull, four blobs written at once, took 1.5 s of system time in 128 KiB
pieces and 0.5 s in 32 KiB (0.9 s in 4 KiB: the calls add up); a COPY of a
400 MB context (layer tar, then its snapshot) took 4.4 s in 128 KiB pieces
and 4.8 s in 32 KiB. In 1 MiB pieces a pull took 1.2 s against 0.33 s in
128 KiB on an earlier kernel. On other machines the extra calls cost nothing
measurable.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, Protocol

WRITE_PIECE = 128 << 10
BLOB_PIECE = 32 << 10
# A directory below a root, opened without following a symlink in its place.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# Symlinks followed while resolving one path, as Linux's MAXSYMLINKS.
MAX_SYMLINKS = 40


class Reader(Protocol):
    """What a tar reader needs of its stream: an open file, or a wrapper that hashes or counts
    what passes through (HashingReader), which is no full BinaryIO."""

    def read(self, n: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


def write_all(fd: int, data: memoryview | bytes | bytearray, piece: int = WRITE_PIECE) -> None:
    """Write all of ``data`` to ``fd``, at most ``piece`` bytes per call."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:piece]):]


def open_binary(path: Path) -> BinaryIO:
    """``open(path, "rb")`` as a typed opener for ``functools.partial`` (the caller closes it)."""
    return open(path, "rb")


def read_regular(path: Path | str, limit: int, *, dir_fd: int | None = None) -> bytes:
    """A small file (an index.json) of a directory others may have written into, read whole:
    never through a symlink, never a FIFO or a device (a link to /dev/zero ate memory until
    the OOM killer), never more than ``limit`` bytes. FileNotFoundError when it is absent;
    ValueError, saying why, when it is not such a file. ``dir_fd``: ``path`` is a name in it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
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


# --- directories others may write into ---------------------------------------------------------

class BeneathError(ValueError):
    """A path below a root that cannot be followed there: ``kind`` says why (``symlink``: a link
    where none is followed; ``escape``: a link that leads out of the root; ``missing``,
    ``notdir``, ``loop``), ``where`` is the part of the path met (``blobs/sha256``), ``via`` the
    link followed last, as ``'a' -> '../b'``."""

    def __init__(self, kind: str, where: str, message: str, via: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.where = where
        self.via = via


def resolve_dir(root_fd: int, parts: Sequence[str], *, follow_links: bool = False, chroot: bool = False,
                create: bool = False, created: Callable[[int, str], None] | None = None) -> int:
    """A new descriptor of the directory ``parts`` below ``root_fd``, each component opened with
    O_NOFOLLOW relative to the one before, so that nothing swapped in by someone who writes there
    (a shared cache, a layout, a layer's own symlinks) is followed by a later call: the kernel
    never walks a path we checked. A symlink met is refused, or with ``follow_links`` followed
    while it stays below the root (``chroot``: as a chroot would, absolute targets start at the
    root and ``..`` stops there); ``..`` only comes from a link's target. ``create`` makes a
    missing component (``created(fd, relative path)`` then hears of it). BeneathError else."""
    return _walk(root_fd, parts, follow_links=follow_links, chroot=chroot, create=create, created=created)[0]


def _walk(root_fd: int, parts: Sequence[str], *, follow_links: bool, chroot: bool, create: bool,
          created: Callable[[int, str], None] | None, links: int = 0) -> tuple[int, list[str], int]:
    """resolve_dir's work: the descriptor, the path it was reached by, and the links followed."""
    pending = list(reversed(parts))
    resolved: list[str] = []
    fds = [os.dup(root_fd)]
    via = via_where = ""
    try:
        while pending:
            comp = pending.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if not resolved and chroot:
                    continue  # "/.." is "/"
                if not resolved:
                    why = f"the symbolic link {via}" if via else "'..'"
                    raise BeneathError("escape", via_where or "..", f"{why} leads out of the directory", via)
                resolved.pop()
                os.close(fds.pop())
                continue
            where = "/".join([*resolved, comp])
            fd, made = _open_component(fds[-1], comp, where, create)
            if fd is None:
                if not stat.S_ISLNK(os.lstat(comp, dir_fd=fds[-1]).st_mode):
                    raise BeneathError("notdir", where, f"{where} is not a directory")
                if not follow_links:
                    raise BeneathError("symlink", where, f"{where} is a symbolic link")
                links += 1
                target = os.readlink(comp, dir_fd=fds[-1])
                if links > MAX_SYMLINKS:
                    raise BeneathError("loop", where, f"{where} goes through more than {MAX_SYMLINKS} "
                                       "symbolic links (a loop?)")
                via, via_where = f"'{where}' -> '{target}'", where
                if target.startswith("/") and not chroot:
                    raise BeneathError("escape", where, f"the symbolic link {via} leads out of the directory", via)
                if target.startswith("/"):
                    while len(fds) > 1:  # start again from the root, as chroot would
                        os.close(fds.pop())
                    resolved.clear()
                pending.extend(reversed(target.split("/")))
                continue
            if made and created is not None:
                try:
                    created(fd, where)
                except BaseException:
                    os.close(fd)
                    raise
            fds.append(fd)
            resolved.append(comp)
        return fds.pop(), resolved, links
    finally:
        for fd in fds:
            os.close(fd)


def _open_component(parent: int, comp: str, where: str, create: bool) -> tuple[int | None, bool]:
    """``comp`` of ``parent`` opened as a directory (made first with ``create``), and whether it
    was made; None when it is something else (a symlink, a file: the caller looks)."""
    made = False
    while True:
        try:
            return os.open(comp, DIR_FLAGS, dir_fd=parent), made
        except FileNotFoundError:
            if not create or made:
                raise BeneathError("missing", where, f"{where} does not exist") from None
            try:
                os.mkdir(comp, dir_fd=parent)
                made = True
            except FileExistsError:  # another writer made it meanwhile: open what is there
                create = False
                continue
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            return None, made


class Directory:
    """A directory opened once, and everything done below it through that descriptor.

    The directory itself is the user's (``dest=DIR``: the links in its path are followed once,
    as in any path the user names); below it others may write (a build farm's shared cache, a
    layout, ``-o`` into /tmp), so a component is opened with O_NOFOLLOW relative to its parent's
    descriptor and files are created and renamed with ``dir_fd``: one swapped for a symlink
    between a check and a write is never followed out of the directory, as BuildKit and
    containerd write through ``openat``. Methods raise OSError as the kernel does, and
    BeneathError (a ValueError) for what is in the way."""

    def __init__(self, fd: int, path: Path) -> None:
        self.fd = fd
        self.path = path  # for messages only

    @classmethod
    def open(cls, path: Path, *, create: bool = False) -> Directory:
        """``path`` opened (made with its parents first, with ``create``). One the user may write
        into but not list (a drop box, 0733) is opened O_PATH: names in it can still be made,
        renamed and removed, its listing and fsync fail (what sweeps do is skipped)."""
        if create:
            path.mkdir(parents=True, exist_ok=True)
        try:
            return cls(os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC), path)
        except PermissionError:
            return cls(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), path)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self) -> Directory:
        return self

    def __str__(self) -> str:  # messages name the path
        return str(self.path)

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subdir(self, relative: str, *, create: bool = False, follow_links: bool = False) -> Directory:
        """The directory ``relative`` below this one (made with ``create``); a symlink on the way
        is refused, or with ``follow_links`` followed while it stays below this directory."""
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        fd = resolve_dir(self.fd, parts, create=create, follow_links=follow_links)
        return Directory(fd, self.path.joinpath(*parts))

    def lstat(self, name: str) -> os.stat_result | None:
        """What ``name`` is (a link itself, not its target); None when absent."""
        try:
            return os.lstat(name, dir_fd=self.fd)
        except FileNotFoundError:
            return None

    def read(self, name: str, limit: int) -> bytes:
        """:func:`read_regular` of ``name``."""
        return read_regular(name, limit, dir_fd=self.fd)

    def open_beneath(self, relative: str) -> BinaryIO:
        """The regular file ``relative`` below this directory, read: links on the way (a layout's
        legacy ``<id>/layer.tar`` -> ``../blobs/...``) followed while they stay below it.
        FileNotFoundError when absent; BeneathError when it leads out or is no regular file."""
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        links = 0
        while True:
            if not parts:
                raise BeneathError("notdir", relative, f"{relative} is not a regular file")
            try:
                parent, resolved, links = _walk(self.fd, parts[:-1], follow_links=True, chroot=False,
                                                create=False, created=None, links=links)
            except BeneathError as err:
                if err.kind == "missing":
                    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), relative) from None
                raise
            try:
                try:
                    fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=parent)
                except OSError as err:
                    if err.errno != errno.ELOOP:
                        raise
                    target = os.readlink(parts[-1], dir_fd=parent)
                    links += 1
                    where = "/".join([*resolved, parts[-1]])
                    if target.startswith("/") or links > MAX_SYMLINKS:
                        raise BeneathError("escape", where, f"the symbolic link '{where}' -> '{target}' "
                                           "leads out of the directory") from None
                    parts = [*resolved, *target.split("/")]
                    # ".." of the link's own directory: resolved once more from the root
                    parts = _lexical(parts, where, target)
                    continue
            finally:
                os.close(parent)
            try:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise BeneathError("notdir", relative, f"{relative} is not a regular file")
                os.set_blocking(fd, True)
                return os.fdopen(fd, "rb")
            except BaseException:
                os.close(fd)
                raise

    def unlink(self, name: str) -> None:
        """Remove ``name`` (a link itself, never its target); nothing when absent."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    @contextlib.contextmanager
    def locked(self, name: str | None = None) -> Iterator[None]:
        """An exclusive flock held for the body: of the lock file ``name`` (made, never through a
        link), or of the directory itself (no file left in it; where the file system cannot lock
        a directory, unlocked)."""
        if name is None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    fcntl.flock(self.fd, fcntl.LOCK_UN)
            return
        fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self.fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def temp_name(self, name: str, suffix: str = ".tmp") -> str:
        """The name a writer of ``name`` in this process and thread uses for its temp file."""
        return f".{name}.{os.getpid()}.{threading.get_ident()}{suffix}"

    @contextlib.contextmanager
    def replacing(self, name: str, *, temp: str | None = None, mode: int = 0o644,
                  shown: str | None = None) -> Iterator[BinaryIO]:
        """A stream for ``name``'s new content: a temp file made here (O_EXCL, O_NOFOLLOW: never an
        existing file nor through a link planted at its predictable name), fsynced and renamed
        over ``name`` (a link there is replaced, not followed) when the body ends, this directory
        fsynced after; removed when the body fails. ``shown``: the stream's name for messages."""
        temp = temp or self.temp_name(name)
        self.unlink(temp)  # a dead writer's with our pid, or a planted link (removed, not followed)

        def opener(_path: str, flags: int) -> int:
            return os.open(temp, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=self.fd)

        f = open(shown or str(self.path / temp), "xb", opener=opener)  # noqa: SIM115 - closed below
        try:
            try:
                yield f
                f.flush()
                os.fsync(f.fileno())
            except BaseException:
                with contextlib.suppress(OSError):  # a full disk's flush must not hide the body's error
                    f.close()
                raise
            f.close()
            os.replace(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.unlink(temp)
            raise
        with contextlib.suppress(OSError):
            os.fsync(self.fd)


def _lexical(parts: list[str], where: str, target: str) -> list[str]:
    """``parts`` with each ``..`` taking the part before it away; one that would climb out of the
    root is a BeneathError (the link ``where`` -> ``target`` leads out)."""
    out: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not out:
                raise BeneathError("escape", where, f"the symbolic link '{where}' -> '{target}' leads out of the directory")
            out.pop()
            continue
        out.append(part)
    return out
