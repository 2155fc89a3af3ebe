"""A RUN step's container, as a user sees it from inside and in the upper dir, on each runtime."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from builder.errors import ContainerError, ContainerStartError, UserNotFoundError
from builder.runtime import ContainerSpec, Mount, Network, ProcessSpec
from tests.helpers.fileserver import serve_files
from tests.runtime.conftest import tree


def test_exit_code_and_combined_output_in_order(run):
    result = run("echo one; echo two >&2; echo three; exit 7")
    assert result.code == 7
    assert result.text == "one\ntwo\nthree\n"
    assert run("true").code == 0


def test_output_is_streamed_as_it_comes(runtime, busybox_rootfs, tmp_path):
    """The step prints its second line only once the caller has seen the first."""
    sync = tmp_path / "sync"
    sync.mkdir()
    seen: list[bytes] = []

    def sink(chunk: bytes) -> None:
        seen.append(chunk)
        (sync / "go").touch()

    script = "echo first; while [ ! -e /sync/go ]; do sleep 0.02; done; echo second"
    code = runtime.run(ContainerSpec([busybox_rootfs], tmp_path / "upper", ProcessSpec(("sh", "-c", script)),
                                     mounts=[Mount.bind(sync, "/sync", readonly=True)]),
                       stdout=sink)
    assert code == 0
    assert seen == [b"first\n", b"second\n"]


def test_exit_codes_pass_through(run):
    assert [run(f"exit {n}").code for n in (1, 2, 126, 255)] == [1, 2, 126, 255]


def test_env_cwd_and_defaults(run):
    result = run('pwd; echo "$FOO"; echo "$PATH"; echo "$HOME"', env=("FOO=bar baz",), cwd="/tmp")
    assert result.text.splitlines() == [
        "/tmp", "bar baz", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "/root",
    ]
    assert run('echo "$PATH $HOME"', env=("PATH=/bin", "HOME=/x")).text == "/bin /x\n"


def test_missing_workdir_is_made_in_the_layer_as_docker_does(run):
    """docker's SetupWorkingDirectory makes it in the container's rw layer, so a RUN whose
    WORKDIR an earlier step deleted commits it again (root-owned, 0755)."""
    result = run("pwd", cwd="/no/such/dir", user="app")
    assert result.text == "/no/such/dir\n"
    assert tree(result.upper) == ["no", "no/such", "no/such/dir"]
    made = (result.upper / "no/such/dir").stat()
    assert (made.st_uid, made.st_gid, made.st_mode & 0o7777) == (0, 0, 0o755)


@pytest.mark.parametrize(("user", "expected"), [
    ("", "0 0 0 /root"),
    ("app", "1000 1000 1000 /home/app"),
    ("1000", "1000 1000 1000 /home/app"),
    ("app:nogroup", "1000 65534 65534 /home/app"),
    ("1000:65534", "1000 65534 65534 /home/app"),
    ("4242", "4242 0 0 /"),
    ("4242:4343", "4242 4343 4343 /"),
])
def test_user(run, user, expected):
    assert run('echo $(id -u) $(id -g) $(id -G) "$HOME"', user=user).text == expected + "\n"


def test_supplementary_groups_come_from_etc_group(run, busybox_rootfs, tmp_path):
    extra = tmp_path / "groups-layer"
    (extra / "etc").mkdir(parents=True)
    (extra / "etc" / "group").write_text(
        "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nstaff:x:50:app,other\naudio:x:29:app\n"
    )
    result = run("id -G", user="app", lowers=[busybox_rootfs, extra])
    assert sorted(result.text.split()) == ["1000", "29", "50"]
    # an explicit group replaces the supplementary groups, as in docker
    assert run("id -G", user="app:app", lowers=[busybox_rootfs, extra]).text == "1000\n"


def test_missing_user_or_group_is_docker_s_error(run):
    with pytest.raises(UserNotFoundError, match=r"^unable to find user nosuch: no matching entries in passwd file$"):
        run("true", user="nosuch")
    with pytest.raises(UserNotFoundError, match=r"^unable to find group nosuch: no matching entries in group file$"):
        run("true", user="app:nosuch")


def test_missing_executable_is_a_start_error(run):
    with pytest.raises(ContainerStartError, match=r"executable file .*not found"):
        run(("no-such-command",))


def test_a_start_error_is_said_once(runtime, busybox_rootfs, tmp_path):
    """runc and crun print their start error on the stdio they share with the container; pybuild
    reports it from their log, so the step's output does not repeat it."""
    chunks: list[bytes] = []
    spec = ContainerSpec([busybox_rootfs], tmp_path / "upper", ProcessSpec(("no-such-command",)))
    with pytest.raises(ContainerStartError):
        runtime.run(spec, stdout=chunks.append)
    assert chunks == []


def test_hostname_hosts_and_resolv_conf_are_given_but_never_in_the_layer(run):
    result = run("hostname; cat /etc/hostname; cat /etc/hosts; cat /etc/resolv.conf", hostname="box1")
    lines = result.text.splitlines()
    assert lines[:2] == ["box1", "box1"]
    assert "127.0.0.1\tlocalhost box1" in lines
    assert any(line.startswith("::1\tlocalhost") for line in lines)
    assert result.text.endswith(Path("/etc/resolv.conf").read_text())
    assert tree(result.upper) == []


def test_default_hostname_is_twelve_hex_digits(run):
    name = run("hostname").text.strip()
    assert len(name) == 12 and int(name, 16) >= 0


def test_scratch_rootfs_without_etc_gets_etc_files_and_a_clean_layer(run, busybox_rootfs, tmp_path):
    scratch = tmp_path / "scratch"
    (scratch / "bin").mkdir(parents=True)
    shutil.copy2(busybox_rootfs / "bin" / "busybox", scratch / "bin" / "busybox")
    (scratch / "bin" / "sh").symlink_to("busybox")
    result = run("/bin/busybox cat /etc/hosts /etc/hostname; /bin/busybox ls -d /proc/1 /dev/null /sys/kernel",
                 lowers=[scratch])
    assert result.code == 0, result.text
    assert "localhost" in result.text
    assert tree(result.upper) == []  # no /etc, /proc, /dev, /sys stubs in the layer


def test_from_scratch_with_no_lower_dirs(run, busybox_rootfs, tmp_path):
    bind = Mount.bind(busybox_rootfs / "bin", "/bin", readonly=True)
    result = run("echo made > /made; ls /", lowers=[], mounts=[bind])
    assert result.code == 0, result.text
    assert tree(result.upper) == ["made"]


def test_changes_land_in_the_upper_dir_and_nothing_else(run):
    result = run("echo x > /etc/new; mkdir -p /a/b; echo y > /a/b/c; touch /tmp/t")
    assert result.code == 0, result.text
    assert tree(result.upper) == ["a", "a/b", "a/b/c", "etc", "etc/new", "tmp", "tmp/t"]


def test_deleting_a_lower_file_leaves_a_whiteout(run):
    result = run("rm /bin/ls && rm -rf /root && mkdir /root && rm -r /var")
    assert result.code == 0, result.text
    for name in ("bin/ls", "var"):
        st = os.lstat(result.upper / name)
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    assert os.getxattr(result.upper / "root", "trusted.overlay.opaque") == b"y"


def test_namespaces_pid_one_and_only_our_processes(run):
    result = run("echo $$; readlink /proc/1/ns/mnt; ps -o pid,comm; true")
    pid, mnt, *table = result.text.splitlines()
    assert pid == "1"
    assert mnt != os.readlink("/proc/self/ns/mnt")
    assert [line.split()[1] for line in table[1:]] == ["sh", "ps"]  # nothing of the host


def test_pid_one_leads_its_session_and_process_group(run):
    """As runc's init makes it (chroot left pid 1 in a session outside the namespace: 0)."""
    result = run("grep -E '^NS(pgid|sid)' /proc/self/status")
    assert result.text.split() == ["NSpgid:", "1", "NSsid:", "1"]


def test_mounts_proc_dev_sys_as_docker(run):
    result = run(
        "ls /dev; echo; grep -E ' /(proc|dev|sys|dev/shm|dev/pts|dev/mqueue) ' /proc/mounts | cut -d' ' -f2,3,4;"
        " echo; touch /sys/x 2>&1 >/dev/null | wc -l; ulimit -n; grep CapBnd /proc/self/status"
    )
    devs, mounts, rest = result.text.split("\n\n")
    assert {"null", "zero", "full", "random", "urandom", "tty", "ptmx", "pts", "shm", "mqueue"} <= set(devs.split())
    table = {line.split()[0]: line.split()[1:] for line in mounts.splitlines()}
    assert table["/proc"][0] == "proc"
    assert table["/dev"][0] == "tmpfs"
    assert table["/dev/shm"][0] == "tmpfs" and "size=65536k" in table["/dev/shm"][1]
    assert table["/dev/pts"][0] == "devpts"
    assert table["/dev/mqueue"][0] == "mqueue"
    assert table["/sys"][0] == "sysfs" and table["/sys"][1].startswith("ro")
    failed, nofile, capbnd = rest.splitlines()
    assert failed == "1"
    assert int(nofile) == min(1048576, __import__("resource").getrlimit(7)[1])
    # docker's 14 default capabilities; chroot, with no device cgroup, without CAP_MKNOD
    assert capbnd.split()[1] == ("00000000a00425fb" if run.runtime.name == "chroot" else "00000000a80425fb")


def test_network_none_has_only_loopback_and_it_is_up(run):
    result = run("ls /sys/class/net; cat /sys/class/net/lo/flags", network=Network.NONE)
    names, flags = result.text.split()
    assert names == "lo"
    assert int(flags, 16) & 0x1  # IFF_UP


def test_network_host_sees_the_host_interfaces(run):
    for _ in range(5):  # other containers on the machine may come and go: a listing they left alone
        host = sorted(os.listdir("/sys/class/net"))
        seen = sorted(run("ls /sys/class/net", network=Network.HOST).text.split())
        if sorted(os.listdir("/sys/class/net")) == host:
            break
    assert seen == host


def test_bind_mounts_rw_ro_and_tmpfs(run, tmp_path):
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "in").write_text("secret")
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t")
    secret.chmod(0o400)
    result = run(
        "echo written > /mnt/rw/out; cat /mnt/ro/in; echo; touch /mnt/ro/x 2>/dev/null || echo ro;"
        " cat /run/secrets/token; echo; echo t > /cache/t; grep ' /cache ' /proc/mounts | cut -d' ' -f3",
        mounts=[Mount.bind(rw, "/mnt/rw"), Mount.bind(ro, "/mnt/ro", readonly=True),
                Mount.bind(secret, "/run/secrets/token", readonly=True),
                Mount.tmpfs("/cache", size=1 << 20)],
    )
    assert result.text.splitlines() == ["secret", "ro", "s3cr3t", "tmpfs"]
    assert (rw / "out").read_text() == "written\n"
    assert not (ro / "x").exists()
    assert tree(result.upper) == []  # mount points are stubs of the init layer, not of the layer


def test_readonly_rootfs(run):
    result = run("touch /x 2>/dev/null || echo refused; (echo ok > /tmp/t) 2>/dev/null || echo refused",
                 readonly_rootfs=True)
    assert result.text == "refused\nrefused\n"
    assert tree(result.upper) == []


def test_symlinks_in_the_image_do_not_lead_outside(run, busybox_rootfs, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    evil = tmp_path / "evil"
    (evil / "etc").mkdir(parents=True)
    (evil / "etc" / "hosts").symlink_to(f"{outside}/hosts")
    (evil / "etc" / "passwd").symlink_to("../../../../../../../etc/passwd-of-the-host")
    (evil / "mnt").symlink_to(str(outside))
    result = run("head -1 /etc/hosts; id -u; ls /mnt", lowers=[busybox_rootfs, evil], user="",
                 mounts=[Mount.tmpfs("/mnt/t")])
    assert result.code == 0, result.text
    hosts, uid, *listing = result.text.splitlines()
    assert hosts.startswith("127.0.0.1\tlocalhost ")
    assert uid == "0"
    assert listing == ["hosts", "t"]  # both links were followed inside the rootfs
    assert list(outside.iterdir()) == []  # neither the /etc/hosts nor the /mnt/t stub reached the host
    assert tree(result.upper) == []


def test_masked_and_readonly_proc_paths(run):
    assert Path("/proc/timer_list").stat().st_size or Path("/proc/timer_list").read_bytes()
    result = run("wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; ls -A /proc/acpi | wc -l;"
                 " (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null || echo ro")
    assert result.text.split() == ["0", "0", "0", "ro"]


def test_upper_dir_on_another_file_system(run, tmp_path, busybox_rootfs):
    other = tmp_path / "tmpfs"
    other.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(other)], check=True)
    try:
        chunks: list[bytes] = []
        code = run.runtime.run(ContainerSpec([busybox_rootfs], other / "upper",
                                             ProcessSpec(("sh", "-c", "echo hi > /hi"))),
                               stdout=chunks.append)
        assert code == 0, chunks
        assert sorted(os.listdir(other)) == ["upper"]  # overlay's work dir was made and removed
        assert tree(other / "upper") == ["hi"]
    finally:
        subprocess.run(["umount", str(other)], check=True)


def test_containers_in_parallel_threads(run):
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda n: run(f"sleep 0.2; echo {n}; touch /f{n}"), range(4)))
    assert [r.text for r in results] == ["0\n", "1\n", "2\n", "3\n"]
    assert [tree(r.upper) for r in results] == [["f0"], ["f1"], ["f2"], ["f3"]]


DIFF_SCRIPT = (
    "rm /bin/ls; echo x > /etc/new; mkdir -p /a/b; rm -rf /root; mkdir /root; touch /root/r;"
    " rm -rf /var; echo hi > /tmp/t; cat /etc/hosts /etc/resolv.conf > /dev/null"
)


@pytest.mark.docker
def test_upper_dir_holds_what_docker_diff_reports(run, docker, docker_busybox):
    name = f"pybuild-diff-{uuid.uuid4().hex[:12]}"  # docker's names are the machine's: a killed run's may stay
    subprocess.run([docker, "run", "--name", name, "--network", "host", docker_busybox, "sh", "-c", DIFF_SCRIPT],
                   check=True, capture_output=True)
    try:
        diff = subprocess.run([docker, "diff", name], check=True, capture_output=True, text=True).stdout
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True)
    expected = sorted(line.split(" ", 1)[1].lstrip("/") for line in diff.splitlines())
    result = run(DIFF_SCRIPT)
    assert result.code == 0, result.text
    assert tree(result.upper) == expected


def test_process_ignores_no_signals(run):
    # neither pybuild's, nor the shim's, nor Python's SIG_IGN may leak into the container
    assert run(("grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status")).text.split() == [
        "SigBlk:", "0000000000000000", "SigIgn:", "0000000000000000",
    ]


def test_upper_dir_is_mounted_volatile(run):
    # fsyncs inside a step (dpkg makes one per file) are no-ops; the layer writer syncs the layer
    result = run("dd if=/dev/zero of=/f bs=4k count=1 conv=fsync 2>/dev/null; grep -c ' / overlay .*volatile' /proc/mounts")
    assert result.text == "1\n"
    assert tree(result.upper) == ["f"]


def test_workdir_only_root_can_enter_is_entered_as_runc_does(run, busybox_rootfs, tmp_path):
    private = tmp_path / "private-layer"
    (private / "private").mkdir(parents=True)
    (private / "private").chmod(0o700)
    result = run("pwd; ls . 2>/dev/null || echo unreadable", cwd="/private", user="app",
                 lowers=[busybox_rootfs, private])
    assert result.text == "/private\nunreadable\n"


def test_missing_workdir_under_a_file_is_an_error(run):
    with pytest.raises(ContainerError, match="not a directory"):
        run("pwd", cwd="/bin/busybox/x")


def test_large_output_and_stdin(runtime, tmp_path, busybox_rootfs):
    data = os.urandom(3 << 20)
    source = tmp_path / "in"
    source.write_bytes(data)
    chunks: list[bytes] = []
    with open(source, "rb") as stdin:
        code = runtime.run(ContainerSpec([busybox_rootfs], tmp_path / "upper",
                                         ProcessSpec(("sh", "-c", "cat; cat /bin/busybox >&2"))),
                           stdout=chunks.append, stdin=stdin)
    assert code == 0
    output = b"".join(chunks)
    assert output == data + (busybox_rootfs / "bin" / "busybox").read_bytes()


PROBE = (
    "umask; grep -E '^(Cap|NoNewPrivs|Seccomp|SigBlk|SigIgn)' /proc/self/status;"
    " for f in /dev/*; do stat -c '%A %N' $f; done; ulimit -n; cat /proc/self/oom_score_adj;"
    " grep -E ' /(dev|dev/shm|dev/pts|dev/mqueue|proc|sys) ' /proc/mounts | sed 's/relatime,//'"
)


@pytest.mark.docker
@pytest.mark.parametrize("user", ["", "app"])
def test_same_process_environment_as_docker_run(run, docker, docker_busybox, user):
    ref = subprocess.run([docker, "run", "--rm", "--network", "host", "-u", user or "0", docker_busybox,
                          "/bin/sh", "-c", PROBE], capture_output=True, text=True, check=True)
    ours = run(PROBE, user=user)
    assert ours.code == 0
    # dockerd passes on glibc's internal signals (32, 33) as ignored when whatever started it
    # ignored them (some CI runners do); pybuild resets them, so compare without those two bits
    expected = [f"SigIgn:\t{int(line.split()[1], 16) & ~0x180000000:016x}"
                if line.startswith("SigIgn:") else line for line in ref.stdout.splitlines()]
    if run.runtime.name == "chroot":  # no device cgroup: no CAP_MKNOD either
        expected = [line.replace("a80425fb", "a00425fb") for line in expected]
    if run.runtime.name == "crun":  # crun's one addition to runc's /dev
        expected.insert(expected.index("lrwxrwxrwx '/dev/fd' -> '/proc/self/fd'"),
                        "lrwxrwxrwx '/dev/core' -> '/proc/kcore'")
    assert ours.text.splitlines() == expected


def test_umask_is_docker_s_whatever_pybuild_s_is(run):
    previous = os.umask(0o077)
    try:
        result = run("umask; touch /f; mkdir /d")
    finally:
        os.umask(previous)
    assert result.text == "0022\n"
    assert stat.S_IMODE(os.stat(result.upper / "f").st_mode) == 0o644
    assert stat.S_IMODE(os.stat(result.upper / "d").st_mode) == 0o755


@pytest.fixture
def loopback_server():
    """An HTTP server on a free loopback port serving 'hello from the host' (bound to port 0
    before it is named: no other process on the machine can be there instead)."""
    with serve_files({"/": b"hello from the host\n"}) as url:
        yield int(url.rsplit(":", 1)[1])


def test_host_network_reaches_loopback_services_and_none_does_not(run, loopback_server):
    # busybox's nc, not wget: the static wget crashes on this machine with -T
    fetch = (f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | busybox nc -w 2 127.0.0.1 {loopback_server}"
             " 2>/dev/null | tail -1 | grep . || echo unreachable")
    assert run(fetch, network=Network.HOST).text == "hello from the host\n"
    assert run(fetch, network=Network.NONE).text == "unreachable\n"


def test_extra_hosts_and_secret_owned_by_the_user(run, tmp_path):
    secret = tmp_path / "token"
    secret.write_text("s3cr3t")
    secret.chmod(0o400)
    os.chown(secret, 1000, 1000)
    result = run("grep registry /etc/hosts; cat /run/secrets/token", user="app",
                 extra_hosts=[("registry.local", "127.0.0.2")],
                 mounts=[Mount.bind(secret, "/run/secrets/token", readonly=True)])
    assert result.text == "127.0.0.2\tregistry.local\ns3cr3t"
    assert tree(result.upper) == []


def test_extra_mounts_over_system_mounts(run):
    result = run("grep ' /dev/shm ' /proc/mounts | tail -1 | grep -o 'size=[0-9a-z]*'",
                 mounts=[Mount.tmpfs("/dev/shm", size=1 << 20)])
    assert result.text == "size=1024k\n"
    assert tree(result.upper) == []


def test_device_nodes_cannot_reach_host_devices(run, busybox_rootfs, tmp_path):
    """A block device node from the image (or made by the step) must not open the host's disk."""
    evil = tmp_path / "evil"
    evil.mkdir()
    disk = os.stat("/").st_dev
    os.mknod(evil / "disk", 0o666 | stat.S_IFBLK, disk)
    result = run("head -c 1 /disk >/dev/null 2>&1 && echo read-the-disk;"
                 " mknod /tmp/d b 1 0 2>/dev/null && head -c 1 /tmp/d >/dev/null 2>&1 && echo made-one;"
                 " echo done", lowers=[busybox_rootfs, evil])
    assert result.text == "done\n"


NET_PROBE = "ls /sys/class/net; cat /sys/class/net/lo/flags /sys/class/net/lo/operstate /proc/net/if_inet6"


@pytest.mark.docker
def test_same_none_network_as_docker_run(run, docker, docker_busybox):
    ref = subprocess.run([docker, "run", "--rm", "--network", "none", docker_busybox, "/bin/sh", "-c",
                          NET_PROBE], capture_output=True, text=True, check=True)
    ours = run(NET_PROBE, network=Network.NONE)
    assert ours.text == ref.stdout
