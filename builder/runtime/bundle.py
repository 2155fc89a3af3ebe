"""One container's life on the host: its directory, root file system and clean-up.

Shared by the OCI and chroot runtimes. :func:`prepare` writes the state file,
makes the short lower-dir links, builds the init layer (mount-point stubs in a
lower dir of its own, as docker's ``-init`` layer, so the upper dir only ever
holds what the process changed), mounts the overlay, resolves USER, writes
``/etc/hosts``, ``/etc/hostname`` and ``/etc/resolv.conf``, and on the way out
(any way out) unmounts and removes all of it except the upper dir.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ContainerError, ContainerStartError
from builder.interrupts import run_to_end
from builder.runtime.cleanup import (
    ID_PREFIX,
    ContainerState,
    StateFile,
    containers_dir,
    process_start_time,
    remove_tree,
)
from builder.runtime.overlay import make_links, mount_overlay, unmount_all_under
from builder.runtime.rootfs import Stub, make_stubs, resolve_in_root
from builder.runtime.spec import ETC_FILES, ContainerSpec, MountType, hosts_file
from builder.runtime.users import ExecUser, lookup_user

SYSTEM_DIRS = ("/proc", "/dev", "/sys")
HOST_RESOLV_CONF = Path("/etc/resolv.conf")
# The upper dir is a scratch area until the layer writer has read it, and a step cut short
# by a crash runs again: fsyncs inside a RUN step (dpkg makes one per file) buy nothing.
VOLATILE = True


@dataclass
class Container:
    """A prepared container: rootfs mounted, everything resolved, ready for a runtime to start."""

    id: str
    hostname: str
    dir: Path
    rootfs: Path
    user: ExecUser
    etc_files: dict[str, Path]
    mount_targets: list[str]
    state: StateFile
    terminal: bool = False


def _workdir_for(upperdir: Path, cdir: Path) -> Path:
    """overlay's work dir must share the upper dir's file system."""
    if os.stat(upperdir).st_dev == os.stat(cdir.parent).st_dev:
        return cdir / "work"
    return upperdir.parent / f".{cdir.name}-work"


def _resolv_conf() -> bytes:
    """The host's resolver configuration: right for the host network, harmless for none."""
    try:
        return HOST_RESOLV_CONF.read_bytes()
    except OSError:
        return b""


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o644)
    return path


@contextlib.contextmanager
def prepare(spec: ContainerSpec, work_root: Path, runtime: str) -> Iterator[Container]:
    """Set up the container for ``spec`` under ``work_root``; tear everything down on exit."""
    cid = ID_PREFIX + secrets.token_hex(6)
    hostname = spec.hostname or cid.removeprefix(ID_PREFIX)
    cdir = containers_dir(work_root) / cid
    upper = Path(spec.upperdir).absolute()
    with host_refusals(cdir):
        cdir.parent.mkdir(parents=True, exist_ok=True)
        upper.mkdir(parents=True, exist_ok=True)
        workdir = _workdir_for(upper, cdir)
    state: StateFile | None = None
    try:
        with host_refusals(cdir):
            state = StateFile(work_root, ContainerState(
                id=cid, runtime=runtime, container_dir=str(cdir),
                owner_start=process_start_time(os.getpid()),
                workdir="" if workdir.parent == cdir else str(workdir),
                mounts=(str(cdir / "rootfs"),),
            ))
            container = _set_up(spec, cid, hostname, cdir, workdir, state)
        yield container
    finally:
        if state is not None:
            # to its end even when a SIGTERM comes meanwhile: a mount or state left behind
            # would wait for the next command's recover()
            failing = sys.exc_info()[0] is not None
            run_to_end(lambda: _teardown(state, cdir, workdir, failing=failing))


@contextlib.contextmanager
def host_refusals(cdir: Path) -> Iterator[None]:
    """What the host refuses while a container is made (a full disk, a read-only store) is
    the machine's problem, said in one line, not an internal error."""
    try:
        yield
    except OSError as err:
        raise ContainerError(f"cannot set up the container in {cdir}: {err.strerror or err}") from None


def _set_up(spec: ContainerSpec, cid: str, hostname: str, cdir: Path, workdir: Path,
            state: StateFile) -> Container:
    """The container's directories, overlay mounts, stubs, user and /etc files."""
    upper = Path(spec.upperdir).absolute()
    cdir.mkdir()
    rootfs = cdir / "rootfs"
    rootfs.mkdir()
    links = cdir / "l"
    lowers = make_links(links, spec.lowerdirs)
    init = cdir / "init"
    init.mkdir()
    # one overlay work dir serves both mounts when the upper dir shares cdir's file system
    initwork = workdir if workdir.parent == cdir else cdir / "initwork"
    initwork.mkdir()
    (links / "i").symlink_to(init)
    if not lowers:
        (cdir / "empty").mkdir()
        (links / "e").symlink_to(cdir / "empty")
    stubs = [Stub(p, True) for p in SYSTEM_DIRS] + [Stub(p, False) for p in ETC_FILES]
    # A new tmpfs mount point is made with the tmpfs's mode: runc gives the tmpfs the mode of
    # the directory it mounts on (an image's own /tmp or /var/cache keeps its mode), and
    # where it makes the directory itself, as under BuildKit, the tmpfs keeps 1777.
    stubs += [
        Stub(m.target, True, m.mode) if m.type is MountType.TMPFS
        else Stub(m.target, m.source is not None and m.source.is_dir())
        for m in spec.mounts
    ]
    mount_overlay(rootfs, link_dir=links, lowers=lowers or ["e"], upperdir=init, workdir=initwork)
    try:
        make_stubs(rootfs, stubs)
    finally:
        unmount_all_under(rootfs)
    workdir.mkdir(exist_ok=True)
    mount_overlay(rootfs, link_dir=links, lowers=["i", *lowers], upperdir=upper, workdir=workdir,
                  volatile=VOLATILE)
    # A missing working directory is made in the container's own layer, not the init layer:
    # docker's SetupWorkingDirectory (and BuildKit's executor) do, so a RUN whose WORKDIR an
    # earlier step deleted commits it again (root-owned, 0755). An image's VOLUMEs likewise.
    _check_working_dir(rootfs, spec.process.cwd)
    make_stubs(rootfs, [Stub(spec.process.cwd, True)] + [Stub(v, True) for v in spec.volumes])
    user = lookup_user(rootfs, spec.process.user)
    etc_sources = {
        "/etc/hosts": _write(cdir / "hosts", hosts_file(hostname, spec.extra_hosts).encode()),
        "/etc/hostname": _write(cdir / "hostname", f"{hostname}\n".encode()),
        "/etc/resolv.conf": _write(cdir / "resolv.conf", _resolv_conf()),
    }
    etc_files = {_in_root(rootfs, target): source for target, source in etc_sources.items()}
    mount_targets = [_in_root(rootfs, m.target) for m in spec.mounts]
    return Container(cid, hostname, cdir, rootfs, user, etc_files, mount_targets, state,
                     terminal=spec.process.terminal)


def _check_working_dir(rootfs: Path, cwd: str) -> None:
    """docker's words for a working directory a file of the image is in the way of."""
    host = resolve_in_root(rootfs, cwd)
    path = rootfs
    for part in host.relative_to(rootfs).parts:
        path = path / part
        if os.path.lexists(path) and not path.is_dir():
            raise ContainerStartError(f"Cannot mkdir: /{path.relative_to(rootfs)} is not a directory "
                                      f"(the working directory is {cwd})")


def _in_root(rootfs: Path, path: str) -> str:
    rel = resolve_in_root(rootfs, path).relative_to(rootfs)
    return "/" + "/".join(rel.parts)


def _teardown(state: StateFile, cdir: Path, workdir: Path, *, failing: bool) -> None:
    """Remove the container's mounts and directories; keep the state file if that fails."""
    try:
        remove_tree(cdir)
        remove_tree(workdir)
    except (ContainerError, OSError):
        if not failing:
            raise
        return  # the original error matters more; recover() retries from the state file
    state.remove()
