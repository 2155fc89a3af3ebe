"""Session fixtures: real tools on loopback (registry, docker), base root file systems."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.helpers.tools import free_port, make_busybox_rootfs, require_tool


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


@pytest.fixture(scope="session")
def docker() -> str:
    """The docker CLI talking to a running engine (tests/setup.sh starts dockerd)."""
    cli = require_tool("docker")
    info = subprocess.run([cli, "info"], capture_output=True, timeout=60)
    if info.returncode != 0:
        raise AssertionError("dockerd is not running: run tests/setup.sh (make test does)")
    return cli


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Distribution registry on a free loopback port, plain HTTP; yields 'host:port'."""
    binary = require_tool("docker-registry")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: error}\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    with open(root / "registry.log", "wb") as log:
        proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://{address}/v2/", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"docker-registry did not start: {(root / 'registry.log').read_text()}")
        time.sleep(0.1)
    yield address
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def git_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A bare repository with a tag and a subdirectory, reachable as file://.../repo.git."""
    git = require_tool("git")
    top = tmp_path_factory.mktemp("git")
    work = top / "work"
    work.mkdir()
    env_args = ["-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"]

    def run(*args: str, cwd: Path = work) -> None:
        subprocess.run([git, *env_args, *args], cwd=cwd, check=True, capture_output=True)

    run("init", "-q")
    (work / "README").write_text("v1\n")
    (work / "src").mkdir()
    (work / "src/main.c").write_text("int main(){}\n")
    run("add", ".")
    run("commit", "-q", "-m", "one")
    run("tag", "v1")
    (work / "README").write_text("v2\n")
    run("commit", "-q", "-am", "two")
    run("clone", "-q", "--bare", str(work), str(top / "repo.git"), cwd=top)
    return top / "repo.git"


@pytest.fixture(scope="session")
def git_daemon(git_repo: Path) -> Iterator[str]:
    """``git daemon`` serving the repository's parent on a free loopback port; yields git://..."""
    git = require_tool("git")
    port = free_port()
    proc = subprocess.Popen(
        [git, "daemon", "--reuseaddr", "--export-all", f"--base-path={git_repo.parent}",
         "--listen=127.0.0.1", f"--port={port}", str(git_repo.parent)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"git://127.0.0.1:{port}/{git_repo.name}"
    deadline = time.monotonic() + 20
    while subprocess.run([git, "ls-remote", url], capture_output=True).returncode != 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError("git daemon did not start")
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)
