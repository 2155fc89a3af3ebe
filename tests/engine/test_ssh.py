"""``--ssh`` and ``RUN --mount=type=ssh``: a real ssh-agent, asked from inside the build container.

The step asks the agent for its identities over the forwarded socket (a Perl
client of the agent protocol, on the Debian base) and writes their comments
into the image: the keys travel through the relay, the socket has the owner
and mode the mount asks for, and nothing of the agent or the keys is left in
the image, in the store's scratch space or as a process.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.tools import require_tool, run_pybuild

# SSH_AGENTC_REQUEST_IDENTITIES (11) -> SSH_AGENT_IDENTITIES_ANSWER (12): print each key's comment.
AGENT_IDS = r"""
use IO::Socket::UNIX;
my $s = IO::Socket::UNIX->new(Peer => $ENV{SSH_AUTH_SOCK}) or die "connect $ENV{SSH_AUTH_SOCK}: $!\n";
print $s pack("NC", 1, 11);
read($s, my $head, 4) == 4 or die "short read\n";
read($s, my $body, unpack("N", $head));
my ($type, $n) = unpack("CN", $body);
die "answer $type\n" unless $type == 12;
my $off = 5;
for (1 .. $n) {
    $off += 4 + unpack("N", substr($body, $off, 4));
    my $len = unpack("N", substr($body, $off, 4));
    print substr($body, $off + 4, $len), "\n";
    $off += 4 + $len;
}
"""


def _keygen(path: Path, comment: str, passphrase: str = "") -> Path:
    subprocess.run([require_tool("ssh-keygen"), "-q", "-t", "ed25519", "-N", passphrase, "-C", comment,
                    "-f", str(path)], check=True)
    return path


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A user's ssh-agent holding one key: (its socket, the key's comment)."""
    sock = tmp_path / "agent.sock"
    proc = subprocess.Popen([require_tool("ssh-agent"), "-D", "-a", str(sock)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.01)
        comment = f"agent-key-{uuid.uuid4().hex[:8]}"
        key = _keygen(tmp_path / "agent_key", comment)
        subprocess.run([require_tool("ssh-add"), "-q", str(key)], check=True,
                       env={**os.environ, "SSH_AUTH_SOCK": str(sock)}, capture_output=True)
        yield str(sock), comment
    finally:
        proc.kill()
        proc.wait()


def _agents_of_pybuild(root: Path) -> list[str]:
    """Running ssh-agents of pybuild's (they name their socket by descriptor), from /proc: those
    of the pybuild commands on the store ``root`` (they have its PYBUILD_ROOT in their environment),
    not those of other test runs or builds on the machine."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            environ = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(argv).decode(errors="replace")
        if argv[0].endswith(b"ssh-agent") and "/fd/" in text and f"PYBUILD_ROOT={root}".encode() in environ:
            found.append(text)
    return found


def test_agent_and_key_files_reach_the_step(bookworm_base: str, builder: Builder, agent: tuple[str, str],
                                            tmp_path: Path) -> None:
    sock, agent_comment = agent
    key_comment = f"file-key-{uuid.uuid4().hex[:8]}"
    key = _keygen(tmp_path / "id_deploy", key_comment)
    ctx = builder.context({
        "agent-ids.pl": AGENT_IDS,
        "Dockerfile": f"FROM {bookworm_base}\n"
        "COPY agent-ids.pl /agent-ids.pl\n"
        "RUN --mount=type=ssh perl /agent-ids.pl > /default-ids && echo $SSH_AUTH_SOCK > /sock-path && "
        "stat -c '%F %a %u %g' $SSH_AUTH_SOCK > /sock-stat\n"
        "USER nobody\n"
        "RUN --mount=type=ssh,id=deploy,uid=65534,target=/tmp/agent "
        "perl /agent-ids.pl > /tmp/deploy-ids && stat -c '%a %u' /tmp/agent > /tmp/deploy-stat\n"
        "RUN --mount=type=ssh,id=deploy (perl /agent-ids.pl || true) > /tmp/denied 2>&1\n",
    }, "ssh")
    p = builder.build(ctx, "--no-cache", "-t", "ssh-test:1", "--ssh", f"default={sock}",
                      "--ssh", f"deploy={key}")
    assert b"PRIVATE KEY" not in p.stdout + p.stderr
    show = builder.run("ssh-test:1", "sh", "-c",
                       "cat /default-ids /sock-path /sock-stat /tmp/deploy-ids /tmp/deploy-stat /tmp/denied")
    lines = show.stdout.decode().splitlines()
    assert lines[:5] == [agent_comment, "/run/buildkit/ssh_agent.0", "socket 600 0 0", key_comment, "600 65534"]
    assert "Permission denied" in lines[5]  # uid 0, mode 0600: USER nobody may not use it

    saved = tmp_path / "image.tar"
    run_pybuild("save", "-o", str(saved), "ssh-test:1", root=builder.root, check=True)
    private = key.read_bytes()
    with tarfile.open(saved) as tf:
        for member in tf.getmembers():
            data = tf.extractfile(member)
            if data is not None:
                blob = data.read()
                assert private not in blob
                if member.name.startswith("blobs/") and not blob.startswith(b"{"):  # a layer
                    with tarfile.open(fileobj=io.BytesIO(blob)) as layer:
                        names = layer.getnames()
                    assert not any(n.startswith(("run/buildkit", "tmp/agent")) for n in names), names
    assert _agents_of_pybuild(builder.root) == []
    assert list((builder.root / "run" / "tmp").glob("*-ssh*")) == []


def test_ssh_errors_are_clear(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           "RUN --mount=type=ssh,id=git,required=true true\n"}, "ssh-required")
    failed = builder.build(ctx, "--no-cache", check=False)
    err = failed.stderr.decode()
    assert failed.returncode == 1 and "Dockerfile:2" in err and "--ssh git" in err and "Traceback" not in err

    env = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    unset = subprocess.run([sys.executable, "-m", "builder", "build", "--ssh", "default", str(ctx)],
                           capture_output=True, env={**env, "PYBUILD_ROOT": str(builder.root)})
    assert unset.returncode != 0 and b"SSH_AUTH_SOCK is not set" in unset.stderr and b"Traceback" not in unset.stderr

    locked = _keygen(tmp_path / "locked", "locked", passphrase="s3cret-pass")
    p = builder.build(ctx, "--ssh", f"git={locked}", check=False)
    assert p.returncode != 0 and b"needs a passphrase" in p.stderr and b"Traceback" not in p.stderr
    missing = builder.build(ctx, "--ssh", f"git={tmp_path / 'nope'}", check=False)
    assert missing.returncode != 0 and b"nope" in missing.stderr and b"Traceback" not in missing.stderr
    assert _agents_of_pybuild(builder.root) == []


def test_optional_ssh_mount_absent_and_not_in_the_cache_key(builder: Builder, agent: tuple[str, str]) -> None:
    """Without --ssh an optional mount is skipped (BuildKit); which agent was given does not change the key."""
    sock, _ = agent
    marker = uuid.uuid4().hex
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"
                           f"RUN --mount=type=ssh echo {marker} > /m && "
                           "(test -S \"$SSH_AUTH_SOCK\" && echo has-agent || echo no-agent) > /agent\n"},
                          "ssh-optional")
    builder.build(ctx, "-t", "ssh-optional:1")
    assert builder.run("ssh-optional:1", "cat", "/agent").stdout == b"no-agent\n"
    again = builder.build(ctx, "-t", "ssh-optional:2", "--ssh", f"default={sock}")
    assert b"CACHED" in again.stderr


def test_agent_of_a_killed_build_is_stopped_by_the_next_run(builder: Builder, tmp_path: Path) -> None:
    """ssh-agent is set-gid on Debian, so it cannot die with pybuild: the next pybuild run kills it."""
    key = _keygen(tmp_path / "id_kill", "kill-key")
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN --mount=type=ssh sleep 60 # {uuid.uuid4().hex}\n"},
                          "ssh-kill")
    env = {**os.environ, "PYBUILD_ROOT": str(builder.root)}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "build", "--ssh", f"default={key}", str(ctx)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    temps = builder.root / "run" / "tmp"
    deadline = time.monotonic() + 60
    while not [d for d in temps.glob(f"{proc.pid}-ssh-*") if "agent" not in d.name]:  # the RUN's relay
        assert proc.poll() is None and time.monotonic() < deadline, "the build did not reach its RUN step"
        time.sleep(0.05)
    [helper] = temps.glob(f"{proc.pid}-ssh-agent-*/helper.pid")
    agent_pid = int(helper.read_text().split()[0])
    proc.kill()
    proc.wait()
    builder.build(builder.context({"Dockerfile": "FROM busybox:local\n"}, "after-kill"))

    def running(pid: int) -> bool:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
        except FileNotFoundError:
            return False

    assert not running(agent_pid)
    assert list(temps.glob(f"{proc.pid}-*")) == []
