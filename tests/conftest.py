"""Session fixtures: real tools on loopback (registry, docker), base root file systems."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.tools import free_port, make_busybox_rootfs, require_tool

# What a machine's environment may hold that changes what pybuild, git, requests or docker's CLI
# do, where the tests expect what they set themselves: a CI runner's proxy (which requests and
# git would send loopback traffic to), PYBUILD_DEBUG's tracebacks, SOURCE_DATE_EPOCH's clamped
# times, a progress mode, a default platform, an ssh agent, a language for git's messages.
MACHINE_ENV = ("PYBUILD_DEBUG", "PYBUILD_CERTS_D", "SOURCE_DATE_EPOCH", "BUILDKIT_PROGRESS",
               "BUILDKIT_STEP_LOG_MAX_SIZE", "NO_COLOR", "DOCKER_DEFAULT_PLATFORM", "SSH_AUTH_SOCK",
               "GIT_SSH_COMMAND", "LANGUAGE")
PROXY_ENV = ("http_proxy", "https_proxy", "ftp_proxy", "all_proxy", "no_proxy")
_DOCKER_CONFIG = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    """The tests run in the same environment on every machine: none of the variables above, a
    UTF-8 locale in English, the usual umask (the modes of the files tests write), and an empty
    docker config directory, so that neither pybuild nor docker's CLI reads the machine user's
    ~/.docker/config.json (its credential helpers, its proxies, which both make build args of)."""
    for name in list(os.environ):
        if name in MACHINE_ENV or name.lower() in PROXY_ENV:
            del os.environ[name]
    os.environ["LC_ALL"] = "C.UTF-8"
    os.umask(0o022)
    docker_config = Path(tempfile.mkdtemp(prefix="pybuild-tests-docker-config-"))
    config.stash[_DOCKER_CONFIG] = docker_config
    os.environ["DOCKER_CONFIG"] = str(docker_config)


def pytest_unconfigure(config: pytest.Config) -> None:
    docker_config = config.stash.get(_DOCKER_CONFIG, None)
    if docker_config is not None:
        shutil.rmtree(docker_config, ignore_errors=True)


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
    from tests.registry.conftest import start_registry

    address, proc = start_registry(tmp_path_factory.mktemp("registry"), "")
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
    for _ in range(5):  # another process on the machine may take the free port first: try another
        port = free_port()
        proc = subprocess.Popen(
            [git, "daemon", "--reuseaddr", "--export-all", f"--base-path={git_repo.parent}",
             "--listen=127.0.0.1", f"--port={port}", str(git_repo.parent)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        url = f"git://127.0.0.1:{port}/{git_repo.name}"
        deadline = time.monotonic() + 20
        while proc.poll() is None and subprocess.run([git, "ls-remote", url], capture_output=True).returncode != 0:
            if time.monotonic() > deadline:
                proc.kill()
                raise AssertionError("git daemon did not start")
            time.sleep(0.1)
        if proc.poll() is None:
            break
    else:
        raise AssertionError("git daemon found no free port")
    yield url
    proc.terminate()
    proc.wait(timeout=10)
