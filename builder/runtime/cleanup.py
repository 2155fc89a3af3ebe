"""Tracking of running build containers, and recovery from a pybuild that was killed.

Before it creates anything, a container writes a state file
(``<work_root>/state/<id>.json``) naming its owner (pid and process start
time, so a reused pid is not mistaken for the owner), its runtime and its
directories; the state file is removed last. :func:`recover`, run at the start
of every build and ``pybuild run``, removes what a dead owner left: the
runtime's container, mounts under the container directory, the cgroups the
chroot isolation made, the directories themselves.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from builder.errors import ContainerError
from cache.blobs import pid_alive

ID_PREFIX = "pybuild-"
STALE_SECONDS = 60
OCI_RUNTIMES = ("runc", "crun")


def containers_dir(work_root: Path) -> Path:
    return work_root / "containers"


def state_dir(work_root: Path) -> Path:
    return work_root / "state"


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(text.rsplit(")", 1)[1].split()[19])


def is_alive(pid: int | None, start_time: int | None) -> bool:
    return pid is not None and pid > 0 and process_start_time(pid) == start_time


@dataclass(frozen=True)
class ContainerState:
    """What one container made on the machine, and who owns it."""

    id: str
    runtime: str
    container_dir: str
    owner_pid: int = field(default_factory=os.getpid)
    owner_start: int | None = None
    workdir: str = ""
    helper_pid: int | None = None
    helper_start: int | None = None
    mounts: tuple[str, ...] = ()  # the rootfs overlay; anything else under container_dir too
    cgroups: tuple[str, ...] = ()  # cgroup directories pybuild made (the chroot isolation's limits)
    created: float = field(default_factory=time.time)

    def owner_alive(self) -> bool:
        return is_alive(self.owner_pid, self.owner_start)


class StateFile:
    """The state file of one container; every write is atomic."""

    def __init__(self, work_root: Path, state: ContainerState) -> None:
        self.path = state_dir(work_root) / f"{state.id}.json"
        self.state = state
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._write()

    def update(self, **changes: Any) -> None:  # fields of ContainerState (replace checks them)
        self.state = replace(self.state, **changes)
        self._write()

    def _write(self) -> None:
        # No fsync: the file only has to outlive pybuild, not the machine (whose reboot
        # takes the mounts and processes with it); a torn file reads as a dead owner's.
        # Named by the writer's pid: a write cut short by a kill is removed by the next recover.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(asdict(self.state)))
            os.replace(tmp, self.path)
        except BaseException:  # a full disk, a SIGTERM: no torn file left for recover()
            tmp.unlink(missing_ok=True)
            raise

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def load_state(path: Path) -> ContainerState | None:
    try:
        data = json.loads(path.read_text())
        data["mounts"] = tuple(data.get("mounts", ()))
        data["cgroups"] = tuple(data.get("cgroups", ()))
        return ContainerState(**data)
    except (OSError, ValueError, TypeError):
        return None


def remove_tree(path: Path) -> None:
    """Remove a container's directory, unmounting first: never delete through a live mount."""
    if not os.path.lexists(path):
        return
    from builder.runtime.overlay import mounts_under, unmount_all_under

    unmount_all_under(path)
    if mounts_under(path):
        raise ContainerError(f"{path} is still mounted; not removing it")
    shutil.rmtree(path, ignore_errors=True)
    if os.path.lexists(path):
        raise ContainerError(f"cannot remove {path}")


def delete_runtime_container(runtime: str, container_id: str) -> None:
    """Kill and delete an OCI runtime's container; a container that does not exist is fine."""
    binary = shutil.which(runtime)
    if binary is None:
        return
    with contextlib.suppress(subprocess.TimeoutExpired):  # a hung runtime: retried next time
        subprocess.run([binary, "delete", "--force", container_id], capture_output=True, timeout=60)


# Where runc and crun keep a directory per container, by default; a glance there
# spares recover() two process starts on every pybuild command.
RUNTIME_STATE_ROOTS = {"runc": Path("/run/runc"), "crun": Path("/run/crun")}


def _may_hold_ours(runtime: str) -> bool:
    root = RUNTIME_STATE_ROOTS.get(runtime)
    try:
        return root is None or any(p.startswith(ID_PREFIX) for p in os.listdir(root))
    except FileNotFoundError:
        return False
    except OSError:
        return True


def _runtime_containers(runtime: str) -> list[dict]:
    binary = shutil.which(runtime)
    if binary is None or not _may_hold_ours(runtime):
        return []
    try:
        proc = subprocess.run([binary, "list", "--format", "json"], capture_output=True, timeout=60)
    except subprocess.TimeoutExpired:
        return []
    if proc.returncode != 0 or not proc.stdout.strip():
        return []
    try:
        return json.loads(proc.stdout) or []
    except ValueError:
        return []


@dataclass
class RecoveryReport:
    """What :func:`recover` removed."""

    containers: list[str] = field(default_factory=list)
    runtime_containers: list[str] = field(default_factory=list)
    temp_dirs: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # left for the next run to retry


def temp_dir(work_root: Path, kind: str) -> Path:
    """A private scratch dir ``<work_root>/tmp/<pid>-<kind>-<random>`` that recover() removes
    (unmounting what is mounted in it) once process ``pid`` is gone."""
    base = work_root / "tmp"
    base.mkdir(parents=True, exist_ok=True)
    path = base / f"{os.getpid()}-{kind}-{os.urandom(6).hex()}"
    path.mkdir(mode=0o700)
    return path


HELPER_FILE = "helper.pid"


def record_helper(directory: Path, pid: int) -> None:
    """Note in a :func:`temp_dir` a helper process (an ssh-agent) that recover() kills with it.

    For helpers that cannot die with pybuild on their own: PR_SET_PDEATHSIG
    does not survive the exec of a set-gid program such as Debian's ssh-agent.
    """
    start = process_start_time(pid)
    if start is not None:  # no fsync, as for state files: it only has to outlive pybuild
        tmp = directory / f".{HELPER_FILE}.tmp"
        tmp.write_text(f"{pid} {start}\n")
        os.replace(tmp, directory / HELPER_FILE)


def _kill_helper(directory: Path) -> None:
    try:
        pid, start = (int(x) for x in (directory / HELPER_FILE).read_text().split())
    except (OSError, ValueError):
        return
    if is_alive(pid, start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def release(state: ContainerState) -> None:
    """Undo everything ``state`` records: processes, runtime container, mounts, directories."""
    from builder.runtime.overlay import unmount_all_under

    if state.helper_pid and is_alive(state.helper_pid, state.helper_start):
        with contextlib.suppress(ProcessLookupError):
            os.kill(state.helper_pid, signal.SIGKILL)
    if state.runtime in OCI_RUNTIMES:
        delete_runtime_container(state.runtime, state.id)
    for mount in state.mounts:
        unmount_all_under(Path(mount))
    if state.cgroups:
        from builder.runtime.cgroups import remove_directories

        remove_directories(state.cgroups)
    remove_tree(Path(state.container_dir))
    if state.workdir:
        remove_tree(Path(state.workdir))


def stop_containers(work_root: Path, owner_pid: int | None = None) -> list[str]:
    """Kill the processes of the containers ``owner_pid`` (default: this process) runs.

    For Ctrl-C or a failed stage while other threads are inside ``Runtime.run``:
    each of those calls then returns (137) and removes its container as on any
    other exit path. Returns the ids of the containers stopped.
    """
    owner = os.getpid() if owner_pid is None else owner_pid
    stopped = []
    states = state_dir(work_root)
    for path in sorted(states.glob("*.json")) if states.is_dir() else ():
        state = load_state(path)
        if state is None or state.owner_pid != owner:
            continue
        if state.runtime in OCI_RUNTIMES:
            delete_runtime_container(state.runtime, state.id)
        if state.helper_pid and is_alive(state.helper_pid, state.helper_start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(state.helper_pid, signal.SIGKILL)
        stopped.append(state.id)
    return stopped


def recover(work_root: Path) -> RecoveryReport:
    """Remove what dead pybuild processes left under ``work_root``.

    Containers (by their state files), our runtime containers that no live
    state file claims, and :func:`temp_dir` directories of dead processes.
    Best effort: what cannot be removed now (a mount still busy) is listed in
    ``failures`` and tried again by the next call; a build is not stopped by it.
    """
    report = RecoveryReport()
    live: set[str] = set()
    states = state_dir(work_root)
    for path in sorted(states.glob("*.json")) if states.is_dir() else ():
        state = load_state(path)
        if state is None:  # unreadable: assume the worst of a dead owner
            cid = path.stem
            state = ContainerState(id=cid, runtime="", container_dir=str(containers_dir(work_root) / cid),
                                   owner_pid=0)
            for runtime in OCI_RUNTIMES:
                delete_runtime_container(runtime, state.id)
        if state.owner_alive():
            live.add(state.id)
            continue
        try:
            release(state)
        except (ContainerError, OSError) as err:
            report.failures.append(f"{state.id}: {err}")  # keep the state file: retry next time
            continue
        path.unlink(missing_ok=True)
        report.containers.append(state.id)
    for tmp in states.glob(".*.json*.tmp") if states.is_dir() else ():  # writes cut short
        pid = tmp.name.rsplit(".", 2)[-2]
        with contextlib.suppress(FileNotFoundError):
            if (pid.isdigit() and not pid_alive(int(pid))) or time.time() - tmp.stat().st_mtime > STALE_SECONDS:
                tmp.unlink()
    cdirs = containers_dir(work_root)
    for cdir in sorted(cdirs.iterdir()) if cdirs.is_dir() else ():
        if cdir.name in live or (states / f"{cdir.name}.json").exists():
            continue
        try:
            remove_tree(cdir)
        except (ContainerError, OSError) as err:
            report.failures.append(f"{cdir.name}: {err}")
            continue
        report.containers.append(cdir.name)
    root = str(cdirs.absolute()) + "/"
    for runtime in OCI_RUNTIMES:
        for entry in _runtime_containers(runtime):
            cid = entry.get("id", "")
            if not cid.startswith(ID_PREFIX) or not str(entry.get("bundle", "")).startswith(root):
                continue
            state = load_state(states / f"{cid}.json")  # read now: it may have started meanwhile
            if cid in live or (state is not None and state.owner_alive()):
                continue
            delete_runtime_container(runtime, cid)
            report.runtime_containers.append(cid)
    temps = work_root / "tmp"
    for temp in sorted(temps.iterdir()) if temps.is_dir() else ():
        pid = temp.name.split("-", 1)[0]
        if pid.isdigit() and not pid_alive(int(pid)):
            _kill_helper(temp)
            try:
                remove_tree(temp)
            except (ContainerError, OSError) as err:
                report.failures.append(f"{temp.name}: {err}")
                continue
            report.temp_dirs.append(temp.name)
    return report
