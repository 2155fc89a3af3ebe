"""A minimal container shim for runc; run as a script, standard library only.

``runc run`` copies the container's stdout and stderr through two separate
pipes, which reorders a RUN step's combined output. ``runc create`` instead
hands the container our file descriptors as they are, so this shim does what
containerd's shim does: become a child subreaper, ``create`` (the container's
init is re-parented to us when runc exits), ``start``, wait for the init,
``delete``, and exit with the init's status (128+N for signal N).

``python -I -S shim.py PARENT_PID RUNTIME BUNDLE ID [GLOBAL_OPTION...]``
"""

import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option, value):
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)


def main():
    parent, runtime, bundle, cid, *global_options = sys.argv[1:]
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != int(parent):
        return 1  # pybuild is already gone
    prctl(PR_SET_CHILD_SUBREAPER, 1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pid_file = os.path.join(bundle, "init.pid")
    quiet = {"stdin": subprocess.DEVNULL, "stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    create = [runtime, *global_options, "create", "--bundle", bundle, "--pid-file", pid_file, cid]
    if subprocess.call(create) != 0:  # our stdio: the container's, as they are
        return 1  # the runtime's log says why
    with open(pid_file) as f:
        init = int(f.read())
    if subprocess.call([runtime, *global_options, "start", cid], **quiet) != 0:
        subprocess.call([runtime, "delete", "--force", cid], **quiet)
        return 1
    status = None
    while status is None:
        try:
            pid, wait_status = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        if pid == init:
            status = wait_status
    subprocess.call([runtime, "delete", "--force", cid], **quiet)
    if status is None:
        return 1
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
