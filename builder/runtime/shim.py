"""A minimal container shim for runc; run as a script, standard library only.

``runc run`` copies the container's stdout and stderr through two separate
pipes, which reorders a RUN step's combined output. ``runc create`` instead
hands the container our file descriptors as they are, so this shim does what
containerd's shim does: become a child subreaper, ``create`` (the container's
init is re-parented to us when runc exits), ``start``, wait for the init,
``delete``, and exit with the init's status (128+N for signal N). It starts
for every RUN step, so it imports only fast modules (no subprocess).

When pybuild dies (SIGKILL, an OOM kill), the shim gets SIGTERM (PR_SET_PDEATHSIG) and
kills the container's init, which takes every process of the container with it: a killed
build leaves no step running on (the next pybuild removes its mounts and directories).

Any other of :data:`FORWARDED` (a SIGTERM while pybuild lives, too) is handed to the
container's init, as containerd's shim does for ``docker run``'s signal proxy; one that comes
before the init has started is handed on once it has.

Once the container's process has started, the shim writes a byte to NOTICE_FD: what
pybuild read from the shared stdio before that was the runtime's own (a start error,
which pybuild reports from the runtime's log instead).

``python -I -S shim.py PARENT_PID NOTICE_FD RUNTIME BUNDLE ID [GLOBAL_OPTION...]``
"""

import _signal as signal
import ctypes
import os
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
CATCHABLE = [s for s in signal.valid_signals() if s not in (signal.SIGKILL, signal.SIGSTOP)]
FORWARDED = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def spawn(argv, quiet=False):
    """Start ``argv`` with our stdio (or /dev/null) and every signal at its default; its pid."""
    pid = os.fork()  # this process has one thread: fork is safe (posix_spawn would leave
    if pid:          # glibc's internal signals ignored in the child)
        return pid
    try:
        for sig in CATCHABLE:
            signal.signal(sig, signal.SIG_DFL)
        if quiet:
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)


EXITED: dict[int, int] = {}  # pid -> exit code of every child reaped so far (the init may exit before start's)
INIT: list[int] = []  # the container's init, once created
PARENT: list[int] = []  # pybuild's pid
PARENT_GONE: list[int] = []  # the signals that said pybuild died
STARTED: list[int] = []  # the init, once started: signals go to it from then on
PENDING: list[int] = []  # signals forwarded before that


def kill_init():
    for pid in INIT:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def parent_gone(signum, frame):
    """pybuild died: its container goes with it (the init, our child, is not reaped yet)."""
    PARENT_GONE.append(signum)
    kill_init()


def on_signal(signum, frame):
    """SIGTERM from the kernel when pybuild died (we have a new parent by then); otherwise a
    signal pybuild forwards (``pybuild run``'s signal proxy), for the container's init."""
    if signum == signal.SIGTERM and os.getppid() != PARENT[0]:
        parent_gone(signum, frame)
    elif STARTED:
        deliver(signum)
    else:
        PENDING.append(signum)


def deliver(signum):
    if STARTED[0] in EXITED:
        return  # reaped already: its pid may be another process's now
    try:
        os.kill(STARTED[0], signum)
    except ProcessLookupError:
        pass


def wait_for(pid):
    """Wait for ``pid``, reaping any orphan that exits meanwhile; its exit code."""
    while pid not in EXITED:
        try:
            reaped, status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            return None
        code = os.waitstatus_to_exitcode(status)
        EXITED[reaped] = 128 - code if code < 0 else code
    return EXITED.pop(pid)


def main():
    parent, notice, runtime, bundle, cid, *global_options = sys.argv[1:]
    PARENT.append(int(parent))
    notice_fd = int(notice)
    os.set_inheritable(notice_fd, False)  # the runtime and the container never hold it
    libc = ctypes.CDLL(None, use_errno=True)
    for sig in FORWARDED:
        signal.signal(sig, on_signal)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != PARENT[0]:
        return 1  # pybuild is already gone
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    pid_file = os.path.join(bundle, "init.pid")
    # our stdio become the container's, as they are
    create = [runtime, *global_options, "create", "--bundle", bundle, "--pid-file", pid_file, cid]
    if wait_for(spawn(create)) != 0:
        return 1  # the runtime's log says why
    with open(pid_file) as f:
        init = int(f.read())
    INIT.append(init)
    if PARENT_GONE:  # before the init was known
        kill_init()
    if PARENT_GONE or wait_for(spawn([runtime, *global_options, "start", cid], quiet=True)) != 0:
        wait_for(spawn([runtime, "delete", "--force", cid], quiet=True))
        return 1
    STARTED.append(init)
    try:
        os.write(notice_fd, b"s")
    except OSError:
        pass  # pybuild is gone (SIGTERM is on its way): the init is killed, then deleted below
    os.close(notice_fd)
    for signum in PENDING:
        deliver(signum)
    code = wait_for(init)
    wait_for(spawn([runtime, "delete", "--force", cid], quiet=True))
    return 1 if code is None else code


if __name__ == "__main__":
    sys.exit(main())
