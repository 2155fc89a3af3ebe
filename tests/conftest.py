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
