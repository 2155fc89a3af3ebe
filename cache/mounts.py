"""RUN cache-mount directories: listing, sizing, packing for a shared cache, seeding from one.

A ``RUN --mount=type=cache,id=X`` directory lives in
``$PYBUILD_ROOT/cachemounts/<sha256(X)[:32]>`` with its id in ``<key>.id``
(see :func:`builder.execute.run._cache_mount`). The shared cache carries a
mount as a gzip tar blob; a machine that has no such directory yet gets the
exported content, extracted with the layer extractor (which refuses any path
that escapes the directory), into a temp dir renamed into place, so a
concurrent RUN sees either nothing or all of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cache.blobs import remove_tree, set_aside, temp_name

MOUNTS_DIR = "cachemounts"
ID_ANNOTATION = "dev.pybuild.cache.mount.id"


def mount_key(cache_id: str) -> str:
    """The directory name of a cache id (the same rule as the RUN step's)."""
    return hashlib.sha256(cache_id.encode()).hexdigest()[:32]


def mounts_root(store_root: Path) -> Path:
    return Path(store_root) / MOUNTS_DIR


def mount_path(store_root: Path, cache_id: str) -> Path:
    return mounts_root(store_root) / mount_key(cache_id)


@dataclass(frozen=True)
class CacheMount:
    """One cache-mount directory of a store."""

    id: str
    key: str
    path: Path
    size: int  # bytes of its files (apparent size), plus its id file
    last_used: float  # the directory's mtime: RUN touches it on each use


def tree_size(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in (*dirnames, *filenames):
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def entry_dirs(root: Path) -> list[tuple[Path, float]]:
    """The directories of ``root`` (not the dot-named ones in the making or going) and their
    mtimes, which their users touch on each use."""
    if not root.is_dir():
        return []
    out = []
    for entry in os.scandir(root):
        if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
            continue
        with contextlib.suppress(OSError):
            out.append((Path(entry.path), entry.stat(follow_symlinks=False).st_mtime))
    return out


def list_mounts(store_root: Path) -> list[CacheMount]:
    """Every cache-mount directory, least recently used first."""
    root = mounts_root(store_root)
    out = []
    for path, last_used in entry_dirs(root):
        try:
            cache_id = (root / f"{path.name}.id").read_text()
        except OSError:
            cache_id = ""
        out.append(CacheMount(cache_id, path.name, path, tree_size(path) + 4096, last_used))
    return sorted(out, key=lambda m: (m.last_used, m.key))


def usage(store_root: Path) -> int:
    return sum(m.size for m in list_mounts(store_root))


def remove_mount(store_root: Path, key: str) -> None:
    """Delete one cache-mount directory (renamed aside into tmp/ first, so no RUN sees half of
    it and a sweep removes it if this process dies meanwhile)."""
    root = mounts_root(store_root)
    aside = set_aside(root / key, Path(store_root) / "tmp")
    if aside is None:
        return
    with contextlib.suppress(FileNotFoundError):
        (root / f"{key}.id").unlink()
    remove_tree(aside)


def pack_mount(path: Path, out: BinaryIO) -> None:
    """Write the directory as a gzip tar (sorted entries, numeric owners, fixed gzip header)."""
    from builder.image.mediatypes import Compression
    from builder.layers.compression import compressor
    from builder.layers.tarwriter import write_layer

    with compressor(out, Compression.GZIP) as gz:
        write_layer(path, gz)


def seed_mount(store_root: Path, cache_id: str, stream: BinaryIO, *, mode: int | None = None,
               uid: int | None = None, gid: int | None = None) -> bool:
    """Fill the cache mount ``cache_id`` from a packed stream if it does not exist yet.

    Returns False (and reads nothing) when the directory is already there, or
    when another process created it meanwhile.
    """
    from builder.layers.extract import extract_to_directory

    root = mounts_root(store_root)
    root.mkdir(parents=True, exist_ok=True)
    key = mount_key(cache_id)
    dest = root / key
    if dest.exists():
        return False
    # Unpacked under this process's name in tmp/, not beside the mount: a build killed midway
    # leaves it where the next writer's sweep removes it (a dot dir in cachemounts/ stayed an hour).
    work = temp_name(Path(store_root) / "tmp", ".seed")
    try:
        work.mkdir()
        made = work / "mount"
        extract_to_directory(stream, made, apply_whiteouts=False)
        # The mount's own directory, as RUN would have made it (mode=, uid=, gid=).
        os.chown(made, uid or 0, gid or 0)
        made.chmod(mode if mode is not None else 0o755)
        try:
            os.rename(made, dest)
        except OSError:
            if dest.exists():  # a RUN or another build made it first: keep theirs
                return False
            raise
    finally:
        remove_tree(work)
    tmp = root / f".{key}.id.{os.getpid()}.tmp"
    tmp.write_text(cache_id)
    os.replace(tmp, root / f"{key}.id")
    return True
