"""The writer's bytes are pinned: a faster writer must give the same DiffIDs as every earlier one.

The golden tree mixes what the writer's fast paths (one ustar block, one
``readv`` per file that fits the buffer, ASCII-only name sorting) and slow
paths (PAX, files across buffer boundaries, byte-order sorting of non-ASCII
and undecodable names) handle, with fixed contents, owners and times.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path

import pytest

from builder.errors import ImageError
from builder.layers.tarwriter import TarStreamWriter, write_layer

MIB = 1 << 20
TIME = 1_650_000_000
# Computed by the writer before it was optimised (commit ba8a376); must never change.
GOLDEN = "sha256:673548a997962378a57739c3b81ffccb34587f5c44dc834419326c417b188bfa"
GOLDEN_EPOCH = "sha256:51d90ebc9dab06940752feb3a69ed23ef2af6fde44c8e309dd3a594fb83e8e3a"


def make_golden_tree(root: Path) -> Path:
    rng = random.Random("pybuild-golden-layer")
    root.mkdir(parents=True)
    sizes = [0, 1, 511, 512, 513, 4095, 4096, 10_000, MIB - 512, MIB - 1, MIB, MIB + 1, 3 * MIB + 17]
    (root / "sizes").mkdir()
    for size in sizes:
        (root / "sizes" / f"s{size:08d}").write_bytes(rng.randbytes(size))
    mixed = root / "mixed"
    mixed.mkdir()
    for name in ("B", "_", "a", "z", "~", "é", "Z-é", "日本", "e\u0301"):
        (mixed / name).write_bytes(name.encode())
    (mixed / os.fsdecode(b"raw-\xff")).write_bytes(b"undecodable")
    (mixed / os.fsdecode(b"raw-\x7f")).write_bytes(b"del")
    ascii_dir = root / "ascii"
    ascii_dir.mkdir()
    for name in ("b", "B", "a-b", "a.b", "a_b", "a", "0", "~x", " sp"):
        (ascii_dir / name).write_bytes(b"x" * len(name))
    (root / "ascii" / "sub").mkdir()
    (root / "ascii" / "sub" / "f").write_bytes(b"f")
    (root / "long").mkdir()
    (root / "long" / ("n" * 99)).write_bytes(b"99")
    (root / "long" / ("n" * 100)).write_bytes(b"100")
    (root / "links").mkdir()
    (root / "links" / "rel").symlink_to("../sizes/s00000001")
    (root / "links" / "long").symlink_to("/" + "t" * 120)
    os.link(root / "sizes" / "s00004096", root / "links" / "hard")
    (root / "owned").write_bytes(b"owned")
    os.chown(root / "owned", 1000, 1001)
    (root / "bigid").write_bytes(b"bigid")
    os.chown(root / "bigid", 3_000_000, 65534)
    (root / "xattr").write_bytes(b"xattr")
    os.setxattr(root / "xattr", "user.b", b"2")
    os.setxattr(root / "xattr", "user.a", b"\x00\xff")
    os.mkfifo(root / "fifo")
    os.mknod(root / "null", 0o600 | 0o020000, os.makedev(1, 3))
    for p in root.rglob("*"):  # modes independent of the umask
        if not p.is_symlink():
            p.chmod(0o755 if p.is_dir() else 0o644)
    os.chmod(root / "owned", 0o4711)
    os.chmod(root / "fifo", 0o640)
    os.chmod(root / "null", 0o666)
    for i, p in enumerate(sorted(root.rglob("*"))):
        os.utime(p, ns=(TIME + 997 * i, (TIME + 997 * i) * 10**9 + 123), follow_symlinks=False)
    os.utime(root, (TIME, TIME))
    return root


@pytest.fixture(scope="module")
def golden_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_golden_tree(tmp_path_factory.mktemp("golden") / "root")


def test_golden_tree_gives_the_pinned_diff_id(golden_tree: Path) -> None:
    buf = io.BytesIO()
    assert write_layer(golden_tree, buf).diff_id == GOLDEN
    epoch = write_layer(golden_tree, io.BytesIO(), source_date_epoch=TIME + 9_000)
    assert epoch.diff_id == GOLDEN_EPOCH


def test_golden_tree_to_a_file_is_the_same(golden_tree: Path, tmp_path: Path) -> None:
    out = tmp_path / "layer.tar"
    with open(out, "wb") as f:
        stats = write_layer(golden_tree, f)
    assert stats.diff_id == GOLDEN and stats.size == out.stat().st_size


@pytest.mark.parametrize("size", [100, 3 * MIB])
def test_a_file_that_shrank_after_its_stat_is_an_error(tmp_path: Path, size: int) -> None:
    """The header already promised ``st_size`` bytes: fewer must fail, not pad silently."""
    big = tmp_path / "big"
    big.write_bytes(b"b" * size)
    small = tmp_path / "small"
    small.write_bytes(b"s" * (size // 2))
    w = TarStreamWriter(io.BytesIO())
    with pytest.raises(ImageError, match="shrank while it was written into the layer as 'f'"):
        w.add_path("f", small, st=os.lstat(big))
    w.abort()
