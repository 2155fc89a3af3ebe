"""Nothing left behind: Ctrl-C and SIGTERM clean up at once; a SIGKILLed owner is cleaned by recover()."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from builder.runtime import recover
from builder.runtime.overlay import mounts_under
from tests.helpers.leftovers import (
    ISOLATIONS,
    assert_nothing_left,
    marker,
    runtime_containers,
)
from tests.helpers.tools import REPO

OWNER = textwrap.dedent("""
    import sys
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from builder.runtime import ContainerSpec, ProcessSpec, detect

    isolation, work_root, lower, upper, command = sys.argv[1:]

    def out(chunk):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

    runtime = detect(isolation, work_root=Path(work_root))
    try:
        code = runtime.run(ContainerSpec([Path(lower)], Path(upper), ProcessSpec(("sh", "-c", command))),
                           stdout=out)
    except KeyboardInterrupt:
        print("INTERRUPTED", flush=True)
        sys.exit(130)
    print(f"EXIT {{code}}", flush=True)
""")


class Owner:
    """A pybuild-like process running one container until told otherwise."""

    def __init__(self, tmp_path: Path, isolation: str, work_root: Path, lower: Path, command: str):
        script = tmp_path / "owner.py"
        script.write_text(OWNER.format(repo=str(REPO)))
        self.proc = subprocess.Popen(
            [sys.executable, str(script), isolation, str(work_root), str(lower),
             str(tmp_path / "upper"), command],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )

    def wait_for(self, line: bytes) -> None:
        got = self.proc.stdout.readline()
        assert got == line, (got, self.proc.stderr.read() if got == b"" else b"")

    def finish(self) -> tuple[int, bytes]:
        out, _ = self.proc.communicate(timeout=60)
        return self.proc.returncode, out




@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_sigkilled_owner_is_cleaned_by_recover(isolation, tmp_path, busybox_rootfs):
    work_root = tmp_path / "run"
    sleep = marker()
    owner = Owner(tmp_path, isolation, work_root, busybox_rootfs, f"echo READY; exec sleep {sleep}")
    owner.wait_for(b"READY\n")
    assert mounts_under(work_root) != []  # the container is really there
    owner.proc.kill()
    owner.finish()
    report = recover(work_root)
    assert len(report.containers) == 1
    assert_nothing_left(work_root, sleep)
    assert recover(work_root).containers == []  # a second run finds nothing


@pytest.mark.parametrize("isolation", ISOLATIONS)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_owner_cleans_up_before_exiting(isolation, signum, tmp_path, busybox_rootfs):
    work_root = tmp_path / "run"
    sleep = marker()
    owner = Owner(tmp_path, isolation, work_root, busybox_rootfs, f"echo READY; sleep {sleep}; true")
    owner.wait_for(b"READY\n")
    owner.proc.send_signal(signum)
    code, out = owner.finish()
    assert (code, out) == (130, b"INTERRUPTED\n")
    assert_nothing_left(work_root, sleep)


def test_recover_leaves_live_containers_alone(tmp_path, busybox_rootfs):
    work_root = tmp_path / "run"
    owner = Owner(tmp_path, "runc", work_root, busybox_rootfs, "echo READY; read x < /dev/null; sleep 1; echo done")
    owner.wait_for(b"READY\n")
    assert recover(work_root).containers == []
    code, out = owner.finish()
    assert (code, out) == (0, b"done\nEXIT 0\n")
    assert_nothing_left(work_root, "no-such-process-marker")


def test_recover_removes_temp_dirs_of_dead_processes_only(tmp_path, busybox_rootfs):
    from builder.runtime.cleanup import temp_dir
    from builder.runtime.overlay import make_links, mount_overlay

    work_root = tmp_path / "run"
    dead = subprocess.Popen(["true"])
    dead.wait()
    mine = temp_dir(work_root, "view")
    theirs = work_root / "tmp" / f"{dead.pid}-view-0123456789ab"
    (theirs / "merged").mkdir(parents=True)
    mount_overlay(theirs / "merged", link_dir=theirs / "l", lowers=make_links(theirs / "l", [busybox_rootfs]))
    assert (theirs / "merged" / "bin" / "sh").exists()
    report = recover(work_root)
    assert report.temp_dirs == [theirs.name]
    assert not theirs.exists() and mine.is_dir()
    assert mounts_under(work_root) == []


@pytest.mark.parametrize("runtime", ["runc", "crun"])
def test_recover_deletes_runtime_containers_no_state_file_claims(runtime, tmp_path, busybox_rootfs):
    from builder.runtime import ContainerSpec, ExecUser, ProcessSpec
    from builder.runtime.spec import oci_config

    work_root = tmp_path / "run"
    cid = f"pybuild-orphan{random.randrange(10**6)}"
    bundle = work_root / "containers" / cid
    bundle.mkdir(parents=True)
    spec = ContainerSpec([busybox_rootfs], tmp_path / "upper", ProcessSpec(("sleep", "30")),
                         readonly_rootfs=True)
    config = oci_config(spec, rootfs=str(busybox_rootfs), user=ExecUser(), hostname="orphan",
                        etc_files={}, mount_targets=[])
    (bundle / "config.json").write_text(json.dumps(config))
    subprocess.run([runtime, "create", "--bundle", str(bundle), cid], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert runtime_containers(work_root) == [cid]
    report = recover(work_root)
    assert report.runtime_containers == [cid]
    assert_nothing_left(work_root, "no-such-process-marker")


@pytest.mark.slow
def test_owners_killed_at_random_moments_leave_nothing_after_recover(tmp_path, busybox_rootfs):
    """Signals land anywhere: in prepare, in the runtime's start, in the step, in teardown."""
    work_root = tmp_path / "run"
    rng = random.Random(4)
    sleep = marker()
    for n in range(18):
        isolation = ISOLATIONS[n % 3]
        signum = (signal.SIGKILL, signal.SIGINT, signal.SIGTERM)[n // 3 % 3]
        owner = Owner(tmp_path, isolation, work_root, busybox_rootfs, f"sleep {sleep}")
        time.sleep(rng.uniform(0.0, 0.4))
        owner.proc.send_signal(signum)
        owner.finish()
    recover(work_root)
    assert_nothing_left(work_root, sleep)


def test_what_cannot_be_removed_now_is_retried_next_time(tmp_path):
    from builder.runtime.cleanup import ContainerState, StateFile, containers_dir

    work_root = tmp_path / "run"
    cdir = containers_dir(work_root) / "pybuild-stuck0000001"
    cdir.mkdir(parents=True)
    stuck = cdir / "stuck"
    stuck.write_text("x")
    StateFile(work_root, ContainerState(id=cdir.name, runtime="", container_dir=str(cdir), owner_pid=0))
    subprocess.run(["chattr", "+i", str(stuck)], check=True)
    try:
        report = recover(work_root)
        assert report.containers == [] and len(report.failures) == 1
        assert (work_root / "state" / f"{cdir.name}.json").exists()
    finally:
        subprocess.run(["chattr", "-i", str(stuck)], check=True)
    assert recover(work_root).containers == [cdir.name]
    assert_nothing_left(work_root, "no-such-process-marker")



def test_stop_containers_ends_runs_in_other_threads(tmp_path, busybox_rootfs):
    """Ctrl-C reaches the main thread only: it stops the containers that stage threads run."""
    import threading

    from builder.runtime import ContainerSpec, ProcessSpec, detect, stop_containers

    work_root = tmp_path / "run"
    sleep = marker()
    codes: dict[str, int] = {}
    started = threading.Barrier(4)

    def stage(isolation: str) -> None:
        def out(chunk: bytes) -> None:
            if chunk.startswith(b"READY"):
                started.wait(timeout=30)
        runtime = detect(isolation, work_root=work_root)
        spec = ContainerSpec([busybox_rootfs], tmp_path / f"upper-{isolation}",
                             ProcessSpec(("sh", "-c", f"echo READY; sleep {sleep}; echo late")))
        codes[isolation] = runtime.run(spec, stdout=out)

    threads = [threading.Thread(target=stage, args=(i,)) for i in ISOLATIONS]
    for thread in threads:
        thread.start()
    started.wait(timeout=30)
    assert len(stop_containers(work_root)) == 3
    for thread in threads:
        thread.join(timeout=30)
    assert codes == {"runc": 137, "crun": 137, "chroot": 137}
    assert_nothing_left(work_root, sleep)
