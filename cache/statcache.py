"""Content hashes of context files, remembered by inode so an unchanged context is not read again.

An entry is valid while the file's (device, inode, size, mtime_ns, ctime_ns)
are unchanged; anything that rewrites the file (or ``touch``es it) changes
ctime, so the file is hashed again, and the cache key, which holds only the
content hash, stays the same when the bytes did not change. Content is
hashed with XXH3-128 (25 GB/s here); layer digests stay sha256, as OCI requires.
The digest of a file's extended attributes is kept beside it (setting one changes
ctime too). A file changed within two seconds of its hashing is not remembered
(git's racy rule: on a file system with coarse timestamps it could change again
without its stat changing).
"""

from __future__ import annotations

import os
import stat as stat_
import threading
import time
from pathlib import Path

import xxhash

from cache.db import Database

CHUNK = 1 << 20
_FORMAT = "x1:"  # entries of older versions (content only) are hashed again
RACY_NS = 2_000_000_000  # the coarsest common timestamp granularity (FAT: 2 s)


class StatCache:
    """One build's view of the persistent stat cache; call :meth:`flush` to save what it learnt."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._known: dict[tuple[int, int], tuple[int, int, int, str]] | None = None
        self._new: dict[tuple[int, int], tuple[int, int, int, str]] = {}
        self._racy: dict[tuple[int, int], tuple[int, int, int, str]] = {}  # this build only
        self._lock = threading.Lock()
        self.hashed = 0  # files actually read this build (for tests and --debug)

    def _load(self) -> dict[tuple[int, int], tuple[int, int, int, str]]:
        if self._known is None:
            rows = self.db.query("SELECT dev, ino, size, mtime_ns, ctime_ns, hash FROM stat_cache")
            self._known = {(r[0], r[1]): (r[2], r[3], r[4], r[5]) for r in rows}
        return self._known

    def file_digest(self, path: Path | str, st: os.stat_result) -> tuple[str, str]:
        """(XXH3-128 of a regular file's content, digest of the xattrs a layer copies from it),
        from the cache while its stat is unchanged (setting an xattr changes ctime too)."""
        if not stat_.S_ISREG(st.st_mode):
            raise ValueError(f"not a regular file: {path}")
        ident = (st.st_dev, st.st_ino)
        sig = (st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        with self._lock:
            known = self._racy.get(ident) or self._new.get(ident) or self._load().get(ident)
        if known is not None and known[:3] == sig and known[3].startswith(_FORMAT):
            _, content, xattrs = known[3].split(":", 2)
            return content, xattrs
        started = time.time_ns()
        content, xattrs = hash_file(path), xattrs_digest(path)
        with self._lock:
            self.hashed += 1
            # git's "racy" rule: a file changed within the file system's timestamp granularity
            # of its hashing (a second or two on coarse ones) could change again without its
            # stat changing; such a hash is used for this build but not remembered.
            racy = max(st.st_mtime_ns, st.st_ctime_ns) >= started - RACY_NS
            (self._racy if racy else self._new)[ident] = (*sig, f"{_FORMAT}{content}:{xattrs}")
        return content, xattrs

    def flush(self) -> None:
        """Save new entries in one transaction (a crash before this only costs re-hashing)."""
        with self._lock:
            new, self._new = self._new, {}
            if self._known is not None:
                self._known.update(new)
        if not new:
            return
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO stat_cache VALUES (?,?,?,?,?,?)",
                [(dev, ino, *value) for (dev, ino), value in new.items()],
            )


def hash_file(path: Path | str) -> str:
    h = xxhash.xxh3_128()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def xattrs_digest(path: str | os.PathLike[str]) -> str:
    """The extended attributes a layer copies from ``path`` (overlayfs' own skipped), hashed;
    empty when there are none."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ""
    if not names:
        return ""
    from builder.layers.whiteout import is_overlay_xattr

    h = xxhash.xxh3_128()
    seen = False
    for name in sorted(names):
        if is_overlay_xattr(name):
            continue
        try:
            value = os.getxattr(path, name, follow_symlinks=False)
        except OSError:
            continue
        h.update(name.encode() + b"\0" + value + b"\0")
        seen = True
    return h.hexdigest() if seen else ""
