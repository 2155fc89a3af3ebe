"""Resource limits of RUN steps (docker build's --memory, --memory-swap, --cpu-shares, --cpu-period,
--cpu-quota, --cpuset-cpus, --cpuset-mems, --cgroup-parent): a step sees and is held to the limits
it gets under docker's builder, under runc, crun and the chroot isolation alike."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from builder.runtime.cgroups import hierarchies
from tests.engine.conftest import Builder
from tests.helpers.leftovers import ISOLATIONS
from tests.helpers.tools import run_pybuild

LIMITS = ("-m", "64m", "--cpu-shares", "512", "--cpu-period", "50000", "--cpu-quota", "25000",
          "--cpuset-cpus", "0", "--cpuset-mems", "0")
# v1 and v2 names alike: a step prints those its host has, docker's and ours the same
CGROUP_FILES = ("memory/memory.limit_in_bytes", "memory/memory.memsw.limit_in_bytes", "cpu/cpu.shares",
                "cpu/cpu.cfs_period_us", "cpu/cpu.cfs_quota_us", "cpuset/cpuset.cpus", "cpuset/cpuset.mems",
                "memory.max", "memory.swap.max", "cpu.weight", "cpu.max", "cpuset.cpus", "cpuset.mems")
PROBE = ("(cd /sys/fs/cgroup && for f in " + " ".join(CGROUP_FILES)
         + "; do [ -f $f ] && echo $f $(cat $f); done; grep -c ' /sys/fs/cgroup' /proc/self/mountinfo"
         " | sed 's/^[1-9][0-9]*$/mounted/') > /out")
DOCKER_ENV = {"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}


def _docker_out(docker: str, ctx: Path, *flags: str) -> bytes:
    tag = f"pybuild-test-resources:{uuid.uuid4().hex[:8]}"
    subprocess.run([docker, "build", "-q", "--force-rm", *flags, "-t", tag, str(ctx)], check=True, capture_output=True,
                   env=DOCKER_ENV)
    try:
        return subprocess.run([docker, "run", "--rm", tag, "cat", "/out"], check=True, capture_output=True).stdout
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)


def _leftovers(name: str) -> list[Path]:
    """Directories called ``name`` (or under it) in any cgroup hierarchy: what a build left."""
    found: set[Path] = set()
    for h in hierarchies():
        for top in h.mountpoint.rglob(f"{name}*"):
            if top.is_dir():
                found.add(top)
                found.update(p for p in top.rglob("*") if p.is_dir())
    return sorted(found, key=lambda p: len(p.parts), reverse=True)  # children first


def _containers(parent: str) -> list[Path]:
    """The container cgroups (``pybuild-`` and 12 hex digits) under ``parent``."""
    return [p for p in _leftovers(parent) if re.fullmatch(r"pybuild-[0-9a-f]{12}", p.name)]


def test_limits_as_docker_build_gives_them(builder: Builder, docker: str) -> None:
    """What a RUN step reads in its /sys/fs/cgroup is what it reads under docker build, with the
    flags and without them; limits do not change the image, so they leave the cache key alone."""
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN {PROBE} # {uuid.uuid4().hex}\n"}, "limits")
    expected = _docker_out(docker, ctx, *LIMITS)
    assert b"64m" not in expected and b"67108864" in expected and b"mounted" in expected, expected
    for isolation in ISOLATIONS:
        builder.build(ctx, "--no-cache", "--isolation", isolation, *LIMITS, "-t", f"limits:{isolation}")
        assert builder.run(f"limits:{isolation}", "cat", "/out").stdout == expected, isolation
    unlimited = _docker_out(docker, ctx)
    for isolation in ("runc", "crun"):  # the chroot isolation makes no cgroup without limits
        builder.build(ctx, "--no-cache", "--isolation", isolation, "-t", f"no-limits:{isolation}")
        assert builder.run(f"no-limits:{isolation}", "cat", "/out").stdout == unlimited, isolation
    assert b"CACHED" in builder.build(ctx, "-m", "128m").stderr


def test_a_step_over_its_memory_limit_fails_as_under_docker(builder: Builder, docker: str) -> None:
    """The OOM killer ends the step: exit 137, as docker build reports it, with the limit named;
    the same step passes without the limit."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           f"RUN dd if=/dev/zero of=/dev/null bs=200M count=1 # {uuid.uuid4().hex}\n"}, "oom")
    docker_run = subprocess.run([docker, "build", "--force-rm", "-m", "32m", str(ctx)], capture_output=True, env=DOCKER_ENV)
    assert docker_run.returncode != 0 and b"returned a non-zero code: 137" in docker_run.stdout + docker_run.stderr
    for isolation in ISOLATIONS:
        failed = builder.build(ctx, "--no-cache", "--isolation", isolation, "-m", "32m", check=False)
        assert failed.returncode == 1, (isolation, failed.stderr)
        assert b"Dockerfile:2" in failed.stderr and b"exit code: 137" in failed.stderr
        assert b"--memory 32MiB" in failed.stderr and b"Traceback" not in failed.stderr
    builder.build(ctx, "--no-cache")


def test_cgroup_parent_holds_the_step_and_is_left_clean(builder: Builder) -> None:
    """--cgroup-parent: a step's cgroup is PARENT/<container>, relative to pybuild's own cgroup
    when relative (absolute from the root), and the container's cgroup is gone afterwards."""
    parent = f"pybuild-test-{uuid.uuid4().hex[:8]}"
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           f"RUN grep -E '^[0-9]+:memory:' /proc/self/cgroup > /out # {uuid.uuid4().hex}\n"},
                          "cgroup-parent")
    try:
        for isolation in ISOLATIONS:
            for given in (parent, f"/{parent}/abs"):
                builder.build(ctx, "--no-cache", "--isolation", isolation, "--cgroup-parent", given, "-m", "64m",
                              "-t", "cgroup-parent:1")
                line = builder.run("cgroup-parent:1", "cat", "/out").stdout.decode().strip()
                path = line.split(":", 2)[2]
                assert f"/{given.strip('/')}/pybuild-" in path, (isolation, given, line)
                if given.startswith("/"):
                    assert path.startswith(given + "/"), (isolation, line)
            assert not _containers(parent), isolation
    finally:
        for directory in _leftovers(parent):
            directory.rmdir()


def test_run_takes_the_limits_and_cpus(builder: Builder, docker: str) -> None:
    """``pybuild run`` takes the same flags, and docker run's --cpus."""
    probe = "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us"
    expected = subprocess.run([docker, "run", "--rm", "-m", "48m", "--cpus", "1.5", "busybox:local", "sh", "-c", probe],
                              check=True, capture_output=True).stdout
    assert expected.split() == [b"50331648", b"150000"]
    for isolation in ISOLATIONS:
        shown = run_pybuild("run", "--rm", "--isolation", isolation, "-m", "48m", "--cpus", "1.5", "busybox:local",
                            "sh", "-c", probe, root=builder.root, check=True).stdout
        assert shown == expected, isolation
    many = os.cpu_count() or 1
    refused = run_pybuild("run", "--rm", "--cpus", str(many + 1), "busybox:local", "true", root=builder.root)
    assert refused.returncode == 125 and b"Range of CPUs is from 0.01 to" in refused.stderr


def test_a_killed_chroot_build_leaves_no_cgroup(builder: Builder) -> None:
    """The chroot isolation makes its own cgroup: after a SIGKILL mid-RUN, the next pybuild
    build removes it (the state file names it), as it removes the mounts."""
    parent = f"pybuild-test-{uuid.uuid4().hex[:8]}"
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN sleep 60 # {uuid.uuid4().hex}\n"}, "killed")
    env = {**os.environ, "PYBUILD_ROOT": str(builder.root)}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--isolation", "chroot", "-m", "64m",
                             "--cgroup-parent", parent, str(ctx)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not _containers(parent):
            assert time.monotonic() < deadline and proc.poll() is None, "the step's cgroup never appeared"
            time.sleep(0.1)
        time.sleep(0.3)  # inside the step now
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert _containers(parent)  # left by the killed build
        builder.build(builder.context({"Dockerfile": "FROM busybox:local\n"}, "next"))
        assert not _containers(parent)
    finally:
        if proc.poll() is None:
            proc.kill()
        for directory in _leftovers(parent):
            directory.rmdir()


@pytest.mark.parametrize("flags, message", [
    (("-m", "3m"), b"Minimum memory limit allowed is 6MB"),
    (("-m", "lots"), b'invalid argument "lots" for "-m, --memory" flag'),
    (("--memory-swap", "100m"), b"You should always set the Memory limit when using Memoryswap limit"),
    (("-m", "64m", "--memory-swap", "32m"), b"Minimum memoryswap limit should be larger than memory limit"),
    (("--cpu-period", "10"), b"CPU cfs period can not be less than 1ms"),
    (("--cpu-quota", "10"), b"CPU cfs quota can not be less than 1ms"),
    (("--cpu-shares", "many"), b"--cpu-shares: invalid int value"),
    (("--cpuset-cpus", "4096"), b"Requested CPUs are not available - requested 4096"),
    (("--cpuset-cpus", "1-x"), b"Invalid value 1-x for cpuset cpus"),
    (("--cpuset-mems", "4096"), b"Requested memory nodes are not available"),
    (("--cgroup-parent", "machine.slice:ci:x"), b"systemd cgroup driver"),
    (("--cgroup-parent", "../escape"), b"'..' is not allowed"),
])
def test_limit_errors(builder: Builder, flags: tuple[str, ...], message: bytes) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nRUN true\n"}, "limit-errors")
    p = builder.build(ctx, *flags, check=False)
    assert p.returncode == 125 and message in p.stderr and b"Traceback" not in p.stderr, p.stderr
