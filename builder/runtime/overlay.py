"""overlayfs mounts for container root file systems, and the mount table.

The mount(2) option string is limited to one page, which 100+ store paths
overflow. As docker's overlay2 and containerd do, each container gets a
directory of short symlinks (``l/0``, ``l/1``, ...) to its lower dirs and the
mount runs from inside that directory with relative names, so 500 layers
(the kernel's maximum) fit. The mount itself runs in a ``mount`` child
process with that working directory, because chdir would move every thread
of pybuild. The options turn off overlay features that leave state a layer
tar cannot express (redirect_dir, metacopy, index): the upper dir is then
exactly the layer, with 0/0 character devices for deletions and
``trusted.overlay.opaque`` for replaced directories.
"""

from __future__ import annotations

import ctypes
import errno
import os
import re
import subprocess
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from builder.errors import ContainerError

MAX_LOWERS = 500
OVERLAY_OPTIONS = "index=off,redirect_dir=off,metacopy=off"
MNT_DETACH = 2
MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384


@cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def make_links(link_dir: Path, lowerdirs: Sequence[Path]) -> list[str]:
    """Short names for ``lowerdirs`` in ``link_dir``, top-most first, as overlay wants them."""
    if len(lowerdirs) > MAX_LOWERS:
        raise ContainerError(
            f"an image with {len(lowerdirs)} layers exceeds overlayfs's limit of {MAX_LOWERS}"
        )
    link_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for index, lower in enumerate(lowerdirs):
        lower = Path(lower).absolute()
        if not lower.is_dir():
            raise ContainerError(f"lower dir {lower} of the container is missing")
        name = str(index)
        (link_dir / name).symlink_to(lower)
        names.append(name)
    names.reverse()
    return names


def _options(lowers: Sequence[str], upperdir: Path | None, workdir: Path | None,
             volatile: bool = False) -> str:
    options = f"lowerdir={':'.join(lowers)}"
    if upperdir is not None and workdir is not None:
        options += f",upperdir={upperdir.absolute()},workdir={workdir.absolute()}"
        if volatile:
            options += ",volatile"
    return options + "," + OVERLAY_OPTIONS


def mount_overlay(
    target: Path, *, link_dir: Path, lowers: Sequence[str], upperdir: Path | None = None,
    workdir: Path | None = None, volatile: bool = False,
) -> None:
    """Mount an overlay at ``target``; ``lowers`` are names in ``link_dir``, top-most first.

    Without ``upperdir`` the overlay is read-only. When the options fit in a
    page with absolute link paths, mount(2) is called directly; otherwise a
    ``mount`` process resolves the names relative to ``link_dir``.
    ``volatile`` (kernels from 5.10) turns the process's fsyncs on the upper
    dir into no-ops; ``workdir`` cannot be used again after such a mount.
    Where the kernel refuses it, the mount is made without.
    """
    if volatile and upperdir is not None:
        try:
            _mount(target, link_dir, lowers, upperdir, workdir, volatile=True)
            return
        except ContainerError:
            pass
    _mount(target, link_dir, lowers, upperdir, workdir, volatile=False)


def _mount(target: Path, link_dir: Path, lowers: Sequence[str], upperdir: Path | None,
           workdir: Path | None, *, volatile: bool) -> None:
    if not lowers:
        raise ContainerError("an overlay needs at least one lower dir")
    if upperdir is None and len(lowers) == 1:
        _bind_readonly((link_dir / lowers[0]).resolve(), target)  # overlay wants two lowers here
        return
    page = os.sysconf("SC_PAGESIZE")
    absolute = _options([str(link_dir.absolute() / name) for name in lowers], upperdir, workdir,
                        volatile)
    if len(absolute) < page:
        flags = 0 if upperdir is not None else MS_RDONLY
        if _libc().mount(b"overlay", os.fsencode(str(target.absolute())), b"overlay", flags,
                         absolute.encode()) == 0:
            return
        err = ctypes.get_errno()
        raise ContainerError(
            f"cannot mount the container's root file system (overlay at {target}): {os.strerror(err)}"
        )
    options = _options(lowers, upperdir, workdir, volatile)
    if len(options) >= page:
        raise ContainerError(f"overlay mount options too long ({len(options)} bytes)")
    command = ["mount", "-i", "-n", "-t", "overlay", "overlay", "-o", options, str(target.absolute())]
    if upperdir is None:
        command.insert(1, "-r")
    proc = subprocess.run(command, cwd=link_dir, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ContainerError(
            f"cannot mount the container's root file system (overlay at {target}): "
            f"{proc.stderr.strip() or f'mount exited {proc.returncode}'}"
        )


def _bind_readonly(source: Path, target: Path) -> None:
    libc = _libc()
    src, dst = os.fsencode(str(source)), os.fsencode(str(target.absolute()))
    if libc.mount(src, dst, None, MS_BIND | MS_REC, None) != 0 or libc.mount(
        None, dst, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None
    ) != 0:
        err = ctypes.get_errno()
        unmount(target)
        raise ContainerError(f"cannot bind {source} at {target}: {os.strerror(err)}")


def unmount(target: Path, *, attempts: int = 20) -> None:
    """Unmount ``target``; a mount still busy after retries is detached (lazy unmount)."""
    path = os.fsencode(str(target))
    libc = _libc()
    for attempt in range(attempts):
        if libc.umount2(path, 0) == 0:
            return
        err = ctypes.get_errno()
        if err == errno.EINVAL or err == errno.ENOENT:
            return  # not a mount point (any more)
        if err != errno.EBUSY:
            raise ContainerError(f"cannot unmount {target}: {os.strerror(err)}")
        time.sleep(0.005 * (attempt + 1))
    if libc.umount2(path, MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise ContainerError(f"cannot unmount {target}: {os.strerror(err)}")


_ESCAPE = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[Path]:
    """Mount points at or below ``path``, deepest first (the order to unmount them in)."""
    root = str(path.absolute()).rstrip("/") or "/"
    found = []
    for line in mountinfo.read_text().splitlines():
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = _unescape(fields[4])
        if point == root or point.startswith(root + "/"):
            found.append(Path(point))
    found.sort(key=lambda p: len(p.parts), reverse=True)
    return found


def source_mount(path: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> tuple[str, set[str]]:
    """The mount point ``path`` lives on and its propagation tags (``shared:N``, ``master:N``),
    as docker finds them before a shared or slave bind: the last mount of the longest prefix."""
    target = os.path.realpath(path)
    best, tags = "/", set()
    for line in mountinfo.read_text().splitlines():
        fields = line.split(" ")
        if "-" not in fields[6:]:
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, tags = point, set(fields[6:fields.index("-", 6)])
    return best, tags


def unmount_all_under(path: Path) -> None:
    """Unmount everything at or below ``path``; stacked mounts are peeled one by one."""
    for _ in range(64):
        points = mounts_under(path)
        if not points:
            return
        for point in points:
            unmount(point)
    raise ContainerError(f"cannot unmount everything under {path}")
