"""The deterministic layer writer: round trips, readers other than ours, digests, overlay uppers."""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from builder.errors import ImageError
from builder.layers.extract import TarReader, extract_layer
from builder.layers.tarwriter import (
    EntryType,
    LayerSource,
    StatOverride,
    TarEntry,
    TarStreamWriter,
    walk_tree,
    write_entries,
    write_layer,
)
from cache.store import content_size
from tests.helpers.tools import require_tool
from tests.layers import snapshot

# cap_net_raw=ep, as setcap writes it (VFS_CAP_REVISION_2).
CAPABILITY = b"\x01\x00\x00\x02\x00\x20\x00\x00" + b"\x00" * 12
LONG_DIR = "d" * 60 + "/" + "e" * 70 + "/" + "f" * 90
EPOCH = 1_700_000_000


def make_tree(root: Path) -> Path:
    """A tree with every kind of entry and metadata a layer carries."""
    root.mkdir(parents=True)
    (root / "etc").mkdir()
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "empty").write_bytes(b"")
    (root / "big.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 17))
    (root / "bin").mkdir()
    (root / "bin" / "ping").write_bytes(b"\x7fELF fake")
    os.setxattr(root / "bin" / "ping", "security.capability", CAPABILITY)
    os.setxattr(root / "etc" / "hosts", "user.origin", b"test")
    (root / "bin" / "su").write_bytes(b"su")
    os.chmod(root / "bin" / "su", 0o4755)
    (root / "shared").mkdir()
    os.chmod(root / "shared", 0o2775)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "home" / "app").mkdir(parents=True)
    (root / "home" / "app" / "data").write_text("mine")
    os.chown(root / "home" / "app", 1000, 1000)
    os.chown(root / "home" / "app" / "data", 1000, 1001)
    os.chown(root / "etc" / "hosts", 3_000_000, 65534)  # needs PAX uid
    (root / "link").symlink_to("etc/hosts")
    os.setxattr(root / "link", "trusted.note", b"on a symlink", follow_symlinks=False)
    (root / "dangling").symlink_to("/nowhere/at/all")
    (root / "longlink").symlink_to("/" + "x" * 150)
    os.link(root / "bin" / "su", root / "bin" / "su2")
    os.link(root / "bin" / "su", root / "hard3")
    os.mknod(root / "null", 0o666 | 0o020000, os.makedev(1, 3))
    os.mknod(root / "sda", 0o660 | 0o060000, os.makedev(8, 0))
    os.mkfifo(root / "fifo", 0o640)
    deep = root / LONG_DIR
    deep.mkdir(parents=True)
    (deep / ("g" * 120)).write_text("long name")
    (root / "naïve café.txt").write_text("unicode")
    (root / b"raw-\xff".decode("utf-8", "surrogateescape")).write_text("not utf-8")
    for i, p in enumerate(sorted(root.rglob("*"), reverse=True)):
        os.utime(p, (EPOCH - 1000 * i, EPOCH - 1000 * i), follow_symlinks=False)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tree(tmp_path_factory.mktemp("tree") / "root")


@pytest.fixture(scope="module")
def layer(tree: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("layer") / "layer.tar"
    with open(out, "wb") as f:
        write_layer(tree, f)
    return out


def test_round_trip_keeps_every_kind_and_metadata(tree: Path, tmp_path: Path) -> None:
    buf = io.BytesIO()
    stats = write_layer(tree, buf)
    data = buf.getvalue()
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest()
    assert stats.size == len(data)
    assert stats.files == len(snapshot(tree))
    # Counted while writing, the same as reading the tar back for it (hardlinks once).
    assert stats.content == content_size(io.BytesIO(data))
    target = tmp_path / "out"
    target.mkdir()
    extract_layer(io.BytesIO(data), target)
    assert snapshot(target) == snapshot(tree)
    assert os.getxattr(target / "bin" / "ping", "security.capability") == CAPABILITY
    assert (target / "bin" / "su").stat().st_mode & 0o7777 == 0o4755
    assert (target / "bin" / "su").stat().st_ino == (target / "hard3").stat().st_ino


def test_gnu_tar_extracts_the_same_tree(layer: Path, tree: Path, tmp_path: Path) -> None:
    tar = require_tool("tar")
    listing = subprocess.run([tar, "--quoting-style=literal", "-tf", layer], capture_output=True, check=True).stdout
    names = set(os.fsdecode(n).rstrip("/") for n in listing.splitlines())
    assert names == set(snapshot(tree))
    target = tmp_path / "gnu"
    target.mkdir()
    subprocess.run(
        [tar, "-xpf", layer, "-C", target, "--numeric-owner", "--xattrs",
         "--xattrs-include=*"],
        check=True, capture_output=True,
    )
    assert snapshot(target) == snapshot(tree)


def test_python_tarfile_reads_headers(layer: Path, tree: Path) -> None:
    with tarfile.open(layer) as tf:
        members = {m.name: m for m in tf}
    assert set(members) == set(snapshot(tree))
    hosts = members["etc/hosts"]
    assert (hosts.uid, hosts.gid, hosts.uname, hosts.gname) == (3_000_000, 65534, "", "")
    assert members["bin/ping"].pax_headers["SCHILY.xattr.security.capability"]
    assert members["bin/su2"].islnk() and members["bin/su2"].linkname == "bin/su"
    assert members["null"].ischr() and (members["null"].devmajor, members["null"].devminor) == (1, 3)
    assert members["sda"].isblk() and members["fifo"].isfifo()
    assert members["longlink"].linkname == "/" + "x" * 150
    assert members[LONG_DIR + "/" + "g" * 120].size == len("long name")
    assert members["bin/su"].mode == 0o4755 and members["tmp"].mode == 0o1777


def test_entries_sorted_parents_first_dirs_with_slash(layer: Path) -> None:
    tar = require_tool("tar")
    raw = subprocess.run([tar, "--quoting-style=literal", "-tf", layer], capture_output=True, check=True).stdout.splitlines()
    names = [n.rstrip(b"/").split(b"/") for n in raw]
    assert names == sorted(names)
    assert b"etc/" in raw and b"bin/ping" in raw


def test_same_content_same_digest_across_inode_order_and_mtimes(tmp_path: Path) -> None:
    files = {f"dir{i % 7}/file{i:03d}": os.urandom(i * 13) for i in range(60)}
    digests = set()
    for attempt, order in enumerate((sorted(files), sorted(files, reverse=True))):
        root = tmp_path / f"root{attempt}"
        for name in order:
            p = root / name
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(files[name])
            os.utime(p, (EPOCH + 5000 + attempt * 777, EPOCH + 5000 + attempt * 777))
        for d in root.iterdir():
            os.utime(d, (EPOCH + 9999 * (attempt + 1),) * 2)
        os.link(root / "dir0/file000", root / "hard")
        buf = io.BytesIO()
        digests.add(write_layer(root, buf, source_date_epoch=EPOCH).diff_id)
    assert len(digests) == 1
    without = set()
    for attempt in (0, 1):
        without.add(write_layer(tmp_path / f"root{attempt}", io.BytesIO()).diff_id)
    assert len(without) == 2


def test_epoch_clamps_only_newer_mtimes(tmp_path: Path) -> None:
    (tmp_path / "old").write_text("o")
    (tmp_path / "new").write_text("n")
    os.utime(tmp_path / "old", (EPOCH - 50, EPOCH - 50))
    os.utime(tmp_path / "new", (EPOCH + 50, EPOCH + 50))
    buf = io.BytesIO()
    write_layer(tmp_path, buf, source_date_epoch=EPOCH)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        assert {m.name: m.mtime for m in tf} == {"new": EPOCH, "old": EPOCH - 50}


def test_paths_and_prefix_select_part_of_a_tree(tree: Path) -> None:
    buf = io.BytesIO()
    write_layer(tree, buf, paths=["bin/ping", "home"], prefix="/app/")
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        names = [m.name for m in tf]
    assert names == ["app", "app/bin", "app/bin/ping", "app/home", "app/home/app",
                     "app/home/app/data"]


def test_stream_writer_applies_overrides_and_synthetic_entries(tree: Path) -> None:
    buf = io.BytesIO()
    with TarStreamWriter(buf, source_date_epoch=EPOCH) as w:
        w.add(TarEntry("app", EntryType.DIR, 0o755, 0, 0, mtime=EPOCH + 10))
        w.add_path("app/hosts", tree / "etc" / "hosts", override=StatOverride(uid=10, gid=20, mode=0o600))
        w.add_path("app/su", tree / "bin" / "su", override=StatOverride(uid=10, gid=20))
        w.add_path("app/su-again", tree / "hard3")
        w.add(TarEntry("app/generated", EntryType.FILE, 0o644, size=5), io.BytesIO(b"hello"))
    stats = w.close()
    assert stats.files == 5
    assert stats.content == content_size(io.BytesIO(buf.getvalue()))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        m = {x.name: x for x in tf}
        assert tf.extractfile(m["app/generated"]).read() == b"hello"  # type: ignore[union-attr]
    assert m["app"].mtime == EPOCH
    assert (m["app/hosts"].uid, m["app/hosts"].gid, m["app/hosts"].mode) == (10, 20, 0o600)
    assert m["app/su"].mode == 0o4755
    assert m["app/su-again"].islnk() and m["app/su-again"].linkname == "app/su"
    assert stats.diff_id == "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()


def test_stream_writer_refuses_short_content() -> None:
    w = TarStreamWriter(io.BytesIO())
    with pytest.raises(ImageError, match="'short' ended 3 bytes early"):
        w.add(TarEntry("short", EntryType.FILE, size=5), io.BytesIO(b"he"))


def test_big_files_are_streamed_not_read_whole(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as f:
        f.truncate(96 * 1024 * 1024)
    sink = hashlib.sha256()

    class HashOnly(io.RawIOBase):
        def write(self, b) -> int:  # type: ignore[no-untyped-def, override]
            sink.update(b)
            return len(b)

    tracemalloc.start()
    stats = write_layer(tmp_path, HashOnly())  # type: ignore[arg-type]
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert stats.size > 96 * 1024 * 1024
    assert peak < 8 * 1024 * 1024
    assert stats.diff_id == "sha256:" + sink.hexdigest()


def _mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={upper},workdir={work},redirect_dir=off,metacopy=off",
         merged],
        check=True, capture_output=True,
    )


def test_overlay_upper_becomes_oci_whiteouts(tmp_path: Path) -> None:
    """A real overlayfs: delete and re-create under it, turn the upper dir into a layer, apply it."""
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    lower.mkdir()
    (lower / "keep").write_text("keep")
    (lower / "gone").write_text("gone")
    (lower / "olddir" / "sub").mkdir(parents=True)
    (lower / "olddir" / "sub" / "f").write_text("x")
    (lower / "opq").mkdir()
    (lower / "opq" / "lowerfile").write_text("lower")
    _mount_overlay(lower, upper, work, merged)
    try:
        (merged / "gone").unlink()
        subprocess.run(["rm", "-rf", merged / "olddir", merged / "opq"], check=True)
        (merged / "opq").mkdir()
        (merged / "opq" / "newfile").write_text("new")
        (merged / "keep").write_text("changed")
        expected = snapshot(merged, mtimes=False)
    finally:
        subprocess.run(["umount", merged], check=True)
    buf = io.BytesIO()
    write_layer(upper, buf, overlay_upper=True)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        members = tf.getmembers()
    names = [m.name for m in members]
    assert names.index("opq/.wh..wh..opq") == names.index("opq") + 1
    assert {".wh.gone", ".wh.olddir", "opq", "opq/.wh..wh..opq", "opq/newfile", "keep"} <= set(names)
    assert all(not k.startswith("SCHILY.xattr.trusted.overlay") for m in members for k in m.pax_headers)
    applied = tmp_path / "applied"
    subprocess.run(["cp", "-a", lower, applied], check=True)
    buf.seek(0)
    extract_layer(buf, applied)
    assert snapshot(applied, mtimes=False) == expected


def test_overlay_redirects_are_refused(tmp_path: Path) -> None:
    (tmp_path / "moved").mkdir()
    os.setxattr(tmp_path / "moved", "trusted.overlay.redirect", b"/old")
    with pytest.raises(ImageError, match="redirect_dir=off"):
        write_layer(tmp_path, io.BytesIO(), overlay_upper=True)


_NAME_PART = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\0"), min_size=1, max_size=60
).filter(lambda s: s not in (".", ".."))


@st.composite
def _entries(draw: st.DrawFn) -> list[TarEntry]:
    out = []
    for i, kind in enumerate(draw(st.lists(st.sampled_from(list(EntryType)), max_size=8))):
        name = "/".join(draw(st.lists(_NAME_PART, min_size=1, max_size=4))) + f"-{i}"
        out.append(TarEntry(
            name=name,
            type=kind,
            mode=draw(st.integers(0, 0o7777)),
            uid=draw(st.integers(0, 2**31)),
            gid=draw(st.integers(0, 2**31)),
            size=draw(st.integers(0, 3000)) if kind is EntryType.FILE else 0,
            mtime=draw(st.integers(0, 2**34)),
            linkname="/".join(draw(st.lists(_NAME_PART, max_size=5)))
            if kind in (EntryType.SYMLINK, EntryType.HARDLINK) else "",
            devmajor=draw(st.integers(0, 4095)) if kind in (EntryType.CHAR, EntryType.BLOCK) else 0,
            devminor=draw(st.integers(0, 2**20 - 1)) if kind in (EntryType.CHAR, EntryType.BLOCK) else 0,
            xattrs=tuple(sorted(draw(st.dictionaries(
                st.sampled_from(["user.a", "user.b", "security.capability", "trusted.x"]),
                st.binary(max_size=300), max_size=3,
            )).items())),
        ))
    return out


@settings(max_examples=80, deadline=None)
@given(_entries())
def test_reader_returns_exactly_what_the_writer_wrote(entries: list[TarEntry]) -> None:
    buf = io.BytesIO()
    contents = {e.name: (e.name.encode() * 3000)[: e.size] for e in entries}
    with TarStreamWriter(buf) as w:
        for e in entries:
            w.add(e, io.BytesIO(contents[e.name]))
    data = buf.getvalue()
    assert len(data) % 512 == 0
    reader = TarReader(io.BytesIO(data))
    seen = []
    for entry in reader:
        seen.append(entry)
        if entry.type is EntryType.FILE:
            assert reader.read_data() == contents[entry.name]
    assert seen == entries
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert [m.name for m in tf] == [e.name for e in entries]


def test_write_entries_copies_a_context_with_chown_and_chmod(tree: Path, tmp_path: Path) -> None:
    """What COPY --chown=10:20 --chmod=0750 etc/ /app/ writes, without copying the files first."""
    override = StatOverride(uid=10, gid=20, mode=0o750)
    entries = [LayerSource("app", tree / "etc", override)] + [
        LayerSource(f"app/{rel}", path, override) for rel, path, _ in walk_tree(tree / "etc")
    ]
    buf = io.BytesIO()
    stats = write_entries(entries, buf, source_date_epoch=EPOCH)
    buf.seek(0)
    target = tmp_path / "t"
    target.mkdir()
    extract_layer(buf, target)
    st = (target / "app" / "hosts").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (10, 20, 0o750)
    assert (target / "app" / "hosts").read_text() == "127.0.0.1 localhost\n"
    assert stats.files == 2


BOOKWORM_TAR = Path("/var/cache/pybuild-tests/bookworm-minbase.tar")


@pytest.mark.slow
def test_debian_root_file_system_round_trips_like_gnu_tar(tmp_path: Path) -> None:
    """A real debootstrap tree: our extraction equals GNU tar's, and GNU tar reads our layer back."""
    if not BOOKWORM_TAR.exists():
        raise AssertionError(f"{BOOKWORM_TAR} is missing: run tests/setup.sh (make test does)")
    tar = require_tool("tar")
    flags = ["--numeric-owner", "--xattrs", "--xattrs-include=*", "-p"]
    ours, theirs, back = tmp_path / "ours", tmp_path / "theirs", tmp_path / "back"
    for d in (ours, theirs, back):
        d.mkdir()
    with open(BOOKWORM_TAR, "rb") as f:
        stats = extract_layer(f, ours)
    subprocess.run([tar, *flags, "-xf", BOOKWORM_TAR, "-C", theirs], check=True)
    expected = snapshot(theirs)
    assert snapshot(ours) == expected
    assert stats.devices == 8 and stats.hardlinks == 2
    layer = tmp_path / "layer.tar"
    with open(layer, "wb") as f:
        first = write_layer(ours, f, source_date_epoch=EPOCH)
    subprocess.run([tar, *flags, "-xf", layer, "-C", back], check=True)
    assert snapshot(back, mtimes=False) == snapshot(ours, mtimes=False)
    again = write_layer(theirs, io.BytesIO(), source_date_epoch=EPOCH)
    assert again.diff_id == first.diff_id


def test_userxattr_overlay_bookkeeping_is_understood(tmp_path: Path) -> None:
    """Rootless overlays keep opaque marks and origins under user.overlay.*. A step's layer (an
    upper dir) records file capabilities only, as docker's and containerd's diff writers do."""
    (tmp_path / "d").mkdir()
    os.setxattr(tmp_path / "d", "user.overlay.opaque", b"y")
    os.setxattr(tmp_path / "d", "user.overlay.origin", b"\x00")
    os.setxattr(tmp_path / "d", "user.other", b"1")
    (tmp_path / "d" / "f").write_bytes(b"f")
    os.setxattr(tmp_path / "d" / "f", "security.capability", CAPABILITY)
    os.setxattr(tmp_path / "d" / "f", "user.note", b"n")
    buf = io.BytesIO()
    write_layer(tmp_path, buf, overlay_upper=True)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        members = tf.getmembers()
    assert [m.name for m in members] == ["d", "d/.wh..wh..opq", "d/f"]
    assert [[k for k in m.pax_headers if k.startswith("SCHILY")] for m in members] == [
        [], [], ["SCHILY.xattr.security.capability"]]
    plain = io.BytesIO()
    write_layer(tmp_path, plain)
    plain.seek(0)
    with tarfile.open(fileobj=plain) as tf:
        assert "SCHILY.xattr.user.overlay.opaque" in tf.getmembers()[0].pax_headers


def _oci_layout(layout: Path, layers: list[bytes]) -> None:
    """A minimal OCI image layout around gzip'd layer tars, tagged 'latest'."""
    import gzip
    import json

    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest

    descriptors = []
    for tar in layers:
        blob = gzip.compress(tar, mtime=0)
        descriptors.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                            "digest": put(blob), "size": len(blob)})
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": [
            "sha256:" + hashlib.sha256(t).hexdigest() for t in layers]},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                   "size": len(config)},
        "layers": descriptors,
    }).encode()
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest),
        "size": len(manifest), "annotations": {"org.opencontainers.image.ref.name": "latest"},
    }]}))


def test_umoci_unpacks_our_layers_with_whiteouts(tmp_path: Path) -> None:
    """Another implementation of the OCI spec applies our layers, whiteouts included, the same way."""
    umoci = require_tool("umoci")
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (upper, work, merged):
        d.mkdir()
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "gone").write_text("gone")
    (lower / "etc" / "kept").write_text("kept")
    (lower / "opq").mkdir()
    (lower / "opq" / "old").write_text("old")
    os.chown(lower / "etc" / "kept", 1000, 1000)
    _mount_overlay(lower, upper, work, merged)
    try:
        (merged / "etc" / "gone").unlink()
        subprocess.run(["rm", "-rf", merged / "opq"], check=True)
        (merged / "opq").mkdir()
        (merged / "opq" / "new").write_text("new")
        expected = snapshot(merged, mtimes=False)
    finally:
        subprocess.run(["umount", merged], check=True)
    base, diff = io.BytesIO(), io.BytesIO()
    write_layer(lower, base)
    write_layer(upper, diff, overlay_upper=True)
    _oci_layout(tmp_path / "image", [base.getvalue(), diff.getvalue()])
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{tmp_path / 'image'}:latest", bundle],
                   check=True, capture_output=True)
    assert snapshot(bundle / "rootfs", mtimes=False) == expected


def test_headers_bigger_than_the_buffer(tmp_path: Path) -> None:
    """Many large xattrs make a PAX header of several MiB; it must still stream and hash right."""
    xattrs = tuple((f"user.big{i:02d}", bytes([i]) * 60_000) for i in range(40))
    out = tmp_path / "big-header.tar"
    with open(out, "wb") as f:
        w = TarStreamWriter(f)
        w.add(TarEntry("x", EntryType.FILE, size=3, xattrs=xattrs), io.BytesIO(b"abc"))
        stats = w.close()
    data = out.read_bytes()
    assert stats.diff_id == "sha256:" + hashlib.sha256(data).hexdigest() and len(data) > 2 << 20
    (entry,) = list(TarReader(io.BytesIO(data)))
    assert entry.xattrs == xattrs


def test_selecting_a_missing_path_is_an_error(tree: Path) -> None:
    with pytest.raises(ImageError, match="'bin/nope' does not exist under"):
        write_layer(tree, io.BytesIO(), paths=["bin/ping", "bin/nope"])
