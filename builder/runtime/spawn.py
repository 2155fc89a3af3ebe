"""Starting runtime processes with a clean slate: no signal ignored, only the chosen descriptors.

A container's process inherits ignored signals across every exec on the way
(a shell's background job ignores SIGINT and SIGQUIT, Python ignores SIGPIPE
and SIGXFSZ), while docker's processes start with none ignored. coreutils'
``env --default-signal`` resets them all before the runtime starts.
posix_spawn(3) is no substitute: glibc's leaves its own internal signals
(32, 33) ignored in the child.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Sequence

RESET_SIGNALS = ("env", "--default-signal", "--")


def spawn(argv: Sequence[str], *, stdin: int | None, output: int, pass_fds: Sequence[int] = (),
          new_session: bool = True) -> subprocess.Popen:
    """Start ``argv`` with ``stdin`` (None: /dev/null), ``output`` as stdout and stderr."""
    return subprocess.Popen(
        [*RESET_SIGNALS, *argv], stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=output, stderr=output, pass_fds=tuple(pass_fds), start_new_session=new_session,
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
