"""The build context (directory or tar on stdin) and RootfsView over snapshot lower dirs."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.errors import BuildContextError, ImageError
from builder.execute.context import BuildContext
from builder.execute.rootfs import RootfsView
from builder.layers import whiteout

# -- RootfsView ---------------------------------------------------------------------------


def _layers(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Three snapshot dirs as the store keeps them: overlay whiteouts and opaque dirs."""
    base, mid, top = (tmp_path / n for n in ("base", "mid", "top"))
    for d in (base, mid, top):
        d.mkdir()
    (base / "etc").mkdir()
    (base / "etc/passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (base / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    (base / "gone").write_text("deleted above\n")
    (base / "opq").mkdir()
    (base / "opq/old").write_text("hidden by opaque\n")
    (base / "merged").mkdir()
    (base / "merged/lower").write_text("lower\n")
    (base / "merged/shadowed").write_text("lower version\n")
    (base / "wasfile").write_text("a file below a dir\n")
    (base / "bin").mkdir()
    (base / "usr").mkdir()
    (base / "usr/local").mkdir()
    (base / "usr/local/bin").symlink_to("/bin")
    (base / "proc").mkdir()
    (mid / "merged").mkdir()
    (mid / "merged/shadowed").write_text("upper version\n")
    (mid / "merged/upper").write_text("upper\n")
    whiteout.make_overlay_whiteout("gone", os.open(mid, os.O_RDONLY))
    (mid / "wasfile").mkdir()
    (mid / "wasfile/inside").write_text("dir now\n")
    (top / "opq").mkdir()
    (top / "opq/new").write_text("new\n")
    fd = os.open(top / "opq", os.O_RDONLY)
    try:
        whiteout.set_overlay_opaque(fd)
    finally:
        os.close(fd)
    (top / "etc").mkdir()
    (top / "etc/hostname").symlink_to("../../../../../../etc/shadow")
    (top / "loop").symlink_to("loop")
    (top / "esc").symlink_to("/proc/self/root/..")
    (top / "fd").symlink_to("/proc/self/fd/0")
    return base, mid, top


@pytest.fixture
def view(tmp_path: Path) -> RootfsView:
    return RootfsView(list(_layers(tmp_path)))


def test_top_layer_wins_and_directories_merge(view: RootfsView) -> None:
    assert view.read_file("/merged/shadowed") == b"upper version\n"
    names = [rel for rel, _host, _st in view.walk("/merged")]
    assert names == ["lower", "shadowed", "upper"]


def test_whiteouts_and_opaque_directories_hide_lower_content(view: RootfsView) -> None:
    assert view.lookup("/gone") is None
    assert [rel for rel, _h, _s in view.walk("/opq")] == ["new"]
    assert view.lookup("/opq/old") is None
    # A directory above a lower file hides the file.
    assert view.is_dir("/wasfile")
    assert [rel for rel, _h, _s in view.walk("/wasfile")] == ["inside"]


def test_symlinks_resolve_inside_the_root(view: RootfsView) -> None:
    assert view.resolve("/usr/local/bin/tool").path == "/bin/tool"
    assert view.is_dir("/usr/local/bin")
    assert view.resolve("/../../etc/passwd").path == "/etc/passwd"
    assert view.resolve("/../../etc/passwd").clamped
    # /proc/self tricks name paths of the image, never of the host or this process.
    assert view.resolve("/esc/x").path == "/proc/self/x"
    assert view.resolve("/fd/x").path == "/proc/self/fd/0/x"
    assert view.real_path("/fd", follow=False) is not None and view.lookup("/fd/x") is None


def test_symlink_to_host_file_is_not_read(view: RootfsView, tmp_path: Path) -> None:
    assert view.read_file("/etc/hostname") is None  # the image's /etc/shadow: absent
    assert view.resolve("/etc/hostname").path == "/etc/shadow"
    assert view.readlink("/etc/hostname") == "../../../../../../etc/shadow"
    host = view.real_path("/etc/passwd")
    assert host is not None and host.is_relative_to(tmp_path)


def test_symlink_loops_are_an_error(view: RootfsView) -> None:
    with pytest.raises(ImageError, match="too many levels of symbolic links"):
        view.lookup("/loop/x")


def test_walk_lists_parents_first_sorted(view: RootfsView) -> None:
    names = [rel for rel, _h, _s in view.walk("/")]
    assert names.index("etc") < names.index("etc/group") < names.index("etc/hostname")
    assert "gone" not in names and "opq/old" not in names
    assert names == sorted(names, key=lambda n: tuple(os.fsencode(p) for p in n.split("/")))


def test_empty_view_is_scratch() -> None:
    view = RootfsView([])
    assert view.is_dir("/")
    assert view.lookup("/etc/passwd") is None
    assert list(view.walk("/")) == []


def test_plain_tree_has_no_whiteouts(tmp_path: Path) -> None:
    (tmp_path / "t").mkdir()
    whiteout.make_overlay_whiteout("dev0", os.open(tmp_path / "t", os.O_RDONLY))
    assert RootfsView([tmp_path / "t"]).lookup("/dev0") is None
    st = RootfsView([tmp_path / "t"], overlay=False).lookup("/dev0")
    assert st is not None and stat.S_ISCHR(st.st_mode)


# -- BuildContext ---------------------------------------------------------------------------


def test_from_dir_finds_dockerfile_and_ignore_file(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / ".dockerignore").write_text("*.log\n")
    ctx = BuildContext.from_dir(tmp_path)
    assert ctx.dockerfile == tmp_path / "Dockerfile"
    assert ctx.excluded_by("a.log") == ".dockerignore line 1: `*.log`"
    assert ctx.excluded_by("a.txt") is None


def test_dockerfile_specific_ignore_file_wins(tmp_path: Path) -> None:
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx/.dockerignore").write_text("*.log\n")
    (tmp_path / "build.Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "build.Dockerfile.dockerignore").write_text("# mine\n*.tmp\n")
    ctx = BuildContext.from_dir(tmp_path / "ctx", tmp_path / "build.Dockerfile")
    assert ctx.excluded_by("a.log") is None
    assert "line 2: `*.tmp`" in (ctx.excluded_by("x.tmp") or "")


def test_from_dir_refuses_missing_or_file(tmp_path: Path) -> None:
    with pytest.raises(BuildContextError, match="does not exist"):
        BuildContext.from_dir(tmp_path / "nope")
    (tmp_path / "f").write_text("x")
    with pytest.raises(BuildContextError, match="not a directory"):
        BuildContext.from_dir(tmp_path / "f")


def _tar(entries: dict[str, bytes | None], links: dict[str, str] | None = None) -> bytes:
    """A tar of ``links`` (symlinks, first) then ``entries`` (None: a directory)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_from_tar_extracts_and_cleans_up(tmp_path: Path) -> None:
    data = _tar({"Dockerfile": b"FROM scratch\n", ".dockerignore": b"*.log\n", "src": None,
                 "src/app.py": b"print(1)\n"})
    with BuildContext.from_tar(io.BytesIO(gzip.compress(data)), tmp_path / "work") as ctx:
        root = ctx.root
        assert ctx.dockerfile is not None and ctx.dockerfile.read_text() == "FROM scratch\n"
        assert (root / "src/app.py").read_text() == "print(1)\n"
        assert ctx.excluded_by("x.log") is not None
    assert not root.exists()
    assert list((tmp_path / "work").iterdir()) == []


@pytest.mark.parametrize("compress", [bz2.compress, lzma.compress, gzip.compress, lambda d: d])
def test_from_tar_compressed(tmp_path: Path, compress: Callable[[bytes], bytes]) -> None:
    data = compress(_tar({"Dockerfile": b"FROM scratch\n"}))
    with BuildContext.from_tar(io.BytesIO(data), tmp_path) as ctx:
        assert ctx.dockerfile is not None and ctx.dockerfile.read_text() == "FROM scratch\n"


def test_from_tar_with_named_dockerfile(tmp_path: Path) -> None:
    data = _tar({"ci": None, "ci/build.df": b"FROM scratch\n"})
    with BuildContext.from_tar(io.BytesIO(data), tmp_path, "ci/build.df") as ctx:
        assert ctx.dockerfile is not None and ctx.dockerfile.name == "build.df"
    with pytest.raises(BuildContextError, match="'other' is not in the build context tar"):
        BuildContext.from_tar(io.BytesIO(data), tmp_path, "other")
    assert list(tmp_path.iterdir()) == []


def test_from_tar_refuses_escapes(tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(BuildContextError, match="cannot read the build context"):
        BuildContext.from_tar(io.BytesIO(_tar({"../evil": b"x"})), work)
    bad = _tar({"l/passwd": b"x"}, links={"l": "/etc"})
    with pytest.raises(BuildContextError):
        BuildContext.from_tar(io.BytesIO(bad), work)
    assert not (tmp_path / "evil").exists()
    assert list(work.iterdir()) == []


def test_from_tar_refuses_garbage(tmp_path: Path) -> None:
    with pytest.raises(BuildContextError, match="cannot read the build context"):
        BuildContext.from_tar(io.BytesIO(b"this is not a tar" * 100), tmp_path)


@pytest.mark.parametrize("name", ["Dockerfile", ".dockerignore", "Dockerfile.dockerignore"])
def test_from_tar_refuses_files_linked_outside(tmp_path: Path, name: str) -> None:
    (tmp_path / "secret").write_text("root:$y$secret-hash\n")
    files: dict[str, bytes | None] = {"Dockerfile": b"FROM scratch\n"}
    files.pop(name, None)
    data = _tar(files, links={name: str(tmp_path / "secret")})
    with pytest.raises(BuildContextError, match=f"'{name}' in the build context tar is a symlink that leads outside"):
        BuildContext.from_tar(io.BytesIO(data), tmp_path / "work")
    assert list((tmp_path / "work").iterdir()) == []


def test_from_tar_follows_links_inside(tmp_path: Path) -> None:
    data = _tar({"real.df": b"FROM scratch\n"}, links={"Dockerfile": "real.df"})
    with BuildContext.from_tar(io.BytesIO(data), tmp_path) as ctx:
        assert ctx.dockerfile is not None and ctx.dockerfile.name == "real.df"
