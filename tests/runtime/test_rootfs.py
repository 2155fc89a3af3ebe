"""In-root path resolution and the choice of isolation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from builder.errors import ContainerError, RuntimeNotFoundError
from builder.runtime import detect
from builder.runtime.chroot import ChrootRuntime
from builder.runtime.oci import OciRuntime
from builder.runtime.rootfs import Stub, make_stubs, read_in_root, resolve_in_root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "usr" / "lib").mkdir(parents=True)
    (r / "usr" / "lib" / "os-release").write_text("ID=test\n")
    (r / "etc" / "os-release").symlink_to("../usr/lib/os-release")
    (r / "etc" / "abs").symlink_to("/usr/lib/os-release")
    (r / "etc" / "up").symlink_to("../../../../../../usr/lib/os-release")
    (r / "lib").symlink_to("usr/lib")
    (r / "loop").symlink_to("loop")
    (r / "escape").symlink_to(str(tmp_path))
    return r


@pytest.mark.parametrize(("path", "expected"), [
    ("/etc/os-release", "usr/lib/os-release"),
    ("/etc/abs", "usr/lib/os-release"),
    ("/etc/up", "usr/lib/os-release"),
    ("/lib/os-release", "usr/lib/os-release"),
    ("/../../etc/../lib/x", "usr/lib/x"),
    ("/missing/dir/file", "missing/dir/file"),
    ("/escape/root/etc", f"{'placeholder'}"),
])
def test_resolve_in_root_never_leaves_the_root(root, path, expected):
    resolved = resolve_in_root(root, path)
    assert resolved.is_relative_to(root)
    if expected != "placeholder":
        assert resolved == root / expected


def test_symlink_loops_are_an_error(root):
    with pytest.raises(ContainerError, match="too many levels of symbolic links"):
        resolve_in_root(root, "/loop/x")


def test_read_in_root(root):
    assert read_in_root(root, "/etc/up") == "ID=test\n"
    assert read_in_root(root, "/etc/missing") is None
    assert read_in_root(root, "/etc") is None


def test_stubs_are_made_inside_the_root_with_docker_s_modes(root, tmp_path):
    os.umask(0o077)
    try:
        resolved = make_stubs(root, [Stub("/escape/new/file", False), Stub("/proc", True)])
    finally:
        os.umask(0o022)
    assert not (tmp_path / "new").exists()
    assert resolved[1] == "/proc"
    assert (root / "proc").stat().st_mode & 0o777 == 0o755
    made = root / resolved[0].lstrip("/")
    assert made.is_file() and made.stat().st_mode & 0o777 == 0o644


def test_stub_under_a_file_is_an_error(root):
    with pytest.raises(ContainerError, match="is not a directory"):
        make_stubs(root, [Stub("/usr/lib/os-release/x", True)])


def test_detect(tmp_path):
    assert isinstance(detect("auto", work_root=tmp_path), OciRuntime)
    assert detect("auto", work_root=tmp_path).name == "runc"
    assert detect("crun", work_root=tmp_path).name == "crun"
    assert isinstance(detect("chroot", work_root=tmp_path), ChrootRuntime)
    with pytest.raises(RuntimeNotFoundError, match="unknown isolation 'kata'"):
        detect("kata", work_root=tmp_path)
    with pytest.raises(RuntimeNotFoundError, match="no-such-runtime is not installed"):
        OciRuntime("no-such-runtime", work_root=tmp_path)


def test_detect_as_a_user_says_containers_need_root(tmp_path, monkeypatch):
    # A non-root user's store works (images, load, save, COPY-only builds); containers do not.
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(RuntimeNotFoundError, match=r"containers \(RUN steps, pybuild run\) need root"):
        detect("auto", work_root=tmp_path)
