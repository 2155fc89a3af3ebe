"""The OCI runtime driver: a bundle run by ``runc`` or ``crun`` in the foreground.

The runtime's state lives in its default root (``/run/runc``, ``/run/crun``)
so that ``runc list`` shows build containers to an operator; their ids start
with ``pybuild-`` and their bundles lie under the work root, which is how
:func:`~builder.runtime.cleanup.recover` tells ours apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import BinaryIO

from builder.errors import ContainerStartError, RuntimeNotFoundError
from builder.interrupts import run_to_end, signals_as_interrupt
from builder.runtime.bundle import Container, host_refusals, prepare
from builder.runtime.cleanup import delete_runtime_container
from builder.runtime.output import Outputs, Sink, stdin_fd
from builder.runtime.spawn import forwarding_signals, kill, spawn, wait
from builder.runtime.spec import ContainerSpec, oci_config

SHIM = Path(__file__).with_name("shim.py")


class OciRuntime:
    """Runs containers with an OCI runtime binary (``runc`` or ``crun``)."""

    def __init__(self, binary: str = "runc", *, work_root: Path) -> None:
        path = shutil.which(binary)
        if path is None:
            raise RuntimeNotFoundError(
                f"isolation {binary!r} is not available: {binary} is not installed "
                "(install it, or choose another with --isolation runc|crun|chroot)"
            )
        self.binary = path
        self.name = Path(binary).name
        self.work_root = Path(work_root)

    def __repr__(self) -> str:
        return f"OciRuntime({self.name!r})"

    def run(self, spec: ContainerSpec, *, stdout: Sink, stdin: BinaryIO | int | None = None,
            stderr: Sink | None = None, forward_signals: bool = False) -> int:
        """Run ``spec`` to completion; return its exit code (128+N when killed by signal N)."""
        with signals_as_interrupt(), prepare(spec, self.work_root, self.name) as container:
            return self._run(spec, container, stdin, stdout, stderr,
                             forward_signals and not spec.process.terminal)

    def _command(self, container: Container, log: Path, notice_fd: int | None) -> list[str]:
        if self.name == "crun":
            logging = [f"--log=file:{log}", "--log-format=json"]
        else:
            logging = ["--log", str(log), "--log-format", "json"]
        if not container.terminal:
            # `runc run` splits stdout and stderr into two pipes; the shim keeps them one stream,
            # and kills the container when pybuild dies (a foreground `run` would go on)
            return [sys.executable, "-I", "-S", str(SHIM), str(os.getpid()), str(notice_fd), self.binary,
                    str(container.dir), container.id, *logging]
        return [self.binary, *logging, "run", "--bundle", str(container.dir), container.id]

    def _run(self, spec: ContainerSpec, container: Container, stdin: BinaryIO | int | None,
             stdout: Sink, stderr: Sink | None, forward_signals: bool) -> int:
        config = oci_config(
            spec, rootfs=str(container.rootfs), user=container.user, hostname=container.hostname,
            etc_files=container.etc_files, mount_targets=container.mount_targets,
            container_id=container.id,
        )
        with host_refusals(container.dir):
            (container.dir / "config.json").write_text(json.dumps(config))
        log = container.dir / "runtime.log"
        own_terminal = spec.process.terminal and not has_controlling_terminal()
        outputs = Outputs(stdout, stderr, terminal=own_terminal, start_notice=not spec.process.terminal)
        command = self._command(container, log, outputs.notice_fd)
        if own_terminal:
            # `runc run` relays the caller's terminal and fails without one (a CI job, a pipe);
            # docker run -t works there: give the runtime a terminal of ours and relay its output
            command = ["setsid", "--ctty", *command]
            stdin = outputs.stdout_fd
        try:
            proc = spawn(command, stdin=stdin_fd(stdin), output=outputs.stdout_fd, error=outputs.stderr_fd,
                         pass_fds=() if outputs.notice_fd is None else (outputs.notice_fd,),
                         new_session=not spec.process.terminal)
        except BaseException:
            outputs.close()
            raise
        outputs.close_writers()
        try:
            with forwarding_signals(proc.pid) if forward_signals else contextlib.nullcontext():
                outputs.pump()
                code = wait(proc)
        except BaseException:
            def stop() -> None:  # Ctrl-C, a failing sink: stop now
                delete_runtime_container(self.name, container.id)
                kill(proc)

            run_to_end(stop)  # one more Ctrl-C does not leave the container running
            raise
        error = _start_error(log) if code != 0 else ""
        if not error:
            outputs.release()  # anything the runtime said that no error in its log explains
        if error:
            if "cgroups in hybrid mode" in error:
                error += (" (crun refuses hosts whose cgroup v2 hierarchy holds controllers in"
                          " hybrid mode; use --isolation runc or chroot)")
            raise ContainerStartError(f"{self.name}: {error}")
        return code


def has_controlling_terminal() -> bool:
    """Whether pybuild has a controlling terminal, which ``runc run`` with a terminal needs."""
    try:
        os.close(os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY))
    except OSError:
        return False
    return True


def _start_error(log: Path) -> str:
    """The runtime's own error (not the process's), from its JSON log; empty if none."""
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return ""
    messages = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("level") in ("error", "fatal"):
            messages.append(str(entry.get("msg", "")).removeprefix("runc run failed: "))
    return "; ".join(messages)
