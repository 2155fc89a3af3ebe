"""Resource limits of build containers (docker build's ``--memory``, ``--cpu-*``, ``--cpuset-*``,
``--cgroup-parent``) and the control groups that enforce them.

runc and crun take :meth:`Resources.oci` in ``config.json`` and make the
cgroups themselves; the chroot isolation has no runtime to do it, so
:class:`Cgroup` makes one per container in every hierarchy pybuild is in,
writes the limits as runc would, and removes it when the container is gone
(or, after a SIGKILL, when :func:`~builder.runtime.cleanup.recover` finds its
path in the state file). :func:`hierarchies` tells both what
``/sys/fs/cgroup`` must show inside the container: the container's own
cgroup, read-only, as docker mounts it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import ContainerError, UsageError

MIN_MEMORY = 6 << 20  # docker's linuxMinMemory
MIN_CPU_SHARES, MAX_CPU_SHARES = 2, 262144  # the kernel's bounds, to which docker clamps
CGROUP_ROOT = Path("/sys/fs/cgroup")


@dataclass(frozen=True)
class Hierarchy:
    """One mounted cgroup hierarchy and where this process sits in it.

    ``name`` is the mount point under /sys/fs/cgroup (``memory``, ``cpu,cpuacct``,
    ``unified``), empty for a pure cgroup v2 host; ``controllers`` what it
    controls (``name=systemd`` for a named v1 hierarchy).
    """

    mountpoint: Path
    root: str  # the mount's root inside the hierarchy (a cgroup namespace's or a bind's)
    path: str  # this process's cgroup, as /proc/self/cgroup says
    controllers: tuple[str, ...]
    v2: bool

    @property
    def name(self) -> str:
        rel = os.path.relpath(self.mountpoint, CGROUP_ROOT)
        return "" if rel == "." else rel

    def directory(self, path: str) -> Path:
        """The host directory of cgroup ``path`` (absolute in the hierarchy)."""
        rel = os.path.relpath(path, self.root) if path.startswith(self.root) else path.lstrip("/")
        return self.mountpoint if rel == "." else self.mountpoint / rel.lstrip("/")


def hierarchies() -> list[Hierarchy]:
    """The cgroup hierarchies mounted under /sys/fs/cgroup that this process is in."""
    try:
        own = Path("/proc/self/cgroup").read_text().splitlines()
        mountinfo = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    paths: dict[str, str] = {}  # "memory" / "name=systemd" / "" (v2) -> path
    for line in own:
        _, listed, path = line.split(":", 2)
        for controller in listed.split(",") if listed else [""]:
            paths[controller] = path
    found: dict[Path, Hierarchy] = {}
    for line in mountinfo:
        fields = line.split()
        sep = fields.index("-")
        fstype, options = fields[sep + 1], fields[sep + 3].split(",")
        mountpoint = Path(_unescape(fields[4]))
        if fstype not in ("cgroup", "cgroup2") or not mountpoint.is_relative_to(CGROUP_ROOT):
            continue
        v2 = fstype == "cgroup2"
        if v2:
            controllers: tuple[str, ...] = ()
            key = ""
        else:
            controllers = tuple(o for o in options if o in paths or o.startswith("name="))
            if not controllers:
                continue
            key = controllers[0]
        if key in paths:
            found[mountpoint] = Hierarchy(mountpoint, _unescape(fields[3]), paths[key], controllers, v2)
    return list(found.values())


def _unescape(text: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)


def cgroup_mounts(container_path: str | None, found: list[Hierarchy] | None = None) -> list[tuple[str, str]]:
    """``(name, host dir)`` for each hierarchy, to show at /sys/fs/cgroup/NAME in a container
    whose cgroup is ``container_path`` (relative: under ours), or ours when None."""
    result = []
    for h in hierarchies() if found is None else found:
        path = h.path if container_path is None else _join(h.path, container_path)
        directory = h.directory(path)
        if directory.is_dir():
            result.append((h.name, str(directory)))
    return result


def _join(own: str, path: str) -> str:
    return path if path.startswith("/") else f"{own.rstrip('/')}/{path}"


def _cpu_list(text: str) -> set[int]:
    """``0-3,5`` as the set it names; ValueError when it is not such a list."""
    result: set[int] = set()
    for part in text.split(","):
        low, sep, high = part.partition("-")
        first, last = int(low), int(high) if sep else int(low)
        if first < 0 or last < first:
            raise ValueError(text)
        result.update(range(first, last + 1))
    return result


def _format_list(values: set[int]) -> str:
    runs: list[str] = []
    for v in sorted(values):
        if runs and runs[-1].split("-")[-1] == str(v - 1):
            runs[-1] = f"{runs[-1].split('-')[0]}-{v}"
        else:
            runs.append(str(v))
    return ",".join(runs)


def _memory_nodes() -> set[int]:
    try:
        return _cpu_list(Path("/sys/devices/system/node/online").read_text().strip())
    except (OSError, ValueError):
        return {0}


def swap_accounting() -> bool:
    """Whether the memory controller can limit swap (cgroup v1 needs the kernel's swapaccount=1)."""
    found = hierarchies()
    for h in found:
        if not h.v2 and "memory" in h.controllers:
            return (h.mountpoint / "memory.memsw.limit_in_bytes").exists()
    for h in found:
        if h.v2 and not h.name:
            with contextlib.suppress(OSError):
                return "memory" in (h.mountpoint / "cgroup.controllers").read_text().split()
    return False


@dataclass(frozen=True)
class Resources:
    """The limits every container of a build gets, as docker's flags give them (0 / "": unset).

    ``memory_swap`` is memory plus swap, -1 for unlimited swap; docker sets it to
    twice ``memory`` when only ``memory`` is given. Limits change how a step
    runs, not what it makes, so they are not part of a RUN step's cache key
    (docker's builder leaves them out too).
    """

    memory: int = 0
    memory_swap: int = 0
    cpu_shares: int = 0
    cpu_period: int = 0
    cpu_quota: int = 0
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    cgroup_parent: str = ""

    @classmethod
    def parse(cls, *, memory: int = 0, memory_swap: int = 0, cpu_shares: int = 0, cpu_period: int = 0,
              cpu_quota: int = 0, cpuset_cpus: str = "", cpuset_mems: str = "",
              cgroup_parent: str = "", cpus: str = "") -> Resources:
        """Check the flags as docker's daemon does; fill in docker's defaults.

        ``cpus`` is docker run's ``--cpus``: that many CPUs' time per 100 ms period.
        """
        if cpus:
            try:
                count = float(cpus)
            except ValueError:
                raise UsageError(f"invalid argument {cpus!r} for --cpus: expected a number such as 1.5") from None
            online = os.cpu_count() or 1
            if count == 0:
                pass  # docker's --cpus 0: no limit
            elif cpu_period or cpu_quota:
                raise UsageError("Conflicting options: Nano CPUs and CPU Period/Quota cannot both be set")
            elif not 0.01 <= count <= online:
                raise UsageError(f"Range of CPUs is from 0.01 to {online}.00, as there are only "
                                 f"{online} CPUs available")
            else:
                cpu_period, cpu_quota = 100000, round(count * 100000)
        if memory and memory < MIN_MEMORY:
            raise UsageError("Minimum memory limit allowed is 6MB")
        if memory_swap > 0 and not memory:
            raise UsageError("You should always set the Memory limit when using Memoryswap limit, see usage")
        if memory and 0 < memory_swap < memory:
            raise UsageError("Minimum memoryswap limit should be larger than memory limit, see usage")
        if memory_swap < -1:
            raise UsageError(f"invalid argument {memory_swap} for --memory-swap: -1 (unlimited) or a size")
        if memory and not memory_swap:
            memory_swap = 2 * memory
        if memory_swap and not swap_accounting():
            memory_swap = 0  # docker: "Memory limited without swap", as the kernel cannot
        if cpu_shares:
            cpu_shares = min(max(cpu_shares, MIN_CPU_SHARES), MAX_CPU_SHARES)
        if cpu_period and not 1000 <= cpu_period <= 1000000:
            raise UsageError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)")
        if 0 < cpu_quota < 1000:
            raise UsageError("CPU cfs quota can not be less than 1ms (i.e. 1000)")
        cpus = cls._cpuset(cpuset_cpus, "cpus", set(os.sched_getaffinity(0)))
        mems = cls._cpuset(cpuset_mems, "mems", _memory_nodes())
        if ":" in cgroup_parent:
            raise UsageError(f"invalid --cgroup-parent {cgroup_parent!r}: a systemd slice (slice:prefix:name) "
                             "needs the systemd cgroup driver; pybuild manages cgroups directly (cgroupfs): "
                             "give a path such as /ci or ci/builds")
        if ".." in Path(cgroup_parent).parts:
            raise UsageError(f"invalid --cgroup-parent {cgroup_parent!r}: '..' is not allowed")
        return cls(memory, memory_swap, cpu_shares, cpu_period, cpu_quota, cpus, mems,
                   cgroup_parent.rstrip("/") if cgroup_parent != "/" else "/")

    @staticmethod
    def _cpuset(text: str, kind: str, available: set[int]) -> str:
        if not text:
            return ""
        try:
            wanted = _cpu_list(text)
        except ValueError:
            raise UsageError(f"Invalid value {text} for cpuset {kind}") from None
        if not wanted <= available:
            what = "CPUs" if kind == "cpus" else "memory nodes"
            raise UsageError(f"Requested {what} are not available - requested {text}, "
                             f"available: {_format_list(available)}")
        return text

    def __bool__(self) -> bool:
        return self != Resources()

    def oci(self) -> dict[str, Any]:
        """The ``linux.resources`` entries for memory and cpu, as the OCI runtime spec has them."""
        result: dict[str, Any] = {}
        memory = {k: v for k, v in (("limit", self.memory), ("swap", self.memory_swap)) if v}
        if memory:
            result["memory"] = memory
        cpu = {k: v for k, v in (("shares", self.cpu_shares), ("period", self.cpu_period),
                                 ("quota", self.cpu_quota), ("cpus", self.cpuset_cpus),
                                 ("mems", self.cpuset_mems)) if v}
        if cpu:
            result["cpu"] = cpu
        return result

    def cgroups_path(self, container_id: str) -> str | None:
        """``linux.cgroupsPath``: under ``--cgroup-parent`` when given (relative: under pybuild's
        own cgroup, as runc reads it), else the runtime's default (ours, then the id)."""
        if not self.cgroup_parent:
            return None
        return f"{self.cgroup_parent.rstrip('/')}/{container_id}"

    def v1_files(self) -> dict[str, dict[str, str]]:
        """controller -> {file: value} for a cgroup v1 hierarchy, in the order runc writes them."""
        files: dict[str, dict[str, str]] = {}
        if self.memory:
            memory = files.setdefault("memory", {})
            memory["memory.limit_in_bytes"] = str(self.memory)
            if self.memory_swap:
                memory["memory.memsw.limit_in_bytes"] = str(self.memory_swap)
        cpu = files.setdefault("cpu", {}) if self.cpu_shares or self.cpu_period or self.cpu_quota else {}
        if self.cpu_shares:
            cpu["cpu.shares"] = str(self.cpu_shares)
        if self.cpu_period:
            cpu["cpu.cfs_period_us"] = str(self.cpu_period)
        if self.cpu_quota:
            cpu["cpu.cfs_quota_us"] = str(self.cpu_quota)
        if self.cpuset_cpus or self.cpuset_mems:
            cpuset = files.setdefault("cpuset", {})
            if self.cpuset_cpus:
                cpuset["cpuset.cpus"] = self.cpuset_cpus
            if self.cpuset_mems:
                cpuset["cpuset.mems"] = self.cpuset_mems
        return files

    def v2_files(self) -> dict[str, str]:
        """file -> value for a cgroup v2 directory, converted as runc converts v1 values."""
        files: dict[str, str] = {}
        if self.memory:
            files["memory.max"] = str(self.memory)
            if self.memory_swap:
                files["memory.swap.max"] = "max" if self.memory_swap == -1 else str(self.memory_swap - self.memory)
        if self.cpu_shares:
            files["cpu.weight"] = str(1 + ((self.cpu_shares - 2) * 9999) // 262142)
        if self.cpu_quota or self.cpu_period:
            quota = "max" if self.cpu_quota <= 0 else str(self.cpu_quota)
            files["cpu.max"] = f"{quota} {self.cpu_period or 100000}"
        if self.cpuset_cpus:
            files["cpuset.cpus"] = self.cpuset_cpus
        if self.cpuset_mems:
            files["cpuset.mems"] = self.cpuset_mems
        return files


class Cgroup:
    """A container's cgroup, made by pybuild (the chroot isolation): one directory per hierarchy."""

    def __init__(self, directories: list[Path], path: str, found: list[Hierarchy]) -> None:
        self.directories = directories
        self.path = path
        self.hierarchies = found

    @classmethod
    def create(cls, container_id: str, resources: Resources,
               record: Callable[[list[str]], None] = lambda dirs: None) -> Cgroup:
        """Make the cgroup and set ``resources``; ``record`` learns its directories before any
        exists (the state file: recover() removes them after a SIGKILL)."""
        found = hierarchies()
        if not found:
            raise ContainerError("resource limits need cgroups, and none is mounted under /sys/fs/cgroup")
        if not any(h.v2 and not h.name for h in found):  # v1 or hybrid: v1 controllers do it
            missing = set(resources.v1_files()) - {c for h in found for c in h.controllers}
            if missing:
                raise ContainerError(f"the {', '.join(sorted(missing))} cgroup controller is not mounted: "
                                     "cannot apply the resource limits")
        path = resources.cgroups_path(container_id) or container_id
        made = cls([h.directory(_join(h.path, path)) for h in found], path, found)
        record([str(d) for d in made.directories])
        v1_files, v2_files = resources.v1_files(), resources.v2_files()
        try:
            for h, directory in zip(found, made.directories, strict=True):
                _mkdir(directory, h)
                if h.v2 and not h.name:
                    _enable_v2(h, directory)
                    for name, value in v2_files.items():
                        if not (directory / name).exists():
                            raise ContainerError(f"the {name.split('.')[0]} cgroup controller is not "
                                                 f"available in {directory.parent}: cannot set {name}")
                        _write(directory / name, value)
                else:
                    for controller in h.controllers:
                        for name, value in v1_files.get(controller, {}).items():
                            _write(directory / name, value)
        except BaseException:
            made.remove()
            raise
        return made

    @property
    def procs(self) -> list[str]:
        """The files the container's first process writes its pid to."""
        return [str(d / "cgroup.procs") for d in self.directories]

    def remove(self) -> None:
        remove_directories([str(d) for d in self.directories])


def _mkdir(directory: Path, hierarchy: Hierarchy) -> None:
    """Make ``directory`` and the parents it needs; only ``directory`` is removed later, as
    docker leaves a ``--cgroup-parent`` in place."""
    todo = []
    current = directory
    while not current.exists():
        todo.append(current)
        current = current.parent
    for d in reversed(todo):
        try:
            d.mkdir()
        except OSError as err:
            raise ContainerError(f"cannot create cgroup {d}: {err.strerror}") from None
        if not hierarchy.v2 and "cpuset" in hierarchy.controllers:
            for name in ("cpuset.cpus", "cpuset.mems"):  # a v1 cpuset child starts empty
                _write(d / name, (d.parent / name).read_text().strip())


def _enable_v2(hierarchy: Hierarchy, directory: Path) -> None:
    """Turn the controllers on down to ``directory``, as runc does on a v2 host."""
    wanted = set((hierarchy.mountpoint / "cgroup.controllers").read_text().split()) & {
        "cpu", "cpuset", "memory", "pids", "io"}
    current = hierarchy.mountpoint
    for part in directory.relative_to(hierarchy.mountpoint).parts:
        for controller in sorted(wanted):
            with contextlib.suppress(OSError):  # a controller the parent lacks is skipped
                _write(current / "cgroup.subtree_control", f"+{controller}")
        current = current / part


def remove_directories(directories: list[str] | tuple[str, ...]) -> None:
    """rmdir a container's cgroups; its processes are dead or dying (waits for their exit)."""
    for directory in directories:
        for attempt in range(50):
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as err:
                if err.errno != errno.EBUSY or attempt == 49:
                    raise ContainerError(f"cannot remove cgroup {directory}: {err.strerror}") from None
                time.sleep(0.02)


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except OSError as err:
        raise ContainerError(f"cannot set {path.name} to {value} in cgroup {path.parent}: {err.strerror}") from None
