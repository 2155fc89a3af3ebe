"""The local image store: a source and a sink of :class:`~builder.image.Image`.

Layout under the root (``$PYBUILD_ROOT``)::

    blobs/sha256/<hex>   immutable, content-addressed (configs, manifests, layers)
    snapshots/<hex>/     unpacked layers for overlay lower dirs, by chain ID
    meta.db              SQLite (WAL): tags, manifests, blob use, layer forms, snapshots
    tmp/                 temp files of writers (``<pid>-...``), swept when stale
    locks/gc.lock        flock: shared by writers, exclusive by prune and repair

Rules that keep it consistent whatever happens: rows are committed only after
the files they name are durable; deletes remove the row first, then the file;
a blob file without a row is garbage that prune collects and check ignores.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from builder.errors import (
    DigestMismatchError,
    ImageError,
    ImageNotFoundError,
    PybuildError,
    StoreError,
)
from builder.image.config import ConfigFile
from builder.image.descriptor import Descriptor
from builder.image.digest import Digest, HashingReader, is_digest
from builder.image.image import BlobLayer, Image, SourceImage, read_verified
from builder.image.manifest import Manifest
from builder.image.mediatypes import (
    Compression,
    MediaType,
    is_docker,
    layer_compression,
    layer_media_type,
)
from builder.image.reference import Reference
from cache.blobs import BlobFiles, sweep_temp, temp_name
from cache.db import Database, now
from cache.snapshots import SnapshotDirs, chain_ids

if TYPE_CHECKING:
    from builder.fileio import Reader
    from builder.layers.tarwriter import LayerStats


def default_root() -> Path:
    """``$PYBUILD_ROOT``, else ``/var/lib/pybuild`` as root, else ``~/.local/share/pybuild``."""
    env = os.environ.get("PYBUILD_ROOT")
    if env:
        return Path(env).absolute()  # runtimes and overlay options need absolute paths
    if os.geteuid() == 0:
        return Path("/var/lib/pybuild")
    return Path.home() / ".local" / "share" / "pybuild"


# --- names: the one place that knows how image names are normalised -----------------------

def normalize_name(text: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest`` (how tags are keyed in the store)."""
    ref = Reference.parse(text)
    if ref.digest is not None:
        raise ImageError(f"cannot use a digest reference as a tag: {text}")
    return str(ref)


def new_tag_name(text: str) -> str:
    """:func:`normalize_name` of a tag being created: ``sha256:abc`` is refused, as docker
    refuses it (it would read as a short image ID)."""
    name = normalize_name(text)
    if Reference.parse(name).familiar_name == "sha256":
        raise ImageError(f"refusing to create an ambiguous tag using digest algorithm as name: {text}")
    return name


def familiar_name(name: str) -> str:
    """A stored name as docker prints it: ``busybox:latest`` (see :func:`split_familiar`)."""
    ref = Reference.try_parse(name)
    return ref.familiar if ref is not None else name


def split_familiar(name: str) -> tuple[str, str]:
    """``(repository, tag)`` in docker's short form, for the REPOSITORY and TAG columns.

    A name an older pybuild stored that today's rules refuse (``MyOrg/app:1``) is shown as
    stored, so that it can still be listed and removed."""
    ref = Reference.try_parse(name)
    if ref is None:
        repo, sep, tag = name.rpartition(":")
        return (repo, tag) if sep and "/" not in tag else (name, "<none>")
    return ref.familiar_name, ref.tag or "<none>"


# --- values -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageRecord:
    """One image manifest held in the store, with the tags that point at it."""

    manifest_digest: Digest
    config_digest: Digest
    media_type: str
    names: tuple[str, ...]
    created: str | None
    added: float
    last_used: float
    size: int

    @property
    def id(self) -> Digest:
        """The image ID as docker shows it: the config digest."""
        return self.config_digest


@dataclass(frozen=True)
class RemoveEvent:
    """One line of ``rmi`` output: ``Untagged: name`` or ``Deleted: sha256:...``."""

    action: str
    subject: str

    def __str__(self) -> str:
        return f"{self.action}: {self.subject}"


@dataclass
class PruneReport:
    """What a prune removed, for ``pybuild prune`` to report."""

    recovered: list[Digest] = field(default_factory=list)  # whole images whose rows were lost
    images: list[Digest] = field(default_factory=list)
    blobs: list[Digest] = field(default_factory=list)
    snapshots: list[Digest] = field(default_factory=list)
    reclaimed: int = 0


@dataclass(frozen=True)
class Problem:
    """One inconsistency found by check; ``kind`` is a short word, ``subject`` what it concerns."""

    kind: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}: {self.detail}"


@dataclass
class CheckReport:
    """What ``pybuild store check`` looked at, found wrong and repaired."""

    blobs_checked: int = 0
    snapshots_checked: int = 0
    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


class BlobFileSource:
    """Blobs opened from the store's files (the caller verifies, e.g. via SourceImage)."""

    damage_hint = "the store's copy is damaged: run `pybuild store check --repair`"

    def __init__(self, blobs: BlobFiles) -> None:
        self._blobs = blobs

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        try:
            return open(self._blobs.path(descriptor.digest), "rb")
        except FileNotFoundError:
            raise StoreError(
                f"blob {descriptor.digest} is missing from the store (run `pybuild store check`)"
            ) from None


class StoreImage(SourceImage):
    """An image read from the store; ``record`` says what the store knows about it."""

    def __init__(self, store: Store, raw_manifest: bytes, record: ImageRecord) -> None:
        super().__init__(BlobFileSource(store.blobs), raw_manifest, record.media_type)
        self.record = record


class RecompressedImage:
    """An image with other blobs for the same layers, and perhaps other media types or manifest
    annotations; the config bytes (the image ID) are kept."""

    def __init__(self, base: Image, layers: Sequence[BlobLayer], *, docker: bool | None = None,
                 annotations: dict[str, str] | None = None) -> None:
        self._base = base
        self._layers = tuple(layers)
        manifest = base.manifest()
        config = manifest.config
        media_type = manifest.media_type
        if docker is not None:
            media_type = MediaType.DOCKER_MANIFEST if docker else MediaType.OCI_MANIFEST
            config = replace(config, media_type=MediaType.DOCKER_CONFIG if docker else MediaType.OCI_CONFIG)
        self._manifest = Manifest(
            config=config,
            layers=tuple(layer.descriptor() for layer in self._layers),
            media_type=media_type, annotations=annotations or manifest.annotations,
        )
        self._raw = self._manifest.to_bytes()

    def raw_manifest(self) -> bytes:
        return self._raw

    def manifest(self) -> Manifest:
        return self._manifest

    def digest(self) -> Digest:
        return Digest.of(self._raw)

    def raw_config(self) -> bytes:
        return self._base.raw_config()

    def config_file(self) -> ConfigFile:
        return self._base.config_file()

    def config_digest(self) -> Digest:
        return self._base.config_digest()

    def layers(self) -> tuple[BlobLayer, ...]:
        return self._layers


def _on_stderr(text: str) -> None:
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


class _GcLock:
    """``locks/gc.lock``: writers hold it shared while their blobs are not yet referenced.

    A wait for it can be long (a prune waits for every running build, a build for a prune
    of many gigabytes): it is said once, through ``notice``, never silent.
    """

    def __init__(self, path: Path, notice: Callable[[str], None] = _on_stderr) -> None:
        self.path = path
        self.notice = notice

    @contextlib.contextmanager
    def _hold(self, mode: int, waiting: str, notice: Callable[[str], None] | None) -> Iterator[None]:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise StoreError(f"cannot lock the store ({self.path}): {err.strerror or err}") from None
        try:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                (notice or self.notice)(waiting)
                fcntl.flock(fd, mode)
            yield
        finally:
            os.close(fd)

    def shared(self, notice: Callable[[str], None] | None = None) -> contextlib.AbstractContextManager[None]:
        root = self.path.parent.parent
        return self._hold(fcntl.LOCK_SH, f"waiting for a prune or repair of the store {root} to finish", notice)

    def exclusive(self, notice: Callable[[str], None] | None = None) -> contextlib.AbstractContextManager[None]:
        root = self.path.parent.parent
        return self._hold(fcntl.LOCK_EX, f"waiting for the builds and other pybuild commands using the store {root} "
                          "to finish", notice)


# A checked pairing of a layer's content with a blob; it replaces an unchecked claim for
# the same (diff_id, compression), which a pull may have recorded from another image.
PAIR_VERIFIED = (
    "INSERT INTO layers(diff_id, compression, blob_digest, verified) VALUES (?,?,?,1) "
    "ON CONFLICT(diff_id, compression) DO UPDATE SET blob_digest=excluded.blob_digest, verified=1 "
    "WHERE layers.verified=0 OR layers.blob_digest=excluded.blob_digest"
)
SIZE_UNKNOWN = -1  # manifests.image_size until the claims of its pulled layers are checked


def _shown_size(tar_size: int, content: int | None) -> int:
    return int(tar_size if content is None else content)


def content_size(stream: Reader) -> int | None:
    """What a layer tar's files take on disk as docker counts it: regular files (hardlinks
    once) and symlink targets. Reads the tar's entries from ``stream``; None if unparsable."""
    from builder.layers.extract import TarReader
    from builder.layers.tarwriter import EntryType

    total = 0
    try:
        reader = TarReader(stream)
        for entry in reader:
            if entry.type is EntryType.FILE:
                total += entry.size
            elif entry.type is EntryType.SYMLINK:
                total += len(entry.linkname.encode("utf-8", "surrogateescape"))
        reader.drain()
    except (PybuildError, OSError, EOFError, ValueError):
        return None
    return total


def _marks(values: Sequence[object]) -> str:
    """SQL placeholders for an IN (...) list."""
    return ",".join("?" * len(values))


_HEX_RE = re.compile(r"^[a-f0-9]{1,64}$")
# What holds image content (blobs, unpacked layers, RUN's upper dirs and cache mounts, git
# checkouts): only the store's owner may enter. Open to all, a setuid-root file that an image
# brings runs as root for any local user, and a private image's files are readable
# (docker's CVE-2021-41091: /var/lib/docker is 0710 for this).
PRIVATE_DIRS = ("blobs", "snapshots", "tmp", "locks", "run", "cachemounts", "gitsources")


def _private_dir(path: Path) -> None:
    """Make ``path`` (mode 0700), or take the group's and others' access away from it."""
    path.mkdir(mode=0o700, exist_ok=True)
    st = path.lstat()
    if st.st_mode & 0o077 and st.st_uid == os.geteuid():
        path.chmod(0o700)  # made by an earlier version, 0755


class Store:
    """The content-addressed store at ``root``; one object per process, passed around."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = (Path(root) if root is not None else default_root()).absolute()
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            for sub in PRIVATE_DIRS:
                _private_dir(self.root / sub)
            # Every command takes this lock: a read-only or foreign store fails here with its
            # reason, not later as SQLite's "unable to open database file".
            os.close(os.open(self.root / "locks" / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))
        except FileExistsError:  # mkdir(exist_ok=True) of a path that is a file
            raise StoreError(f"cannot use {self.root} as the store root: {os.strerror(errno.ENOTDIR)}") from None
        except OSError as err:
            raise StoreError(f"cannot use {self.root} as the store root: {err.strerror}") from None
        self.tmp_dir = self.root / "tmp"
        self.blobs = BlobFiles(self.root / "blobs", self.tmp_dir)
        self.snapshots = SnapshotDirs(self.root / "snapshots", self.tmp_dir)
        self.gc_lock = _GcLock(self.root / "locks" / "gc.lock")
        self.db = Database(self.root / "meta.db")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def temp_path(self, suffix: str = "") -> Path:
        """A temp path inside the store (same file system as the blobs, swept if abandoned)."""
        return temp_name(self.tmp_dir, suffix)

    # --- writing ---------------------------------------------------------------------

    def write_image(self, image: Image, tags: Sequence[str] = ()) -> Digest:
        """Copy the image's missing blobs in, record its manifest, then point ``tags`` at it.

        Returns the manifest digest. Layers are kept as they are (any compression);
        each new layer's content is checked against the config's diff_id.
        """
        names = [new_tag_name(t) for t in tags]
        raw_manifest = image.raw_manifest()
        manifest_digest = Digest.of(raw_manifest)
        manifest = image.manifest()
        raw_config = image.raw_config()
        if Digest.of(raw_config) != manifest.config.digest:
            raise DigestMismatchError(manifest.config.digest, Digest.of(raw_config), "image config")
        config = ConfigFile.from_bytes(raw_config)
        layers = list(image.layers())
        if len(layers) != len(config.diff_ids):
            raise ImageError(
                f"image {manifest_digest.short}: {len(layers)} layers but the config lists "
                f"{len(config.diff_ids)} diff_ids"
            )
        with self.gc_lock.shared():
            sweep_temp(self.tmp_dir)
            if not self.blobs.exists(manifest.config.digest):
                self.blobs.write_bytes(raw_config, manifest.config.digest)
            diff_sizes: dict[str, tuple[int, int | None]] = {}
            layer_rows: list[tuple[str, str, str]] = []
            for layer, desc, diff_id in zip(layers, manifest.layers, config.diff_ids, strict=True):
                compression = layer_compression(desc.media_type)
                if not self.blobs.exists(desc.digest):
                    with layer.compressed() as stream:
                        self.blobs.write(stream, desc.digest, desc.size)
                # Check each new (diff_id, blob) pairing: a blob is only trusted as the form
                # of a layer once its content has been seen to be that layer. A pull's
                # claimed pairing is checked on first read instead (verify_layer).
                paired = self.db.query_one(
                    "SELECT 1 FROM layers WHERE diff_id=? AND blob_digest=?", (diff_id, desc.digest))
                if paired is None:
                    diff_sizes[diff_id] = self._verify_diff(desc, diff_id)
                layer_rows.append((diff_id, compression.value, desc.digest))
            if not self.blobs.exists(manifest_digest):
                self.blobs.write_bytes(raw_manifest, manifest_digest)
            sizes = {row["diff_id"]: (row["size"], row["content"]) for row in self.db.query(
                "SELECT d.diff_id, d.size, c.size AS content FROM diffs d LEFT JOIN diff_content c "
                f"ON c.diff_id = d.diff_id WHERE d.diff_id IN ({_marks(config.diff_ids)})",
                list(config.diff_ids))}
            sizes.update(diff_sizes)
            image_size = (sum(_shown_size(*sizes[d]) for d in config.diff_ids)
                          if all(d in sizes for d in config.diff_ids) else SIZE_UNKNOWN)
            t = now()
            with self.db.transaction() as conn:
                blob_rows = [(manifest.config.digest, manifest.config.size, manifest.config.media_type)]
                blob_rows += [(d.digest, d.size, d.media_type) for d in manifest.layers]
                blob_rows.append((manifest_digest, len(raw_manifest), manifest.media_type))
                for digest, size, media_type in blob_rows:
                    conn.execute(
                        "INSERT INTO blobs(digest, size, media_type, last_used) VALUES (?,?,?,?) "
                        "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                        (digest, size, media_type, t),
                    )
                conn.executemany(PAIR_VERIFIED, [r for r in layer_rows if r[0] in diff_sizes])
                conn.executemany("INSERT OR IGNORE INTO layers VALUES (?,?,?,1)",
                                 [r for r in layer_rows if r[0] not in diff_sizes])
                conn.executemany("INSERT OR IGNORE INTO diffs VALUES (?,?)",
                                 [(d, size) for d, (size, _) in diff_sizes.items()])
                conn.executemany("INSERT OR IGNORE INTO diff_content VALUES (?,?)",
                                 [(d, c) for d, (_, c) in diff_sizes.items() if c is not None])
                conn.execute(
                    "INSERT INTO manifests(digest, media_type, config_digest, size, image_size, "
                    "created, added, last_used) VALUES (?,?,?,?,?,?,?,?) "
                    "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                    (manifest_digest, manifest.media_type, manifest.config.digest, len(raw_manifest),
                     image_size, config.created, t, t),
                )
                conn.executemany(
                    "INSERT OR IGNORE INTO manifest_blobs VALUES (?,?)",
                    [(manifest_digest, digest) for digest, _, _ in blob_rows if digest != manifest_digest],
                )
                for name in names:
                    conn.execute(
                        "INSERT OR REPLACE INTO images(name, manifest_digest, created) VALUES (?,?,?)",
                        (name, manifest_digest, t),
                    )
        return manifest_digest

    def claim_layer(self, desc: Descriptor, diff_id: str) -> None:
        """Pair a pulled layer blob with the diff_id its image's config claims, unchecked.

        A pull verifies each blob's digest while it streams, as skopeo and containerd
        do; decompressing every layer to check its diff_id would double a pull's CPU
        time. The claim is checked the first time pybuild reads the layer: extraction
        into a snapshot hashes the tar anyway, and every lookup by diff_id
        (:meth:`layer_blob`, :meth:`diff_size`, ...) calls :meth:`verify_layer` first.
        """
        with self.gc_lock.shared(), self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO blobs(digest, size, media_type, last_used) VALUES (?,?,?,?) "
                "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                (desc.digest, desc.size, desc.media_type, now()),
            )
            conn.execute("INSERT OR IGNORE INTO layers VALUES (?,?,?,0)",
                         (diff_id, layer_compression(desc.media_type).value, desc.digest))

    def verify_layer(self, desc: Descriptor, diff_id: str) -> None:
        """Check a held layer blob against its diff_id and remember the pairing as checked.

        A claimed pairing that turns out false is forgotten, and the error says so.
        """
        with self.gc_lock.shared():
            paired = self.db.query_one(
                "SELECT verified FROM layers WHERE diff_id=? AND blob_digest=?", (diff_id, desc.digest))
            if paired is not None and paired["verified"]:
                return
            try:
                tar_size, content = self._verify_diff(desc, diff_id)
            except ImageError:
                self._forget_claim(diff_id, desc.digest)
                raise
            self._record_verified(desc, diff_id, tar_size, content)

    def _forget_claim(self, diff_id: str, blob_digest: str) -> None:
        """Drop a pull's pairing of a blob with a diff_id its content turned out not to be."""
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM layers WHERE diff_id=? AND blob_digest=? AND verified=0",
                         (diff_id, blob_digest))

    def _record_verified(self, desc: Descriptor, diff_id: str, tar_size: int, content: int | None) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO blobs(digest, size, media_type, last_used) VALUES (?,?,?,?) "
                "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                (desc.digest, desc.size, desc.media_type, now()),
            )
            conn.execute(PAIR_VERIFIED, (diff_id, layer_compression(desc.media_type).value, desc.digest))
            conn.execute("INSERT OR IGNORE INTO diffs VALUES (?,?)", (diff_id, tar_size))
            if content is not None:
                conn.execute("INSERT OR IGNORE INTO diff_content VALUES (?,?)", (diff_id, content))

    def _checked(self, diff_id: str, row: sqlite3.Row) -> None:
        """Check the claim of a layers row (blob_digest, compression, size, verified) before use."""
        if not row["verified"]:
            media_type = layer_media_type(Compression(row["compression"]))
            self.verify_layer(Descriptor(media_type, Digest(row["blob_digest"]), row["size"]), diff_id)

    def _verify_diff(self, desc: Descriptor, diff_id: str) -> tuple[int, int | None]:
        """Read a stored layer blob as a tar: check it against its diff_id; return the tar's size
        and what its files occupy (None when the tar cannot be parsed; extraction will say why)."""
        from builder.layers.compression import CHUNK, open_decompressed

        compression = layer_compression(desc.media_type)
        if compression is Compression.NONE and desc.digest != diff_id:
            raise ImageError(
                f"layer {desc.digest} does not match the image config: it is uncompressed, "
                f"so its digest must be the config's diff_id {diff_id}"
            )
        # The blob file was hashed when it was installed; here only the tar inside is checked.
        blob = open(self.blobs.path(desc.digest), "rb")  # noqa: SIM115 - closed with `raw`
        if compression is Compression.NONE:
            with blob:
                return desc.size, content_size(blob)
        with open_decompressed(blob, compression) as raw:
            reader = HashingReader(raw)
            content = content_size(reader)
            while reader.read(CHUNK):
                pass
        if reader.digest() != diff_id:
            raise ImageError(
                f"layer {desc.digest} does not match the image config: its content hashes to "
                f"{reader.digest()}, the config says {diff_id}"
            )
        return reader.size, content

    def layer_blob(self, diff_id: str, compression: Compression, *, docker: bool = False,
                   level: int | None = None) -> Descriptor:
        """The layer ``diff_id`` as a blob with ``compression``, compressing it once if needed, at
        ``level`` (BuildKit's compression-level) then. As BuildKit, a blob held in that
        compression is the layer's, whatever level made it: a level is not compressed again."""
        from builder.layers.compression import compress_stream, open_decompressed

        compression = Compression(compression)
        media_type = layer_media_type(compression, docker=docker)
        row = self._layer_row(diff_id, compression)
        if row is not None:
            self._checked(diff_id, row)
            return Descriptor(media_type, Digest(row["blob_digest"]), row["size"])
        forms = self.db.query(
            "SELECT l.compression, l.blob_digest, l.verified, b.size, b.media_type FROM layers l "
            "JOIN blobs b ON b.digest = l.blob_digest WHERE l.diff_id=? "
            "ORDER BY l.verified DESC, l.compression",
            (diff_id,),
        )
        if not forms:
            raise ImageNotFoundError(f"layer {diff_id} is not in the store")
        with self.gc_lock.shared():
            source = forms[0]
            tmp = self.temp_path(".layer")
            try:
                src_desc = Descriptor(source["media_type"], Digest(source["blob_digest"]), source["size"])
                try:
                    with open_decompressed(
                        self.blobs.open(src_desc.digest, src_desc.size), Compression(source["compression"])
                    ) as raw, open(tmp, "wb") as out:
                        reader = HashingReader(raw)
                        compress_stream(reader, out, compression, level)  # type: ignore[arg-type]  # a file-like reader, no typing.BinaryIO subclass
                except OSError as err:  # a full store: the user's to free, said in one line
                    raise StoreError(f"cannot compress layer {diff_id} ({compression.value}) into {self.root}: "
                                     f"{err.strerror or err}") from None
                if reader.digest() != diff_id:
                    if not source["verified"]:
                        self.verify_layer(src_desc, diff_id)  # forgets the false claim, says why
                    raise ImageError(f"layer {diff_id} is corrupt: it hashes to {reader.digest()}")
                with open(tmp, "rb") as data:
                    written = self.blobs.write(data)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO blobs(digest, size, media_type, last_used) VALUES (?,?,?,?) "
                    "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                    (written.digest, written.size, media_type, now()),
                )
                conn.execute(PAIR_VERIFIED, (diff_id, compression.value, written.digest))
                conn.execute(PAIR_VERIFIED, (diff_id, source["compression"], src_desc.digest))
        row = self._layer_row(diff_id, compression)
        assert row is not None
        return Descriptor(media_type, Digest(row["blob_digest"]), row["size"])

    def export_blob(self, diff_id: str, compression: Compression, *, force: bool = False,
                    level: int | None = None, docker: bool = False) -> Descriptor:
        """The layer's blob for an export asking for ``compression`` (BuildKit's rule): a form
        held compressed otherwise (a pulled gzip base in a zstd export) goes as it is, unless
        ``force``; a layer held only uncompressed is compressed, at ``level``."""
        if not force and self._layer_row(diff_id, compression) is None:
            for other in (Compression.GZIP, Compression.ZSTD):
                row = self._layer_row(diff_id, other) if other is not compression else None
                if row is not None:
                    self._checked(diff_id, row)
                    return Descriptor(layer_media_type(other, docker=docker), Digest(row["blob_digest"]), row["size"])
        return self.layer_blob(diff_id, compression, docker=docker, level=level)

    def docker_compatible(self, image: Image) -> Image:
        """The image with zstd layers as gzip (docker < 23 cannot load zstd), compressed once."""
        if not any(layer_compression(layer.media_type()) is Compression.ZSTD for layer in image.layers()):
            return image
        return self._relayered(
            image, lambda c: Compression.GZIP if c is Compression.ZSTD else c,
            docker=image.manifest().media_type == MediaType.DOCKER_MANIFEST)

    def converted(self, image: Image, *, compression: Compression | None = None, force: bool = False,
                  docker: bool | None = None, annotations: dict[str, str] | None = None,
                  level: int | None = None) -> Image:
        """The image as an output asks for it (BuildKit's exporter options): ``compression`` for
        the layers held uncompressed (the ones this machine made), or for every layer with
        ``force``, at ``level`` where a layer is compressed; docker schema2 or OCI media types
        (``docker``; None keeps them); manifest ``annotations``. Each blob is compressed once
        and kept; the image ID does not change."""
        def wanted(current: Compression) -> Compression:
            if compression is not None and (force or current is Compression.NONE):
                return compression
            return current

        docker = is_docker(image.manifest().media_type) if docker is None else docker
        return RecompressedImage(image, self._relayered(image, wanted, docker=docker, level=level).layers(),
                                 docker=docker, annotations=annotations)

    def _relayered(self, image: Image, wanted: Callable[[Compression], Compression], *,
                   docker: bool, level: int | None = None) -> RecompressedImage:
        """The image with each layer in the compression ``wanted`` gives for its own."""
        source = BlobFileSource(self.blobs)
        out = []
        for layer in image.layers():
            current = layer_compression(layer.media_type())
            target = wanted(current)
            if target is current:
                if not self.blobs.exists(layer.digest()):
                    raise ImageNotFoundError(f"layer {layer.digest()} is not in the store")
                media_type = layer.media_type()  # foreign and non-distributable types stay as they are
                if is_docker(media_type) != docker:
                    media_type = layer_media_type(current, docker=docker)
                desc = Descriptor(media_type, layer.digest(), layer.size())
            else:
                desc = self.layer_blob(str(layer.diff_id()), target, docker=docker, level=level)
            out.append(BlobLayer(source, desc, layer.diff_id()))
        return RecompressedImage(image, out)

    def _layer_row(self, diff_id: str, compression: Compression) -> sqlite3.Row | None:
        return self.db.query_one(
            "SELECT l.blob_digest, l.compression, l.verified, b.size FROM layers l "
            "JOIN blobs b ON b.digest = l.blob_digest WHERE l.diff_id=? AND l.compression=?",
            (diff_id, compression.value),
        )

    def open_layer(self, diff_id: str) -> BinaryIO:
        """The uncompressed tar of a held layer (verified against its digest while read)."""
        from builder.layers.compression import open_decompressed

        row = self.db.query_one(
            "SELECT l.compression, l.blob_digest, l.verified, b.size FROM layers l "
            "JOIN blobs b ON b.digest = l.blob_digest WHERE l.diff_id=? "
            "ORDER BY l.verified DESC, l.compression",
            (diff_id,),
        )
        if row is None:
            raise ImageNotFoundError(f"layer {diff_id} is not in the store")
        self._checked(diff_id, row)
        return open_decompressed(
            self.blobs.open(row["blob_digest"], row["size"]), Compression(row["compression"])
        )

    def image_size(self, record: ImageRecord) -> int:
        """What the image's layers take as docker shows it; checks pulled layers not read yet."""
        if record.size != SIZE_UNKNOWN:
            return record.size
        size = sum(self.diff_size(d) or 0 for d in self.image_config(record).diff_ids)
        with self.db.transaction() as conn:
            conn.execute("UPDATE manifests SET image_size=? WHERE digest=?", (size, record.manifest_digest))
        return size

    def diff_size(self, diff_id: str) -> int | None:
        """A layer's size as docker shows it (its files; the tar's size where that is unknown).

        A pulled layer not read yet is checked now: its size is known only then."""
        if self.db.query_one("SELECT 1 FROM diffs WHERE diff_id=?", (diff_id,)) is None:
            claim = self.db.query_one(
                "SELECT l.compression, l.blob_digest, l.verified, b.size FROM layers l "
                "JOIN blobs b ON b.digest = l.blob_digest WHERE l.diff_id=? AND l.verified=0",
                (diff_id,))
            if claim is not None:
                self._checked(diff_id, claim)
        row = self.db.query_one(
            "SELECT d.size, c.size AS content FROM diffs d LEFT JOIN diff_content c "
            "ON c.diff_id = d.diff_id WHERE d.diff_id=?", (diff_id,))
        return None if row is None else _shown_size(row["size"], row["content"])

    # --- reading ---------------------------------------------------------------------

    def resolve(self, name_or_id: str) -> ImageRecord:
        """Find an image by name[:tag], name@digest, full or short ID, or manifest digest."""
        text = name_or_id.strip()
        digest_row = None
        if "@" in text:
            _, _, digest = text.rpartition("@")
            if is_digest(digest):
                digest_row = self._manifest_row(digest)
        elif is_digest(text):
            digest_row = self._by_config(text) or self._manifest_row(text)
        elif text.startswith("sha256:") and _HEX_RE.match(text[7:]):  # a short ID, as docker takes it
            digest_row = self._by_config_prefix(text[7:])
        else:
            # a name as stored when today's rules refuse it (an older pybuild's `MyOrg/app:1`)
            name = self._try_normalize(text) or self._stored_name(text)
            if name is not None:
                row = self.db.query_one("SELECT manifest_digest FROM images WHERE name=?", (name,))
                if row is not None:
                    digest_row = self._manifest_row(row["manifest_digest"])
            if digest_row is None and _HEX_RE.match(text):
                digest_row = self._by_config_prefix(text)
        if digest_row is None:
            raise ImageNotFoundError(f"No such image: {name_or_id}")
        return self._record(digest_row)

    def image(self, name_or_id: str) -> StoreImage:
        """The image for ``name_or_id`` (see :meth:`resolve`), read lazily and verified."""
        record = self.resolve(name_or_id)
        raw = read_verified(
            BlobFileSource(self.blobs),
            Descriptor(record.media_type, record.manifest_digest, self._blob_size(record.manifest_digest)),
            "manifest",
        )
        return StoreImage(self, raw, record)

    def images(self) -> list[ImageRecord]:
        """Every image held, newest first (untagged ones too: docker's dangling images)."""
        rows = self.db.query("SELECT * FROM manifests ORDER BY added DESC, digest")
        return [self._record(row) for row in rows]

    def touch(self, image: ImageRecord | str) -> None:
        """Record a use of the image and its blobs (prune evicts the least recently used)."""
        record = image if isinstance(image, ImageRecord) else self.resolve(image)
        t = now()
        with self.db.transaction() as conn:
            conn.execute("UPDATE manifests SET last_used=? WHERE digest=?", (t, record.manifest_digest))
            conn.execute(
                "UPDATE blobs SET last_used=? WHERE digest=? OR digest IN "
                "(SELECT blob_digest FROM manifest_blobs WHERE manifest_digest=?)",
                (t, record.manifest_digest, record.manifest_digest),
            )

    def _try_normalize(self, text: str) -> str | None:
        try:
            return normalize_name(text)
        except PybuildError:
            return None

    def tags_of(self, repository: str) -> list[str]:
        """The stored names ``repository:TAG`` of a normalized repository, sorted."""
        rows = self.db.query("SELECT name FROM images WHERE substr(name, 1, ?) = ? ORDER BY name",
                             (len(repository) + 1, repository + ":"))
        return [str(row["name"]) for row in rows]

    def _stored_name(self, text: str) -> str | None:
        """``text`` when it is a stored name exactly (how a name today's rules refuse is found)."""
        row = self.db.query_one("SELECT name FROM images WHERE name=?", (text,))
        return None if row is None else str(row["name"])

    def _manifest_row(self, digest: str) -> sqlite3.Row | None:
        return self.db.query_one("SELECT * FROM manifests WHERE digest=?", (digest,))

    def _by_config(self, config_digest: str) -> sqlite3.Row | None:
        return self.db.query_one(
            "SELECT m.* FROM manifests m WHERE m.config_digest=? ORDER BY "
            "EXISTS(SELECT 1 FROM images i WHERE i.manifest_digest=m.digest) DESC, m.added DESC",
            (config_digest,),
        )

    def _by_config_prefix(self, prefix: str) -> sqlite3.Row | None:
        rows = self.db.query(
            "SELECT DISTINCT config_digest FROM manifests WHERE substr(config_digest, 8, ?) = ?",
            (len(prefix), prefix),
        )
        if len(rows) > 1:
            raise ImageError(f"short ID {prefix} is ambiguous: it matches {len(rows)} images")
        return self._by_config(rows[0]["config_digest"]) if rows else None

    def _blob_size(self, digest: str) -> int:
        row = self.db.query_one("SELECT size FROM blobs WHERE digest=?", (digest,))
        if row is None:
            raise StoreError(f"blob {digest} is not recorded in the store (run `pybuild store check`)")
        return int(row["size"])

    def _record(self, row: sqlite3.Row) -> ImageRecord:
        names = tuple(r["name"] for r in self.db.query(
            "SELECT name FROM images WHERE manifest_digest=? ORDER BY name", (row["digest"],)))
        return ImageRecord(
            manifest_digest=Digest(row["digest"]), config_digest=Digest(row["config_digest"]),
            media_type=row["media_type"], names=names, created=row["created"], added=row["added"],
            last_used=row["last_used"], size=row["image_size"],
        )

    # --- tags and removal --------------------------------------------------------------

    def tag(self, source: str, target: str) -> Digest:
        """Point ``target`` at the image ``source`` names; returns the manifest digest."""
        name = new_tag_name(target)
        with self.db.transaction() as conn:
            record = self.resolve(source)
            conn.execute(
                "INSERT OR REPLACE INTO images(name, manifest_digest, created) VALUES (?,?,?)",
                (name, record.manifest_digest, now()),
            )
        return record.manifest_digest

    def untag(self, name: str) -> bool:
        """Remove one tag (the image stays, dangling, if nothing else names it)."""
        with self.db.transaction() as conn:
            cur = conn.execute("DELETE FROM images WHERE name=?", (normalize_name(name),))
            return cur.rowcount > 0

    def rmi(self, name_or_id: str, force: bool = False) -> list[RemoveEvent]:
        """Docker's ``rmi``: a name untags (and deletes the image when no tag is left);
        an ID deletes the image, which needs ``force`` when tags of several repositories
        point at it. Blobs are left for :meth:`prune` to collect.
        """
        from cache.leases import in_use

        events: list[RemoveEvent] = []
        with self.db.transaction() as conn:
            record = self.resolve(name_or_id)
            name = self._try_normalize(name_or_id) or self._stored_name(name_or_id)
            running = str(record.manifest_digest) in in_use(self.root)[0]
            if name is not None and name in record.names:  # by name
                remaining = [n for n in record.names if n != name]
                if running and not remaining and not force:
                    raise ImageError(f'conflict: unable to remove repository reference "{familiar_name(name)}" '
                                     f"(must force) - a running container (pybuild run) is using its "
                                     f"referenced image {record.id.short}")
                conn.execute("DELETE FROM images WHERE name=?", (name,))
                events.append(RemoveEvent("Untagged", familiar_name(name)))
                if remaining or running:
                    return events  # running: the image stays, untagged, as docker keeps it
            elif running:
                raise ImageError(f"conflict: unable to delete {record.id.short} (cannot be forced) - image "
                                 "is being used by a running container (pybuild run)")
            else:
                repos = {split_familiar(n)[0] for n in record.names}
                if len(repos) > 1 and not force:
                    raise ImageError(
                        f"conflict: unable to delete {record.id.short} (must be forced) - "
                        "image is referenced in multiple repositories"
                    )
                for tagged in record.names:
                    conn.execute("DELETE FROM images WHERE name=?", (tagged,))
                    events.append(RemoveEvent("Untagged", familiar_name(tagged)))
            # The image goes: every manifest of this ID that no tag still names.
            conn.execute(
                "DELETE FROM manifests WHERE config_digest=? AND NOT EXISTS "
                "(SELECT 1 FROM images i WHERE i.manifest_digest = manifests.digest)",
                (record.config_digest,),
            )
            events.append(RemoveEvent("Deleted", record.config_digest))
        return events

    # --- snapshots ---------------------------------------------------------------------

    def snapshot(self, image: Image, check: Callable[[], None] | None = None) -> list[Path]:
        """The image's layers unpacked, one dir per layer, base first (overlay lower dirs).

        Missing snapshots are extracted; processes that race for the same one
        each extract it and the first rename wins. ``check`` may raise to stop an
        extraction midway (a cancelled build); what it had extracted is removed.
        """
        diff_ids = list(image.config_file().diff_ids)
        chains = chain_ids(diff_ids)
        layers = list(image.layers())
        paths: list[Path] = []
        parent: Digest | None = None
        with self.gc_lock.shared():
            if any(not self.snapshots.exists(chain) for chain in chains):
                sweep_temp(self.tmp_dir)  # half-extracted snapshots of killed processes
            for layer, diff_id, chain in zip(layers, diff_ids, chains, strict=True):
                row = self.db.query_one("SELECT size FROM snapshots WHERE chain_id=?", (chain,))
                if row is None or not self.snapshots.exists(chain):
                    if self.snapshots.exists(chain):  # left by a crash before its row: adopt it
                        size = self.diff_size(diff_id) or 0
                    else:
                        try:
                            with layer.uncompressed() as stream:
                                size, content = self.snapshots.create(chain, diff_id, stream, check)
                        except ImageError:
                            self._forget_claim(diff_id, layer.digest())
                            raise
                        # the tar hashed to diff_id: a pull's claim for this blob is now checked
                        with self.db.transaction() as conn:
                            conn.execute("UPDATE layers SET verified=1 WHERE diff_id=? AND blob_digest=?",
                                         (diff_id, layer.digest()))
                            conn.execute("INSERT OR IGNORE INTO diffs VALUES (?,?)", (diff_id, size))
                            if content is not None:
                                conn.execute("INSERT OR IGNORE INTO diff_content VALUES (?,?)",
                                             (diff_id, content))
                    with self.db.transaction() as conn:
                        conn.execute(
                            "INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?,?)",
                            (chain, diff_id, parent, size, now()),
                        )
                paths.append(self.snapshots.path(chain))
                parent = chain
            if chains:
                with self.db.transaction() as conn:
                    conn.execute(
                        f"UPDATE snapshots SET last_used=? WHERE chain_id IN ({_marks(chains)})",
                        [now(), *chains],
                    )
        return paths

    # --- maintenance -------------------------------------------------------------------

    def usage(self) -> int:
        """Bytes the store holds: blobs, snapshots (tar size) and metadata."""
        blobs = self.db.aggregate("SELECT COALESCE(SUM(size), 0) AS s FROM blobs")["s"]
        snaps = self.db.aggregate("SELECT COALESCE(SUM(size), 0) AS s FROM snapshots")["s"]
        # The database file itself; its WAL is transient (checkpointed back into it).
        meta = (self.root / "meta.db").stat().st_size
        return int(blobs) + int(snaps) + meta

    def prune(self, keep_storage: int | None = None, *, remove_all: bool = False) -> PruneReport:
        from cache.gc import prune

        return prune(self, keep_storage=keep_storage, remove_all=remove_all)

    def check(self, repair: bool = False) -> CheckReport:
        from cache.gc import check

        return check(self, repair=repair)

    def image_config(self, record: ImageRecord) -> ConfigFile:
        return ConfigFile.from_bytes(
            read_verified(BlobFileSource(self.blobs),
                          Descriptor("", record.config_digest, self._blob_size(record.config_digest)),
                          "image config")
        )

    def manifest(self, record: ImageRecord) -> Manifest:
        raw = read_verified(BlobFileSource(self.blobs),
                            Descriptor(record.media_type, record.manifest_digest,
                                       self._blob_size(record.manifest_digest)), "manifest")
        parsed = Manifest.from_bytes(raw)
        return parsed


class BuildLayers:
    """How the build engine puts the layers it makes into a Store.

    A RUN or COPY step writes its layer tar into the store's tmp/ (hashing it
    as it goes); ``add_tar`` renames that file into blobs/ instead of copying
    it, and ``adopt_snapshot`` turns a RUN step's overlay upper dir, which
    already holds the layer in snapshot form, into the next snapshot, so the
    following step does not extract it again. The engine holds
    ``store.gc_lock.shared()`` for the whole build, so prune cannot collect
    these layers before the image that references them is written.
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def add_tar(self, path: Path, stats: LayerStats) -> BlobLayer:
        """Install an uncompressed layer tar (already hashed as ``stats`` says) by rename."""
        store = self.store
        digest, size, content = stats.diff_id, stats.size, stats.content
        with open(path, "rb") as f:
            os.fsync(f.fileno())
        store.blobs._install(path, digest, size)
        t = now()
        with store.db.transaction() as conn:
            conn.execute(
                "INSERT INTO blobs(digest, size, media_type, last_used) VALUES (?,?,?,?) "
                "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                (digest, size, MediaType.OCI_LAYER.value, t),
            )
            conn.execute(PAIR_VERIFIED, (digest, Compression.NONE.value, digest))
            conn.execute("INSERT OR IGNORE INTO diffs VALUES (?,?)", (digest, size))
            conn.execute("INSERT OR IGNORE INTO diff_content VALUES (?,?)", (digest, content))
        return self.layer(digest)

    def layer(self, diff_id: str) -> BlobLayer:
        """A held layer as a Layer value, in the form the store has (uncompressed preferred)."""
        store = self.store
        row = store.db.query_one(
            "SELECT l.blob_digest, l.compression, l.verified, b.size FROM layers l JOIN blobs b "
            "ON b.digest = l.blob_digest WHERE l.diff_id=? "
            "ORDER BY l.verified DESC, l.compression = 'none' DESC",
            (diff_id,),
        )
        if row is None:
            raise ImageNotFoundError(f"layer {diff_id} is not in the store")
        store._checked(diff_id, row)
        media_type = layer_media_type(Compression(row["compression"]))
        desc = Descriptor(media_type, Digest(row["blob_digest"]), row["size"])
        return BlobLayer(BlobFileSource(store.blobs), desc, Digest(diff_id))

    def has_snapshot(self, chain_id: str) -> bool:
        return self.store.snapshots.exists(chain_id)

    def adopt_snapshot(self, chain_id: str, diff_id: str, parent: str | None, directory: Path,
                       size: int) -> Path:
        """Make ``directory`` (in the store's tmp/) the snapshot ``chain_id``; returns its path."""
        store = self.store
        final = store.snapshots.path(chain_id)
        if final.is_dir():
            from cache.blobs import remove_tree

            remove_tree(directory)
        else:
            from builder.layers.extract import syncfs

            syncfs(directory)  # the upper dir's files are durable before it becomes a snapshot
            try:
                os.rename(directory, final)
            except OSError:
                if not final.is_dir():
                    raise
                from cache.blobs import remove_tree

                remove_tree(directory)
        with store.db.transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO snapshots VALUES (?,?,?,?,?)",
                         (chain_id, diff_id, parent, size, now()))
        return final


def open_store(root: Path | None = None) -> Store:
    return Store(root)
