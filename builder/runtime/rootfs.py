"""Paths inside a container's root file system, resolved without ever leaving it.

An image may hold ``/etc -> /`` or ``/etc/passwd -> ../../../host/file``;
every lookup and every mount-point stub made from the host side follows such
links as the container would, with the rootfs as ``/`` (like
filepath-securejoin in runc), so nothing outside the rootfs is read or written.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from builder.errors import ContainerError, ContainerStartError

MAX_SYMLINKS = 255


def resolve_in_root(root: Path, path: str) -> Path:
    """The host path of ``path`` inside ``root``, symlinks followed as if ``root`` were ``/``.

    Components that do not exist are kept as they are, so the result is where
    a file would be created.
    """
    remaining = [p for p in PurePosixPath("/", path).parts[1:]]
    remaining.reverse()
    current: list[str] = []
    hops = 0
    while remaining:
        part = remaining.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if current:
                current.pop()
            continue
        candidate = root.joinpath(*current, part)
        try:
            st = candidate.lstat()
        except (FileNotFoundError, NotADirectoryError):
            current.append(part)
            continue
        if not stat.S_ISLNK(st.st_mode):
            current.append(part)
            continue
        hops += 1
        if hops > MAX_SYMLINKS:
            raise ContainerStartError(f"too many levels of symbolic links resolving {path} in the image")
        target = os.readlink(candidate)
        if target.startswith("/"):
            current = []
        remaining.extend(reversed([p for p in target.split("/") if p]))
    return root.joinpath(*current)


def read_in_root(root: Path, path: str) -> str | None:
    """The text of a regular file inside ``root``, or None when there is none."""
    host = resolve_in_root(root, path)
    try:
        fd = os.open(host, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    except OSError as err:
        raise ContainerError(f"cannot read {path} in the image: {err.strerror}") from err
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    with os.fdopen(fd, "rb") as f:
        return f.read().decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Stub:
    """A mount point the container needs: ``path`` inside the rootfs, a file or a directory."""

    path: str
    is_dir: bool
    mode: int | None = None  # a new one's mode (default 0755 / 0644)


def make_stubs(root: Path, stubs: list[Stub]) -> list[str]:
    """Create the missing mount points under ``root``; return each stub's resolved in-root path.

    Made in the container's init layer (a lower dir of its own) rather than in
    the upper dir, as docker's init layer does, so that the layer never holds
    them. Missing parents are made 0755 root-owned.
    """
    resolved = []
    for stub in stubs:
        host = resolve_in_root(root, stub.path)
        rel = host.relative_to(root)
        parent = root
        for part in rel.parts[:-1]:
            parent = parent / part
            try:
                os.mkdir(parent)
                os.chmod(parent, 0o755)
            except FileExistsError:
                if parent.is_symlink() or not parent.is_dir():
                    raise ContainerStartError(  # the step's own mount target: named at its line
                        f"cannot mount on {stub.path} in the image: /{parent.relative_to(root)} "
                        "is not a directory"
                    ) from None
        if not os.path.lexists(host):
            if stub.is_dir:
                os.mkdir(host)
            else:
                os.close(os.open(host, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW))
            os.chmod(host, stub.mode if stub.mode is not None else 0o755 if stub.is_dir else 0o644)
        resolved.append("/" + str(rel) if rel.parts else "/")
    return resolved
