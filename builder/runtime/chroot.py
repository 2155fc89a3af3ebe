"""The chroot isolation: namespaces and pivot_root without an OCI runtime (``--isolation chroot``).

The fallback where neither runc nor crun is installed. pybuild prepares the
rootfs as for runc (same overlay, init layer, /etc files, USER resolution);
:mod:`builder.runtime.nsinit`, started as a small stdlib-only Python process,
does what runc's init would: namespaces, mounts, pivot_root, capabilities,
user, exec, with the same seccomp profile as runc's (where libseccomp is
installed; without it, no filter). A cgroup is made only for resource limits
(:class:`~builder.runtime.cgroups.Cgroup`); with no device cgroup to stop a
device node from opening, CAP_MKNOD is not given and the rootfs and binds are
mounted nodev (runc's /dev nodes are made on a /dev tmpfs as usual).
"""

from __future__ import annotations

import contextlib
import marshal
import os
import sys
from pathlib import Path
from typing import BinaryIO

from builder.errors import ContainerError, ContainerStartError
from builder.interrupts import run_to_end, signals_as_interrupt
from builder.runtime import seccomp
from builder.runtime.bundle import Container, host_refusals, prepare
from builder.runtime.cgroups import Cgroup, cgroup_mounts
from builder.runtime.cleanup import process_start_time
from builder.runtime.output import Outputs, Sink, stdin_fd
from builder.runtime.spawn import forwarding_signals, kill, spawn, wait
from builder.runtime.spec import (
    DEFAULT_CAPABILITIES,
    MASKED_PATHS,
    READONLY_PATHS,
    UMASK,
    UNLIMITED,
    ContainerSpec,
    MountType,
    network_sysctls,
    process_env,
    root_propagation,
)

NSINIT = Path(__file__).with_name("nsinit.py")


class ChrootRuntime:
    """Runs containers with unshare + pivot_root, no OCI runtime needed."""

    name = "chroot"

    def __init__(self, *, work_root: Path) -> None:
        self.work_root = Path(work_root)

    def __repr__(self) -> str:
        return "ChrootRuntime()"

    def run(self, spec: ContainerSpec, *, stdout: Sink, stdin: BinaryIO | int | None = None,
            stderr: Sink | None = None, forward_signals: bool = False) -> int:
        """Run ``spec`` to completion; return its exit code (128+N when killed by signal N)."""
        if spec.hooks:
            raise ContainerError("the step's CDI device has OCI hooks, which need an OCI runtime: "
                                 "build with --isolation runc or crun")
        with signals_as_interrupt(), prepare(spec, self.work_root, self.name) as container:
            cgroup = None
            try:
                if spec.resources:
                    cgroup = Cgroup.create(container.id, spec.resources,
                                           record=lambda dirs: container.state.update(cgroups=tuple(dirs)))
                return self._run(spec, container, stdin, stdout, stderr, cgroup,
                                 forward_signals and not spec.process.terminal)
            finally:
                if cgroup is not None:
                    cgroup.remove()

    def _plan(self, spec: ContainerSpec, container: Container, cgroup: Cgroup | None) -> dict:
        user = container.user
        return {
            "cgroup_procs": cgroup.procs if cgroup else [],
            "cgroupfs": cgroup_mounts(cgroup.path, cgroup.hierarchies) if cgroup else cgroup_mounts(None),
            "rootfs": str(container.rootfs),
            "hostname": container.hostname,
            "network": spec.network.value,
            "sysctl": network_sysctls(spec.network),
            "readonly_rootfs": spec.readonly_rootfs,
            "terminal": spec.process.terminal,
            "etc": [{"source": str(src), "target": dst} for dst, src in container.etc_files.items()],
            "mounts": [
                {"type": m.type.value, "source": str(m.source) if m.type is MountType.BIND else "",
                 "target": target, "readonly": m.readonly, "options": m.options()}
                for m, target in zip(spec.mounts, container.mount_targets, strict=True)
            ],
            "root_propagation": root_propagation(spec.mounts),
            "masked": [] if spec.privileged else list(MASKED_PATHS),
            "readonly": [] if spec.privileged else list(READONLY_PATHS),
            "capabilities": None if spec.privileged else [c for c in DEFAULT_CAPABILITIES if c != "CAP_MKNOD"],
            "seccomp": None if spec.privileged else seccomp.profile(),
            "privileged": spec.privileged,
            "devices": [(d.path, d.type, d.major, d.minor, d.file_mode, d.uid, d.gid) for d in spec.device_nodes()],
            "rlimits": [(name, -1 if soft == UNLIMITED else soft, -1 if hard == UNLIMITED else hard)
                        for name, (soft, hard) in spec.rlimits().items()],
            "shm_size": spec.shm_size,
            "umask": UMASK,
            "user": {"uid": user.uid, "gid": user.gid, "sgids": list(user.additional_gids)},
            "cwd": spec.process.cwd,
            "args": list(spec.process.args),
            "env": process_env(spec.process.env, user),
        }

    def _run(self, spec: ContainerSpec, container: Container, stdin: BinaryIO | int | None,
             stdout: Sink, stderr: Sink | None, cgroup: Cgroup | None, forward_signals: bool) -> int:
        plan_path = container.dir / "plan"
        with host_refusals(container.dir):
            plan_path.write_bytes(marshal.dumps(self._plan(spec, container, cgroup)))
        err_read, err_write = os.pipe()
        try:
            outputs = Outputs(stdout, stderr)
        except BaseException:
            os.close(err_read)
            os.close(err_write)
            raise
        try:
            proc = spawn([sys.executable, "-I", "-S", str(NSINIT), str(plan_path), str(err_write),
                          str(os.getpid())],
                         stdin=stdin_fd(stdin), output=outputs.stdout_fd, error=outputs.stderr_fd,
                         pass_fds=(err_write,), new_session=not spec.process.terminal)
        except BaseException:
            outputs.close()
            os.close(err_read)
            raise
        finally:
            os.close(err_write)
        outputs.close_writers()
        try:
            container.state.update(helper_pid=proc.pid, helper_start=process_start_time(proc.pid))
            with forwarding_signals(proc.pid) if forward_signals else contextlib.nullcontext():
                outputs.pump()
                code = wait(proc)
        except BaseException:
            # one more Ctrl-C does not leave the container running; pid 1 of the container dies
            # with the helper (PR_SET_PDEATHSIG), then all the rest
            run_to_end(lambda: kill(proc))
            os.close(err_read)
            raise
        with os.fdopen(err_read, "rb") as f:
            report = f.read()
        if report:
            error = marshal.loads(report)
            cls = ContainerStartError if error.get("start") else ContainerError
            raise cls(f"chroot: {error['error']}")
        return code
