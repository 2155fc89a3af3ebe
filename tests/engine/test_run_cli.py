"""``pybuild run`` as docker run: -v binds, -t a terminal, the environment, exit codes, stderr, signals."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.leftovers import assert_nothing_left, marker
from tests.helpers.tools import run_pybuild


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
def test_volumes(builder: Builder, tmp_path: Path, isolation: str) -> None:
    host = tmp_path / "data"
    host.mkdir()
    (host / "in").write_text("from the host\n")
    out = run_pybuild("run", "--rm", "--isolation", isolation, "-v", f"{host}:/data", "-v",
                      f"{tmp_path / 'created'}:/made:rw", "busybox:local", "sh", "-c",
                      "cat /data/in; echo back > /data/out; touch /made/x", root=builder.root, check=True)
    assert out.stdout == b"from the host\n" and (host / "out").read_text() == "back\n"
    assert (tmp_path / "created" / "x").exists()  # a missing host directory is made, as by docker
    ro = run_pybuild("run", "--rm", "--isolation", isolation, "-v", f"{host}:/data:ro", "busybox:local",
                     "sh", "-c", "echo no > /data/ro", root=builder.root)
    assert ro.returncode != 0 and b"Read-only file system" in ro.stdout + ro.stderr
    assert not (host / "ro").exists()


@pytest.mark.parametrize("spec", ["relative:/x", "/a:b", "/a:/b:rx", "/a", "/tmp:/", "/tmp://.", "/a:/b:ro,rw",
                                  "/a:/b:shared,slave", "/proc/no-such/dir:/x", "/etc/passwd/x:/x"])
def test_bad_volumes(builder: Builder, spec: str) -> None:
    """docker's refusals (a bind over /, a host directory that cannot be made: one line, 125,
    where pybuild crashed with an internal error or runc failed obscurely)."""
    p = run_pybuild("run", "--rm", "-v", spec, "busybox:local", "true", root=builder.root)
    assert p.returncode == 125 and p.stderr.startswith(b"ERROR: invalid volume specification"), p.stderr
    assert p.stderr.count(b"\n") == 1


def test_volume_options_docker_accepts(builder: Builder, tmp_path: Path) -> None:
    """ro with docker's other options (SELinux labels, nocopy), as scripts written for docker pass them."""
    p = run_pybuild("run", "--rm", "-v", f"{tmp_path}:/data:ro,z", "-v", f"{tmp_path}:/other:Z,nocopy",
                    "busybox:local", "sh", "-c", "touch /other/ok && ! touch /data/no 2>/dev/null",
                    root=builder.root)
    assert p.returncode == 0, p.stderr
    assert sorted(x.name for x in tmp_path.iterdir()) == ["ok"]


@pytest.fixture
def shared_dir(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A directory on a mount of its own in a peer group (``mount --make-shared``), as a shared
    or slave bind's source must be; unmounted with all that propagated into it."""
    source = tmp_path / "shared"
    source.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(source)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(source)], check=True)
        yield source
    finally:
        subprocess.run(["umount", "-R", "-l", str(source)], check=True)


def mounted(path: Path) -> bool:
    return any(line.split(" ")[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
def test_slave_binds_see_what_the_host_mounts_later(builder: Builder, shared_dir: Path, isolation: str) -> None:
    """docker's -v SRC:DST:rslave: a mount made on the host under SRC while the container runs
    appears in it; a private bind (the default) does not see it. pybuild refused the option."""
    late = f"late-{marker()}"  # a name no other process on the machine has in its command line
    script = f"while [ ! -e /data/sub/{late} ]; do sleep 0.1; done; cat /data/sub/{late}; ls /private/sub"
    proc = start_run(builder, "--isolation", isolation, "-v", f"{shared_dir}:/data:rslave",
                     "-v", f"{shared_dir}:/private", "busybox:local", "sh", "-c", f"echo started; {script}")
    (shared_dir / "sub").mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(shared_dir / "sub")], check=True)
    (shared_dir / "sub" / late).write_text("mounted later\n")
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (0, b"mounted later\n", b""), err  # /private/sub is empty
    assert_nothing_left(builder.root / "run", late)


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
def test_shared_binds_show_the_host_what_the_container_mounts(builder: Builder, shared_dir: Path,
                                                               isolation: str) -> None:
    """docker's -v SRC:DST:rshared (with --privileged, to be allowed to mount): what the container
    mounts under DST is mounted under SRC on the host too, and stays, as with docker. Nothing
    else of the container's (its /proc, /dev, the rootfs) reaches the host."""
    p = run_pybuild("run", "--rm", "--privileged", "--isolation", isolation, "-v", f"{shared_dir}:/data:rshared",
                    "busybox:local", "sh", "-c", "mkdir /data/in && mount -t tmpfs tmpfs /data/in && "
                    "echo from the container > /data/in/file", root=builder.root)
    assert p.returncode == 0, p.stderr
    assert mounted(shared_dir / "in") and (shared_dir / "in" / "file").read_text() == "from the container\n"
    points = [line.split(" ")[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    assert [p for p in points if p.startswith(f"{shared_dir}/")] == [f"{shared_dir}/in"]
    assert not [p for p in points if p.startswith(f"{builder.root}/")]  # the rootfs, its /proc, /dev


def test_shared_or_slave_binds_need_a_source_in_a_peer_group(builder: Builder, tmp_path: Path) -> None:
    """docker's refusals, word for word: nothing could propagate from a private source mount."""
    for option, words in [("shared", "not a shared mount"), ("rslave", "not a shared or slave mount")]:
        p = run_pybuild("run", "--rm", "-v", f"{tmp_path}:/data:{option}", "busybox:local", "true",
                        root=builder.root)
        source = [line.split(" ")[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                  if str(tmp_path).startswith(line.split(" ")[4].rstrip("/") + "/")]
        point = max(source, key=len)
        assert (p.returncode, p.stderr) == (125, f"ERROR: path {tmp_path} is mounted on {point} but it is {words}\n"
                                            .encode())


def test_prune_does_not_wait_for_a_running_container_and_keeps_what_it_uses(base_archive: Path,
                                                                            tmp_path: Path) -> None:
    """``pybuild run`` held the store's lock for as long as the container ran: a prune in
    another terminal waited for a server to stop ("waiting for the builds ... to finish"). It
    now takes a lease: prune goes on at once and keeps the running image (even untagged, even
    with --all) and its snapshots; once the container is gone, prune removes them."""
    root = tmp_path / "store"
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    run_pybuild("tag", "busybox:local", "server:1", root=root, check=True)
    proc = subprocess.Popen([sys.executable, "-m", "builder", "run", "--rm", "-i", "server:1", "sh", "-c",
                             "echo started; read line; ls /bin/busybox"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ | {"PYBUILD_ROOT": str(root)})
    assert proc.stdout is not None and proc.stdin is not None
    assert proc.stdout.readline() == b"started\n"
    run_pybuild("rmi", "busybox:local", root=root, check=True)
    # docker's refusals for an image a running container uses; -f untags it and keeps it
    refused = run_pybuild("rmi", "server:1", root=root)
    assert (refused.returncode, refused.stderr.split(b" - ")[0]) == (
        1, b'Error response from daemon: conflict: unable to remove repository reference "server:1" (must force)')
    image_id = run_pybuild("images", "-q", root=root, check=True).stdout.decode().strip()
    refused = run_pybuild("rmi", "-f", image_id, root=root)
    assert refused.returncode == 1 and b"(cannot be forced) - image is being used by a running container" \
        in refused.stderr
    assert run_pybuild("rmi", "-f", "server:1", root=root, check=True).stdout == b"Untagged: server:1\n"
    pruned = run_pybuild("prune", "-a", "-f", root=root, timeout=30, check=True)
    assert b"waiting" not in pruned.stderr
    out, err = proc.communicate(b"go on\n", timeout=60)  # its lower dirs are all still there
    assert (proc.returncode, out, err) == (0, b"/bin/busybox\n", b"")
    assert list((root / "leases").iterdir()) == []
    assert any((root / "snapshots").iterdir())
    run_pybuild("prune", "-a", "-f", root=root, check=True)
    assert not any((root / "snapshots").iterdir())
    assert b"sha256:" not in run_pybuild("images", "-a", "-q", root=root).stdout


def test_duplicate_mount_point(builder: Builder, tmp_path: Path) -> None:
    """Two -v on one directory: docker's 'Duplicate mount point', 125 (the last one won silently)."""
    p = run_pybuild("run", "--rm", "-v", f"{tmp_path}:/data", "-v", f"{tmp_path}:/data/", "busybox:local", "true",
                    root=builder.root)
    assert (p.returncode, p.stderr) == (125, b"ERROR: Duplicate mount point: /data\n")


def test_tty(builder: Builder) -> None:
    """-it under a controlling terminal (script(1)), as from a shell: stdin is the container's pty."""
    command = (f"PYBUILD_ROOT={builder.root} {sys.executable} -m builder run --rm -it busybox:local "
               "sh -c 'test -t 0 && test -t 1 && echo TERMINAL'")
    proc = subprocess.run(["script", "-qec", command, "/dev/null"], capture_output=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    assert b"TERMINAL" in proc.stdout, proc.stdout + proc.stderr


def test_exit_codes_tell_pybuild_s_failures_from_the_command_s(builder: Builder) -> None:
    """docker run's codes: the command's own status, 125 when the run itself fails (no such
    image, an unknown user), 127 when the command is not found."""
    assert run_pybuild("run", "--rm", "busybox:local", "sh", "-c", "exit 1", root=builder.root).returncode == 1
    for args in (("--pull", "never", "missing-image:1", "true"), ("-u", "nosuchuser", "busybox:local", "id")):
        p = run_pybuild("run", "--rm", *args, root=builder.root)
        assert p.returncode == 125, (args, p.stderr)
        assert p.stderr.decode().startswith("ERROR: ") and b"Traceback" not in p.stderr
    assert run_pybuild("run", "--rm", "busybox:local", "nosuchcommand", root=builder.root).returncode == 127


def test_environment_as_docker_run_gives_it(builder: Builder) -> None:
    """HOSTNAME is the container's host name (scripts read $HOSTNAME); -e KEY=V overrides the
    image's ENV; -e KEY takes the caller's KEY, and when the caller has none, unsets it, as docker."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nENV FOO=image BAR=image KEEP=image\n"})
    builder.build(ctx, "-t", "env-run:1")
    p = run_pybuild("run", "--rm", "-e", "FOO=flag", "-e", "BAR", "-e", "FROM_CALLER", "env-run:1",
                    "sh", "-c", 'env; echo "name=$(hostname)"', root=builder.root, check=True,
                    env={"FROM_CALLER": "caller"})
    lines = p.stdout.decode().splitlines()
    env = dict(line.split("=", 1) for line in lines if "=" in line)
    assert env["FOO"] == "flag" and env["KEEP"] == "image" and env["FROM_CALLER"] == "caller"
    assert env["HOSTNAME"] == env["name"] and len(env["name"]) == 12
    unset = run_pybuild("run", "--rm", "-e", "BAR", "env-run:1", "env", root=builder.root, check=True,
                        env={"BAR": ""})
    assert b"BAR=\n" in unset.stdout  # set, though empty, in the caller: passed on
    caller_env = {k: v for k, v in os.environ.items() if k != "BAR"}
    proc = subprocess.run([sys.executable, "-m", "builder", "run", "--rm", "-e", "BAR", "env-run:1", "env"],
                          capture_output=True, env=caller_env | {"PYBUILD_ROOT": str(builder.root)}, check=True)
    assert b"BAR=" not in proc.stdout and b"KEEP=image" in proc.stdout


def test_cpus_zero_is_no_limit(builder: Builder) -> None:
    """docker run --cpus 0 means no CPU limit, not an error."""
    p = run_pybuild("run", "--rm", "--cpus", "0", "busybox:local", "echo", "ran", root=builder.root)
    assert p.returncode == 0 and p.stdout == b"ran\n", p.stderr


def test_empty_entrypoint_without_a_command(builder: Builder) -> None:
    """--entrypoint "" drops the image's CMD too: docker's "No command specified", exit 125."""
    ctx = builder.context({"Dockerfile": 'FROM busybox:local\nENTRYPOINT ["echo"]\nCMD ["hi"]\n'})
    builder.build(ctx, "-t", "ep-run:1")
    p = run_pybuild("run", "--rm", "--entrypoint=", "ep-run:1", root=builder.root)
    assert p.returncode == 125 and p.stderr.startswith(b"ERROR: No command specified"), p.stderr
    assert run_pybuild("run", "--rm", "--entrypoint=", "ep-run:1", "echo", "own",
                       root=builder.root, check=True).stdout == b"own\n"


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
def test_stdout_and_stderr_stay_apart(builder: Builder, isolation: str) -> None:
    """`pybuild run img cmd > out 2> err` splits them as docker run does (they were one stream on stdout)."""
    p = run_pybuild("run", "--rm", "--isolation", isolation, "busybox:local", "sh", "-c",
                    "echo out; echo err >&2; echo out2; exit 3", root=builder.root)
    assert (p.returncode, p.stdout, p.stderr) == (3, b"out\nout2\n", b"err\n")


def start_run(builder: Builder, *args: str) -> subprocess.Popen[bytes]:
    """``pybuild run ARGS`` in the background, once its container has printed a line."""
    proc = subprocess.Popen([sys.executable, "-m", "builder", "run", "--rm", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ | {"PYBUILD_ROOT": str(builder.root)})
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first == b"started\n", first + proc.stderr.read() if proc.stderr else first
    return proc


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 7), (signal.SIGINT, 8), (signal.SIGHUP, 9)])
def test_signals_reach_the_container(builder: Builder, isolation: str, sig: int, code: int) -> None:
    """docker run's signal proxy: Ctrl-C or a process manager's SIGTERM reaches the program,
    which shuts down its own way (pybuild used to kill the container: 'ERROR: interrupted', 130)."""
    traps = 'trap "echo got TERM; exit 7" TERM; trap "echo got INT; exit 8" INT; trap "echo got HUP; exit 9" HUP'
    sleep = marker()
    proc = start_run(builder, "--isolation", isolation, "busybox:local", "sh", "-c",
                     f"{traps}; echo started; sleep {sleep} & wait")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert (proc.returncode, out, err) == (code, f"got {signal.Signals(sig).name[3:]}\n".encode(), b"")
    assert_nothing_left(builder.root / "run", sleep)


@pytest.mark.parametrize("isolation", ["runc", "chroot"])
def test_third_ctrl_c_stops_a_container_that_ignores_it(builder: Builder, isolation: str) -> None:
    """A pid 1 with no handler ignores SIGINT; there is no `docker kill` for pybuild's containers,
    so the third Ctrl-C stops it and leaves nothing behind."""
    sleep = marker()
    proc = start_run(builder, "--isolation", isolation, "busybox:local", "sh", "-c",
                     f"echo started; exec sleep {sleep}")
    for _ in range(3):
        time.sleep(0.3)
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == b"ERROR: interrupted\n", err
    assert_nothing_left(builder.root / "run", sleep)


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
def test_tty_without_a_terminal(builder: Builder, isolation: str) -> None:
    """-t in a CI job (no controlling terminal) gives the process a terminal, as docker run -t does
    (runc and crun said 'open /dev/tty: no such device or address', 126); -it with stdin not a
    terminal is docker's 'the input device is not a TTY'."""
    command = [sys.executable, "-m", "builder", "run", "--rm", "--isolation", isolation, "-t", "busybox:local",
               "sh", "-c", "test -t 0 && test -t 1 && echo TERMINAL; exit 4"]
    env = os.environ | {"PYBUILD_ROOT": str(builder.root)}
    p = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                       timeout=120)
    assert (p.returncode, p.stdout, p.stderr) == (4, b"TERMINAL\r\n", b"")
    command.insert(command.index("-t"), "-i")
    p = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
                       timeout=120)
    assert p.returncode == 125 and p.stderr.startswith(b"ERROR: the input device is not a TTY"), p.stderr
    assert_nothing_left(builder.root / "run", "no-such-process-marker")


@pytest.mark.parametrize("isolation", ["runc", "crun", "chroot"])
def test_start_failures_exit_as_docker_run(builder: Builder, tmp_path: Path, isolation: str) -> None:
    """127 the command is not found, 126 it may not be run, 125 anything else that stops the
    container from starting, such as a bind onto a file of the image (was 126, as if the command
    had been refused)."""
    (tmp_path / "dir").mkdir()
    cases = {127: ("busybox:local", "nosuchcommand"), 126: ("busybox:local", "/etc/passwd"),
             125: ("-v", f"{tmp_path / 'dir'}:/etc/passwd", "busybox:local", "true")}
    for code, args in cases.items():
        p = run_pybuild("run", "--rm", "--isolation", isolation, *args, root=builder.root)
        assert p.returncode == code, (args, p.stderr)
        assert b"ERROR: " in p.stderr and b"Traceback" not in p.stderr


@pytest.mark.parametrize("isolation", ["runc", "chroot"])
def test_image_volumes_exist(builder: Builder, tmp_path: Path, isolation: str) -> None:
    """docker run mounts an anonymous volume on each VOLUME, so the directory is there even when
    the image has none ('No such file or directory' before); one over a symlink is made where the
    link points inside the image, never on the host; the image's own files there stay visible."""
    escape = tmp_path / "escaped"
    ctx = builder.context({"Dockerfile": (
        "FROM busybox:local\n"
        f"RUN mkdir /seeded && echo seed > /seeded/f && ln -s ../../../../..{escape} /link\n"
        "VOLUME /data /var/lib/app/db /seeded /link\n")})
    builder.build(ctx, "-t", "volumes-run:1")
    p = run_pybuild("run", "--rm", "--isolation", isolation, "volumes-run:1", "sh", "-c",
                    f"touch /data/a /var/lib/app/db/b {escape}/c && cat /seeded/f && stat -c %U:%a /data",
                    root=builder.root)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"seed\nroot:755\n", b"")
    assert not escape.exists()


def test_unknown_flag_names_pybuild_run(builder: Builder) -> None:
    """A docker flag pybuild lacks: docker's wording and the right help to read (it said
    "See 'pybuild ['busybox:local', 'true'] --help'")."""
    p = run_pybuild("run", "--rm", "--env-file", "/dev/null", "busybox:local", "true", root=builder.root)
    assert p.returncode == 125
    assert p.stderr == b"ERROR: unknown flag: --env-file\nSee 'pybuild run --help'.\n"


def test_missing_image_is_pulled_as_docker_run_does(builder: Builder, registry: str, tmp_path: Path) -> None:
    """docker run pulls an image it does not have (pybuild said 'No such image'); the pull's
    progress goes to stderr, so stdout stays the command's; --pull never refuses instead."""
    ref = f"{registry}/run/pulled:1"
    run_pybuild("tag", "busybox:local", ref, root=builder.root, check=True)
    run_pybuild("push", "-q", ref, root=builder.root, check=True)
    fresh = tmp_path / "fresh-store"
    refused = run_pybuild("run", "--rm", "--pull", "never", ref, "true", root=fresh)
    assert refused.returncode == 125 and refused.stderr == f"ERROR: No such image: {ref}\n".encode()
    first = run_pybuild("run", "--rm", ref, "echo", "ran", root=fresh)
    assert (first.returncode, first.stdout) == (0, b"ran\n"), first.stderr
    assert first.stderr.startswith(f"Unable to find image '{ref}' locally\n".encode())
    again = run_pybuild("run", "--rm", ref, "echo", "ran", root=fresh)
    assert (again.returncode, again.stdout, again.stderr) == (0, b"ran\n", b"")  # no second pull


@pytest.mark.parametrize("isolation", ["runc", "chroot"])
def test_working_directory_over_a_file(builder: Builder, isolation: str) -> None:
    """docker's 'Cannot mkdir: /etc/passwd is not a directory', 125 (runc said 'mkdir /etc/passwd: not
    a directory' in its own words; chroot spoke of a mount)."""
    for workdir in ("/etc/passwd", "/etc/passwd/sub"):
        p = run_pybuild("run", "--rm", "--isolation", isolation, "-w", workdir, "busybox:local", "pwd",
                        root=builder.root)
        assert p.returncode == 125 and p.stdout == b""
        assert p.stderr == (b"ERROR: Cannot mkdir: /etc/passwd is not a directory (the working directory is "
                            + workdir.encode() + b")\n")


def test_output_that_cannot_be_written(builder: Builder) -> None:
    """stdout on a full disk: docker's one line and exit 1, not an internal error; nothing left."""
    with open("/dev/full", "wb") as full:
        p = subprocess.run([sys.executable, "-m", "builder", "run", "--rm", "busybox:local", "echo", "hi"],
                           stdout=full, stderr=subprocess.PIPE, env=os.environ | {"PYBUILD_ROOT": str(builder.root)})
    assert (p.returncode, p.stderr) == (1, b"ERROR: write /dev/stdout: no space left on device\n")
    assert_nothing_left(builder.root / "run", "no-such-process-marker")


@pytest.mark.parametrize("isolation", ["runc", "chroot"])
def test_hostname_flag(builder: Builder, isolation: str) -> None:
    """docker run's -h is --hostname (pybuild printed its help and ran nothing, exit 0)."""
    p = run_pybuild("run", "--rm", "--isolation", isolation, "-h", "web", "busybox:local", "sh", "-c",
                    'hostname; echo "$HOSTNAME"; cat /etc/hostname', root=builder.root)
    assert (p.returncode, p.stdout, p.stderr) == (0, b"web\nweb\nweb\n", b"")
    assert run_pybuild("run", "--help", root=builder.root).stdout.startswith(b"usage: pybuild run")


def test_empty_user_is_the_image_s_user(builder: Builder) -> None:
    """`-u "$RUN_AS"` with the variable empty runs as the image's USER, as docker does (it ran as root)."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nUSER 1000:1000\n"})
    builder.build(ctx, "-t", "user-run:1")
    p = run_pybuild("run", "--rm", "-u", "", "user-run:1", "id", "-u", root=builder.root, check=True)
    assert p.stdout == b"1000\n"
    p = run_pybuild("run", "--rm", "-u", "0", "user-run:1", "id", "-u", root=builder.root, check=True)
    assert p.stdout == b"0\n"
