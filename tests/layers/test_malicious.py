"""Every crafted layer in the corpus is refused, and nothing beside the target changes."""

from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import pytest

from builder.errors import PybuildError
from builder.layers.extract import extract_layer
from tests.layers import hash_tree
from tests.layers.malicious import SENTINEL_FILES, contained, corpus, mismatched_blob_layer

CASE_NAMES = [c.name for c in corpus(Path("/placeholder/sentinel"))]


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path]:
    """A target with some lower content and a sentinel directory next to it."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    for name, data in SENTINEL_FILES.items():
        (sentinel / name).write_bytes(data)
    os.chmod(sentinel / "secret", 0o600)
    target = tmp_path / "target"
    (target / "lower").mkdir(parents=True)
    (target / "lower" / "file").write_text("lower layer")
    return sentinel, target


def _outside_state(tmp_path: Path, target: Path) -> dict[str, str]:
    return {p.name: hash_tree(p) for p in tmp_path.iterdir() if p != target and p.is_dir()}


def _no_links_to(target: Path, victims: list[Path]) -> None:
    """No inode inside target is one of the victims' (a hardlink would let a reader get at them)."""
    inodes = {(v.stat().st_dev, v.stat().st_ino) for v in victims if v.exists()}
    for p in target.rglob("*"):
        st = p.lstat()
        assert (st.st_dev, st.st_ino) not in inodes, f"{p} is linked to a file outside the target"


def test_corpus_is_big_enough() -> None:
    assert len(CASE_NAMES) >= 15
    assert len(set(CASE_NAMES)) == len(CASE_NAMES)


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_crafted_layer_is_refused(
    case_name: str, compress: bool, arena: tuple[Path, Path], tmp_path: Path
) -> None:
    sentinel, target = arena
    case = next(c for c in corpus(sentinel) if c.name == case_name)
    blob = case.blob
    if compress and blob[:2] != b"\x1f\x8b":
        blob = gzip.compress(blob, mtime=0)
    before = _outside_state(tmp_path, target)
    with pytest.raises(case.error) as info:
        extract_layer(io.BytesIO(blob), target)
    message = str(info.value)
    assert isinstance(info.value, PybuildError)
    assert case.mentions in message
    assert "Traceback" not in message and message.strip()
    assert _outside_state(tmp_path, target) == before
    _no_links_to(target, [sentinel / n for n in SENTINEL_FILES] + [Path("/etc/shadow")])
    assert (target / "lower" / "file").read_text() == "lower layer"


def test_blob_with_the_wrong_digest_is_refused(arena: tuple[Path, Path], tmp_path: Path) -> None:
    sentinel, target = arena
    opener, error = mismatched_blob_layer(sentinel)
    before = _outside_state(tmp_path, target)
    with pytest.raises(error, match="digest mismatch"):
        extract_layer(opener(), target)  # type: ignore[arg-type]
    assert _outside_state(tmp_path, target) == before


def test_truncated_blob_reports_the_digest_not_the_tar(arena: tuple[Path, Path]) -> None:
    """A cut-off download is a digest problem first; the message should say so."""
    from builder.errors import DigestMismatchError
    from builder.image import BlobLayer, Descriptor, Digest, MediaType
    from tests.layers.malicious import _Blobs, _reg, build_tar

    _, target = arena
    full = build_tar([_reg("big", os.urandom(200_000))])
    desc = Descriptor(media_type=MediaType.OCI_LAYER, digest=Digest.of(full), size=len(full))
    layer = BlobLayer(_Blobs(full[:100_000]), desc, Digest.of(full))
    with pytest.raises(DigestMismatchError):
        extract_layer(layer.compressed(), target)  # type: ignore[arg-type]


def test_entries_hidden_after_one_zero_block_are_an_error(arena: tuple[Path, Path]) -> None:
    """Readers disagree on tars with data after a zero block; refuse rather than pick one."""
    from builder.errors import ImageError
    from tests.layers.malicious import _reg, build_tar

    _, target = arena
    first = build_tar([_reg("seen", b"1")])
    hidden = build_tar([_reg("hidden", b"2")])
    blob = first[:1024] + b"\0" * 512 + hidden
    with pytest.raises(ImageError, match="after the end-of-archive"):
        extract_layer(io.BytesIO(blob), target)


def test_symlink_from_a_lower_layer_is_not_written_through(arena: tuple[Path, Path], tmp_path: Path) -> None:
    """The escape is split over two layers: the first one is fine on its own, the second is not."""
    from builder.errors import UnsafeLayerError
    from tests.layers.malicious import _reg, _sym, build_tar

    sentinel, target = arena
    before = _outside_state(tmp_path, target)
    extract_layer(io.BytesIO(build_tar([_sym("loophole", f"../{sentinel.name}")])), target)
    with pytest.raises(UnsafeLayerError, match="loophole"):
        extract_layer(io.BytesIO(build_tar([_reg("loophole/hello", b"pwned")])), target)
    with pytest.raises(UnsafeLayerError, match="loophole"):
        extract_layer(io.BytesIO(build_tar([_reg("loophole/.wh.hello", b"")])), target)
    assert _outside_state(tmp_path, target) == before


@pytest.mark.parametrize("case_name", [n for n, _ in contained(Path("/placeholder/sentinel"))])
def test_contained_layers_extract_without_touching_outside(
    case_name: str, arena: tuple[Path, Path], tmp_path: Path
) -> None:
    sentinel, target = arena
    blob = dict(contained(sentinel))[case_name]
    before = _outside_state(tmp_path, target)
    extract_layer(io.BytesIO(blob), target)
    assert _outside_state(tmp_path, target) == before
    _no_links_to(target, [sentinel / n for n in SENTINEL_FILES])
    if case_name == "hardlink-to-symlink":
        link1, link2 = (target / "symlink1").lstat(), (target / "symlink2").lstat()
        assert link1.st_ino == link2.st_ino and (target / "symlink2").is_symlink()


@pytest.mark.parametrize("case_name", CASE_NAMES)
def test_chroot_mode_contains_every_case(
    case_name: str, arena: tuple[Path, Path], tmp_path: Path
) -> None:
    """With chroot semantics some escapes become writes inside the target: never outside."""
    sentinel, target = arena
    case = next(c for c in corpus(sentinel) if c.name == case_name)
    before = _outside_state(tmp_path, target)
    try:
        extract_layer(io.BytesIO(case.blob), target, chroot_symlinks=True)
    except PybuildError:
        pass
    assert _outside_state(tmp_path, target) == before
    _no_links_to(target, [sentinel / n for n in SENTINEL_FILES] + [Path("/etc/shadow")])
