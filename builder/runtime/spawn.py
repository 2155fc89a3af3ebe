"""Starting runtime processes with a clean slate: no signal ignored, only the chosen descriptors.

A container's process inherits ignored signals across every exec on the way
(a shell's background job ignores SIGINT and SIGQUIT, Python ignores SIGPIPE
and SIGXFSZ), while docker's processes start with none ignored. coreutils'
``env --default-signal`` resets them all before the runtime starts, except
glibc's internal signals (32, 33), which no libc call may touch: a CI runner
that ignores them passes that on, so pybuild resets them itself with the raw
``rt_sigaction`` system call. posix_spawn(3) is no substitute for either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import threading
from collections.abc import Iterator, Sequence

from builder.interrupts import Interrupted

RESET_SIGNALS = ("env", "--default-signal", "--")
# docker run's signal proxy hands on every signal; these are the ones people send
FORWARDED_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1,
                     signal.SIGUSR2)
FORCE_STOP_INTERRUPTS = 3  # Ctrl-C or SIGTERM: the third stops the container
LIBC_INTERNAL_SIGNALS = (32, 33)
SYS_RT_SIGACTION = {"x86_64": 13, "aarch64": 134, "riscv64": 134, "ppc64le": 173, "s390x": 174}


def default_libc_internal_signals() -> None:
    """Set glibc's internal signals from ignored back to default in this process (children inherit it).

    A handler glibc installed itself is left alone; only an inherited SIG_IGN changes.
    """
    number = SYS_RT_SIGACTION.get(os.uname().machine)
    if number is None:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for sig in LIBC_INTERNAL_SIGNALS:
        current = (ctypes.c_ulong * 4)()  # struct kernel_sigaction; the handler comes first
        if libc.syscall(number, sig, None, ctypes.byref(current), 8) != 0:
            continue
        if current[0] == int(signal.SIG_IGN):
            libc.syscall(number, sig, ctypes.byref((ctypes.c_ulong * 4)()), None, 8)


def spawn(argv: Sequence[str], *, stdin: int | None, output: int, error: int | None = None,
          pass_fds: Sequence[int] = (), new_session: bool = True) -> subprocess.Popen:
    """Start ``argv`` with ``stdin`` (None: /dev/null), ``output`` as stdout and ``error`` as
    stderr (None: ``output`` too)."""
    default_libc_internal_signals()
    return subprocess.Popen(
        [*RESET_SIGNALS, *argv], stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=output, stderr=output if error is None else error, pass_fds=tuple(pass_fds),
        start_new_session=new_session,
    )


def wait(proc: subprocess.Popen) -> int:
    """Wait for ``proc``; its exit code, 128+N when killed by signal N."""
    code = proc.wait()
    return 128 - code if code < 0 else code


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and reap it."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGKILL)
    proc.wait()


@contextlib.contextmanager
def forwarding_signals(pid: int) -> Iterator[None]:
    """docker run's signal proxy: the signals pybuild gets go to ``pid`` (the shim or nsinit,
    which hand them to the container's process), so Ctrl-C or a SIGTERM from a process manager
    lets the program shut down its own way. A container may ignore them (a pid 1 with no
    handler does), and pybuild has no ``docker kill``: the third Ctrl-C or SIGTERM stops the
    container."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    interrupts = 0

    def _forward(signum: int, frame: object) -> None:
        nonlocal interrupts
        if signum in (signal.SIGINT, signal.SIGTERM):
            interrupts += 1
            if interrupts >= FORCE_STOP_INTERRUPTS:
                raise Interrupted(signum)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    previous = {sig: signal.signal(sig, _forward) for sig in FORWARDED_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
