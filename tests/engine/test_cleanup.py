"""A build leaves nothing behind: after 20 builds, some interrupted (SIGINT) or killed (SIGKILL)
mid-RUN, and one normal build, no mount, runtime container or temp dir of the store remains.

Own store (not the session one) so that the checks see only what these builds made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers.leftovers import marker, runtime_containers
from tests.helpers.tools import run_pybuild


@pytest.fixture
def own_store(base_archive: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    return root


# A step's sleep outlasts every communicate() timeout below: a command that waited for the
# sleep to end, instead of stopping it, fails there, whatever the machine's load.
LONG_SECONDS = 90


def _long_sleep() -> str:
    """A sleep argument naming this build's container process alone (other test runs on the
    machine, or this test's killed builds before, have sleeps of their own)."""
    return marker(LONG_SECONDS)


def _sleepers(sleep: str) -> list[int]:
    """Processes still running a container's ``sleep SLEEP``."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", sleep.encode()]:
                found.append(int(proc.name))
    return found


def _start_build(root: Path, ctx: Path, isolation: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "builder", "build", "--progress", "plain", "--no-cache",
         "--isolation", isolation, str(ctx)],
        env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )


def _wait_running(root: Path, proc: subprocess.Popen[bytes], sleep: str, timeout: float = 60) -> None:
    """Until the RUN's container exists (its state file) and runs its command (``sleep SLEEP``)."""
    deadline = time.monotonic() + timeout
    states = root / "run" / "state"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the build ended early: {proc.stderr.read().decode()}")  # type: ignore[union-attr]
        if states.is_dir() and any(states.glob("*.json")) and _sleepers(sleep):
            return
        time.sleep(0.05)
    raise AssertionError("the RUN never started")


def _mounts_under(root: Path) -> list[str]:
    prefix = str(root.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def _leftovers(root: Path) -> list[str]:
    found = []
    for sub in ("tmp", "run/tmp", "run/containers", "run/state"):
        d = root / sub
        if d.is_dir():
            found += [f"{sub}/{e.name}" for e in d.iterdir()]
    return found


def test_interrupted_and_killed_builds_leave_nothing(own_store: Path, tmp_path: Path) -> None:
    root = own_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    plan = (["SIGINT", "SIGKILL", "ok", "SIGINT"] * 5)  # 10 SIGINT, 5 SIGKILL, 5 complete
    # each action meets each isolation (runc, crun, chroot) at least once
    isolations = ("runc", "crun", "chroot")
    sleeps = []
    for i, action in enumerate(plan):
        isolation = isolations[i % 3]
        sleep = _long_sleep() if action != "ok" else "0.1"
        sleeps.append(sleep)
        (ctx / "Dockerfile").write_text(
            f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /marker\n"
            f"RUN --mount=type=tmpfs,target=/scratch --mount=type=cache,target=/cache "
            f"echo started; sleep {sleep}\nRUN echo after > /after\n")
        proc = _start_build(root, ctx, isolation)
        if action == "ok":
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.decode()
            continue
        _wait_running(root, proc, sleep)
        if action == "SIGINT":
            # Ctrl-C reaches the whole foreground process group; every other build only pybuild.
            if i % 2:
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=60)
            text = err.decode()
            # Ctrl-C stops the running container: the long sleep does not run to its end (a
            # build that waited for it would have outlasted communicate's timeout).
            assert proc.returncode == 130, text
            assert "ERROR: interrupted" in text and "Traceback" not in text, text
            # Clean-up runs before exit: nothing of the interrupted build survives it.
            assert _mounts_under(root) == []
            assert [x for x in _leftovers(root) if not x.startswith("tmp/")] == [], _leftovers(root)
        else:
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == -signal.SIGKILL, err.decode()
    (ctx / "Dockerfile").write_text("FROM busybox:local\nRUN echo final > /final\n")
    run_pybuild("build", "--no-cache", "-t", "cleanup-final:1", str(ctx), root=root, check=True)
    assert _mounts_under(root) == []
    for runtime in ("runc", "crun"):
        assert runtime_containers(root, (runtime,)) == [], runtime
    assert _leftovers(root) == []
    assert [s for s in sleeps if _sleepers(s)] == [], "a killed build's container process is still running"
    check = run_pybuild("store", "check", root=root)
    assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
    out = run_pybuild("run", "--rm", "cleanup-final:1", "cat", "/final", root=root, check=True)
    assert out.stdout == b"final\n"
    shutil.rmtree(root / "run", ignore_errors=True)


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
def test_a_killed_build_takes_its_running_step_with_it(own_store: Path, tmp_path: Path,
                                                       isolation: str) -> None:
    """SIGKILL (a CI timeout, the OOM killer) gives pybuild no time to clean up: its RUN step's
    processes still die with it (under runc and crun they ran on until the next pybuild command
    happened to recover them), and the next build removes the mounts and directories left."""
    root = own_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    sleep = _long_sleep()
    (ctx / "Dockerfile").write_text(f"FROM busybox:local\nRUN sleep {sleep}\n")
    proc = _start_build(root, ctx, isolation)
    _wait_running(root, proc, sleep)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    def running() -> list[object]:
        return [*_sleepers(sleep), *(runtime_containers(root, (isolation,)) if isolation != "chroot" else [])]

    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running() == [], "the killed build's step is still running"
    (ctx / "Dockerfile").write_text("FROM busybox:local\nRUN echo next > /next\n")
    run_pybuild("build", "-q", str(ctx), root=root, check=True)
    assert _mounts_under(root) == []
    assert _leftovers(root) == [], _leftovers(root)


def test_interrupted_pybuild_run_leaves_nothing(own_store: Path) -> None:
    """``pybuild run`` stopped by Ctrl-C (to it or its group) or SIGTERM: 130 (143), no traceback, nothing left.
    The signals go to the container first (docker run's signal proxy); a sleep as pid 1 ignores
    them, so the third stops it."""
    root = own_store
    sleeps = []
    for how in ("pid", "group", "term"):
        sleep = _long_sleep()
        sleeps.append(sleep)
        proc = subprocess.Popen(
            [sys.executable, "-m", "builder", "run", "--rm", "busybox:local", "sleep", sleep],
            env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            start_new_session=True)
        _wait_running(root, proc, sleep)
        for _ in range(3):
            time.sleep(0.2)
            if how == "group":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                proc.send_signal(signal.SIGINT if how == "pid" else signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == (143 if how == "term" else 130), err.decode()
        assert err.endswith(b"ERROR: interrupted by SIGTERM\n" if how == "term" else b"ERROR: interrupted\n")
        assert b"Traceback" not in err  # and within communicate's timeout
    assert _mounts_under(root) == []
    assert _leftovers(root) == []  # its writable layer too, not left to the next command's sweep
    assert [s for s in sleeps if _sleepers(s)] == []


@pytest.mark.parametrize("isolation", ["runc", "chroot"])
def test_killed_pybuild_run_is_cleaned_by_the_next(own_store: Path, isolation: str) -> None:
    """SIGKILL (an OOM kill) of ``pybuild run``: its container dies with it; the next ``pybuild run``
    removes its mounts, state and writable layer (the layer stayed in tmp/ until a build or pull)."""
    root = own_store
    sleep = _long_sleep()
    proc = subprocess.Popen(
        [sys.executable, "-m", "builder", "run", "--rm", "--isolation", isolation, "busybox:local", "sh", "-c",
         f"head -c 1000000 /dev/zero > /big; sleep {sleep}"],
        env={**os.environ, "PYBUILD_ROOT": str(root)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_running(root, proc, sleep)
    proc.kill()
    proc.wait(timeout=30)
    run_pybuild("run", "--rm", "busybox:local", "true", root=root, check=True)
    assert _mounts_under(root) == []
    assert _leftovers(root) == []
    deadline = time.monotonic() + 10
    while _sleepers(sleep) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _sleepers(sleep) == []


@pytest.mark.parametrize("step", ["COPY big /big", "RUN truncate -s 6G /big"])
def test_interrupted_layer_write_stops_mid_layer(own_store: Path, tmp_path: Path, step: str) -> None:
    """Ctrl-C while a COPY of a big context, or a RUN that made a big file, writes its layer stops
    the writing where it is, as docker's client stops sending the context: the build does not
    wait for the layer to be written to its end."""
    root = own_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with open(ctx / "big", "wb") as f:
        f.truncate(6 << 30)  # sparse: 6 GiB to copy (seconds of writing), no disk for the context
    (ctx / "Dockerfile").write_text(f"FROM busybox:local\n{step}\nRUN echo after > /after\n")
    proc = _start_build(root, ctx, "runc")
    deadline = time.monotonic() + 60
    while not any(p.stat().st_size > (64 << 20) for p in (root / "tmp").glob("*.layer.tar")):
        assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "the step never started writing its layer"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    text = out.decode() + err.decode()
    assert proc.returncode == 130, text
    assert "ERROR: interrupted" in text and "Traceback" not in text, text
    # The step was cancelled, not finished and then followed by the interruption.
    assert "#2 CANCELED" in text and "#2 DONE" not in text, text
    assert _mounts_under(root) == []
    assert _leftovers(root) == [], _leftovers(root)


def _holds_cache_lock(pid: int) -> bool:
    """Whether the process has a cache mount's lock file open (a step at sharing=locked)."""
    fds = Path(f"/proc/{pid}/fd")
    for fd in fds.iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if "/cachemounts/" in target and target.endswith(".lock"):
                return True
    return False


def test_ctrl_c_while_waiting_for_a_locked_cache_mount(own_store: Path, tmp_path: Path) -> None:
    """A step waiting for a sharing=locked cache mount that another build holds stops at Ctrl-C,
    at once, instead of waiting for the other build to let the lock go."""
    root = own_store
    holder_ctx, waiter_ctx = tmp_path / "holder", tmp_path / "waiter"
    sleep = _long_sleep()
    for ctx, command in ((holder_ctx, f"sleep {sleep}"), (waiter_ctx, "echo got-the-lock")):
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(
            f"FROM busybox:local\nRUN --mount=type=cache,id=locked-{tmp_path.name},target=/c,sharing=locked "
            f"{command}\n")
    holder = _start_build(root, holder_ctx, "runc")
    try:
        _wait_running(root, holder, sleep)
        waiter = _start_build(root, waiter_ctx, "runc")
        deadline = time.monotonic() + 30
        while not _holds_cache_lock(waiter.pid):
            assert waiter.poll() is None, waiter.stderr.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the waiting build never reached the lock"
            time.sleep(0.05)
        time.sleep(0.3)  # in its wait for the lock
        os.killpg(waiter.pid, signal.SIGINT)
        out, err = waiter.communicate(timeout=20)
        assert waiter.returncode == 130, err.decode()
        assert b"ERROR: interrupted" in err and b"Traceback" not in err and b"got-the-lock" not in out + err
        # The waiter stopped while the holder still had the lock: it did not wait for it.
        assert holder.poll() is None  # the other build goes on
    finally:
        holder.send_signal(signal.SIGINT)
        holder.communicate(timeout=60)
    assert _mounts_under(root) == []
    assert _leftovers(root) == [], _leftovers(root)


def test_interrupted_layer_extraction_stops_and_starts_no_container(own_store: Path, tmp_path: Path) -> None:
    """Ctrl-C while a RUN's lower layer is being unpacked: the unpacking stops where it is (no
    wait for a big layer's end) and the step's container never starts."""
    root = own_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with open(ctx / "big", "wb") as f:
        f.truncate(2 << 30)  # sparse: 2 GiB to unpack for the RUN
    (ctx / "Dockerfile").write_text("FROM busybox:local\nCOPY big /big\nRUN echo ran-the-step | tr a-z A-Z\n")
    snapshots_before = set((root / "snapshots").iterdir()) if (root / "snapshots").is_dir() else set()
    proc = _start_build(root, ctx, "runc")
    seen = b""
    while b"[3/3] RUN" not in seen:  # the base's own snapshot is unpacked before: not that one
        line = proc.stderr.readline()  # type: ignore[union-attr]  # plain progress goes to stderr
        assert line, seen.decode()
        seen += line
    deadline = time.monotonic() + 120
    while not any(p.is_dir() and any(p.iterdir()) for p in (root / "tmp").glob("*.snapshot")):
        assert proc.poll() is None, seen.decode()
        assert time.monotonic() < deadline, "the RUN's layer was never unpacked"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    text = out.decode() + seen.decode() + err.decode()
    assert proc.returncode == 130, text
    assert "ERROR: interrupted" in text and "Traceback" not in text, text
    assert "#3 CANCELED" in text and "#3 DONE" not in text and "RAN-THE-STEP" not in text, text
    # The unpacking stopped: no snapshot but the base's was made (none of the COPY's layer).
    made = set((root / "snapshots").iterdir()) - snapshots_before
    assert len(made) <= 1, made
    assert _mounts_under(root) == []
    assert _leftovers(root) == [], _leftovers(root)


def _zero_tar_zst(path: Path, name: str, size: int) -> None:
    """A zstd tar holding one file of ``size`` zero bytes (a few KB on disk)."""
    import io
    import tarfile

    import zstandard

    class Zeros(io.RawIOBase):
        def __init__(self, left: int) -> None:
            self.left = left

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def, override]
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    with open(path, "wb") as raw, zstandard.ZstdCompressor(level=1).stream_writer(raw) as out, \
            tarfile.open(fileobj=out, mode="w|") as tf:
        info = tarfile.TarInfo(name)
        info.size = size
        tf.addfile(info, io.BufferedReader(Zeros(size), 1 << 20))


def test_interrupted_add_stops_unpacking_its_archive(own_store: Path, tmp_path: Path) -> None:
    """Ctrl-C while ADD unpacks a local archive stops the unpacking where it is (not at the
    archive's end, then the layer's)."""
    root = own_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    size = 3 << 30
    _zero_tar_zst(ctx / "big.tar.zst", "zeros", size)
    (ctx / "Dockerfile").write_text("FROM busybox:local\nADD big.tar.zst /x/\n")
    proc = _start_build(root, ctx, "runc")

    def unpacked() -> int:
        return max((p.stat().st_size for p in (root / "tmp").glob("*-add-*/*/zeros")), default=0)

    deadline = time.monotonic() + 60
    while unpacked() < (64 << 20):
        assert proc.poll() is None, proc.stderr.read().decode()  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "ADD never started unpacking"
        time.sleep(0.01)
    at_signal = unpacked()
    proc.send_signal(signal.SIGINT)
    most = at_signal
    while proc.poll() is None:
        with contextlib.suppress(OSError):
            most = max(most, unpacked())
        time.sleep(0.005)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()
    assert b"ERROR: interrupted" in err and b"Traceback" not in err, err
    assert most < at_signal + (512 << 20) < size, (at_signal, most)
    assert _leftovers(root) == [], _leftovers(root)


def test_ctrl_c_twice_stops_cleanly(own_store: Path, tmp_path: Path) -> None:
    """An impatient user's two Ctrl-C at once: the second one neither breaks the thread pool's
    locks (an internal error) nor cuts the stopping short (the step's container left to run
    to its end, or a deadlock in the signal handler): 130, stopped at once, nothing left."""
    root = own_store
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for attempt in range(8):
        sleep = _long_sleep()
        (ctx / "Dockerfile").write_text(
            "FROM busybox:local\nRUN --mount=type=tmpfs,target=/t --mount=type=cache,target=/c "
            f"echo started; sleep {sleep}\n")
        proc = _start_build(root, ctx, ("runc", "chroot")[attempt % 2])
        _wait_running(root, proc, sleep)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.002 * (attempt // 2))  # not at once: two pending SIGINTs are one
        os.killpg(proc.pid, signal.SIGINT)
        # The second Ctrl-C did not leave the step's container running (to the end of a sleep
        # longer than communicate's timeout).
        _, err = proc.communicate(timeout=60)
        text = err.decode()
        assert proc.returncode == 130, text
        assert "ERROR: interrupted" in text and "Traceback" not in text and "internal error" not in text, text
        assert _mounts_under(root) == []
        assert _leftovers(root) == [], _leftovers(root)


_INTERRUPTED_IMPORT = """
import builtins, runpy, sys
real, target = builtins.__import__, sys.argv[1]
def interrupted(name, *args, **kwargs):
    if name == target:
        raise KeyboardInterrupt  # as a Ctrl-C arriving while this module loads
    return real(name, *args, **kwargs)
builtins.__import__ = interrupted
sys.argv = ["pybuild", "images"]
runpy.run_module("builder", run_name="__main__")
"""


@pytest.mark.parametrize("module", ["pkgutil", "builder.errors", "argparse"])
def test_ctrl_c_while_pybuild_starts_is_one_line(module: str, tmp_path: Path) -> None:
    """A Ctrl-C in the first tenth of a second, while the command line's modules load, printed
    a Python traceback (found by tests/store/chaos.py): now one line and exit 130, as later."""
    from tests.helpers.tools import REPO

    done = subprocess.run([sys.executable, "-c", _INTERRUPTED_IMPORT, module], cwd=REPO,
                          env={**os.environ, "PYBUILD_ROOT": str(tmp_path / "root")},
                          capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stderr) == (130, "ERROR: interrupted\n")


def test_a_state_file_write_cut_short_is_removed_by_the_next_command(own_store: Path) -> None:
    """``pybuild run`` killed while it wrote its container's state file (found by
    tests/store/chaos.py) left ``run/state/.<id>.json.tmp``, which recover kept for a minute as
    maybe a live writer's. Named by its writer's pid now: the next command removes it at once,
    and keeps a live writer's."""
    states = own_store / "run" / "state"
    states.mkdir(parents=True, exist_ok=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    cut_short = states / f".pybuild-0123456789ab.json.{dead}.tmp"
    cut_short.write_text('{"id": "pybuild-01')
    live = states / f".pybuild-ba9876543210.json.{os.getpid()}.tmp"
    live.write_text('{"id": "pybuild-ba')
    run_pybuild("run", "--rm", "busybox:local", "true", root=own_store, check=True)
    assert not cut_short.exists()
    assert live.exists()
    live.unlink()
