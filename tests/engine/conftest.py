"""Engine fixtures: one store with a busybox base (also in docker), and a build helper."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.helpers.tools import run_pybuild

BASE = "busybox:local"


@pytest.fixture(scope="session")
def base_archive(busybox_rootfs: Path, docker: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A docker-archive of the busybox base, imported into docker as busybox:local too."""
    work = tmp_path_factory.mktemp("base")
    rootfs_tar = work / "rootfs.tar"
    with tarfile.open(rootfs_tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".")
    with open(rootfs_tar, "rb") as f:
        subprocess.run([docker, "import", "--change", "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "-", BASE], stdin=f, check=True, capture_output=True)
    archive = work / "busybox.docker.tar"
    subprocess.run([docker, "save", "-o", str(archive), BASE], check=True)
    return archive


@pytest.fixture(scope="session")
def store_root(base_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pybuild store holding busybox:local, shared by the engine tests."""
    root = tmp_path_factory.mktemp("store")
    run_pybuild("load", "-i", str(base_archive), root=root, check=True)
    return root


class Builder:
    """Runs ``pybuild build`` on a context directory written from a dict of files."""

    def __init__(self, root: Path, tmp: Path) -> None:
        self.root = root
        self.tmp = tmp

    def context(self, files: dict[str, str | bytes], name: str = "ctx") -> Path:
        ctx = self.tmp / name
        ctx.mkdir(parents=True, exist_ok=True)
        for rel, content in files.items():
            path = ctx / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        return ctx

    def build(self, ctx: Path, *args: str, check: bool = True, **kwargs):  # type: ignore[no-untyped-def]
        return run_pybuild("build", "--progress", "plain", *args, str(ctx), root=self.root, check=check, **kwargs)

    def run(self, image: str, *cmd: str, check: bool = True):  # type: ignore[no-untyped-def]
        return run_pybuild("run", "--rm", image, *cmd, root=self.root, check=check)


@pytest.fixture
def builder(store_root: Path, tmp_path: Path) -> Builder:
    return Builder(store_root, tmp_path)
