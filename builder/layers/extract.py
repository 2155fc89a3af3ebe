"""Reading layer tars, and extracting them so that nothing lands outside the target.

:class:`TarReader` parses the tar stream itself (ustar, GNU long names, PAX,
base-256 numbers) with hard limits on metadata sizes, and clear errors for
corrupt or truncated streams. :func:`extract_layer` applies a layer to a
directory the way the OCI image spec says, resolving every path one component
at a time with ``O_NOFOLLOW`` directory descriptors: ``..`` is refused, a
leading ``/`` is dropped (the layer root is ``/``), a symlink met on the way is
followed only while it stays inside the target and refused otherwise, and an
existing entry is always unlinked before a new one is created, never written
through. Errors leave only partial content inside ``target``: callers extract
into a temporary directory and rename it.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote_to_bytes

from builder.errors import ImageError, UnsafeLayerError
from builder.fileio import MAX_SYMLINKS, BeneathError, Directory, Reader, resolve_dir, write_all
from builder.image.mediatypes import Compression
from builder.layers import whiteout
from builder.layers.compression import detect, open_decompressed
from builder.layers.tarwriter import BLOCK, EntryType, TarEntry

_CHUNK = 1 << 20
_FS_ENCODING = sys.getfilesystemencoding()
# PAX and GNU long-name headers are read into memory: bound them.
MAX_META_SIZE = 8 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

_TYPES = {
    b"0": EntryType.FILE, b"\0": EntryType.FILE, b"7": EntryType.FILE,
    b"1": EntryType.HARDLINK, b"2": EntryType.SYMLINK, b"3": EntryType.CHAR,
    b"4": EntryType.BLOCK, b"5": EntryType.DIR, b"6": EntryType.FIFO,
}
_UNSUPPORTED = {
    b"S": "GNU sparse file", b"M": "GNU multi-volume continuation", b"V": "GNU volume label",
    b"D": "GNU dump directory", b"N": "GNU old long name",
}


class _Corrupt(ImageError):
    """Internal shorthand: a tar stream that cannot be read, with the offset."""


class _Missing(UnsafeLayerError):
    """A path a layer entry refers to (a link target, a parent) is not in the root."""


def _num(field_bytes: bytes, what: str, offset: int) -> int:
    if field_bytes[:1] >= b"\x80":
        value = int.from_bytes(field_bytes[1:], "big")
        if field_bytes[0] == 0xFF:
            value -= 1 << (8 * (len(field_bytes) - 1))
        return value
    try:
        return int(field_bytes.strip(b" \0") or b"0", 8)
    except ValueError:
        pass
    text = field_bytes.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text or b"0", 8)
    except ValueError:
        raise _Corrupt(
            f"corrupt layer tar: bad {what} field {text!r} in the header at byte {offset}"
        ) from None


def _cstr(raw: bytes) -> bytes:
    return raw.split(b"\0", 1)[0]


def _parse_pax(data: bytes, offset: int) -> dict[str, bytes]:
    records: dict[str, bytes] = {}
    sparse_map: list[bytes] = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            length = 0
        end = pos + length
        if space < 0 or length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise _Corrupt(f"corrupt layer tar: bad PAX record in the header at byte {offset}")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise _Corrupt(f"corrupt layer tar: bad PAX record in the header at byte {offset}")
        name = key.decode("utf-8", "surrogateescape")
        if name in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
            # GNU sparse 0.0 repeats these two in order: collected into a 0.1-style map, as Go does.
            sparse_map.append(value)
        records[name] = value
        pos = end
    if sparse_map:
        records["GNU.sparse.map"] = b",".join(sparse_map)
    return records


def _sparse_version(pax: dict[str, bytes]) -> str | None:
    """Which PAX GNU sparse format an entry uses, if any (Go's readGNUSparsePAXHeaders)."""
    major, minor = pax.get("GNU.sparse.major"), pax.get("GNU.sparse.minor")
    if (major, minor) in ((b"0", b"0"), (b"0", b"1")):
        return "0.1"
    if (major, minor) == (b"1", b"0"):
        return "1.0"
    if major is not None or minor is not None:
        return None  # an unknown version: the entry is read as the plain file it claims to be
    return "0.1" if pax.get("GNU.sparse.map") else None


def _sparse_map(numbers: list[bytes], real_size: int, stored: int, name: str, offset: int) -> list[tuple[int, int]]:
    """GNU sparse (offset, length) pairs, checked: in order, inside the file, adding up to what is stored."""
    bad = _Corrupt(f"corrupt layer tar: bad sparse map for '{name}' in the header at byte {offset}")
    if len(numbers) % 2 or not all(n.isdigit() for n in numbers):
        raise bad
    values = [int(n) for n in numbers]
    pairs = list(zip(values[0::2], values[1::2], strict=True))
    end = 0
    for start, length in pairs:
        if start < end or start + length > real_size:
            raise bad
        end = start + length
    if sum(length for _, length in pairs) != stored:
        raise bad
    return pairs


def _pax_int(records: dict[str, bytes], key: str, offset: int) -> int | None:
    raw = records.get(key)
    if raw is None:
        return None
    try:
        return int(raw.split(b".", 1)[0]) if key == "mtime" else int(raw)
    except ValueError:
        raise _Corrupt(f"corrupt layer tar: bad PAX {key} {raw!r} at byte {offset}") from None


class TarReader:
    """Iterates over the entries of an uncompressed tar stream.

    After each entry is yielded, its content may be consumed with
    :meth:`copy_to_fd` or :meth:`read_data`; whatever is left is skipped before
    the next header. Iteration stops at the end-of-archive blocks (or at a
    clean end of stream between entries, as Go's archive/tar allows).
    """

    def __init__(self, stream: Reader) -> None:
        self._stream = stream
        self._buf = b""
        self._pos = 0
        self.offset = 0  # stream offset of the next unread byte
        self._remaining = 0  # unread content bytes of the current entry
        self._padding = 0
        self._current = ""
        self._sparse: list[tuple[int, int]] | None = None  # (offset, length) of the stored data
        self._real_size = 0  # a sparse file's size, holes included

    def _refill(self) -> bool:
        chunk = self._stream.read(_CHUNK)
        if not chunk:
            return False
        self._buf = chunk if self._pos >= len(self._buf) else self._buf[self._pos :] + chunk
        self._pos = 0
        return True

    def _take(self, n: int) -> bytes:
        while len(self._buf) - self._pos < n:
            if not self._refill():
                got = len(self._buf) - self._pos
                self._pos = len(self._buf)
                self.offset += got
                return self._buf[len(self._buf) - got :] if got else b""
        out = self._buf[self._pos : self._pos + n]
        self._pos += n
        self.offset += n
        return out

    def _skip(self, n: int) -> int:
        skipped = 0
        while skipped < n:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill():
                    break
                continue
            k = min(avail, n - skipped)
            self._pos += k
            skipped += k
        self.offset += skipped
        return skipped

    def _truncated(self, what: str) -> _Corrupt:
        return _Corrupt(f"layer tar is truncated: stream ended at byte {self.offset} inside {what}")

    def _meta(self, size: int, kind: str, offset: int) -> bytes:
        if size < 0 or size > MAX_META_SIZE:
            raise _Corrupt(
                f"corrupt layer tar: {kind} header at byte {offset} claims {size} bytes "
                f"(limit {MAX_META_SIZE})"
            )
        data = self._take(size)
        if len(data) != size:
            raise self._truncated(f"the {kind} header at byte {offset}")
        pad = -size % BLOCK
        if self._skip(pad) != pad:
            raise self._truncated(f"the {kind} header at byte {offset}")
        return data

    def __iter__(self) -> Iterator[TarEntry]:
        pax: dict[str, bytes] = {}
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            self.skip_data()
            offset = self.offset
            block = self._take(BLOCK)
            if not block:
                return
            if len(block) < BLOCK:
                raise self._truncated(f"the header at byte {offset}")
            if block.count(0) == BLOCK:
                # End of archive. As Go's archive/tar: the next block must be zeros too (or
                # missing); anything else is an error, so no reader sees entries another skips.
                second = self._take(BLOCK)
                if second and second.count(0) != len(second):
                    raise _Corrupt(
                        f"corrupt layer tar: data after the end-of-archive block at byte {offset}"
                    )
                return
            stored = _num(block[148:156], "checksum", offset)
            unsigned = sum(block) - sum(block[148:156]) + 8 * 32
            # Some old writers summed signed chars; accept that spelling as GNU tar does.
            if stored != unsigned and stored != unsigned - 256 * sum(
                1 for b in block[:148] + block[156:] if b >= 0x80
            ):
                raise _Corrupt(
                    f"corrupt layer tar: header checksum mismatch at byte {offset} (not a tar, "
                    "or damaged)"
                )
            typeflag = block[156:157]
            size = _num(block[124:136], "size", offset)
            if typeflag in (b"x", b"g", b"L", b"K"):
                kind = {b"x": "PAX", b"g": "PAX global", b"L": "GNU long name", b"K": "GNU long link"}
                data = self._meta(size, kind[typeflag], offset)
                if typeflag == b"x":
                    pax.update(_parse_pax(data, offset))
                elif typeflag == b"L":
                    long_name = _cstr(data)
                elif typeflag == b"K":
                    long_link = _cstr(data)
                continue
            name_raw = _cstr(block[0:100])
            magic = block[257:263]
            if magic == b"ustar\0":
                prefix = _cstr(block[345:500])
                if prefix:
                    name_raw = prefix + b"/" + name_raw
            if long_name is not None:
                name_raw = long_name
            link_raw = long_link if long_link is not None else _cstr(block[157:257])
            if "path" in pax:
                name_raw = pax["path"]
            if "linkpath" in pax:
                link_raw = pax["linkpath"]
            name = name_raw.decode(_FS_ENCODING, "surrogateescape")
            kind_type = _TYPES.get(typeflag)
            if kind_type is None:
                what = _UNSUPPORTED.get(typeflag)
                if what is None:
                    raise ImageError(f"layer entry '{name}' has the unknown tar type {typeflag!r}")
                raise ImageError(f"layer entry '{name}' is a {what}, which pybuild does not support")
            uid = gid = mtime = None
            xattrs: tuple[tuple[str, bytes], ...] = ()
            sparse_version = None
            if pax:
                pax_size = _pax_int(pax, "size", offset)
                if pax_size is not None:
                    size = pax_size
                sparse_version = _sparse_version(pax)
                if sparse_version is not None and "GNU.sparse.name" in pax:
                    name = pax["GNU.sparse.name"].decode(_FS_ENCODING, "surrogateescape")
                uid = _pax_int(pax, "uid", offset)
                gid = _pax_int(pax, "gid", offset)
                mtime = _pax_int(pax, "mtime", offset)
                xattrs = _xattrs_from_pax(pax)
            if size < 0:
                raise _Corrupt(f"corrupt layer tar: negative size for '{name}' at byte {offset}")
            if kind_type is EntryType.FILE and typeflag != b"7" and name.endswith("/"):
                kind_type = EntryType.DIR  # pre-POSIX tars mark directories by the slash
            device = kind_type in (EntryType.CHAR, EntryType.BLOCK) and magic.startswith(b"ustar")
            entry = TarEntry(
                name=name.rstrip("/") if len(name) > 1 else name,
                type=kind_type,
                mode=_num(block[100:108], "mode", offset) & 0o7777,
                uid=_num(block[108:116], "uid", offset) if uid is None else uid,
                gid=_num(block[116:124], "gid", offset) if gid is None else gid,
                size=size if kind_type is EntryType.FILE else 0,
                mtime=_num(block[136:148], "mtime", offset) if mtime is None else mtime,
                linkname=link_raw.decode(_FS_ENCODING, "surrogateescape") if link_raw else "",
                devmajor=_num(block[329:337], "devmajor", offset) if device else 0,
                devminor=_num(block[337:345], "devminor", offset) if device else 0,
                xattrs=xattrs,
            )
            # Hardlinks and others may still carry a size; its bytes are skipped.
            self._remaining = size
            self._padding = -size % BLOCK
            self._current = entry.name
            self._sparse = None
            if sparse_version is not None and kind_type is EntryType.FILE:
                entry = self._open_sparse(entry, pax, sparse_version, offset)
            pax = {}
            long_name = long_link = None
            yield entry

    def _open_sparse(self, entry: TarEntry, pax: dict[str, bytes], version: str, offset: int) -> TarEntry:
        """A GNU sparse file in PAX form (0.0, 0.1, 1.0), as GNU tar --sparse --format=posix writes
        it and Go's archive/tar (docker's) reads it: the stored bytes are the data segments."""
        real = _pax_int(pax, "GNU.sparse.size", offset)
        if real is None:
            real = _pax_int(pax, "GNU.sparse.realsize", offset)
        if real is None or real < 0:
            raise _Corrupt(f"corrupt layer tar: sparse file '{entry.name}' without its size at byte {offset}")
        if version == "1.0":
            # The map leads the data: decimal numbers, one a line (the count, then the pairs), in blocks.
            bad = _Corrupt(f"corrupt layer tar: bad sparse map for '{entry.name}' at byte {offset}")
            text = b""
            while True:
                if self._remaining < BLOCK or len(text) >= MAX_META_SIZE:
                    raise bad
                block = self._take(BLOCK)
                if len(block) != BLOCK:
                    raise self._truncated(f"the sparse map of '{entry.name}'")
                self._remaining -= BLOCK
                text += block
                lines = text.split(b"\n")
                if not lines[0].isdigit():
                    raise bad
                count = int(lines[0])
                if len(lines) - 1 >= 1 + 2 * count:
                    numbers = lines[1 : 1 + 2 * count]
                    break
        else:
            raw = pax.get("GNU.sparse.map", b"")
            numbers = raw.split(b",") if raw else []
            blocks = pax.get("GNU.sparse.numblocks", b"")
            if not blocks.isdigit() or len(numbers) != 2 * int(blocks):  # as Go checks it
                raise _Corrupt(f"corrupt layer tar: bad sparse map for '{entry.name}' at byte {offset}")
        self._sparse = _sparse_map(numbers, real, self._remaining, entry.name, offset)
        self._real_size = real
        return replace(entry, size=real)

    def copy_to_fd(self, fd: int) -> int:
        """Write the current entry's content to ``fd``; returns the byte count (a sparse
        file's size, its holes left as holes)."""
        if self._sparse is not None:
            segments, self._sparse = self._sparse, None
            for start, length in segments:
                os.lseek(fd, start, os.SEEK_SET)
                self._copy(fd, length)
            os.ftruncate(fd, self._real_size)
            return self._real_size
        return self._copy(fd, self._remaining)

    def _copy(self, fd: int, count: int) -> int:
        done = 0
        while done < count:
            avail = len(self._buf) - self._pos
            if not avail:
                if not self._refill():
                    raise self._truncated(f"the content of '{self._current}'")
                continue
            k = min(avail, count - done)
            write_all(fd, memoryview(self._buf)[self._pos : self._pos + k])
            self._pos += k
            self.offset += k
            self._remaining -= k
            done += k
        return done

    def read_data(self) -> bytes:
        """The current entry's content, for small entries only."""
        segments, self._sparse = self._sparse, None
        data = self._take(self._remaining)
        if len(data) != self._remaining:
            raise self._truncated(f"the content of '{self._current}'")
        self._remaining = 0
        if segments is None:
            return data
        out = bytearray(self._real_size)
        pos = 0
        for start, length in segments:
            out[start : start + length] = data[pos : pos + length]
            pos += length
        return bytes(out)

    def skip_data(self) -> None:
        """Skip what is left of the current entry's content and padding."""
        want = self._remaining + self._padding
        if want and self._skip(want) != want:
            raise self._truncated(f"the content of '{self._current}'")
        self._remaining = self._padding = 0

    def drain(self) -> None:
        """Read the stream to its end, so that a verifying reader checks the digest."""
        self._pos = len(self._buf)
        while self._stream.read(_CHUNK):
            pass


def _xattrs_from_pax(pax: dict[str, bytes]) -> tuple[tuple[str, bytes], ...]:
    if not pax:
        return ()
    out: dict[str, bytes] = {}
    for key, value in pax.items():
        if key.startswith("SCHILY.xattr."):
            out[key[13:]] = value
        elif key.startswith("LIBARCHIVE.xattr."):
            name = unquote_to_bytes(key[17:]).decode("utf-8", "surrogateescape")
            try:
                out[name] = base64.b64decode(value + b"=" * (-len(value) % 4))
            except ValueError:
                continue
    return tuple(sorted(out.items()))


def open_layer_stream(stream: BinaryIO, compression: Compression | None = None) -> BinaryIO:
    """The uncompressed tar of a layer blob; ``compression`` None means: detect it."""
    if compression is not None:
        return open_decompressed(stream, compression)
    head = stream.read(4)
    return open_decompressed(_Prefixed(head, stream), detect(head))  # type: ignore[arg-type]  # a read-only wrapper; the decompressors only read it


class CheckedReader:
    """A stream that calls ``check`` before each read: an extraction a cancelled build no longer
    needs stops there (``check`` raises), wherever the stream comes from."""

    def __init__(self, raw: BinaryIO, check: Callable[[], None]) -> None:
        self._raw = raw
        self._check = check

    def read(self, n: int = -1) -> bytes:
        self._check()
        return self._raw.read(n)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        self._check()
        return self._raw.readinto(buffer)  # type: ignore[attr-defined]  # BinaryIO has no readinto; the streams given have

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()


class _Prefixed:
    """A stream with some already-read bytes put back in front."""

    def __init__(self, head: bytes, stream: BinaryIO) -> None:
        self._head = head
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if self._head:
            if n < 0:
                data, self._head = self._head + self._stream.read(), b""
                return data
            data, self._head = self._head[:n], self._head[n:]
            if len(data) < n:
                data += self._stream.read(n - len(data))
            return data
        return self._stream.read(n)

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._stream.close()

    @property
    def closed(self) -> bool:
        return False


@dataclass
class ExtractStats:
    """What an extraction did, by kind of entry."""

    entries: int = 0
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    hardlinks: int = 0
    devices: int = 0
    fifos: int = 0
    explicit_dirs: set[tuple[str, ...]] = field(default_factory=set)  # directories with entries of their own
    whiteouts: int = 0
    opaques: int = 0
    skipped: int = 0  # devices without root, reserved .wh..wh. names
    bytes: int = 0
    link_bytes: int = 0  # symlink targets: with ``bytes``, what docker counts as a layer's size
    skipped_names: list[str] = field(default_factory=list)


def _split(name: str, what: str, entry: str) -> list[str]:
    """Components of a layer path; refuses '..' and NUL, drops a leading '/' and '.'."""
    if "\0" in name:
        raise UnsafeLayerError(f"layer entry '{entry}' has a NUL byte in its {what}")
    parts = [c for c in name.split("/") if c and c != "."]
    if ".." in parts:
        raise UnsafeLayerError(
            f"layer entry '{entry}' has a '..' in its {what} '{name}': it would leave the "
            "extraction root; refusing the layer"
        )
    return parts


# Values the kernel can take: 32-bit ids (-1 means "unchanged"), 64-bit nanosecond times,
# 12-bit device majors and 20-bit minors.
_MAX_ID = 2**32 - 2
_MAX_MTIME = (2**63 - 1) // 1_000_000_000


def _check_numbers(e: TarEntry) -> None:
    problem = None
    if not (0 <= e.uid <= _MAX_ID and 0 <= e.gid <= _MAX_ID):
        problem = f"owner {e.uid}:{e.gid}"
    elif not -_MAX_MTIME <= e.mtime <= _MAX_MTIME:
        problem = f"mtime {e.mtime}"
    elif not (0 <= e.devmajor < 2**12 and 0 <= e.devminor < 2**20):
        problem = f"device number {e.devmajor}:{e.devminor}"
    if problem:
        raise ImageError(f"corrupt layer tar: entry '{e.name}' has an impossible {problem}")


class _Extractor:
    """One extraction: owns the root descriptor and a cache of resolved parent directories."""

    def __init__(
        self, target: Path | Directory, *, apply_whiteouts: bool, overlay_whiteouts: bool, same_owner: bool,
        chroot_symlinks: bool = False, outside_links: list[tuple[str, str]] | None = None,
    ) -> None:
        self.outside_links = outside_links
        self.root_fd = os.dup(target.fd) if isinstance(target, Directory) else os.open(target, _DIR_FLAGS)
        self.chroot_symlinks = chroot_symlinks
        self.apply_whiteouts = apply_whiteouts
        self.overlay_whiteouts = overlay_whiteouts
        self.is_root = os.geteuid() == 0
        self.same_owner = same_owner
        self.dirs: dict[tuple[str, ...], TarEntry] = {}
        self.written: set[str] = set()  # "a/b" paths this layer created, for whiteouts
        self.cache: dict[tuple[str, ...], int] = {}
        self.retired: list[int] = []  # dropped from the cache, maybe still in use this entry
        self.stats = ExtractStats()

    def close(self) -> None:
        self._forget()
        self._close_retired()
        os.close(self.root_fd)

    def _forget(self) -> None:
        """Drop every cached resolution (after a removal they may be stale); close them later."""
        self.retired.extend(self.cache.values())
        self.cache.clear()

    def _close_retired(self) -> None:
        for fd in self.retired:
            os.close(fd)
        self.retired.clear()

    # -- path resolution -------------------------------------------------------------------

    def parent_fd(self, parts: tuple[str, ...], entry: str, *, create: bool) -> int:
        """A descriptor of the directory ``parts`` inside the root (cached; do not close)."""
        fd = self.cache.get(parts)
        if fd is not None:
            return fd
        fd = self._resolve(parts, entry, create=create)
        self.cache[parts] = fd
        return fd

    def _resolve(self, parts: tuple[str, ...], entry: str, *, create: bool) -> int:
        def created(fd: int, where: str) -> None:
            self.written.add(where)
            os.fchmod(fd, 0o755)  # whatever the umask: parents a layer implies are 0755

        try:
            return resolve_dir(self.root_fd, parts, follow_links=True, chroot=self.chroot_symlinks,
                               create=create, created=created)
        except BeneathError as err:
            if err.kind == "missing":
                raise _Missing(
                    f"layer entry '{entry}' refers to '{'/'.join(parts)}', but "
                    f"'{err.where}' does not exist in the extraction root"
                ) from None
            if err.kind == "notdir":
                raise ImageError(f"cannot extract layer entry '{entry}': '{err.where}' is not a directory") from None
            if err.kind == "loop":
                raise UnsafeLayerError(
                    f"layer entry '{entry}' goes through more than {MAX_SYMLINKS} "
                    "symlinks (a loop?); refusing the layer"
                ) from None
            raise UnsafeLayerError(
                f"layer entry '{entry}' goes through the symlink {err.via}, which leads "
                "outside the extraction root; refusing the layer"
            ) from None

    # -- entries -----------------------------------------------------------------------------

    def remove(self, parent: int, base: str) -> None:
        """Remove ``base`` in ``parent`` without following anything."""
        try:
            st = os.lstat(base, dir_fd=parent)
        except FileNotFoundError:
            return
        self._forget()
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(base, dir_fd=parent)
        else:
            os.unlink(base, dir_fd=parent)

    def entry(self, e: TarEntry, reader: TarReader) -> None:
        if self.retired or len(self.cache) > 256:
            self._forget()
            self._close_retired()
        parts = tuple(_split(e.name, "name", e.name))
        _check_numbers(e)
        self.stats.entries += 1
        if not parts:
            return  # the root itself ("./"): its metadata belongs to the target
        base = parts[-1]
        parent_parts = parts[:-1]
        if base.startswith(whiteout.WHITEOUT_PREFIX) and (self.apply_whiteouts or self.overlay_whiteouts):
            self.whiteout(e, parent_parts, base)
            return
        parent = self.parent_fd(parent_parts, e.name, create=True)
        self.written.add("/".join(parts))
        kind = e.type
        if kind is EntryType.DIR:
            try:
                st = os.lstat(base, dir_fd=parent)
                if not stat.S_ISDIR(st.st_mode):
                    self.remove(parent, base)
                    os.mkdir(base, 0o700, dir_fd=parent)
            except FileNotFoundError:
                os.mkdir(base, 0o700, dir_fd=parent)
            self.dirs[parts] = e
            self.stats.dirs += 1
            return
        if kind is EntryType.FILE:
            try:
                fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent)
            except FileExistsError:  # never write through what is there: replace it
                self.remove(parent, base)
                fd = os.open(base, _FILE_FLAGS, 0o600, dir_fd=parent)
            try:
                self.stats.bytes += reader.copy_to_fd(fd)
                self._metadata_fd(fd, e)
            finally:
                os.close(fd)
            self.stats.files += 1
            return
        self.remove(parent, base)
        if kind is EntryType.HARDLINK:
            self.hardlink(e, parent, base)
            return
        if kind is EntryType.SYMLINK:
            os.symlink(e.linkname, base, dir_fd=parent)
            self.stats.symlinks += 1
            self.stats.link_bytes += len(e.linkname.encode("utf-8", "surrogateescape"))
        elif kind in (EntryType.CHAR, EntryType.BLOCK):
            if not self.is_root:
                self.stats.skipped += 1
                self.stats.skipped_names.append(e.name)
                return
            flag = stat.S_IFCHR if kind is EntryType.CHAR else stat.S_IFBLK
            os.mknod(base, flag | 0o600, os.makedev(e.devmajor, e.devminor), dir_fd=parent)
            self.stats.devices += 1
        elif kind is EntryType.FIFO:
            os.mkfifo(base, 0o600, dir_fd=parent)
            self.stats.fifos += 1
        self._metadata_path(parent, base, e)

    def hardlink(self, e: TarEntry, parent: int, base: str) -> None:
        target = _split(e.linkname, "link target", e.name)
        if not target:
            raise UnsafeLayerError(f"layer entry '{e.name}' is a hardlink to the root directory")
        try:
            src_parent = self.parent_fd(tuple(target[:-1]), e.name, create=False)
            st = os.lstat(target[-1], dir_fd=src_parent)
        except FileNotFoundError:
            if self.outside_links is not None:  # the caller links it in the destination itself
                self.outside_links.append((e.name, e.linkname))
                return
            raise UnsafeLayerError(
                f"layer entry '{e.name}' is a hardlink to '{e.linkname}', which does not exist "
                "in the extraction root"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeLayerError(f"layer entry '{e.name}' is a hardlink to a directory '{e.linkname}'")
        os.link(target[-1], base, src_dir_fd=src_parent, dst_dir_fd=parent, follow_symlinks=False)
        self.stats.hardlinks += 1

    def whiteout(self, e: TarEntry, parent_parts: tuple[str, ...], base: str) -> None:
        if base == whiteout.OPAQUE_MARKER:
            parent = self.parent_fd(parent_parts, e.name, create=True)
            self.stats.opaques += 1
            if self.overlay_whiteouts:
                whiteout.set_overlay_opaque(parent)
                return
            self._empty_lower(parent, parent_parts)
            return
        victim = whiteout.whiteout_target(base)
        if victim is None:
            self.stats.skipped += 1  # reserved .wh..wh. names are not files
            self.stats.skipped_names.append(e.name)
            return
        if victim in ("", ".", ".."):
            raise UnsafeLayerError(
                f"layer entry '{e.name}' is a whiteout of '{victim}', which is not a file name; "
                "refusing the layer"
            )
        self.stats.whiteouts += 1
        try:
            # Applying: a missing parent means nothing to delete (and none to create).
            parent = self.parent_fd(parent_parts, e.name, create=self.overlay_whiteouts)
        except _Missing:
            return
        if self.overlay_whiteouts:
            self.remove(parent, victim)
            whiteout.make_overlay_whiteout(victim, parent)
            self.written.add("/".join((*parent_parts, victim)))
            return
        if "/".join((*parent_parts, victim)) in self.written:
            return  # a whiteout only hides lower layers' files, never its own layer's
        self.remove(parent, victim)

    def _empty_lower(self, dir_fd: int, parts: tuple[str, ...]) -> None:
        """Delete what lower layers put under a directory, keeping this layer's entries."""
        for name in os.listdir(dir_fd):
            child = (*parts, name)
            if "/".join(child) not in self.written:
                self.remove(dir_fd, name)
                continue
            st = os.lstat(name, dir_fd=dir_fd)
            if stat.S_ISDIR(st.st_mode):
                fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
                try:
                    self._empty_lower(fd, child)
                finally:
                    os.close(fd)

    # -- metadata ------------------------------------------------------------------------------

    def _set_xattrs(self, target: int | str, e: TarEntry, dir_fd: int | None = None) -> None:
        for key, value in e.xattrs:
            if whiteout.is_overlay_xattr(key):
                continue  # a layer must not steer overlayfs (redirects, opaque, metacopy)
            try:
                if dir_fd is None:
                    os.setxattr(target, key, value)
                else:
                    assert isinstance(target, str)  # a name in dir_fd
                    # No *xattrat syscalls: go through /proc so the path is not re-resolved.
                    fd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
                    try:
                        os.setxattr(f"/proc/self/fd/{fd}", key, value)
                    finally:
                        os.close(fd)
            except OSError as err:
                if err.errno in (errno.ENOTSUP, errno.EOPNOTSUPP) or (
                    err.errno == errno.EPERM and (not self.is_root or dir_fd is not None)
                ):
                    continue
                raise

    def _metadata_fd(self, fd: int, e: TarEntry) -> None:
        # chown clears setuid bits and file capabilities: owner, then mode, then xattrs.
        if self.same_owner:
            try:
                os.fchown(fd, e.uid, e.gid)
            except PermissionError:
                if self.is_root:
                    raise
        os.fchmod(fd, e.mode)
        if e.xattrs:
            self._set_xattrs(fd, e)
        os.utime(fd, ns=(e.mtime * 1_000_000_000, e.mtime * 1_000_000_000))

    def _metadata_path(self, parent: int, base: str, e: TarEntry) -> None:
        if self.same_owner:
            try:
                os.chown(base, e.uid, e.gid, dir_fd=parent, follow_symlinks=False)
            except PermissionError:
                if self.is_root:
                    raise
        if e.type is not EntryType.SYMLINK:
            os.chmod(base, e.mode, dir_fd=parent, follow_symlinks=False)
        if e.xattrs:
            self._set_xattrs(base, e, dir_fd=parent)
        mtime = e.mtime * 1_000_000_000
        os.utime(base, ns=(mtime, mtime), dir_fd=parent, follow_symlinks=False)

    def finish(self) -> None:
        """Directory metadata last, deepest first, so children do not disturb modes or mtimes."""
        self._forget()
        self._close_retired()
        for parts in sorted(self.dirs, key=len, reverse=True):
            e = self.dirs[parts]
            try:
                parent = self._resolve(parts[:-1], e.name, create=False)
            except ImageError:
                continue  # deleted or replaced later in the same layer
            try:
                fd = os.open(parts[-1], _DIR_FLAGS, dir_fd=parent)
            except OSError:
                continue
            finally:
                os.close(parent)
            try:
                self._metadata_fd(fd, e)
            finally:
                os.close(fd)


def extract_layer(
    stream: BinaryIO,
    target: Path | Directory,
    *,
    apply_whiteouts: bool = True,
    overlay_whiteouts: bool = False,
    same_owner: bool = True,
    chroot_symlinks: bool = False,
    outside_links: list[tuple[str, str]] | None = None,
    check: Callable[[], None] | None = None,
) -> ExtractStats:
    """Apply one layer (plain, gzip or zstd tar) onto ``target`` (a path, or a directory opened
    already: one that others can rename is then reached through its descriptor), refusing any escape.

    ``apply_whiteouts`` deletes what ``.wh.`` entries name from the lower content
    already in ``target``; ``overlay_whiteouts`` instead writes overlayfs
    whiteouts (0/0 character devices, ``trusted.overlay.opaque``) for a snapshot
    that will be an overlay lower dir. ``same_owner`` sets owners from the tar.

    A symlink met on the way to an entry is followed when it stays inside
    ``target``; one that is absolute or climbs out is refused, unless
    ``chroot_symlinks`` resolves it as a chroot would (containerd's RootPath:
    absolute targets start at ``target``, ``..`` stops there).
    The stream is read to its end, so a VerifyingReader checks the blob digest.
    With ``outside_links`` (ADD unpacks into scratch, docker into the destination), a
    hardlink to a file the archive does not hold is recorded there as (name, target).
    ``check`` is called between reads and may raise to stop (a cancelled build).
    """
    if check is not None:
        stream = CheckedReader(stream, check)  # type: ignore[assignment]  # read, readinto, close: all used
    try:
        ex = _Extractor(
            target, apply_whiteouts=apply_whiteouts, overlay_whiteouts=overlay_whiteouts,
            same_owner=same_owner, chroot_symlinks=chroot_symlinks, outside_links=outside_links,
        )
    except OSError as err:
        raise ImageError(f"cannot extract a layer into '{target}': {err.strerror or err}") from err
    try:
        raw = open_layer_stream(stream)
    except BaseException:
        ex.close()
        raise
    reader = TarReader(raw)
    try:
        for entry in reader:
            try:
                ex.entry(entry, reader)
            except OSError as err:
                raise ImageError(
                    f"cannot extract layer entry '{entry.name}' into '{target}': "
                    f"{err.strerror or err}"
                ) from err
        try:
            ex.finish()
        except OSError as err:
            raise ImageError(f"cannot set directory metadata in '{target}': {err.strerror or err}") from err
    except _Corrupt:
        # A damaged blob shows up as a bad tar first; its digest names the real cause.
        reader.drain()
        raise
    finally:
        ex.close()
    reader.drain()
    ex.stats.explicit_dirs = set(ex.dirs)
    return ex.stats


def syncfs(path: Path) -> None:
    """Flush the file system holding ``path`` (one call instead of an fsync per file)."""
    fd = os.open(path, _DIR_FLAGS)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


def extract_to_directory(
    stream: BinaryIO, dest: Path, *, durable: bool = True, apply_whiteouts: bool = True,
    overlay_whiteouts: bool = False, same_owner: bool = True, chroot_symlinks: bool = False,
) -> ExtractStats:
    """Extract a layer into the new directory ``dest``: all of it or nothing.

    The layer goes into a temporary directory beside ``dest`` that is renamed
    into place only after the whole stream (and its digest) checked out; on
    any error it is removed. ``durable`` flushes the file system before the
    rename so that a crash cannot leave a renamed but empty snapshot.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        stats = extract_layer(stream, tmp, apply_whiteouts=apply_whiteouts, overlay_whiteouts=overlay_whiteouts,
                              same_owner=same_owner, chroot_symlinks=chroot_symlinks)
        os.chmod(tmp, 0o755)
        if durable:
            syncfs(tmp)
        try:
            os.rename(tmp, dest)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise ImageError(f"cannot extract layer into '{dest}': it already exists") from None
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if durable:
        parent = os.open(dest.parent, _DIR_FLAGS)
        try:
            os.fsync(parent)
        finally:
            os.close(parent)
    return stats
