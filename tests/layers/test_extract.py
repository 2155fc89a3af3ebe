"""The extractor: OCI whiteout semantics, overlayfs-native whiteouts, replacement rules, formats,
and layers written by docker's own builder."""

from __future__ import annotations

import functools
import gzip
import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from builder.errors import ImageError, UnsafeLayerError
from builder.layers.changes import layer_changes
from builder.layers.extract import TarReader, extract_layer, extract_to_directory
from builder.layers.tarwriter import EntryType, TarEntry, TarStreamWriter, write_layer
from tests.helpers.tools import docker_tag, require_tool
from tests.layers import snapshot
from tests.layers.malicious import Member, _hard, _reg, _sym, build_tar


def lower_tree(root: Path) -> Path:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0\n")
    (root / "etc" / "old.conf").write_text("old")
    (root / "var" / "cache" / "apt").mkdir(parents=True)
    (root / "var" / "cache" / "apt" / "pkgcache.bin").write_bytes(b"x" * 1000)
    (root / "var" / "cache" / "keep").write_text("lower")
    (root / "opt" / "app" / "sub").mkdir(parents=True)
    (root / "opt" / "app" / "sub" / "lowerfile").write_text("lower")
    (root / "opt" / "app" / "top").write_text("lower")
    return root


def apply(target: Path, members: list[Member], **kwargs: bool) -> None:
    extract_layer(io.BytesIO(build_tar(members)), target, **kwargs)


def _dir(name: str) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=0o755)


def test_whiteouts_delete_lower_files_and_directories(tmp_path: Path) -> None:
    root = lower_tree(tmp_path / "root")
    apply(root, [_dir("etc"), _reg("etc/.wh.old.conf", b""), _dir("var/cache"),
                 _reg("var/cache/.wh.apt", b""), _reg(".wh.missing", b"")])
    assert not (root / "etc" / "old.conf").exists()
    assert not (root / "var" / "cache" / "apt").exists()
    assert (root / "etc" / "passwd").exists() and (root / "var" / "cache" / "keep").exists()


def test_opaque_hides_lower_but_keeps_same_layer_entries_in_any_order(tmp_path: Path) -> None:
    root = lower_tree(tmp_path / "root")
    # The marker comes after entries of the same layer in that directory; "sub" is re-listed.
    apply(root, [_dir("opt/app"), _reg("opt/app/new", b"new"), _dir("opt/app/sub"),
                 _reg("opt/app/sub/mine", b"mine"), _reg("opt/app/.wh..wh..opq", b""),
                 _reg("opt/app/later", b"later")])
    names = sorted(p.relative_to(root / "opt/app").as_posix() for p in (root / "opt/app").rglob("*"))
    assert names == ["later", "new", "sub", "sub/mine"]


def test_whiteout_never_deletes_its_own_layer(tmp_path: Path) -> None:
    root = lower_tree(tmp_path / "root")
    apply(root, [_reg("fresh", b"1"), _reg(".wh.fresh", b"")])
    assert (root / "fresh").read_text() == "1"


def test_whiteouts_kept_as_files_when_not_applied(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    apply(root, [_reg(".wh.x", b""), _reg("d/.wh..wh..opq", b"")], apply_whiteouts=False)
    assert (root / ".wh.x").is_file() and (root / "d" / ".wh..wh..opq").is_file()


def test_overlay_whiteouts_work_as_a_real_overlay_lower(tmp_path: Path) -> None:
    """Snapshots with overlay-native whiteouts, stacked by the kernel, equal applying the layers."""
    base = lower_tree(tmp_path / "base-src")
    layer1 = io.BytesIO()
    write_layer(base, layer1)
    layer2 = build_tar([
        _dir("etc"), _reg("etc/.wh.old.conf", b""), _dir("opt/app"), _reg("opt/app/.wh..wh..opq", b""),
        _reg("opt/app/new", b"new"), _reg("added", b"added"),
    ])
    snap1, snap2 = tmp_path / "snap1", tmp_path / "snap2"
    snap1.mkdir()
    snap2.mkdir()
    extract_layer(io.BytesIO(layer1.getvalue()), snap1, overlay_whiteouts=True)
    stats = extract_layer(io.BytesIO(layer2), snap2, overlay_whiteouts=True)
    assert stats.whiteouts == 1 and stats.opaques == 1
    wh = (snap2 / "etc" / "old.conf").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == 0
    assert os.getxattr(snap2 / "opt" / "app", "trusted.overlay.opaque") == b"y"
    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={snap2}:{snap1}", merged],
                   check=True, capture_output=True)
    try:
        seen = snapshot(merged, mtimes=False)
    finally:
        subprocess.run(["umount", merged], check=True)
    flat = tmp_path / "flat"
    flat.mkdir()
    extract_layer(io.BytesIO(layer1.getvalue()), flat)
    extract_layer(io.BytesIO(layer2), flat)
    assert seen == snapshot(flat, mtimes=False)
    assert "etc/old.conf" not in seen and "opt/app/sub" not in seen and "opt/app/new" in seen


def test_replacements_never_write_through_what_was_there(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "realdir").mkdir(parents=True)
    (root / "realdir" / "inside").write_text("inside")
    (root / "dirlink").symlink_to("realdir")
    (root / "a").write_text("original a")
    (root / "file-becomes-dir").write_text("f")
    (root / "dir-becomes-file").mkdir()
    (root / "dir-becomes-file" / "x").write_text("x")
    apply(root, [
        _dir("dirlink"),  # a directory entry replaces the symlink, not the directory it names
        _hard("b", "a"), _reg("b", b"new b"),  # overwriting a hardlinked name leaves the other
        _dir("file-becomes-dir"), _reg("dir-becomes-file", b"now a file"),
    ])
    assert (root / "dirlink").is_dir() and not (root / "dirlink").is_symlink()
    assert (root / "realdir" / "inside").read_text() == "inside"
    assert (root / "a").read_text() == "original a" and (root / "b").read_text() == "new b"
    assert (root / "file-becomes-dir").is_dir()
    assert (root / "dir-becomes-file").read_text() == "now a file"


def test_relative_symlinks_inside_the_root_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "lib").symlink_to("usr/lib")
    apply(root, [_reg("lib/libx.so", b"elf"), _sym("usr/lib/self", "../lib"), _reg("usr/lib/self/y", b"y")])
    assert (root / "usr" / "lib" / "libx.so").read_text() == "elf"
    assert (root / "usr" / "lib" / "y").read_text() == "y"
    assert (root / "lib").is_symlink()


def test_directory_metadata_is_set_after_children(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    buf = io.BytesIO()
    with TarStreamWriter(buf) as w:
        w.add(TarEntry("ro", EntryType.DIR, 0o555, 1000, 1000, mtime=1_000_000))
        w.add(TarEntry("ro/file", EntryType.FILE, 0o444, 1000, 1000, size=2, mtime=2_000_000), io.BytesIO(b"hi"))
        w.add(TarEntry("ro/link", EntryType.SYMLINK, 0o777, 5, 6, mtime=3_000_000, linkname="file"))
    buf.seek(0)
    extract_layer(buf, root)
    st = (root / "ro").stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, int(st.st_mtime)) == (0o555, 1000, 1_000_000)
    lst = (root / "ro" / "link").lstat()
    assert (lst.st_uid, lst.st_gid, int(lst.st_mtime)) == (5, 6, 3_000_000)


def test_same_owner_false_keeps_the_extracting_user(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    buf = io.BytesIO()
    with TarStreamWriter(buf) as w:
        w.add(TarEntry("f", EntryType.FILE, 0o640, 1234, 5678, size=1), io.BytesIO(b"x"))
    buf.seek(0)
    extract_layer(buf, root, same_owner=False)
    assert ((root / "f").stat().st_uid, (root / "f").stat().st_gid) == (os.getuid(), os.getgid())


def test_devices_are_skipped_without_root() -> None:
    """An unprivileged extraction skips device nodes and foreign owners instead of failing."""
    with tempfile.TemporaryDirectory(prefix="pybuild-nonroot-") as tmp:
        os.chmod(tmp, 0o755)  # pytest's own tmp dirs are private to root
        _extract_as_nobody(Path(tmp))


def _extract_as_nobody(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    os.chown(root, 65534, 65534)
    blob = tmp_path / "layer.tar"
    blob.write_bytes(build_tar([
        Member("null", tarfile.CHRTYPE, devmajor=1, devminor=3), _reg("file", b"data"),
    ]))
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child drops root, extracts, and reports back
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with open(blob, "rb") as f:
                s = extract_layer(f, root)
            os.write(write_end, repr((s.devices, s.skipped, s.skipped_names, s.files)).encode())
            code = 0
        except BaseException as err:
            os.write(write_end, repr(err).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end) as r:
        report = r.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, report
    assert report == repr((0, 1, ["null"], 1))
    assert not (root / "null").exists() and (root / "file").read_text() == "data"


@pytest.mark.parametrize("fmt", ["gnu", "posix", "ustar", "v7"])
def test_reads_what_gnu_tar_writes(fmt: str, tmp_path: Path) -> None:
    tar = require_tool("tar")
    src = tmp_path / "src"
    deep = src / ("a" * 80) / ("b" * 80)
    deep.mkdir(parents=True)
    (deep / "file").write_text("deep")
    (src / "plain").write_text("plain")
    (src / "hl").hardlink_to(src / "plain")
    os.chown(src / "plain", 1000, 2000)
    blob = tmp_path / "gnu.tar"
    cmd = [tar, f"--format={fmt}", "-cf", blob, "-C", src, "."]
    if fmt in ("gnu", "posix"):
        cmd[2:2] = ["--owner=:3000000", "--group=:3000001"] if fmt == "gnu" else []
    if fmt in ("ustar", "v7"):
        shutil.rmtree(src / ("a" * 80))
    subprocess.run(cmd, check=True, capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    with open(blob, "rb") as f:
        extract_layer(f, out)
    assert snapshot(out, owners=fmt != "gnu") == snapshot(src, owners=fmt != "gnu")
    if fmt == "gnu":
        assert (out / "plain").stat().st_uid == 3_000_000  # base-256 numbers


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0"])
def test_reads_gnu_tars_pax_sparse_files(version: str, tmp_path: Path) -> None:
    """`tar --sparse --format=posix` (1.0 by default, 0.x on request) as Go's archive/tar reads it:
    docker's ADD unpacks these; the holes stay holes."""
    tar = require_tool("tar")
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(3 << 20)
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek((3 << 20) - 3)
        f.write(b"end")
    (src / "plain").write_text("plain")
    blob = tmp_path / "sparse.tar"
    subprocess.run([tar, "--sparse", "--format=posix", f"--sparse-version={version}", "-cf", blob,
                    "-C", src, "."], check=True, capture_output=True)
    out = tmp_path / "out"
    out.mkdir()
    with open(blob, "rb") as f:
        extract_layer(f, out)
    # 0.0 has no record of the real name: the file keeps the name GNU tar gave its header, as in Go.
    name = "sparse" if version != "0.0" else next(p.relative_to(out) for p in out.rglob("sparse"))
    assert str(name) == "sparse" or str(name).startswith("GNUSparseFile.")
    assert (out / name).read_bytes() == (src / "sparse").read_bytes()
    assert (out / name).stat().st_blocks * 512 < 1 << 20  # still sparse
    with open(blob, "rb") as f:
        sizes = {e.name.rsplit("/", 1)[-1]: e.size for e in TarReader(f) if e.type is EntryType.FILE}
    assert sizes == {"sparse": 3 << 20, "plain": 5}


def test_bad_sparse_maps_are_clear_errors(tmp_path: Path) -> None:
    def sparse(pax: dict[str, str], data: bytes) -> bytes:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
            info = tarfile.TarInfo("GNUSparseFile.0/f")
            info.size, info.pax_headers = len(data), {"GNU.sparse.name": "f", **pax}
            tf.addfile(info, io.BytesIO(data))
        return raw.getvalue()

    good = sparse({"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.size": "10",
                   "GNU.sparse.numblocks": "2", "GNU.sparse.map": "2,3,8,2"}, b"abcde")
    extract_layer(io.BytesIO(good), tmp_path)
    assert (tmp_path / "f").read_bytes() == b"\0\0abc\0\0\0de"
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    for pax in ({"GNU.sparse.map": "8,2,2,3"}, {"GNU.sparse.map": "2,3,9,2"}, {"GNU.sparse.map": "2,3,x,2"},
                {"GNU.sparse.map": "2,3,8"}, {"GNU.sparse.map": "2,3"},
                {"GNU.sparse.map": "2,3,8,2", "GNU.sparse.numblocks": "3"}):
        bad = sparse({"GNU.sparse.major": "0", "GNU.sparse.minor": "1", "GNU.sparse.size": "10",
                      "GNU.sparse.numblocks": "2", **pax}, b"abcde")
        with pytest.raises(ImageError, match="bad sparse map for 'f'"):
            extract_layer(io.BytesIO(bad), tmp_path / "x")
    one = sparse({"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.realsize": "4"},
                 b"1\n1\n".ljust(512, b"\0") + b"a")
    with pytest.raises(ImageError, match="bad sparse map for 'f'"):  # a pair cut short
        extract_layer(io.BytesIO(one), tmp_path / "y")


@pytest.mark.parametrize("compress", ["gzip", "zstd"])
def test_compressed_layers_are_detected(compress: str, tmp_path: Path) -> None:
    data = build_tar([_reg("f", b"content")])
    blob = gzip.compress(data) if compress == "gzip" else zstandard.ZstdCompressor().compress(data)
    extract_layer(io.BytesIO(blob), tmp_path)
    assert (tmp_path / "f").read_text() == "content"


def test_layer_cannot_set_overlay_xattrs(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with TarStreamWriter(buf) as w:
        w.add(TarEntry("d", EntryType.DIR, 0o755, xattrs=(
            ("trusted.overlay.redirect", b"/etc"), ("user.ok", b"1"),
        )))
    buf.seek(0)
    extract_layer(buf, tmp_path)
    assert os.listxattr(tmp_path / "d") == ["user.ok"]


def test_reader_yields_headers_without_extracting() -> None:
    data = build_tar([_dir("d"), _reg("d/f", b"12345"), _sym("s", "d/f"),
                      Member("x" * 200, tarfile.REGTYPE, data=b"long")])
    reader = TarReader(io.BytesIO(data))
    seen = []
    for entry in reader:
        seen.append((entry.name, entry.type, entry.size, entry.linkname))
        if entry.name == "d/f":
            assert reader.read_data() == b"12345"
    assert seen == [("d", EntryType.DIR, 0, ""), ("d/f", EntryType.FILE, 5, ""),
                    ("s", EntryType.SYMLINK, 0, "d/f"), ("x" * 200, EntryType.FILE, 4, "")]


def test_unknown_entry_type_is_a_clear_error(tmp_path: Path) -> None:
    data = bytearray(build_tar([_reg("weird", b"")]))
    data[156:157] = b"Z"
    data[148:156] = b"%06o\0 " % (sum(data[:148]) + sum(data[156:512]) + 8 * 32)
    with pytest.raises(ImageError, match="'weird' has the unknown tar type"):
        extract_layer(io.BytesIO(bytes(data)), tmp_path)


def test_extract_to_directory_is_all_or_nothing(tmp_path: Path) -> None:
    good = build_tar([_dir("etc"), _reg("etc/motd", b"hi")])
    dest = tmp_path / "snapshots" / "one"
    stats = extract_to_directory(io.BytesIO(good), dest)
    assert stats.files == 1 and (dest / "etc" / "motd").read_text() == "hi"
    assert stat.S_IMODE(dest.stat().st_mode) == 0o755
    with pytest.raises(ImageError, match="already exists"):
        extract_to_directory(io.BytesIO(good), dest, durable=False)
    bad = build_tar([_reg("fine", b"x"), _reg("../escape", b"y")])
    with pytest.raises(UnsafeLayerError):
        extract_to_directory(io.BytesIO(bad), tmp_path / "snapshots" / "two", durable=False)
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == ["one"]


# -- layers written by docker ---------------------------------------------------------------

# This test run's own names in docker's image store (the machine's, shared with other test runs).
BASE_TAG = docker_tag("pybuild-test/layers-busybox")
IMAGE_TAG = docker_tag("pybuild-test/layers-diff")
# Paths docker itself puts into every container; they are not part of the image.
RUNTIME_ONLY = {".dockerenv", "dev", "proc", "sys", "etc/hosts", "etc/hostname", "etc/resolv.conf", "etc/mtab"}
DOCKERFILE = f"""\
FROM {BASE_TAG}
RUN mkdir -p /data/sub /data/gone && echo one > /data/sub/a && echo two > /data/b \\
 && echo x > /data/gone/x && echo keep > /keep && ln /keep /keep2 && ln -s /keep /keep.link \\
 && chown 1000:1000 /data/b && chmod 0640 /data/b
RUN rm /data/b && rm -rf /data/sub /data/gone && mkdir /data/sub && echo new > /data/sub/c \\
 && echo changed > /keep && chmod 4755 /keep2 && rm /bin/sed
"""


def _image_only(snap: dict[str, tuple]) -> dict[str, tuple]:
    return {
        p: v for p, v in snap.items()
        if p not in RUNTIME_ONLY and p.split("/", 1)[0] not in {"dev", "proc", "sys"}
    }


@pytest.fixture(scope="module")
def docker_image(docker: str, busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """docker save of an image built by docker's classic builder; yields the unpacked archive."""
    base = subprocess.run(["tar", "--numeric-owner", "-C", busybox_rootfs, "-c", "."],
                          capture_output=True, check=True).stdout
    subprocess.run([docker, "import", "-", BASE_TAG], input=base, capture_output=True, check=True)
    ctx = tmp_path_factory.mktemp("docker-ctx")
    (ctx / "Dockerfile").write_text(DOCKERFILE)
    build = subprocess.run(
        [docker, "build", "--force-rm", "--network", "host", "-q", "-t", IMAGE_TAG, ctx],
        capture_output=True, env={"DOCKER_BUILDKIT": "0", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    assert build.returncode == 0, build.stderr.decode()
    out = tmp_path_factory.mktemp("docker-save")
    saved = subprocess.run([docker, "save", IMAGE_TAG], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(saved)) as tf:
        tf.extractall(out, filter="data")
    try:
        yield out
    finally:
        subprocess.run([docker, "rmi", "-f", IMAGE_TAG, BASE_TAG], capture_output=True)


def _layers(saved: Path) -> list[Path]:
    manifest = json.loads((saved / "manifest.json").read_text())
    return [saved / p for p in manifest[0]["Layers"]]


def _docker_rootfs(docker: str, dest: Path) -> Path:
    cid = subprocess.run([docker, "create", IMAGE_TAG, "true"], capture_output=True, check=True,
                         text=True).stdout.strip()
    try:
        exported = subprocess.run([docker, "export", cid], capture_output=True, check=True).stdout
    finally:
        subprocess.run([docker, "rm", "-f", "-v", cid], capture_output=True)
    dest.mkdir()
    subprocess.run(["tar", "--numeric-owner", "-xpf", "-", "-C", dest], input=exported, check=True)
    return dest


@pytest.mark.docker
def test_docker_layers_apply_to_dockers_file_system(docker: str, docker_image: Path, tmp_path: Path) -> None:
    expected = _image_only(snapshot(_docker_rootfs(docker, tmp_path / "docker"), mtimes=False))
    flat = tmp_path / "flat"
    flat.mkdir()
    for layer in _layers(docker_image):
        with open(layer, "rb") as f:
            extract_layer(f, flat)
    assert _image_only(snapshot(flat, mtimes=False)) == expected
    assert "data/b" not in expected and "data/sub/c" in expected and "data/gone" not in expected


@pytest.mark.docker
def test_docker_layers_as_overlay_lower_dirs(docker: str, docker_image: Path, tmp_path: Path) -> None:
    expected = _image_only(snapshot(_docker_rootfs(docker, tmp_path / "docker"), mtimes=False))
    snaps = []
    for i, layer in enumerate(_layers(docker_image)):
        snap = tmp_path / f"snap{i}"
        snap.mkdir()
        with open(layer, "rb") as f:
            extract_layer(f, snap, overlay_whiteouts=True)
        snaps.append(snap)
    merged = tmp_path / "merged"
    merged.mkdir()
    lowers = ":".join(str(s) for s in reversed(snaps))
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={lowers}", merged],
                   check=True, capture_output=True)
    try:
        seen = _image_only(snapshot(merged, mtimes=False))
    finally:
        subprocess.run(["umount", merged], check=True)
    assert seen == expected


@pytest.mark.docker
def test_changes_of_docker_layers(docker_image: Path) -> None:
    paths = _layers(docker_image)
    base, first, second = layer_changes([functools.partial(open, p, "rb") for p in paths])
    assert "bin/busybox" in base.added
    assert {"data/b", "data/sub/a", "keep", "keep2", "keep.link"} <= set(first.added)
    assert {"data/b", "data/gone", "bin/sed"} <= set(second.deleted)
    assert "data/sub/c" in second.added and "keep" in second.modified
    assert first.deleted_bytes >= len("two\n") + len("one\n") + len("x\n")
    assert first.overwritten_bytes >= len("keep\n")
    assert second.wasted_bytes == 0


@pytest.mark.docker
def test_rewriting_a_docker_layer_is_deterministic(docker_image: Path, tmp_path: Path) -> None:
    """Extract docker's layer twice, in different places, and write both: one DiffID."""
    digests = set()
    for name in ("one", "two"):
        root = tmp_path / name
        root.mkdir()
        with open(_layers(docker_image)[1], "rb") as f:
            extract_layer(f, root)
        digests.add(write_layer(root, io.BytesIO(), source_date_epoch=1_700_000_000).diff_id)
    assert len(digests) == 1


def test_whiteout_in_a_missing_directory_creates_nothing(tmp_path: Path) -> None:
    apply(tmp_path, [_reg("no/such/dir/.wh.file", b"")])
    assert list(tmp_path.iterdir()) == []


def test_missing_target_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match=r"cannot extract a layer into .*No such file"):
        apply(tmp_path / "absent", [_reg("f", b"x")])


def test_chroot_symlinks_resolve_inside_the_target(tmp_path: Path) -> None:
    (tmp_path / "usr" / "lib").mkdir(parents=True)
    (tmp_path / "lib").symlink_to("/usr/lib")
    (tmp_path / "up").symlink_to("../../..")
    apply(tmp_path, [_reg("lib/libc.so", b"c"), _reg("up/usr/top", b"t")], chroot_symlinks=True)
    assert (tmp_path / "usr" / "lib" / "libc.so").read_text() == "c"
    assert (tmp_path / "usr" / "top").read_text() == "t"
    with pytest.raises(UnsafeLayerError, match="'lib' -> '/usr/lib'"):
        apply(tmp_path, [_reg("lib/other.so", b"o")])
