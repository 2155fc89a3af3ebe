"""CDI (Container Device Interface) devices for ``RUN --device=vendor.com/class[=name]``.

Specs are read, as BuildKit reads them, from ``/etc/cdi``, ``/var/run/cdi`` and
``/etc/buildkit/cdi`` (or ``--cdi-spec-dir``), JSON or YAML; a later directory
overrides an earlier one. A request names one device (``kind=name``), every
device of a kind (``kind=*``), or the first one (``kind``). What a device
brings, its spec's ``containerEdits`` and its own: environment variables,
device nodes (under ``/dev``), bind mounts and OCI hooks.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from builder.errors import UsageError

if TYPE_CHECKING:
    from builder.runtime.spec import Mount

DEFAULT_SPEC_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"), Path("/etc/buildkit/cdi"))
AUTOALLOW = "org.mobyproject.buildkit.device.autoallow"
HOOK_NAMES = ("createRuntime", "createContainer", "startContainer", "poststart", "poststop")


@dataclass(frozen=True)
class DeviceNode:
    """A device node to create in the container, as OCI's ``linux.devices`` entry."""

    path: str
    type: str  # c, b or p
    major: int
    minor: int
    file_mode: int = 0o666
    uid: int = 0
    gid: int = 0
    permissions: str = "rwm"  # what the device cgroup allows

    def oci(self) -> dict[str, Any]:
        return {"path": self.path, "type": self.type, "major": self.major, "minor": self.minor,
                "fileMode": self.file_mode, "uid": self.uid, "gid": self.gid}


@dataclass(frozen=True)
class Hook:
    """An OCI hook a device asks for (``createContainer``, ``createRuntime``...)."""

    name: str
    path: str
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    timeout: int | None = None

    def oci(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"path": self.path, "args": list(self.args), "env": list(self.env)}
        if self.timeout is not None:
            entry["timeout"] = self.timeout
        return entry


@dataclass(frozen=True)
class Edits:
    env: tuple[str, ...] = ()
    nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[tuple[str, str, tuple[str, ...]], ...] = ()  # host path, container path, options
    hooks: tuple[Hook, ...] = ()

    def __add__(self, other: Edits) -> Edits:
        return Edits(self.env + other.env, self.nodes + other.nodes, self.mounts + other.mounts,
                     self.hooks + other.hooks)

    def bind_mounts(self) -> list[Mount]:
        from builder.runtime.spec import Mount

        return [Mount.bind(Path(host), target, readonly="ro" in options) for host, target, options in self.mounts]


@dataclass(frozen=True)
class Device:
    name: str  # fully qualified: vendor.com/class=name
    edits: Edits
    autoallow: bool = False


@dataclass
class Registry:
    """The CDI devices this machine describes, by fully qualified name, in spec order."""

    devices: dict[str, Device] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)  # specs that could not be read (skipped, as CDI does)

    @classmethod
    def load(cls, dirs: Sequence[Path] = DEFAULT_SPEC_DIRS) -> Registry:
        registry = cls()
        for directory in dirs:
            for path in sorted(directory.glob("*")) if directory.is_dir() else ():
                if path.suffix in (".json", ".yaml", ".yml") and path.is_file():
                    try:
                        devices = list(_read_spec(path))
                    except UsageError as err:
                        registry.errors.append(str(err))
                        continue
                    for device in devices:
                        registry.devices[device.name] = device  # a later directory wins
        return registry

    def resolve(self, request: str) -> list[Device]:
        """The devices ``request`` names; empty when this machine has none of them."""
        kind, sep, name = request.partition("=")
        of_kind = [d for d in self.devices.values() if d.name.partition("=")[0] == kind]
        if not sep:
            return of_kind[:1]
        if name == "*":
            return of_kind
        return [d for d in of_kind if d.name == request]


def _read_spec(path: Path) -> Iterable[Device]:
    try:
        text = path.read_text()
        if path.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, ValueError) as err:
        raise UsageError(f"CDI spec {path}: cannot read it: {err}") from None
    except Exception as err:  # yaml.YAMLError
        raise UsageError(f"CDI spec {path}: cannot read it: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str) or "/" not in data["kind"]:
        raise UsageError(f"CDI spec {path}: no kind of the form vendor.com/class")
    try:
        common = _edits(data.get("containerEdits") or {})
        spec_allow = _truthy((data.get("annotations") or {}).get(AUTOALLOW))
        for entry in data.get("devices") or []:
            device_allow = _truthy((entry.get("annotations") or {}).get(AUTOALLOW))
            yield Device(f"{data['kind']}={entry['name']}", common + _edits(entry.get("containerEdits") or {}),
                         autoallow=spec_allow or device_allow)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise UsageError(f"CDI spec {path}: malformed ({type(err).__name__}: {err})") from None


def _truthy(value: object) -> bool:
    return value is True or str(value).lower() == "true"


def _edits(data: dict[str, Any]) -> Edits:
    nodes = tuple(_node(n) for n in data.get("deviceNodes") or [])
    mounts = tuple((m["hostPath"], m["containerPath"], tuple(m.get("options") or ()))
                   for m in data.get("mounts") or [])
    hooks = tuple(Hook(h["hookName"], h["path"], tuple(h.get("args") or ()), tuple(h.get("env") or ()),
                       h.get("timeout")) for h in data.get("hooks") or [])
    for hook in hooks:
        if hook.name not in HOOK_NAMES:
            raise ValueError(f"unknown hook {hook.name!r}")
    return Edits(tuple(data.get("env") or ()), nodes, mounts, hooks)


def _node(data: dict[str, Any]) -> DeviceNode:
    path = data["path"]
    if not path.startswith("/dev/") or ".." in path.split("/"):
        raise ValueError(f"device node {path!r} is not under /dev")
    host = data.get("hostPath") or path
    kind, major, minor = data.get("type"), data.get("major"), data.get("minor")
    mode = data.get("fileMode")
    if kind is None or major is None or minor is None or mode is None:
        try:
            st = os.stat(host)
        except OSError as err:
            raise ValueError(f"device node {host}: {err.strerror}") from None
        if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise ValueError(f"{host} is not a device node")
        kind = kind or ("c" if stat.S_ISCHR(st.st_mode) else "b")
        major = os.major(st.st_rdev) if major is None else major
        minor = os.minor(st.st_rdev) if minor is None else minor
        mode = stat.S_IMODE(st.st_mode) if mode is None else mode
    return DeviceNode(path, kind, int(major), int(minor), int(mode), int(data.get("uid") or 0),
                      int(data.get("gid") or 0), data.get("permissions") or "rwm")
