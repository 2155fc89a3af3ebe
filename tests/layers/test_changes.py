"""Per-layer changes: added/modified/deleted paths and the bytes later layers throw away."""

from __future__ import annotations

import gzip
import io
import subprocess
import tarfile
from pathlib import Path

from builder.layers.changes import ChangeKind, layer_changes
from builder.layers.tarwriter import EntryType, write_layer
from tests.layers.malicious import Member, _reg, build_tar


def _dir(name: str) -> Member:
    return Member(name, tarfile.DIRTYPE, mode=0o755)


BASE = build_tar([
    _dir("etc"), _reg("etc/config", b"c" * 100), _dir("var"), _dir("var/cache"),
    _reg("var/cache/big", b"b" * 5000), _reg("var/cache/small", b"s" * 10), _dir("app"),
    _reg("app/a", b"a" * 300), _reg("app/b", b"b" * 400),
])
SECOND = build_tar([
    _dir("etc"), _reg("etc/config", b"C" * 120), _reg("etc/new", b"n"), _dir("var"),
    _reg("var/.wh.cache", b""),
])
THIRD = build_tar([_dir("app"), _reg("app/.wh..wh..opq", b""), _reg("app/c", b"c" * 7),
                   _reg("etc/.wh.new", b"")])


def test_added_modified_deleted_per_layer() -> None:
    base, second, third = layer_changes([io.BytesIO(BASE), io.BytesIO(SECOND), io.BytesIO(THIRD)])
    assert base.added == ["etc", "etc/config", "var", "var/cache", "var/cache/big",
                          "var/cache/small", "app", "app/a", "app/b"]
    assert base.modified == [] and base.deleted == []
    assert second.added == ["etc/new"]
    assert second.modified == ["etc", "etc/config", "var"]
    assert second.deleted == ["var/cache"]
    assert third.deleted == ["app/a", "app/b", "etc/new"]
    assert third.added == ["app/c"] and third.modified == ["app"]


def test_bytes_hidden_or_deleted_by_later_layers() -> None:
    base, second, third = layer_changes([io.BytesIO(BASE), io.BytesIO(SECOND), io.BytesIO(THIRD)])
    assert base.size == 100 + 5000 + 10 + 300 + 400
    assert base.overwritten_bytes == 100  # etc/config replaced by the second layer
    assert base.deleted_bytes == 5010 + 700  # var/cache whited out, app made opaque
    assert second.overwritten_bytes == 0 and second.deleted_bytes == 1  # etc/new deleted
    assert third.wasted_bytes == 0
    assert base.wasted_bytes == 5810


def test_file_replaced_by_directory_and_back() -> None:
    one = build_tar([_reg("x", b"12345"), _dir("d"), _reg("d/inner", b"abc")])
    two = build_tar([_dir("x"), _reg("x/y", b"y"), _reg("d", b"file now")])
    first, second = layer_changes([io.BytesIO(one), io.BytesIO(two)])
    assert first.overwritten_bytes == 5 + 3
    kinds = {c.path: c.kind for c in second.changes}
    assert kinds == {"x": ChangeKind.MODIFIED, "x/y": ChangeKind.ADDED, "d": ChangeKind.MODIFIED}


def test_reads_compressed_blobs_from_openers(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "tool").write_bytes(b"t" * 2048)
    (root / "bin" / "tool2").hardlink_to(root / "bin" / "tool")
    buf = io.BytesIO()
    write_layer(root, buf)
    blob = gzip.compress(buf.getvalue())
    (result,) = layer_changes([lambda: io.BytesIO(blob)])
    types = {c.path: (c.type, c.size) for c in result.changes}
    assert types == {"bin": (EntryType.DIR, 0), "bin/tool": (EntryType.FILE, 2048),
                     "bin/tool2": (EntryType.HARDLINK, 0)}


def test_matches_a_real_overlay_diff(tmp_path: Path) -> None:
    """An upper dir from a real overlay mount reports exactly what was done through it."""
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower / "srv", upper, work, merged):
        d.mkdir(parents=True)
    (lower / "srv" / "old").write_bytes(b"o" * 999)
    (lower / "srv" / "edit").write_bytes(b"e" * 10)
    base = io.BytesIO()
    write_layer(lower, base)
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={lower},upperdir={upper},workdir={work}", merged], check=True)
    try:
        (merged / "srv" / "old").unlink()
        (merged / "srv" / "edit").write_bytes(b"E" * 20)
        (merged / "srv" / "new").write_bytes(b"n")
    finally:
        subprocess.run(["umount", merged], check=True)
    diff = io.BytesIO()
    write_layer(upper, diff, overlay_upper=True)
    first, second = layer_changes([io.BytesIO(base.getvalue()), io.BytesIO(diff.getvalue())])
    assert (second.added, second.modified, second.deleted) == (
        ["srv/new"], ["srv", "srv/edit"], ["srv/old"])
    assert (first.overwritten_bytes, first.deleted_bytes) == (10, 999)


def test_image_changes_reads_and_verifies_every_layer() -> None:
    from builder.image import BlobLayer, Descriptor, Digest, MediaType
    from builder.layers.changes import image_changes
    from tests.layers.malicious import _Blobs

    blobs = [gzip.compress(BASE, mtime=0), gzip.compress(SECOND, mtime=0)]

    class TwoLayers:
        def layers(self) -> list[BlobLayer]:
            return [
                BlobLayer(_Blobs(b), Descriptor(MediaType.OCI_LAYER_GZIP, Digest.of(b), len(b)),
                          Digest.of(raw))
                for b, raw in zip(blobs, (BASE, SECOND), strict=True)
            ]

    base, second = image_changes(TwoLayers())  # type: ignore[arg-type]
    assert second.deleted == ["var/cache"] and base.deleted_bytes == 5010


def test_hard_linked_bytes_are_wasted_only_when_the_last_name_goes() -> None:
    link = Member("bin/b", tarfile.LNKTYPE, linkname="bin/a")
    one = build_tar([_dir("bin"), _reg("bin/a", b"x" * 1000), link, _reg("solo", b"y" * 10)])
    two = build_tar([_dir("bin"), _reg("bin/.wh.a", b""), _reg(".wh.solo", b"")])
    three = build_tar([_dir("bin"), _reg("bin/b", b"z" * 5)])
    first, second, third = layer_changes([io.BytesIO(one), io.BytesIO(two), io.BytesIO(three)])
    assert first.size == 1010  # the link's header carries no content
    assert second.deleted == ["bin/a", "solo"]
    # bin/a's bytes live on as bin/b until the third layer replaces bin/b: overwritten, not deleted
    assert first.deleted_bytes == 10 and first.overwritten_bytes == 1000
    assert third.wasted_bytes == 0


def test_a_layer_s_size_counts_symlink_targets_as_docker_history_does() -> None:
    """`history --files` and `history` (and docker's) agree on a layer's size: file bytes
    plus each symlink's target."""
    link = Member("m", tarfile.SYMTYPE, linkname="/etc/motd")
    (layer,) = layer_changes([io.BytesIO(build_tar([_dir("etc"), _reg("etc/motd", b"hello\n"), link]))])
    assert layer.size == 6 + len("/etc/motd")
    assert [(c.path, c.size) for c in layer.changes] == [("etc", 0), ("etc/motd", 6), ("m", 0)]
