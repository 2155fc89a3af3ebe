"""Engine fixtures: one store with a busybox base (also in docker), and a build helper."""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.helpers.tools import run_pybuild

BASE = "busybox:local"
# The time of every file in the base (see base_archive): in the past, as a base image's files
# are, and after the SOURCE_DATE_EPOCH the tests build with (1_700_000_000), as the time the
# base was made at used to be.
BASE_MTIME = 1_750_000_000
BOOKWORM_TAR = Path("/var/cache/pybuild-tests/bookworm-minbase.tar")


@pytest.fixture(scope="session")
def base_archive(busybox_rootfs: Path, docker: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A docker-archive of the busybox base, imported into docker as busybox:local too.

    docker's images are the machine's: another test run on it imports its own busybox:local,
    and the name may point at that one when this run's docker builds start. Both runs' bases
    hold the same layer (same files, same times), so that docker's builds see the same files
    whichever it is."""
    work = tmp_path_factory.mktemp("base")
    rootfs_tar = work / "rootfs.tar"

    def same_everywhere(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = BASE_MTIME
        return info

    with tarfile.open(rootfs_tar, "w") as tf:
        tf.add(busybox_rootfs, arcname=".", filter=same_everywhere)
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


@pytest.fixture(scope="session")
def bookworm_base(store_root: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Debian bookworm (the debootstrap minbase of tests/setup.sh) as bookworm:engine-test, built by pybuild."""
    if not BOOKWORM_TAR.is_file():
        raise AssertionError(f"{BOOKWORM_TAR} is missing: run tests/setup.sh (make test does)")
    ctx = tmp_path_factory.mktemp("bookworm-base")
    try:
        os.link(BOOKWORM_TAR, ctx / BOOKWORM_TAR.name)  # 128 MB: no copy when on the same fs
    except OSError:
        shutil.copyfile(BOOKWORM_TAR, ctx / BOOKWORM_TAR.name)
    (ctx / "Dockerfile").write_text(f"FROM scratch\nADD {BOOKWORM_TAR.name} /\nCMD [\"bash\"]\n")
    run_pybuild("build", "-q", "-t", "bookworm:engine-test", str(ctx), root=store_root, check=True)
    return "bookworm:engine-test"


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
