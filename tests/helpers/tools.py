"""Helpers that run the real pybuild CLI and the real reference tools."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFORMANCE = REPO.parent / "shared" / "conformance"
BUSYBOX_APPLETS = (
    "sh", "ls", "cat", "echo", "mkdir", "rm", "sleep", "touch", "chmod", "chown", "id", "env",
    "true", "false", "ln", "cp", "mv", "stat", "find", "sha256sum", "wc", "head", "tail", "grep",
    "sed", "tar", "test", "[", "printf", "pwd", "whoami", "hostname", "mount", "ps", "dd",
    "readlink", "uname", "seq", "sort", "xargs", "awk", "date", "basename", "dirname", "mknod",
    "adduser", "addgroup", "wget", "kill",
)


def run_pybuild(
    *args: str, root: Path | None = None, input: bytes | None = None, check: bool = False,
    env: dict[str, str] | None = None, timeout: float = 600, cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``python -m builder ARGS`` as a user would run ``pybuild ARGS``."""
    full_env = dict(os.environ)
    if root is not None:
        full_env["PYBUILD_ROOT"] = str(root)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "builder", *args], input=input, capture_output=True,
        env=full_env, timeout=timeout, cwd=cwd,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pybuild {' '.join(args)} exited {proc.returncode}\n"
            f"stdout: {proc.stdout.decode(errors='replace')}\nstderr: {proc.stderr.decode(errors='replace')}"
        )
    return proc


def require_tool(name: str) -> str:
    """The path of a real tool; fail loudly (never skip) when the setup did not install it."""
    path = shutil.which(name)
    if path is None:
        raise AssertionError(f"{name} is not installed: run tests/setup.sh (make test does)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def closed_port(host: str = "127.0.0.1") -> Iterator[int]:
    """A port of ``host`` that refuses connections for the body of the with: bound, never
    listening, so that no other process on the machine starts a server there meanwhile (as
    it may on a port that was merely free when chosen)."""
    with socket.socket() as s:
        s.bind((host, 0))
        yield s.getsockname()[1]


def docker_tag(repository: str) -> str:
    """A name in docker's image store that this test alone uses: the store is the machine's,
    shared with every other test run on it, whose builds and clean-up would take a fixed name."""
    return f"{repository}:{uuid.uuid4().hex[:12]}"


def make_busybox_rootfs(target: Path) -> Path:
    """A minimal root file system from Debian's busybox-static (seconds to make)."""
    busybox = Path(require_tool("busybox")).resolve()
    (target / "bin").mkdir(parents=True, exist_ok=True)
    for d in ("etc", "tmp", "root", "proc", "dev", "sys", "usr/bin", "var"):
        (target / d).mkdir(parents=True, exist_ok=True)
    (target / "tmp").chmod(0o1777)
    shutil.copy2(busybox, target / "bin" / "busybox")
    for applet in BUSYBOX_APPLETS:
        link = target / "bin" / applet
        if not link.exists():
            link.symlink_to("busybox")
    (target / "etc" / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        "app:x:1000:1000:app:/home/app:/bin/sh\n"
    )
    (target / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\napp:x:1000:\n")
    return target


@contextlib.contextmanager
def small_fs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` at ``path`` (root only, as CI runs): a disk that fills up; always unmounted."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
