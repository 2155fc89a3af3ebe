"""Fixtures for the runtime tests: each runtime (runc, crun, chroot), a work root, root file systems."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.runtime import ContainerSpec, Network, ProcessSpec, Runtime, detect
from builder.runtime.overlay import mounts_under
from tests.helpers.tools import docker_tag, require_tool

RUNTIMES = ("runc", "crun", "chroot")
BOOKWORM_TAR = Path("/var/cache/pybuild-tests/bookworm-minbase.tar")


@dataclass
class Result:
    code: int
    output: bytes
    chunks: list[bytes]
    upper: Path

    @property
    def text(self) -> str:
        return self.output.decode()


@pytest.fixture
def work_root(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "run"
    yield root
    # every test leaves the work root as a user would find it: nothing mounted, nothing left
    assert mounts_under(tmp_path) == []
    for sub in ("containers", "state"):
        assert not (root / sub).exists() or list((root / sub).iterdir()) == []


@pytest.fixture(params=RUNTIMES)
def runtime(request: pytest.FixtureRequest, work_root: Path) -> Runtime:
    if request.param != "chroot":
        require_tool(request.param)
    return detect(request.param, work_root=work_root)


@pytest.fixture
def run(runtime: Runtime, tmp_path: Path, busybox_rootfs: Path) -> Callable[..., Result]:
    """Run a shell command (or argv) in a fresh container; returns code, output and upper dir."""
    counter = iter(range(1000))

    def _run(
        command: str | tuple[str, ...], *, lowers: list[Path] | None = None, user: str = "",
        env: tuple[str, ...] = (), cwd: str = "/", network: Network = Network.HOST, **spec: object,
    ) -> Result:
        upper = tmp_path / f"upper{next(counter)}"
        args = ("sh", "-c", command) if isinstance(command, str) else command
        chunks: list[bytes] = []
        code = runtime.run(
            ContainerSpec(
                lowerdirs=[busybox_rootfs] if lowers is None else lowers, upperdir=upper,
                process=ProcessSpec(args=args, env=env, cwd=cwd, user=user), network=network,
                **spec,  # type: ignore[arg-type]
            ),
            stdout=chunks.append,
        )
        return Result(code, b"".join(chunks), chunks, upper)

    _run.runtime = runtime  # type: ignore[attr-defined]
    return _run


@pytest.fixture(scope="session")
def bookworm_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The debootstrap'd Debian bookworm minbase of tests/setup.sh, extracted once."""
    if not BOOKWORM_TAR.is_file():
        raise AssertionError(f"{BOOKWORM_TAR} is missing: run tests/setup.sh (make test does)")
    target = tmp_path_factory.mktemp("bookworm") / "rootfs"
    target.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", str(BOOKWORM_TAR), "-C", str(target)],
                   check=True)
    return target


def tree(path: Path) -> list[str]:
    """Every entry under ``path``, relative, sorted: what a layer made from it would hold."""
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="session")
def docker_busybox(docker: str, busybox_rootfs: Path) -> Iterator[str]:
    """The busybox rootfs imported into docker, to compare containers with docker's."""
    tag = docker_tag("pybuild-test/runtime-busybox")
    tar = subprocess.run(["tar", "--numeric-owner", "-C", str(busybox_rootfs), "-c", "."],
                         capture_output=True, check=True).stdout
    subprocess.run([docker, "import", "-", tag], input=tar, capture_output=True, check=True)
    yield tag
    subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
