"""A read-only view of a stage's merged file system, read straight from its snapshot dirs.

COPY needs to look into the image it writes to (is ``dest`` a directory, does
a symlink in the dest path redirect the copy, who is ``app`` in /etc/passwd)
and to read another stage for ``COPY --from``, without mounting anything. The
snapshots are overlay lower dirs (base first), so the merge follows overlayfs:
the top-most entry wins, a 0/0 character device hides a name, and an opaque
directory hides what the layers below put there.

Paths are resolved like a chroot: ``..`` stops at the root and absolute symlink
targets restart at the root, so ``/proc/self/root/..`` or ``../../etc`` can only
name things inside the image. Host paths are only ever built from real
directories (never through a host symlink).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ImageError
from builder.layers import whiteout

MAX_SYMLINKS = 255  # as filepath-securejoin and docker's FollowSymlinkInScope
NAME_MAX = 255  # bytes in one file name, as Linux allows
PATH_MAX = 4095  # bytes in a path (4096 with its NUL), as Linux allows

Parts = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Found:
    """Where a merged path lives: the host path of its top-most entry and that entry's lstat."""

    host: Path
    stat: os.stat_result
    # Lower dirs (top first) that contribute to a directory's listing; empty for non-directories.
    layers: tuple[Path, ...] = ()


@dataclass(frozen=True, slots=True)
class Resolved:
    """A path resolved inside the root: its canonical parts and whether a symlink tried to leave."""

    parts: Parts
    clamped: bool = False  # a '..' was held at the root
    absolute: bool = False  # a symlink with an absolute target was followed

    @property
    def path(self) -> str:
        return "/" + "/".join(self.parts)


def split_path(path: str) -> Parts:
    """The components of a slash path, without empty and '.' components ('..' kept)."""
    return tuple(p for p in path.split("/") if p not in ("", "."))


def path_too_long(parts: Parts) -> str | None:
    """Why Linux could not make ``/parts`` (a name or the whole path too long), else None.

    A layer holding such a path could not be unpacked by anyone, so it is refused when planned.
    """
    if parts and max(map(len, parts)) * 4 <= NAME_MAX and (len(parts) + sum(map(len, parts))) * 4 <= PATH_MAX:
        return None  # the common case, decided without encoding: a character is at most 4 bytes
    for name in parts:
        if len(os.fsencode(name)) > NAME_MAX:
            return (f"'{_shorten('/' + '/'.join(parts))}': a file name can be at most {NAME_MAX} bytes, "
                    f"and '{_shorten(name)}' is {len(os.fsencode(name))}")
    size = len(os.fsencode("/" + "/".join(parts)))
    if size > PATH_MAX:
        return f"'{_shorten('/' + '/'.join(parts))}': a path can be at most {PATH_MAX} bytes, and this one is {size}"
    return None


def _shorten(text: str, keep: int = 40) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]}...{text[-keep:]}"


def _is_whiteout(st: os.stat_result) -> bool:
    return whiteout.is_overlay_whiteout(st)


def _dirent_is_whiteout(e: os.DirEntry[str]) -> bool:
    """Like _is_whiteout, without a stat call for the common kinds (d_type says enough)."""
    if e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False) or e.is_symlink():
        return False
    return _is_whiteout(e.stat(follow_symlinks=False))


def _is_opaque(host: str | Path) -> bool:
    try:
        return os.getxattr(host, whiteout.OVERLAY_OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError:
        return False


@dataclass
class RootfsView:
    """The merged tree of ``lowerdirs`` (base first, top last), read-only."""

    lowerdirs: Sequence[Path]
    # False for plain trees (a build context, an unpacked archive): no whiteouts, no opaque dirs.
    overlay: bool = True
    _cache: dict[Parts, Found | None] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.lowerdirs = [Path(p) for p in self.lowerdirs]

    # -- lookups without following the last component ---------------------------------------

    def _root(self) -> Found:
        tops = tuple(reversed(self.lowerdirs))
        if not tops:
            empty = os.stat_result((stat.S_IFDIR | 0o755, 0, 0, 1, 0, 0, 0, 0, 0, 0))
            return Found(Path("/nonexistent-empty-rootfs"), empty, ())  # FROM scratch
        st = os.stat(tops[0])  # the lower dirs themselves are ours: they may be symlinks
        layers: list[Path] = []
        for layer in tops:
            layers.append(layer)
            if self.overlay and _is_opaque(layer):
                break
        return Found(tops[0], st, tuple(layers))

    def entry(self, parts: Parts) -> Found | None:
        """The merged entry at canonical ``parts`` (no '..', no symlinks followed), or None."""
        hit = self._cache.get(parts, False)
        if hit is False and not parts:
            hit = self._cache[()] = self._root()
        if hit is not False:
            return hit  # type: ignore[return-value]  # False is the cache's miss sentinel, handled above
        parent = self.entry(parts[:-1])
        result: Found | None = None
        # A name over NAME_MAX cannot exist (lstat would fail); path_too_long says why where it matters.
        name = parts[-1]
        too_long = len(name) * 4 > NAME_MAX and len(os.fsencode(name)) > NAME_MAX
        if parent is not None and stat.S_ISDIR(parent.stat.st_mode) and not too_long:
            layers: list[Path] = []
            for layer in parent.layers:
                host = os.path.join(layer, *parts)
                try:
                    st = os.lstat(host)
                except (FileNotFoundError, NotADirectoryError):
                    continue
                if self.overlay and _is_whiteout(st):
                    break
                if result is None:
                    result = Found(Path(host), st)
                    if not stat.S_ISDIR(st.st_mode):
                        break
                elif not stat.S_ISDIR(st.st_mode):
                    break  # a lower non-directory is hidden by the directory above it
                layers.append(layer)
                if self.overlay and _is_opaque(host):
                    break
            if result is not None and layers:
                result = Found(result.host, result.stat, tuple(layers))
        self._cache[parts] = result
        return result

    def listdir(self, parts: Parts) -> list[str]:
        """The merged names of directory ``parts``, sorted by their bytes."""
        found = self.entry(parts)
        if found is None or not stat.S_ISDIR(found.stat.st_mode):
            return []
        names: set[str] = set()
        hidden: set[str] = set()
        for layer in found.layers:
            host = os.path.join(layer, *parts)
            try:
                with os.scandir(host) as it:
                    for e in it:
                        if e.name in names or e.name in hidden:
                            continue
                        if self.overlay and _dirent_is_whiteout(e):
                            hidden.add(e.name)
                        else:
                            names.add(e.name)
            except (FileNotFoundError, NotADirectoryError):
                continue
        return sorted(names, key=os.fsencode)

    # -- resolution ---------------------------------------------------------------------------

    def resolve(self, path: str, *, follow_last: bool = True, stop_at_absolute: bool = False) -> Resolved:
        """Resolve ``path`` (absolute, or relative to /) inside the root, like a chroot would.

        Components that do not exist are kept as written, so the result is where
        a new file would be created. ``stop_at_absolute`` stops at the first
        absolute symlink (for trees where '/' means the host).
        """
        pending = list(reversed(split_path(path)))
        current: list[str] = []
        hops = 0
        clamped = False
        absolute = False
        while pending:
            comp = pending.pop()
            if comp == "..":
                if current:
                    current.pop()
                else:
                    clamped = True
                continue
            candidate = (*current, comp)
            found = self.entry(candidate)
            if found is None or not stat.S_ISLNK(found.stat.st_mode) or (
                not pending and not follow_last
            ):
                current.append(comp)
                continue
            hops += 1
            if hops > MAX_SYMLINKS:
                raise ImageError(f"too many levels of symbolic links resolving '{path}'")
            target = os.readlink(found.host)
            if target.startswith("/"):
                if stop_at_absolute:  # a build context: an absolute link leaves it
                    return Resolved((*current, comp, *reversed(pending)), clamped, True)
                current = []
                absolute = True
            pending.extend(reversed(split_path(target)))
        return Resolved(tuple(current), clamped, absolute)

    def _found(self, path: str, follow: bool) -> Found | None:
        return self.entry(self.resolve(path, follow_last=follow).parts)

    def lookup(self, path: str, *, follow: bool = True) -> os.stat_result | None:
        """The lstat of what ``path`` names (its last symlink followed unless ``follow`` is False)."""
        found = self._found(path, follow)
        return found.stat if found is not None else None

    def exists(self, path: str) -> bool:
        return self._found(path, False) is not None

    def is_dir(self, path: str) -> bool:
        """Whether ``path`` is a directory, following symlinks inside the root."""
        st = self.lookup(path)
        return st is not None and stat.S_ISDIR(st.st_mode)

    def real_path(self, path: str, *, follow: bool = True) -> Path | None:
        """The host path holding ``path``'s content (top-most layer), or None when absent."""
        found = self._found(path, follow)
        return found.host if found is not None else None

    def readlink(self, path: str) -> str | None:
        found = self._found(path, False)
        if found is None or not stat.S_ISLNK(found.stat.st_mode):
            return None
        return os.readlink(found.host)

    def read_file(self, path: str) -> bytes | None:
        """The content of a regular file at ``path`` (symlinks followed inside the root), or None."""
        found = self._found(path, True)
        if found is None or not stat.S_ISREG(found.stat.st_mode):
            return None
        fd = os.open(found.host, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            return f.read()

    def read_text(self, path: str) -> str | None:
        data = self.read_file(path)
        return data.decode("utf-8", "replace") if data is not None else None

    def walk(self, path: str = "/", *, follow: bool = True) -> Iterator[tuple[str, Path, os.stat_result]]:
        """``(relative path, host path, lstat)`` for everything below ``path``, parents first.

        Names are sorted by their bytes; symlinks are reported, never followed.
        The starting directory itself is not yielded.
        """
        base = self.resolve(path, follow_last=follow).parts
        yield from self._walk(base, "")

    def walk_parts(self, parts: Parts) -> Iterator[tuple[str, Path, os.stat_result]]:
        """:meth:`walk` from already canonical ``parts``."""
        yield from self._walk(parts, "")

    def _walk(self, parts: Parts, prefix: str) -> Iterator[tuple[str, Path, os.stat_result]]:
        for name in self.listdir(parts):
            child = (*parts, name)
            found = self.entry(child)
            if found is None:
                continue
            rel = prefix + name
            yield rel, found.host, found.stat
            if stat.S_ISDIR(found.stat.st_mode):
                yield from self._walk(child, rel + "/")
