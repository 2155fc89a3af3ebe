"""The image config: what a container of the image starts with, plus rootfs and history.

Typed fields for what a Dockerfile can change; everything else round-trips
through ``extra`` so that a config read from elsewhere loses nothing when a
build derives a new one from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from builder.errors import ImageError
from builder.image.descriptor import canonical_json
from builder.image.digest import Digest


@dataclass(frozen=True)
class Healthcheck:
    """Docker's HEALTHCHECK: ``test`` is ``["NONE"]``, ``["CMD", ...]`` or ``["CMD-SHELL", cmd]``.

    Durations are nanoseconds, as in docker's JSON; 0 means "inherit the default".
    """

    test: tuple[str, ...]
    interval: int = 0
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Healthcheck:
        return cls(
            test=tuple(data.get("Test") or ()),
            interval=int(data.get("Interval") or 0),
            timeout=int(data.get("Timeout") or 0),
            start_period=int(data.get("StartPeriod") or 0),
            start_interval=int(data.get("StartInterval") or 0),
            retries=int(data.get("Retries") or 0),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"Test": list(self.test)}
        for key, value in (
            ("Interval", self.interval), ("Timeout", self.timeout),
            ("StartPeriod", self.start_period), ("StartInterval", self.start_interval),
            ("Retries", self.retries),
        ):
            if value:
                out[key] = value
        return out


# Keys of the container config that have typed fields below, in docker's order.
_CONTAINER_KEYS = (
    "User", "ExposedPorts", "Env", "Cmd", "Healthcheck", "ArgsEscaped", "Volumes",
    "WorkingDir", "Entrypoint", "OnBuild", "Labels", "StopSignal", "Shell",
)


@dataclass(frozen=True)
class ContainerConfig:
    """The ``config`` part of an image config: what a container of the image starts with."""

    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    healthcheck: Healthcheck | None = None
    args_escaped: bool = False
    volumes: tuple[str, ...] = ()
    working_dir: str = ""
    entrypoint: tuple[str, ...] | None = None
    on_build: tuple[str, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    stop_signal: str = ""
    shell: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ContainerConfig:
        data = data or {}
        health = data.get("Healthcheck")
        return cls(
            user=data.get("User") or "",
            exposed_ports=tuple((data.get("ExposedPorts") or {}).keys()),
            env=tuple(data.get("Env") or ()),
            cmd=tuple(data["Cmd"]) if data.get("Cmd") is not None else None,
            healthcheck=Healthcheck.from_dict(health) if health else None,
            args_escaped=bool(data.get("ArgsEscaped")),
            volumes=tuple((data.get("Volumes") or {}).keys()),
            working_dir=data.get("WorkingDir") or "",
            entrypoint=tuple(data["Entrypoint"]) if data.get("Entrypoint") is not None else None,
            on_build=tuple(data.get("OnBuild") or ()),
            labels=dict(data.get("Labels") or {}),
            stop_signal=data.get("StopSignal") or "",
            shell=tuple(data["Shell"]) if data.get("Shell") else None,
            extra={k: v for k, v in data.items() if k not in _CONTAINER_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        if self.user:
            out["User"] = self.user
        if self.exposed_ports:
            out["ExposedPorts"] = {p: {} for p in self.exposed_ports}
        if self.env:
            out["Env"] = list(self.env)
        if self.cmd is not None:
            out["Cmd"] = list(self.cmd)
        if self.healthcheck:
            out["Healthcheck"] = self.healthcheck.to_dict()
        if self.args_escaped:
            out["ArgsEscaped"] = True
        if self.volumes:
            out["Volumes"] = {v: {} for v in self.volumes}
        if self.working_dir:
            out["WorkingDir"] = self.working_dir
        if self.entrypoint is not None:
            out["Entrypoint"] = list(self.entrypoint)
        if self.on_build:
            out["OnBuild"] = list(self.on_build)
        if self.labels:
            out["Labels"] = dict(self.labels)
        if self.stop_signal:
            out["StopSignal"] = self.stop_signal
        if self.shell:
            out["Shell"] = list(self.shell)
        return out

    def env_dict(self) -> dict[str, str]:
        """Env as a mapping (last duplicate wins; an entry without '=' is set to '')."""
        result: dict[str, str] = {}
        for item in self.env:
            key, _, value = item.partition("=")
            result[key] = value
        return result

    def with_env(self, key: str, value: str) -> ContainerConfig:
        """Set one variable, keeping its position if it exists (as docker does)."""
        entries = list(self.env)
        for i, item in enumerate(entries):
            if item.partition("=")[0] == key:
                entries[i] = f"{key}={value}"
                break
        else:
            entries.append(f"{key}={value}")
        return replace(self, env=tuple(entries))


@dataclass(frozen=True)
class History:
    """One ``history`` entry of an image config: the step that made a layer (or an empty one)."""

    created: str | None = None
    created_by: str | None = None
    author: str | None = None
    comment: str | None = None
    empty_layer: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> History:
        return cls(
            created=data.get("created"),
            created_by=data.get("created_by"),
            author=data.get("author"),
            comment=data.get("comment"),
            empty_layer=bool(data.get("empty_layer")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.created_by is not None:
            out["created_by"] = self.created_by
        if self.author:
            out["author"] = self.author
        if self.comment:
            out["comment"] = self.comment
        if self.empty_layer:
            out["empty_layer"] = True
        return out


_TOP_KEYS = (
    "created", "author", "architecture", "variant", "os", "os.version", "os.features",
    "config", "rootfs", "history",
)


@dataclass(frozen=True)
class ConfigFile:
    """An OCI image config (its digest is the image ID docker shows)."""

    architecture: str = ""
    os: str = "linux"
    variant: str | None = None
    os_version: str | None = None
    created: str | None = None
    author: str | None = None
    config: ContainerConfig = field(default_factory=ContainerConfig)
    diff_ids: tuple[Digest, ...] = ()
    history: tuple[History, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_bytes(cls, raw: bytes) -> ConfigFile:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise ImageError(f"invalid image config: not JSON ({err})") from None
        if not isinstance(data, dict):
            raise ImageError("invalid image config: expected a JSON object")
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfigFile:
        rootfs = data.get("rootfs") or {}
        try:
            diff_ids = tuple(Digest(d) for d in rootfs.get("diff_ids") or ())
        except ImageError as err:
            raise ImageError(f"invalid image config: {err}") from None
        return cls(
            architecture=data.get("architecture") or "",
            os=data.get("os") or "",
            variant=data.get("variant") or None,
            os_version=data.get("os.version") or None,
            created=data.get("created"),
            author=data.get("author") or None,
            config=ContainerConfig.from_dict(data.get("config")),
            diff_ids=diff_ids,
            history=tuple(History.from_dict(h) for h in data.get("history") or ()),
            extra={k: v for k, v in data.items() if k not in _TOP_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.created:
            out["created"] = self.created
        if self.author:
            out["author"] = self.author
        out["architecture"] = self.architecture
        if self.variant:
            out["variant"] = self.variant
        out["os"] = self.os
        if self.os_version:
            out["os.version"] = self.os_version
        out.update(self.extra)
        out["config"] = self.config.to_dict()
        out["rootfs"] = {"type": "layers", "diff_ids": [str(d) for d in self.diff_ids]}
        if self.history:
            out["history"] = [h.to_dict() for h in self.history]
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    def layer_history(self) -> list[tuple[History, int | None]]:
        """Pair each history entry with the index of the layer it made (None for empty_layer)."""
        result: list[tuple[History, int | None]] = []
        layer = 0
        for entry in self.history:
            if entry.empty_layer:
                result.append((entry, None))
            else:
                result.append((entry, layer if layer < len(self.diff_ids) else None))
                layer += 1
        return result
