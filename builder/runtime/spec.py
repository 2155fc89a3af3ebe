"""What to run in a build container, as typed values, and its OCI ``config.json``.

The engine describes a RUN step (or ``pybuild run``) with a :class:`ContainerSpec`;
a runtime turns it into an overlay mount plus either an OCI bundle
(:func:`oci_config`) or the chroot isolation's plan. The defaults follow what
docker gives a container: its capability set, masked and read-only paths,
``/dev``, ``/dev/shm`` and ``/sys`` as docker mounts them, NOFILE 1048576.
"""

from __future__ import annotations

import enum
import resource
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.runtime import seccomp
from builder.runtime.cgroups import Resources

if TYPE_CHECKING:  # annotations only: a cached build never loads these
    from builder.runtime.cdi import DeviceNode, Hook
    from builder.runtime.users import ExecUser

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# docker's default capability set (moby/oci/caps/defaults.go).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

# Every capability by number, for privileged steps (RUN --security=insecure).
ALL_CAPABILITIES = tuple(f"CAP_{n}" for n in (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID", "SETPCAP",
    "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL", "SETFCAP",
    "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM", "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF",
    "CHECKPOINT_RESTORE",
))


def host_capabilities() -> list[str]:
    """Every capability pybuild itself has, for a privileged step: docker's --privileged asks for
    all the kernel knows and fails where its own bounding set lacks one (as in some sandboxes)."""
    mask = 0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapBnd:"):
            mask = int(line.split()[1], 16)
    return [name for bit, name in enumerate(ALL_CAPABILITIES) if mask >> bit & 1]


# BuildKit's devices of a privileged step (util/entitlements/security): FUSE, KVM, TUN, kmsg and
# loop devices, so that `RUN --security=insecure losetup ...` or a FUSE mount works as there.
INSECURE_DEVICES = (("/dev/kmsg", 1, 11), ("/dev/cuse", 10, 203), ("/dev/fuse", 10, 229),
                    ("/dev/kvm", 10, 232), ("/dev/net/tun", 10, 200), ("/dev/loop-control", 10, 237))
LOOP_CTL_GET_FREE = 0x4C82


def insecure_devices() -> list[DeviceNode]:
    """The device nodes BuildKit gives ``RUN --security=insecure``: :data:`INSECURE_DEVICES` and
    the loop devices up to seven past the first free one (``/dev/loop0``..``7`` when none is known)."""
    import fcntl
    import os

    from builder.runtime.cdi import DeviceNode

    first_free = 0
    try:
        fd = os.open("/dev/loop-control", os.O_RDWR)
    except OSError:
        pass
    else:
        try:
            first_free = fcntl.ioctl(fd, LOOP_CTL_GET_FREE)
        except OSError:
            pass
        finally:
            os.close(fd)
    nodes = [DeviceNode(path, "c", major, minor) for path, major, minor in INSECURE_DEVICES]
    nodes += [DeviceNode(f"/dev/loop{i}", "b", 7, i) for i in range(first_free + 8)]
    return nodes

MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)

READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

NOFILE = 1048576
UMASK = 0o022  # docker's, whatever pybuild's own umask is: it decides the modes in the layer


def nofile_limit() -> int:
    """docker's NOFILE (1048576), capped at our own hard limit: raising it needs CAP_SYS_RESOURCE."""
    return min(NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1])

# Files every container gets by bind mount; they never reach the upper dir.
ETC_FILES = ("/etc/hosts", "/etc/hostname", "/etc/resolv.conf")


SHM_SIZE = 64 << 20  # docker's /dev/shm

# docker's --ulimit names (go-units ulimit.go) and the RLIMIT_* each stands for.
ULIMIT_TYPES = {
    "core": "RLIMIT_CORE", "cpu": "RLIMIT_CPU", "data": "RLIMIT_DATA", "fsize": "RLIMIT_FSIZE",
    "locks": "RLIMIT_LOCKS", "memlock": "RLIMIT_MEMLOCK", "msgqueue": "RLIMIT_MSGQUEUE",
    "nice": "RLIMIT_NICE", "nofile": "RLIMIT_NOFILE", "nproc": "RLIMIT_NPROC", "rss": "RLIMIT_RSS",
    "rtprio": "RLIMIT_RTPRIO", "rttime": "RLIMIT_RTTIME", "sigpending": "RLIMIT_SIGPENDING",
    "stack": "RLIMIT_STACK",
}
UNLIMITED = 2**64 - 1  # RLIM_INFINITY as the OCI spec writes it

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str, flag: str) -> int:
    """docker's RAMInBytes: ``67108864``, ``64m``, ``1.5g``, ``512MiB`` (binary units)."""
    import re

    from builder.errors import UsageError

    m = re.fullmatch(r"(\d+(?:\.\d+)?) ?([kmgtp]?)(?:i?b)?", text.strip().lower())
    if not m or float(m.group(1)) * _SIZE_UNITS[m.group(2)] < 1:
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: invalid size: {text!r} '
                         "(a size such as 67108864, 512m or 2g)")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


@dataclass(frozen=True)
class Ulimit:
    """``--ulimit name=soft[:hard]`` as docker takes it: hard defaults to soft, -1 is unlimited."""

    name: str
    soft: int
    hard: int

    @classmethod
    def parse(cls, text: str) -> Ulimit:
        from builder.errors import UsageError

        bad = f'invalid argument "{text}" for "--ulimit" flag'  # docker's words, then the reason
        name, sep, values = text.partition("=")
        if not sep:
            raise UsageError(f"{bad}: invalid ulimit argument: {text} (expected NAME=SOFT[:HARD], "
                             "such as nofile=1024:2048)")
        if name not in ULIMIT_TYPES:
            raise UsageError(f"{bad}: invalid ulimit type: {name} "
                             f"(one of {', '.join(sorted(ULIMIT_TYPES))})")
        soft_text, _, hard_text = values.partition(":")
        try:
            soft = int(soft_text)
            hard = int(hard_text) if hard_text else soft
        except ValueError:
            raise UsageError(f"{bad}: limits must be integers (-1: unlimited)") from None
        if soft < -1 or hard < -1:
            raise UsageError(f"{bad}: limits must be -1 or more")
        soft, hard = (UNLIMITED if v == -1 else v for v in (soft, hard))
        if soft > hard:
            raise UsageError(f"{bad}: ulimit soft limit must be less than or equal to hard limit: "
                             f"{soft_text} > {hard_text}")
        return cls(name, soft, hard)

    @property
    def rlimit(self) -> str:
        return ULIMIT_TYPES[self.name]


@dataclass(frozen=True)
class ContainerSettings:
    """What ``--add-host``, ``--shm-size``, ``--ulimit`` and the resource limits (``--memory``,
    ``--cpu-*``, ``--cgroup-parent``...) give every container of a build."""

    extra_hosts: tuple[tuple[str, str], ...] = ()
    shm_size: int = SHM_SIZE
    ulimits: tuple[Ulimit, ...] = ()
    resources: Resources = field(default_factory=Resources)

    def fields(self) -> dict[str, Any]:
        """As :class:`ContainerSpec` keyword arguments."""
        return {"extra_hosts": self.extra_hosts, "shm_size": self.shm_size, "ulimits": self.ulimits,
                "resources": self.resources}

    def key_sources(self) -> dict[str, str]:
        """What a RUN step's cache key holds of them, as BuildKit's exec op; only what is set,
        so a build without these flags keeps its keys. Resource limits are not in it: they
        change how a step runs, not what it makes (docker's builder leaves them out too)."""
        sources = {}
        if self.extra_hosts:
            sources["add-host"] = ",".join(f"{n}={a}" for n, a in self.extra_hosts)
        if self.shm_size != SHM_SIZE:
            sources["shm-size"] = str(self.shm_size)
        if self.ulimits:
            sources["ulimit"] = ",".join(f"{u.name}={u.soft}:{u.hard}" for u in self.ulimits)
        return sources


def parse_extra_host(text: str) -> tuple[str, str]:
    """docker's ``--add-host NAME:IP`` (or ``NAME=IP``); ``host-gateway`` is the host, 127.0.0.1
    here: build containers share the host's network."""
    import ipaddress

    from builder.errors import UsageError

    name, sep, address = text.partition("=")
    if not sep:
        name, sep, address = text.partition(":")
    address = address.strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    if address == "host-gateway":
        address = "127.0.0.1"
    if not sep or not name.strip():
        raise UsageError(f'invalid argument "{text}" for "--add-host" flag: bad format for add-host: '
                         f'"{text}" (expected NAME:IP)')
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise UsageError(f'invalid argument "{text}" for "--add-host" flag: invalid IP address in '
                         f'add-host: "{address}"') from None
    return name.strip(), address


class Network(enum.Enum):
    """The network a container sees: the host's, or only its own loopback."""

    HOST = "host"
    NONE = "none"


PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave")


def root_propagation(mounts: Sequence[Mount]) -> str | None:
    """The container root's propagation that binds with ``mounts``' propagation need, as docker
    sets it: rshared for a shared bind, rslave for a slave one; None keeps the runtime's own."""
    kinds = {m.propagation.removeprefix("r") for m in mounts if m.type is MountType.BIND}
    if "shared" in kinds:
        return "rshared"
    if "slave" in kinds:
        return "rslave"
    return None


class MountType(enum.Enum):
    BIND = "bind"
    TMPFS = "tmpfs"


@dataclass(frozen=True)
class Mount:
    """An extra mount in the container (RUN --mount bind/cache/secret are binds, tmpfs is tmpfs).

    Use :meth:`bind` and :meth:`tmpfs` to make one. ``target`` is an absolute
    path inside the container; a missing target is created as a stub that is
    never left in the upper dir.
    """

    target: str
    type: MountType
    source: Path | None = None
    readonly: bool = False
    size: int | None = None
    mode: int | None = None
    propagation: str = "rprivate"  # a bind's: docker's -v ...:shared|slave (and the r- forms)

    @classmethod
    def bind(cls, source: Path, target: str, *, readonly: bool = False,
             propagation: str = "rprivate") -> Mount:
        return cls(target=target, type=MountType.BIND, source=Path(source), readonly=readonly,
                   propagation=propagation)

    @classmethod
    def tmpfs(cls, target: str, *, size: int | None = None, mode: int = 0o1777) -> Mount:
        return cls(target=target, type=MountType.TMPFS, size=size, mode=mode)

    def __post_init__(self) -> None:
        if not self.target.startswith("/"):
            raise ValueError(f"mount target must be absolute: {self.target!r}")
        if self.type is MountType.BIND and self.source is None:
            raise ValueError("a bind mount needs a source")
        if self.propagation not in PROPAGATIONS:
            raise ValueError(f"unknown mount propagation: {self.propagation!r}")

    def options(self) -> list[str]:
        """Mount options as OCI runtimes and mount(8) spell them."""
        if self.type is MountType.BIND:
            return ["rbind", self.propagation, "ro" if self.readonly else "rw"]
        opts = ["nosuid", "nodev"]
        if self.mode is not None:
            opts.append(f"mode={self.mode:o}")
        if self.size is not None:
            opts.append(f"size={self.size}")
        return opts


@dataclass(frozen=True)
class ProcessSpec:
    """The process to run: argv, environment (``K=V``), working directory, docker USER string.

    ``terminal`` gives the process a pseudo-terminal relayed to the caller's
    stdin and output (``pybuild run -t``); runc and crun also want the caller
    to have a controlling terminal.
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    terminal: bool = False

    def __post_init__(self) -> None:
        if not self.args:
            raise ValueError("a process needs at least one argument")
        if not self.cwd.startswith("/"):
            raise ValueError(f"working directory must be absolute: {self.cwd!r}")


@dataclass(frozen=True)
class ContainerSpec:
    """One build container: overlay of ``lowerdirs`` (base first) with ``upperdir`` on top.

    ``upperdir`` receives exactly what the process changed (overlay whiteouts
    for deletions); the engine turns it into a layer. An empty ``hostname``
    means a docker-like 12-hex-digit name derived from the container id.
    ``extra_hosts`` are ``(name, address)`` pairs for /etc/hosts (``--add-host``);
    ``shm_size`` and ``ulimits`` are ``--shm-size`` and ``--ulimit``; ``resources`` the
    cgroup limits. ``volumes`` are directories made in the container's own layer where the
    image has none: an image's VOLUMEs under ``pybuild run``, where docker mounts a fresh
    anonymous volume (holding the image's files there, if any), so they always exist.
    """

    lowerdirs: Sequence[Path]
    upperdir: Path
    process: ProcessSpec
    mounts: Sequence[Mount] = ()
    network: Network = Network.HOST
    hostname: str = ""
    readonly_rootfs: bool = False
    extra_hosts: Sequence[tuple[str, str]] = ()
    shm_size: int = SHM_SIZE
    ulimits: Sequence[Ulimit] = ()
    privileged: bool = False  # RUN --security=insecure: every capability, no seccomp, /sys writable
    devices: Sequence[DeviceNode] = ()  # CDI device nodes (RUN --device), under /dev
    hooks: Sequence[Hook] = ()  # CDI hooks (runc and crun only)
    resources: Resources = field(default_factory=Resources)
    volumes: Sequence[str] = ()

    def device_nodes(self) -> list[DeviceNode]:
        """The device nodes to create: a privileged step's (BuildKit's), then the CDI devices
        (one of those replaces a privileged one of the same path)."""
        if not self.privileged:
            return list(self.devices)
        given = {d.path for d in self.devices}
        return [d for d in insecure_devices() if d.path not in given] + list(self.devices)

    def rlimits(self) -> dict[str, tuple[int, int]]:
        """RLIMIT name -> (soft, hard): docker's NOFILE, then ``--ulimit`` over it."""
        nofile = nofile_limit()
        limits = {"RLIMIT_NOFILE": (nofile, nofile)}
        limits.update((u.rlimit, (u.soft, u.hard)) for u in self.ulimits)
        return limits


def process_env(env: Sequence[str], user: ExecUser) -> list[str]:
    """The environment as docker gives it: PATH and HOME filled in when the image sets none."""
    names = {item.split("=", 1)[0] for item in env}
    result = list(env)
    if "PATH" not in names:
        result.insert(0, f"PATH={DEFAULT_PATH}")
    if "HOME" not in names:
        result.append(f"HOME={user.home}")
    return result


def hosts_file(hostname: str, extra_hosts: Sequence[tuple[str, str]] = ()) -> str:
    """``/etc/hosts`` as BuildKit writes it for a sandbox with no address of its own."""
    lines = [
        f"127.0.0.1\tlocalhost {hostname}",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    lines.extend(f"{address}\t{name}" for name, address in extra_hosts)
    return "\n".join(lines) + "\n"


def network_sysctls(network: Network) -> dict[str, str]:
    """docker's none network has loopback without IPv6 (it disables IPv6 in the namespace)."""
    if network is Network.NONE and Path("/proc/sys/net/ipv6").is_dir():
        return {"net.ipv6.conf.all.disable_ipv6": "1", "net.ipv6.conf.default.disable_ipv6": "1",
                "net.ipv6.conf.lo.disable_ipv6": "1"}
    return {}


def system_mounts(shm_size: int = SHM_SIZE, *, privileged: bool = False) -> list[dict[str, Any]]:
    """``/proc``, ``/dev``, ``/dev/pts``, ``/dev/shm``, ``/dev/mqueue``, ``/sys`` and
    ``/sys/fs/cgroup`` (the container's own cgroups) as docker mounts them."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "rw" if privileged else "ro"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"]},
    ]


def oci_config(
    spec: ContainerSpec, *, rootfs: str, user: ExecUser, hostname: str,
    etc_files: dict[str, Path], mount_targets: Sequence[str], container_id: str = "",
) -> dict[str, Any]:
    """An OCI runtime-spec 1.0 ``config.json`` for ``spec``.

    ``etc_files`` maps ``/etc/hosts`` etc. to the host files to bind;
    ``mount_targets`` are the in-root resolved targets of ``spec.mounts``
    (symlinks already followed inside the rootfs), in the same order.
    """
    caps = host_capabilities() if spec.privileged else list(DEFAULT_CAPABILITIES)
    process: dict[str, Any] = {
        "terminal": spec.process.terminal,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": list(user.additional_gids),
                 "umask": UMASK},
        "args": list(spec.process.args),
        "env": process_env(spec.process.env, user),
        "cwd": spec.process.cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "rlimits": [{"type": name, "hard": hard, "soft": soft} for name, (soft, hard) in spec.rlimits().items()],
        "noNewPrivileges": False,
    }
    mounts = system_mounts(spec.shm_size, privileged=spec.privileged)
    for target, source in etc_files.items():
        mounts.append({"destination": target, "type": "bind", "source": str(source),
                       "options": ["rbind", "rprivate", "rw"]})
    for mount, target in zip(spec.mounts, mount_targets, strict=True):
        entry: dict[str, Any] = {"destination": target, "type": mount.type.value,
                                 "options": mount.options()}
        entry["source"] = str(mount.source) if mount.type is MountType.BIND else "tmpfs"
        mounts.append(entry)
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if spec.network is Network.NONE:
        namespaces.append({"type": "network"})
    cgroups_path = spec.resources.cgroups_path(container_id)
    hooks: dict[str, list[dict[str, Any]]] = {}
    for hook in spec.hooks:
        hooks.setdefault(hook.name, []).append(hook.oci())
    return {
        "ociVersion": "1.0.2",
        **({"hooks": hooks} if hooks else {}),
        "process": process,
        "root": {"path": rootfs, "readonly": spec.readonly_rootfs},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "resources": {"devices": [{"allow": spec.privileged, "access": "rwm"}] + [
                {"allow": True, "type": d.type, "major": d.major, "minor": d.minor, "access": d.permissions}
                for d in spec.devices], **spec.resources.oci()},
            **({"cgroupsPath": cgroups_path} if cgroups_path else {}),
            **({"rootfsPropagation": propagation}
               if (propagation := root_propagation(spec.mounts)) else {}),
            "devices": [d.oci() for d in spec.device_nodes()],
            "namespaces": namespaces,
            "maskedPaths": [] if spec.privileged else list(MASKED_PATHS),
            "readonlyPaths": [] if spec.privileged else list(READONLY_PATHS),
            "sysctl": network_sysctls(spec.network),
            **({} if spec.privileged else {"seccomp": seccomp.profile()}),
        },
    }
