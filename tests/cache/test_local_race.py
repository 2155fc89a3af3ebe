"""A ``type=local`` cache directory is shared: whoever else writes there may swap one of its
directories for a symlink between pybuild's look at it and its write. The directories are
opened once and written through their descriptors, so a swap is never followed out of the
cache; the next export finds the link and refuses it in one line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from builder.errors import CacheError
from builder.image.descriptor import Descriptor
from cache.remote import LocalTarget
from tests.helpers.race import swap_for_link


def _descriptor(data: bytes) -> Descriptor:
    return Descriptor.of("application/octet-stream", data)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir())


@pytest.mark.parametrize("swapped", ["blobs", "blobs/sha256"])
def test_a_directory_swapped_for_a_link_while_a_blob_is_written_is_not_followed(tmp_path: Path,
                                                                               swapped: str) -> None:
    shared, outside = tmp_path / "shared", tmp_path / "outside"
    (outside / "sha256").mkdir(parents=True)
    target = LocalTarget(shared)
    target.put_blob(_descriptor(b"first"), lambda: io.BytesIO(b"first"))
    data = b"second blob"
    desc = _descriptor(data)
    held: list[Path] = []

    def opener() -> io.BytesIO:  # the source opens after the directories are looked at, before the write
        held.append(swap_for_link(shared / swapped, outside if swapped == "blobs" else outside / "sha256"))
        return io.BytesIO(data)

    target.put_blob(desc, opener)
    assert _files(outside) == []
    blob = held[0] / ("sha256" if swapped == "blobs" else "") / desc.digest.hex
    assert blob.read_bytes() == data  # in the directory that was opened, now renamed by the other writer

    with pytest.raises(CacheError) as raised:  # the link is seen by the next export, which refuses it
        LocalTarget(shared).put_blob(_descriptor(b"third"), lambda: io.BytesIO(b"third"))
    message = str(raised.value)
    assert f"{swapped} is a symbolic link" in message and str(shared) in message and "\n" not in message
    assert _files(outside) == []


def test_a_blob_linked_out_of_the_cache_is_not_read(tmp_path: Path) -> None:
    """Reading follows a link inside the directory (a copy made with links), never one out of it."""
    shared = tmp_path / "shared"
    data = b"a blob"
    desc = _descriptor(data)
    LocalTarget(shared).put_blob(desc, lambda: io.BytesIO(data))
    blob = shared / "blobs" / "sha256" / desc.digest.hex
    (shared / "copy").write_bytes(data)
    blob.unlink()
    blob.symlink_to("../../copy")
    source = LocalTarget(shared).blob_source()
    with source.open_blob(desc) as f:
        assert f.read() == data
    (tmp_path / "secret").write_bytes(data)
    blob.unlink()
    blob.symlink_to(tmp_path / "secret")
    with pytest.raises(CacheError, match="leads out of the directory"):
        source.open_blob(desc)
