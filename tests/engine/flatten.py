"""Flattened views of an image built by docker and by pybuild, for differential tests.

A tree is a dict path -> (type, mode, uid, gid, size, sha256 or link target), with
the entry's xattrs appended where it has any, and its mtime where asked; a config is the subset of docker's container config a Dockerfile can change.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import tarfile
from collections.abc import Collection
from pathlib import Path

from tests.helpers.tools import run_pybuild

CONFIG_KEYS = ("User", "ExposedPorts", "Env", "Cmd", "Healthcheck", "Volumes", "WorkingDir",
               "Entrypoint", "OnBuild", "Labels", "StopSignal", "Shell")
# Paths docker's container export adds for every container (its init layer), never in the image.
DOCKER_INIT = {".dockerenv", "etc/hostname", "etc/hosts", "etc/resolv.conf", "dev", "proc", "sys",
               "dev/console", "dev/pts", "dev/shm", "etc/mtab"}


def tree_from_tar(path: Path, ignore: set[str] = frozenset(),  # type: ignore[assignment]
                  mtimes: Collection[str] = ()) -> dict[str, tuple]:
    tree: dict[str, tuple] = {}
    with tarfile.open(path) as tf:
        for m in tf:
            name = _clean(m.name)
            if not name or name in ignore:
                continue
            if m.isfile():
                f = tf.extractfile(m)
                digest = hashlib.sha256(f.read() if f else b"").hexdigest()[:16]
                tree[name] = ("file", m.mode & 0o7777, m.uid, m.gid, m.size, digest)
            elif m.isdir():
                tree[name] = ("dir", m.mode & 0o7777, m.uid, m.gid)
            elif m.issym():
                tree[name] = ("symlink", m.uid, m.gid, m.linkname)
            elif m.islnk():
                tree[name] = ("hardlink", _clean(m.linkname))
            else:
                tree[name] = ("other", m.type, m.mode & 0o7777, m.devmajor, m.devminor)
            xattrs = tuple(sorted((k.removeprefix("SCHILY.xattr."), v) for k, v in m.pax_headers.items()
                                  if k.startswith("SCHILY.xattr.")))
            if xattrs and name in tree:
                tree[name] = (*tree[name], xattrs)
            if name in mtimes and name in tree:
                tree[name] = (*tree[name], ("mtime", m.mtime))
    return tree


def _clean(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/") if name != "." else ""


def docker_tree(docker: str, image: str, work: Path, mtimes: Collection[str] = ()) -> dict[str, tuple]:
    cid = subprocess.run([docker, "create", image, "true"], check=True, capture_output=True,
                         text=True).stdout.strip()
    try:
        out = work / "docker-export.tar"
        subprocess.run([docker, "export", "-o", str(out), cid], check=True)
        tree = tree_from_tar(out, DOCKER_INIT, mtimes)
        out.unlink()
        return _resolve_hardlinks(tree)
    finally:
        subprocess.run([docker, "rm", "-f", "-v", cid], capture_output=True)


def pybuild_tree(root: Path, image: str, work: Path, mtimes: Collection[str] = ()) -> dict[str, tuple]:
    out = work / "pybuild-export.tar"
    run_pybuild("save", "-o", str(work / "img.tar"), image, root=root, check=True)
    # The flattened file system, through the same exporter users get with -o type=tar.
    tree = _flatten_saved(work / "img.tar", work, mtimes)
    out.unlink(missing_ok=True)
    return _resolve_hardlinks(tree)


def _flatten_saved(archive: Path, work: Path, mtimes: Collection[str]) -> dict[str, tuple]:
    """Apply the layers of a saved image in order (whiteouts included) and list the result."""
    import shutil

    from builder.export.archive import open_archive, read_images
    from builder.export.outputs import flatten
    from builder.layers.tarwriter import write_layer

    rootfs = work / "flat"
    if rootfs.exists():
        shutil.rmtree(rootfs)
    with open_archive(archive, work) as files:
        image = read_images(files)[0].image
        flatten(image, rootfs)
    tar = work / "flat.tar"
    with open(tar, "wb") as f:
        write_layer(rootfs, f)
    tree = tree_from_tar(tar, DOCKER_INIT, mtimes)
    shutil.rmtree(rootfs)
    tar.unlink()
    return tree


def _resolve_hardlinks(tree: dict[str, tuple]) -> dict[str, tuple]:
    """A hardlink counts as a file with its target's content (export order decides which is first);
    every name of a file with several carries the sorted names of all of them."""
    groups: dict[str, list[str]] = {}
    for name, entry in tree.items():
        if entry[0] == "hardlink" and entry[1] in tree:
            groups.setdefault(entry[1], [entry[1]]).append(name)
    out = dict(tree)
    for target, names in groups.items():
        linked = (*tree[target], ("links", tuple(sorted(names))))
        for name in names:
            out[name] = linked
    return out


def docker_config(docker: str, image: str) -> dict:
    data = json.loads(subprocess.run([docker, "image", "inspect", image], check=True,
                                     capture_output=True).stdout)[0]
    return {k: _norm(data["Config"].get(k)) for k in CONFIG_KEYS}


def pybuild_config(root: Path, image: str) -> dict:
    data = json.loads(run_pybuild("inspect", image, root=root, check=True).stdout)[0]
    return {k: _norm(data["Config"].get(k)) for k in CONFIG_KEYS}


def _norm(value):  # type: ignore[no-untyped-def]
    """Empty and missing mean the same in docker's JSON (null, [], {}, "")."""
    if value in (None, [], {}, ""):
        return None
    return value


# COPY/ADD history names the copied content by docker's own content hash; pybuild names it by
# the layer's DiffID. Everything else in ``created_by`` must be equal.
_COPY_HASH = re.compile(r"((?:file|dir|multi):)?[0-9a-f]{64}")


def docker_history(docker: str, image: str) -> list[str]:
    out = subprocess.run([docker, "history", "--no-trunc", "--format", "{{.CreatedBy}}", image],
                         check=True, capture_output=True, text=True).stdout
    return [_COPY_HASH.sub(r"\1<hash>", line) for line in out.splitlines()]


def pybuild_history(root: Path, image: str) -> list[str]:
    out = run_pybuild("history", "--no-trunc", "--format", "{{.CreatedBy}}", image, root=root,
                      check=True).stdout.decode()
    return [_COPY_HASH.sub(r"\1<hash>", line) for line in out.splitlines()]
