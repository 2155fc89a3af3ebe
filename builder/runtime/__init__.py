"""Isolated build containers for RUN steps and ``pybuild run``.

A :class:`ContainerSpec` says what to run over which lower dirs; a
:class:`Runtime` runs it and returns the exit code, leaving in the upper dir
exactly what the process changed (overlay whiteouts for deletions) and
nothing else on the machine. :func:`detect` picks the isolation
(``--isolation``); :func:`recover` removes what a killed pybuild left.

    runtime = detect("auto", work_root=store_root / "run")
    code = runtime.run(ContainerSpec(lowers, upper, ProcessSpec(("sh", "-c", "make"))),
                       stdout=progress.write)
"""

from __future__ import annotations

import enum
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from builder.errors import RuntimeNotFoundError
from builder.runtime.cleanup import RecoveryReport, recover, stop_containers
from builder.runtime.output import Sink
from builder.runtime.spec import ContainerSpec, Mount, MountType, Network, ProcessSpec

if TYPE_CHECKING:
    from builder.runtime.users import ExecUser, resolve_user

__all__ = [
    "ContainerSpec", "ExecUser", "Isolation", "Mount", "MountType", "Network", "ProcessSpec",
    "RecoveryReport", "Runtime", "detect", "recover", "resolve_user", "stop_containers",
]


def __getattr__(name: str) -> Any:
    """``ExecUser`` and ``resolve_user`` load on first use: a cached build resolves no user."""
    if name in ("ExecUser", "resolve_user"):
        from builder.runtime import users

        return getattr(users, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class Isolation(enum.Enum):
    """The ``--isolation`` choices."""

    AUTO = "auto"
    RUNC = "runc"
    CRUN = "crun"
    CHROOT = "chroot"


class Runtime(Protocol):
    """Runs one container to completion."""

    name: str

    def run(self, spec: ContainerSpec, *, stdout: Sink, stdin: BinaryIO | int | None = None,
            stderr: Sink | None = None, forward_signals: bool = False) -> int:
        """Run ``spec``; stream stdout+stderr (in order) to ``stdout``, or stderr to ``stderr``
        when given; return the exit code. With ``forward_signals`` (and no terminal), the
        signals we get go to the container's process (docker run's signal proxy); otherwise
        SIGTERM and Ctrl-C stop the container."""
        ...


def detect(choice: Isolation | str = Isolation.AUTO, *, work_root: Path) -> Runtime:
    """The runtime for ``choice``; ``auto`` prefers runc, then crun, then chroot."""
    from builder.runtime.chroot import ChrootRuntime
    from builder.runtime.oci import OciRuntime

    try:
        isolation = Isolation(choice.value if isinstance(choice, Isolation) else choice)
    except ValueError:
        names = "|".join(i.value for i in Isolation)
        raise RuntimeNotFoundError(f"unknown isolation {choice!r} (choose {names})") from None
    if os.geteuid() != 0:
        raise RuntimeNotFoundError(
            "containers (RUN steps, pybuild run) need root: they mount overlayfs and create "
            "namespaces; run pybuild as root (sudo), or build without RUN"
        )
    if isolation is Isolation.AUTO:
        for binary in ("runc", "crun"):
            if shutil.which(binary):
                return OciRuntime(binary, work_root=work_root)
        return ChrootRuntime(work_root=work_root)
    if isolation is Isolation.CHROOT:
        return ChrootRuntime(work_root=work_root)
    return OciRuntime(isolation.value, work_root=work_root)
