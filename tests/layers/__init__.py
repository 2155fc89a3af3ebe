"""Layer tar tests; helpers that describe a tree the way a layer sees it."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path


def xattrs_of(path: Path) -> dict[str, bytes]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return {}
    return {n: os.getxattr(path, n, follow_symlinks=False) for n in sorted(names)}


def snapshot(root: Path, *, mtimes: bool = True, owners: bool = True) -> dict[str, tuple]:
    """Everything a layer records about each path under ``root``, hardlinks as groups."""
    inodes: dict[int, str] = {}
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            kind = stat.S_IFMT(st.st_mode)
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(p.read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    detail = (detail, inodes.setdefault(st.st_ino, rel))
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = (
                kind,
                stat.S_IMODE(st.st_mode) if not stat.S_ISLNK(st.st_mode) else None,
                (st.st_uid, st.st_gid) if owners else None,
                st.st_mtime_ns // 1_000_000_000 if mtimes else None,
                detail,
                tuple(xattrs_of(p).items()),
            )
    return out


def hash_tree(root: Path) -> str:
    """A digest of names, types, modes and contents under ``root`` (symlinks not followed)."""
    h = hashlib.sha256()
    for rel, info in sorted(snapshot(root, mtimes=True).items()):
        h.update(repr((rel, info)).encode())
    return h.hexdigest()
