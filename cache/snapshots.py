"""Unpacked layers for overlay lower dirs: ``snapshots/<chain-id hex>/``.

Each snapshot holds exactly one layer, applied with overlay-native whiteouts
(character devices 0/0, ``trusted.overlay.opaque``), so that stacking the
snapshots of a chain as overlay lower dirs gives the image's root file system.
A snapshot is named by the chain ID of the layer stack it ends, because the
same layer on another base can need other whiteouts. Extraction goes into
``tmp/`` and is renamed into place; when two processes race, the loser
discards its copy.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from builder.errors import ImageError, StoreError
from builder.image.digest import Digest, HashingReader, is_digest
from cache.blobs import fsync_dir, remove_tree, temp_name


def chain_ids(diff_ids: Sequence[str]) -> list[Digest]:
    """OCI chain IDs: chain(1) = diff_id(1); chain(n) = sha256(chain(n-1) + " " + diff_id(n))."""
    out: list[Digest] = []
    for diff_id in diff_ids:
        if not out:
            out.append(Digest(diff_id))
        else:
            text = f"{out[-1]} {diff_id}".encode()
            out.append(Digest("sha256:" + hashlib.sha256(text).hexdigest()))
    return out


class SnapshotDirs:
    """The ``snapshots/`` tree of a store root; knows nothing of the database."""

    def __init__(self, root: Path, tmp_dir: Path) -> None:
        self.root = root
        self.tmp_dir = tmp_dir
        root.mkdir(parents=True, exist_ok=True)

    def path(self, chain_id: str) -> Path:
        return self.root / Digest(chain_id).hex

    def exists(self, chain_id: str) -> bool:
        return self.path(chain_id).is_dir()

    def create(self, chain_id: str, diff_id: str, tar_stream: BinaryIO,
               check: Callable[[], None] | None = None) -> tuple[int, int]:
        """Extract one uncompressed layer as the snapshot ``chain_id``; ``check`` is called
        between reads and may raise to stop (a cancelled build).

        Returns the tar's size and what its files take as docker counts it (see
        ``cache.store.content_size``).

        The tar is hashed while extracted; a stream whose hash is not ``diff_id``
        is refused and leaves nothing behind.
        """
        from builder.layers.extract import CheckedReader, extract_layer

        final = self.path(chain_id)
        work = temp_name(self.tmp_dir, ".snapshot")
        try:
            work.mkdir(mode=0o755)
            if check is not None:
                tar_stream = CheckedReader(tar_stream, check)  # type: ignore[assignment]  # read, readinto, close: all a HashingReader uses
            reader = HashingReader(tar_stream)
            stats = extract_layer(reader, work, apply_whiteouts=True, overlay_whiteouts=True)  # type: ignore[arg-type]  # an uncompressed tar: only read and close are used
            content = stats.bytes + stats.link_bytes
            while reader.read(1 << 20):  # tar padding after the end-of-archive blocks
                pass
            if reader.digest() != diff_id:
                raise ImageError(
                    f"layer {diff_id} does not match the image config: its content hashes to "
                    f"{reader.digest()}"
                )
            if check is not None:
                check()
            _fsync_tree(work)
            try:
                os.rename(work, final)
            except OSError as err:
                if final.is_dir():  # another process won the race: use theirs
                    remove_tree(work)
                    return reader.size, content
                raise StoreError(f"cannot store snapshot {chain_id}: {err}") from None
            fsync_dir(self.root)
            return reader.size, content
        except OSError as err:
            remove_tree(work)
            raise StoreError(f"cannot unpack layer {diff_id} into {self.root}: {err.strerror or err}") from None
        except BaseException:
            remove_tree(work)
            raise

    def delete(self, chain_id: str) -> None:
        """Move the snapshot out of sight atomically, then remove it."""
        doomed = self.set_aside(chain_id)
        if doomed is not None:
            remove_tree(doomed)

    def set_aside(self, chain_id: str) -> Path | None:
        """Move the snapshot out of sight atomically, into tmp/ under this process's name (a
        sweep removes it if the process dies); its path there, None if there was none."""
        path = self.path(chain_id)
        if not path.exists():
            return None
        doomed = temp_name(self.tmp_dir, ".deleted")
        try:
            os.rename(path, doomed)
        except FileNotFoundError:
            return None
        return doomed

    def __iter__(self) -> Iterator[Digest]:
        for entry in sorted(self.root.iterdir()):
            if is_digest("sha256:" + entry.name):
                yield Digest("sha256:" + entry.name)


def _fsync_tree(root: Path) -> None:
    """Make an extracted tree durable before it is renamed into place.

    One ``syncfs()`` of the store's file system costs far less than an fsync per
    file of a 20,000-file layer, and unlike ``sync()`` leaves other disks alone.
    """
    from builder.layers.extract import syncfs

    syncfs(root)
