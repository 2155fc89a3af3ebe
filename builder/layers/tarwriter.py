"""Deterministic layer tars: the same tree gives the same bytes (and DiffID) on any machine.

Entries are written in path order (each directory's names sorted by their
bytes, parents before children, like docker's and BuildKit's walks), as PAX
with numeric owners only, whole-second mtimes (clamped to SOURCE_DATE_EPOCH
when given), xattrs as ``SCHILY.xattr.*`` records and hardlinks as links to the
first path seen. The sha256 of the stream (the DiffID) is computed while
writing, so a layer is read from disk exactly once.

Two entry points share one header encoder: :func:`write_layer` for a whole
tree (a snapshot or an overlay upper dir) and :class:`TarStreamWriter` for an
explicit entry list (COPY/ADD with ``--chown``/``--chmod`` overrides, no temp
copy needed).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from operator import attrgetter
from pathlib import Path
from typing import BinaryIO

from builder.errors import ImageError
from builder.fileio import WRITE_PIECE
from builder.image.digest import Digest
from builder.layers import whiteout
from builder.layers.entry import STEP_LAYER_XATTRS, EntryType, TarEntry

BLOCK = 512
END_OF_ARCHIVE = b"\0" * (2 * BLOCK)
_ZEROS = b"\0" * BLOCK
# Small enough that a buffer is still in the CPU cache when the helper hashes and writes
# it: 256 KiB buffers cost about a quarter less CPU than 1 MiB ones (bench/layers.py).
_BUFFER = 256 << 10
_MAX_OCTAL_8 = 0o7777777
_MAX_OCTAL_12 = 0o77777777777
PAX_HEADER_NAME = "././@PaxHeader"


@dataclass(frozen=True, slots=True)
class StatOverride:
    """What COPY/ADD ``--chown``/``--chmod`` replace in a source file's metadata."""

    uid: int | None = None
    gid: int | None = None
    mode: int | None = None
    mtime: int | None = None


@dataclass(frozen=True, slots=True)
class LayerSource:
    """One COPY/ADD entry: a file on disk written as ``name``, with optional metadata overrides."""

    name: str
    source: str | Path
    override: StatOverride | None = None


@dataclass(frozen=True, slots=True)
class LayerStats:
    """The DiffID and byte size of an uncompressed layer tar, how many entries it holds, and
    its content size as docker shows it (regular files, hardlinks once, and symlink targets),
    counted while writing so the store need not read the tar again for it."""

    diff_id: Digest
    size: int
    files: int
    content: int


def _octal(value: int, width: int) -> bytes:
    return b"%0*o\0" % (width - 1, value)


def _pax_record(key: str, value: bytes) -> bytes:
    body = key.encode("utf-8", "surrogateescape") + b"=" + value + b"\n"
    length = len(body) + 1
    length += len(str(length))
    if len(str(length)) + 1 + len(body) != length:
        length += 1
    return b"%d " % length + body


def _fits(raw: bytes, limit: int) -> bool:
    return len(raw) <= limit and raw.isascii()


def encode_header(entry: TarEntry) -> bytes:
    """The header block(s) for ``entry``: a PAX extended header first when a field needs one."""
    block = _plain_header(
        entry.name, entry.type, entry.mode, entry.uid, entry.gid, entry.size, entry.mtime,
        entry.linkname, entry.devmajor, entry.devminor, entry.xattrs,
    )
    if block is not None:
        return block
    raw_name = os.fsencode(entry.name)
    if entry.type is EntryType.DIR and not raw_name.endswith(b"/"):
        raw_name += b"/"
    raw_link = os.fsencode(entry.linkname)
    pax: list[tuple[str, bytes]] = []
    binary = False
    if not _fits(raw_name, 100):
        pax.append(("path", raw_name))
        binary = binary or not _is_utf8(raw_name)
        field_name = raw_name[-100:].decode("ascii", "replace").encode("ascii", "replace")
    else:
        field_name = raw_name
    if not _fits(raw_link, 100):
        pax.append(("linkpath", raw_link))
        binary = binary or not _is_utf8(raw_link)
        field_link = b""
    else:
        field_link = raw_link
    uid, gid, size, mtime = entry.uid, entry.gid, entry.size, entry.mtime
    if not 0 <= uid <= _MAX_OCTAL_8:
        pax.append(("uid", b"%d" % uid))
        uid = 0
    if not 0 <= gid <= _MAX_OCTAL_8:
        pax.append(("gid", b"%d" % gid))
        gid = 0
    if size > _MAX_OCTAL_12:
        pax.append(("size", b"%d" % size))
        size = 0
    if not 0 <= mtime <= _MAX_OCTAL_12:
        pax.append(("mtime", b"%d" % mtime))
        mtime = 0
    for key, value in entry.xattrs:
        pax.append(("SCHILY.xattr." + key, value))
    block = _ustar_block(
        field_name, entry.mode & 0o7777, uid, gid, size, mtime, entry.type.value, field_link,
        entry.devmajor, entry.devminor,
    )
    if not pax:
        return block
    if binary:
        pax.insert(0, ("hdrcharset", b"BINARY"))
    records = b"".join(_pax_record(k, v) for k, v in pax)
    head = _ustar_block(os.fsencode(PAX_HEADER_NAME), 0o644, 0, 0, len(records), 0, b"x", b"", 0, 0)
    return head + records + _ZEROS[: -len(records) % BLOCK] + block


def _plain_header(
    name: str, kind: EntryType, mode: int, uid: int, gid: int, size: int, mtime: int,
    link: str, devmajor: int, devminor: int, xattrs: tuple[tuple[str, bytes], ...],
) -> bytes | None:
    """The common case, one ustar block without PAX; None when a field needs PAX.

    Takes the fields loose so that the per-file path builds no TarEntry.
    """
    if (
        xattrs or len(name) >= 100 or not name.isascii() or len(link) > 100
        or not link.isascii() or not 0 <= uid <= _MAX_OCTAL_8 or not 0 <= gid <= _MAX_OCTAL_8
        or size > _MAX_OCTAL_12 or not 0 <= mtime <= _MAX_OCTAL_12
    ):
        return None
    raw = name.encode("ascii")
    if kind is EntryType.DIR and not raw.endswith(b"/"):
        raw += b"/"
    return _ustar_block(
        raw, mode & 0o7777, uid, gid, size, mtime, kind.value, link.encode("ascii"),
        devmajor, devminor,
    )


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


_USTAR_FIELDS = b"%07o\0%07o\0%07o\0%011o\0%011o\0"
_USTAR_MAGIC = b"ustar\x0000" + b"\0" * 64  # magic, version, empty uname and gname
_USTAR_TAIL = b"\0" * 167  # prefix and padding
_CHECKSUM_BLANK = sum(b" " * 8) + sum(_USTAR_MAGIC)
_NO_DEVICE = b"%07o\0%07o\0" % (0, 0)
_NO_DEVICE_SUM = _CHECKSUM_BLANK + sum(_NO_DEVICE)
_NO_LINK_TAIL = b"\0" * 100 + _USTAR_MAGIC  # an empty linkname and the magic, pre-joined


def _ustar_block(
    name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
    linkname: bytes, devmajor: int, devminor: int,
) -> bytes:
    """One ustar header; formatted in one go and summed piecewise (this is the hot path)."""
    numbers = _USTAR_FIELDS % (mode, uid, gid, size, mtime)
    if devmajor or devminor:
        devices = b"%07o\0%07o\0" % (devmajor, devminor)
        checksum = (
            sum(name) + sum(numbers) + typeflag[0] + sum(linkname) + sum(devices)
            + _CHECKSUM_BLANK
        )
    else:
        devices = _NO_DEVICE
        checksum = sum(name) + sum(numbers) + typeflag[0] + sum(linkname) + _NO_DEVICE_SUM
    if not linkname:
        return b"".join((
            name.ljust(100, b"\0"), numbers, b"%06o\0 " % checksum, typeflag, _NO_LINK_TAIL,
            devices, _USTAR_TAIL,
        ))
    return b"".join((
        name.ljust(100, b"\0"), numbers, b"%06o\0 " % checksum, typeflag,
        linkname.ljust(100, b"\0"), _USTAR_MAGIC, devices, _USTAR_TAIL,
    ))


class _HashingSink:
    """Fixed output buffers, hashed and written by one helper thread while the next one fills.

    sha256 and ``write`` release the GIL, so hashing overlaps reading the next
    files (two cores: about a third off a large layer). The thread starts at
    the first full buffer; small layers never start one.
    """

    _COUNT = 4

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._bufs = [memoryview(bytearray(_BUFFER)) for _ in range(self._COUNT)]
        self._pending: list[Future[None] | None] = [None] * self._COUNT
        self._index = 0
        self._view = self._bufs[0]
        self._pos = 0
        self._pool: ThreadPoolExecutor | None = None
        self.hasher = hashlib.sha256()
        self.size = 0

    def _consume(self, chunk: memoryview | bytes) -> None:
        self.hasher.update(chunk)
        view = memoryview(chunk)
        try:
            while view:  # raw files and pipes may take less than offered
                written = self._out.write(view[:WRITE_PIECE])
                view = view[len(view) if written is None else written :]
        except OSError as err:  # not an OSError any more: add_path reports those as unreadable input
            where = getattr(self._out, "name", None)
            target = f" to {where}" if isinstance(where, str) else ""
            raise ImageError(f"cannot write the layer{target}: {err.strerror or err}") from err

    def write(self, data: bytes | memoryview) -> None:
        n = len(data)
        if self._pos + n > _BUFFER:
            self.flush()
            if n > _BUFFER:  # rare (a header with huge PAX records): go through the buffers
                view = memoryview(data)
                for start in range(0, n, _BUFFER):
                    self.write(view[start : start + _BUFFER])
                return
        self._view[self._pos : self._pos + n] = data
        self._pos += n

    def copy_from_fd(self, fd: int, n: int) -> int:
        """Read up to ``n`` bytes from ``fd`` straight into the buffer; returns the count read."""
        done = 0
        while done < n:
            if self._pos == _BUFFER:
                self.flush()
            want = min(n - done, _BUFFER - self._pos)
            got = os.readv(fd, [self._view[self._pos : self._pos + want]])
            if got == 0:
                break
            self._pos += got
            done += got
        return done

    def copy_file(self, fd: int, n: int) -> int:
        """Copy ``n`` bytes of ``fd`` and the zero padding to the next block; returns the count read.

        A file that fits the current buffer (most of a layer) takes one ``readv``.
        """
        pad = -n % BLOCK
        pos = self._pos
        if pos + n + pad <= _BUFFER:
            got = os.readv(fd, [self._view[pos : pos + n]])
            if got == n:
                if pad:
                    self._view[pos + n : pos + n + pad] = _ZEROS[:pad]
                self._pos = pos + n + pad
                return n
            self._pos = pos + got
            got += self.copy_from_fd(fd, n - got)
        else:
            got = self.copy_from_fd(fd, n)
        if got == n:
            self.write(_ZEROS[:pad])
        return got

    def _submit(self, chunk: memoryview | bytes) -> None:
        self.size += len(chunk)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="layer-hash")
        self._pending[self._index] = self._pool.submit(self._consume, chunk)

    def flush(self) -> None:
        """Hand the filled buffer to the helper and switch to the next free one."""
        if not self._pos:
            return
        self._submit(self._view[: self._pos])
        self._index = (self._index + 1) % self._COUNT
        waiting = self._pending[self._index]
        if waiting is not None:
            waiting.result()
            self._pending[self._index] = None
        self._view = self._bufs[self._index]
        self._pos = 0

    def abort(self) -> None:
        """Stop the helper after a failure; the output is incomplete anyway."""
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def finish(self) -> None:
        """Flush, wait for the helper, and stop it; raises what the helper's write raised."""
        try:
            self.flush()
            for future in self._pending:
                if future is not None:
                    future.result()
        finally:
            if self._pool is not None:
                self._pool.shutdown()
                self._pool = None


def xattr_names(path: str | Path) -> list[str]:
    """The xattr names of ``path`` (not following symlinks); none where the fs has no xattrs."""
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError as err:
        if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM):
            return []
        raise



def read_xattrs(
    path: str | Path, names: list[str] | None = None, *, upper_dir: bool = False
) -> tuple[tuple[str, bytes], ...]:
    """All xattrs of ``path`` (not following symlinks), sorted, minus overlayfs bookkeeping.

    ``upper_dir`` also drops ``user.overlay.*``, which is bookkeeping only in an upper dir.
    """
    if names is None:
        names = xattr_names(path)
    if not names:
        return ()
    skip = whiteout.is_upper_dir_xattr if upper_dir else whiteout.is_overlay_xattr
    out = []
    for key in sorted(names):
        if skip(key):
            continue
        try:
            out.append((key, os.getxattr(path, key, follow_symlinks=False)))
        except OSError as err:
            if err.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM):
                raise
    return tuple(out)


_KINDS = {
    stat.S_IFREG: EntryType.FILE, stat.S_IFDIR: EntryType.DIR, stat.S_IFLNK: EntryType.SYMLINK,
    stat.S_IFCHR: EntryType.CHAR, stat.S_IFBLK: EntryType.BLOCK, stat.S_IFIFO: EntryType.FIFO,
}


@dataclass
class TarStreamWriter:
    """Writes tar entries to ``out`` while hashing them; ``close()`` returns the LayerStats.

    ``add`` takes a ready header and its content stream; ``add_path`` builds the
    header from a file on disk (with an optional StatOverride) and turns a second
    sighting of the same inode into a hardlink. Callers give entries in the order
    they want them in the tar; :func:`walk_tree` yields a tree in canonical order.
    """

    out: BinaryIO
    source_date_epoch: int | None = None
    _sink: _HashingSink = field(init=False)
    _inodes: dict[tuple[int, int], str] = field(init=False, default_factory=dict)
    _count: int = field(init=False, default=0)
    _content: int = field(init=False, default=0)
    _closed: LayerStats | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._sink = _HashingSink(self.out)

    def _clamp(self, mtime: int) -> int:
        if self.source_date_epoch is not None and mtime > self.source_date_epoch:
            return self.source_date_epoch
        return mtime

    def add(self, entry: TarEntry, content: BinaryIO | None = None) -> None:
        """Write ``entry``; a FILE entry's ``entry.size`` bytes come from ``content``."""
        entry = replace(entry, mtime=self._clamp(entry.mtime))
        self._sink.write(encode_header(entry))
        self._count += 1
        if entry.type is EntryType.SYMLINK:
            self._content += len(entry.linkname.encode("utf-8", "surrogateescape"))
        if entry.type is not EntryType.FILE or entry.size == 0:
            return
        self._content += entry.size
        remaining = entry.size
        if content is None:
            raise ImageError(f"no content given for layer file '{entry.name}'")
        while remaining:
            chunk = content.read(min(remaining, _BUFFER))
            if not chunk:
                raise ImageError(
                    f"content of layer file '{entry.name}' ended {remaining} bytes early"
                )
            self._sink.write(chunk)
            remaining -= len(chunk)
        self._sink.write(_ZEROS[: -entry.size % BLOCK])

    def add_path(
        self,
        name: str,
        source: str | Path,
        *,
        override: StatOverride | None = None,
        st: os.stat_result | None = None,
        xattrs: tuple[tuple[str, bytes], ...] | None = None,
    ) -> None:
        """Write the file, directory, link or device at ``source`` as ``name`` in the layer."""
        try:
            self._add_path(name, source, override, st, xattrs)
        except OSError as err:
            raise ImageError(
                f"cannot read '{source}' for layer entry '{name}': {err.strerror or err}"
            ) from err

    def _add_path(
        self,
        name: str,
        source: str | Path,
        override: StatOverride | None,
        st: os.stat_result | None,
        xattrs: tuple[tuple[str, bytes], ...] | None,
    ) -> None:
        # Once per file of every layer: kept to few calls (no TarEntry unless PAX is needed).
        if st is None:
            st = os.lstat(source)
        kind = _KINDS.get(stat.S_IFMT(st.st_mode))
        if kind is None:
            return  # sockets (and doors) have no place in a layer, as in tar
        if xattrs is None:
            xattrs = read_xattrs(source)
        mode = st.st_mode & 0o7777
        uid, gid, mtime = st.st_uid, st.st_gid, st.st_mtime_ns // 1_000_000_000
        if override is not None:
            uid = uid if override.uid is None else override.uid
            gid = gid if override.gid is None else override.gid
            mode = mode if override.mode is None else override.mode
            mtime = mtime if override.mtime is None else override.mtime
        epoch = self.source_date_epoch
        if epoch is not None and mtime > epoch:
            mtime = epoch
        self._count += 1
        if kind is not EntryType.DIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self._inodes.get(key)
            if first is not None:
                self._header(name, EntryType.HARDLINK, mode, uid, gid, 0, mtime, first, 0, 0, xattrs)
                return
            self._inodes[key] = name
        if kind is EntryType.FILE:
            size = st.st_size
            self._header(name, kind, mode, uid, gid, size, mtime, "", 0, 0, xattrs)
            self._content += size
            if size:
                fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    got = self._sink.copy_file(fd, size)
                finally:
                    os.close(fd)
                if got != size:
                    raise ImageError(
                        f"'{source}' shrank while it was written into the layer as '{name}'"
                    )
        elif kind is EntryType.SYMLINK:
            link = os.readlink(source)
            self._header(name, kind, mode, uid, gid, 0, mtime, link, 0, 0, xattrs)
            self._content += len(link.encode("utf-8", "surrogateescape"))
        elif kind is EntryType.CHAR or kind is EntryType.BLOCK:
            major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
            self._header(name, kind, mode, uid, gid, 0, mtime, "", major, minor, xattrs)
        else:
            self._header(name, kind, mode, uid, gid, 0, mtime, "", 0, 0, xattrs)

    def _header(
        self, name: str, kind: EntryType, mode: int, uid: int, gid: int, size: int, mtime: int,
        link: str, devmajor: int, devminor: int, xattrs: tuple[tuple[str, bytes], ...],
    ) -> None:
        block = _plain_header(
            name, kind, mode, uid, gid, size, mtime, link, devmajor, devminor, xattrs
        )
        if block is None:
            block = encode_header(TarEntry(
                name, kind, mode, uid, gid, size, mtime, link, devmajor, devminor, xattrs
            ))
        self._sink.write(block)

    def close(self) -> LayerStats:
        """Write the end-of-archive blocks and flush; idempotent."""
        if self._closed is None:
            self._sink.write(END_OF_ARCHIVE)
            self._sink.finish()
            self._closed = LayerStats(
                Digest.from_hasher(self._sink.hasher), self._sink.size, self._count,
                self._content,
            )
        return self._closed

    def __enter__(self) -> TarStreamWriter:
        return self

    def abort(self) -> None:
        """Give up on a half-written stream (after an error): stops the hashing thread."""
        self._sink.abort()

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self.abort()


def _name_key(entry: os.DirEntry[str]) -> bytes:
    return os.fsencode(entry.name)


_BY_NAME = attrgetter("name")


def walk_tree(
    root: Path | str, paths: Iterable[str] | None = None
) -> Iterator[tuple[str, str, os.stat_result]]:
    """Yield ``(relative name, absolute path, lstat)`` for everything under ``root`` in layer order.

    With ``paths`` (relative to root), only those paths, everything below the
    directories among them, and their parent directories are yielded.
    """
    selected: set[str] | None = None
    ancestors: set[str] = set()
    if paths is not None:
        selected = set()
        for p in paths:
            parts = [c for c in p.strip("/").split("/") if c not in ("", ".")]
            if ".." in parts:
                raise ImageError(f"path '{p}' leaves the layer root")
            if not parts:
                selected = None  # the root itself: everything
                break
            selected.add("/".join(parts))
            for i in range(1, len(parts)):
                ancestors.add("/".join(parts[:i]))
    if selected is None:
        yield from _walk(os.fspath(root), "", None, ancestors, True)
        return
    missing = set(selected)
    for item in _walk(os.fspath(root), "", selected, ancestors, False):
        missing.discard(item[0])
        yield item
    if missing:
        raise ImageError(f"'{sorted(missing)[0]}' does not exist under '{root}'")


def _walk(
    dirpath: str, prefix: str, selected: set[str] | None, ancestors: set[str], covered: bool
) -> Iterator[tuple[str, str, os.stat_result]]:
    with os.scandir(dirpath) as it:
        entries = list(it)
    names = "".join([e.name for e in entries])
    # All-ASCII names (nearly every directory) sort the same as str and as bytes: no encoding.
    entries.sort(key=_BY_NAME if names.isascii() else _name_key)
    for e in entries:
        rel = prefix + e.name
        inside = covered or (selected is not None and rel in selected)
        if not inside and rel not in ancestors:
            continue
        st = e.stat(follow_symlinks=False)
        yield rel, e.path, st
        if stat.S_ISDIR(st.st_mode):
            yield from _walk(e.path, rel + "/", selected, ancestors, inside)


def write_entries(
    entries: Iterable[LayerSource], out: BinaryIO, *, source_date_epoch: int | None = None
) -> LayerStats:
    """Write an explicit list of files (in the order given) as a layer tar; returns its DiffID.

    This is how COPY/ADD write a layer straight from the build context: with
    ``--chown``/``--chmod`` as StatOverrides, no temporary copy is made.
    """
    with TarStreamWriter(out, source_date_epoch=source_date_epoch) as writer:
        for item in entries:
            writer.add_path(item.name, item.source, override=item.override)
    return writer.close()


def write_layer(
    root: Path,
    out: BinaryIO,
    *,
    source_date_epoch: int | None = None,
    overlay_upper: bool = False,
    paths: Iterable[str] | None = None,
    prefix: str = "",
) -> LayerStats:
    """Write the tree at ``root`` as an uncompressed layer tar to ``out``; returns its DiffID.

    ``overlay_upper`` reads ``root`` as an overlayfs upper dir: 0/0 character
    devices become ``.wh.`` whiteouts and opaque directories get a
    ``.wh..wh..opq`` entry first inside them. ``prefix`` puts the tree under a
    directory of the layer (whose entry is root itself).
    """
    with TarStreamWriter(out, source_date_epoch=source_date_epoch) as writer:
        try:
            _write_tree(writer, root, overlay_upper, paths, prefix)
        except OSError as err:
            where = err.filename or root
            raise ImageError(f"cannot read '{where}' for the layer: {err.strerror or err}") from err
    return writer.close()


def _write_tree(
    writer: TarStreamWriter, root: Path, overlay_upper: bool, paths: Iterable[str] | None,
    prefix: str,
) -> None:
    prefix = prefix.strip("/")
    base = prefix + "/" if prefix else ""
    if prefix:
        writer.add_path(prefix, root)
    for rel, path, st in walk_tree(root, paths):
        name = base + rel
        if not overlay_upper:
            writer.add_path(name, path, st=st)
            continue
        if whiteout.is_overlay_whiteout(st):
            head, _, tail = name.rpartition("/")
            marker = (head + "/" if head else "") + whiteout.whiteout_name(tail)
            writer.add(TarEntry(
                marker, EntryType.FILE, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, 0,
                st.st_mtime_ns // 1_000_000_000,
            ))
            continue
        names = xattr_names(path)
        opaque = _check_overlay_xattrs(path, st, names) if names else False
        xattrs = read_xattrs(path, [n for n in names if n in STEP_LAYER_XATTRS]) if names else ()
        writer.add_path(name, path, st=st, xattrs=xattrs)
        if opaque:
            writer.add(TarEntry(
                name + "/" + whiteout.OPAQUE_MARKER, EntryType.FILE, stat.S_IMODE(st.st_mode),
                st.st_uid, st.st_gid, 0, st.st_mtime_ns // 1_000_000_000,
            ))


def _check_overlay_xattrs(path: str, st: os.stat_result, names: list[str]) -> bool:
    """Whether an upper-dir directory is opaque; refuse features a plain tree cannot express."""
    for key in whiteout.OVERLAY_UNSUPPORTED_XATTRS:
        if key in names:
            raise ImageError(
                f"overlay upper dir entry '{path}' has {key}: mount the build overlay with "
                "redirect_dir=off,metacopy=off"
            )
    if not stat.S_ISDIR(st.st_mode):
        return False
    for key in (whiteout.OVERLAY_OPAQUE_XATTR, whiteout.USER_OVERLAY_OPAQUE_XATTR):
        if key in names and os.getxattr(path, key, follow_symlinks=False) == b"y":
            return True
    return False
