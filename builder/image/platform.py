"""Platforms (``linux/amd64``, ``linux/arm/v7``): parsing, the host's, and matching."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from builder.errors import UsageError

_ARCH_ALIASES = {
    "x86_64": ("amd64", None),
    "x86-64": ("amd64", None),
    "amd64": ("amd64", None),
    "aarch64": ("arm64", None),
    "arm64": ("arm64", None),
    "armhf": ("arm", "v7"),
    "armel": ("arm", "v6"),
    "armv7l": ("arm", "v7"),
    "armv6l": ("arm", "v6"),
    "i386": ("386", None),
    "i686": ("386", None),
    "ppc64le": ("ppc64le", None),
    "s390x": ("s390x", None),
    "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class Platform:
    """An OCI platform (``linux/amd64``, ``linux/arm/v7``): what an image or index entry runs on."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = field(default=())

    @classmethod
    def parse(cls, text: str) -> Platform:
        """Parse ``os/arch[/variant]`` (containerd's normalisation: ``linux/arm64/v8`` == ``linux/arm64``)."""
        parts = [p.strip().lower() for p in text.split("/")]
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise UsageError(f"invalid platform {text!r}: expected os/arch[/variant], e.g. linux/amd64")
        os_name, arch = parts[0], parts[1]
        variant = parts[2] if len(parts) == 3 else None
        arch, default_variant = _ARCH_ALIASES.get(arch, (arch, None))
        variant = variant or default_variant
        if arch == "arm64" and variant == "v8":
            variant = None
        if arch == "arm" and variant is None:
            variant = "v7"
        return cls(os=os_name, architecture=arch, variant=variant)

    @classmethod
    def host(cls) -> Platform:
        machine = os.uname().machine.lower()  # platform.machine()'s answer, without its import
        arch, variant = _ARCH_ALIASES.get(machine, (machine, None))
        return cls(os="linux", architecture=arch, variant=variant)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Platform:
        return cls(
            os=data.get("os", ""),
            architecture=data.get("architecture", ""),
            variant=data.get("variant") or None,
            os_version=data.get("os.version") or None,
            os_features=tuple(data.get("os.features") or ()),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            out["os.version"] = self.os_version
        if self.os_features:
            out["os.features"] = list(self.os_features)
        if self.variant:
            out["variant"] = self.variant
        return out

    def matches(self, other: Platform) -> bool:
        """Whether an image for ``other`` runs as this platform (variant only checked when both say)."""
        if self.os != other.os:
            return False
        a = Platform.parse(f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else ""))
        b = Platform.parse(f"{other.os}/{other.architecture}" + (f"/{other.variant}" if other.variant else ""))
        if a.architecture != b.architecture:
            return False
        return a.variant is None or b.variant is None or a.variant == b.variant

    def __str__(self) -> str:
        return f"{self.os}/{self.architecture}" + (f"/{self.variant}" if self.variant else "")
