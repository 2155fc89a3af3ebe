"""The shared build cache: export to and import from a registry or an OCI layout directory.

The cache is an OCI artifact: an image manifest whose config blob
(``application/vnd.pybuild.cache.config.v1+json``) lists records, key ->
{parent, diff_id, the layer blob, container config, author, history entry,
inputs}, in the spirit of BuildKit's ``application/vnd.buildkit.cacheconfig.v0``,
and whose layers are the compressed layer blobs those records need (plus, with
``cache-mounts=true``, one gzip tar per RUN cache mount).

The artifact is an image manifest (BuildKit's ``image-manifest=true``, which
registries such as ECR need), or with ``image-manifest=false`` an index (OCI's,
or docker's manifest list with ``oci-mediatypes=false``) listing the layers and
the config, BuildKit's older shape; an import reads both.

Import is cheap: only the manifest and the config are fetched. A lookup that
misses the local records asks the imported ones; a hit replays the record with
a :class:`FetchingLayer`, which downloads its blob into the store the first
time something reads it: when the final image is written, or when a later
miss needs the layer as a lower dir. Layers nothing reads never travel.

Writers never leave a ref unreadable: blobs go first and the manifest last (a
registry's manifest PUT is atomic); a layout directory's ``index.json`` is
replaced by rename under a lock file, merged with what other writers put there.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import io
import json
import os
import stat
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from builder.errors import (
    CacheError,
    DigestMismatchError,
    ImageNotFoundError,
    PybuildError,
    RegistryError,
    UsageError,
)
from builder.fileio import BeneathError, Directory, open_binary, open_regular
from builder.image.descriptor import Descriptor, canonical_json
from builder.image.digest import Digest, HashingReader, VerifyingReader
from builder.image.image import BlobLayer, BlobSource, read_verified
from builder.image.manifest import Index, Manifest
from builder.image.mediatypes import Compression, MediaType, layer_compression, layer_media_type
from builder.layers.compression import CHUNK, open_decompressed
from cache.blobsources import BlobSources
from cache.db import now
from cache.records import INLINE_KEY, CacheRecords, StepResult

if TYPE_CHECKING:
    from builder.image.image import Layer
    from builder.progress import Progress
    from builder.registry.client import ClientOptions
    from cache.store import Store

CONFIG_VERSION = 1
REF_ANNOTATION = "org.opencontainers.image.ref.name"
LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
MAX_CONFIG_SIZE = 256 << 20
TRANSFER_WORKERS = 4


def _import_options() -> ClientOptions:
    from builder.registry.client import ClientOptions

    return ClientOptions(read_timeout=30.0, deadline=60.0)


class CacheType(StrEnum):
    REGISTRY = "registry"
    LOCAL = "local"
    INLINE = "inline"  # --cache-to only: the records ride in the image's own config




class CacheMode(StrEnum):
    MIN = "min"  # the final image's steps only
    MAX = "max"  # every step of every stage built


# --- specs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class CacheSpec:
    """One ``--cache-from`` or ``--cache-to`` value."""

    type: CacheType
    ref: str = ""  # type=registry
    path: Path | None = None  # type=local: the layout directory
    tag: str = "latest"  # type=local: the index.json entry's ref name
    digest: str = ""  # type=local import: this manifest among the blobs (an older export), not the tag's
    mode: CacheMode = CacheMode.MIN
    compression: Compression = Compression.GZIP
    # --cache-to, BuildKit's: a layer held compressed otherwise goes as it is unless forced
    force_compression: bool = False
    compression_level: int | None = None  # where a layer is compressed for the export
    oci_mediatypes: bool = True  # false: docker's layer types (and manifest list)
    image_manifest: bool = True  # false: the artifact is an index of the blobs
    cache_mounts: bool = False
    ignore_error: bool = False  # --cache-to: a failed export only warns

    @property
    def description(self) -> str:
        if self.type is CacheType.REGISTRY:
            return self.ref
        if self.type is CacheType.INLINE:
            return "inline (in the image config)"
        if self.digest:
            return f"{self.path}@{self.digest}"
        return str(self.path) if self.tag == "latest" else f"{self.path} (tag {self.tag})"

    @classmethod
    def parse(cls, text: str, *, export: bool) -> CacheSpec:
        """``type=registry,ref=R[,mode=..][,compression=..][,cache-mounts=true]``, ``type=local,
        dest=DIR`` / ``src=DIR``; a bare ``REF`` means ``type=registry,ref=REF``."""
        flag = "--cache-to" if export else "--cache-from"
        if not text.strip():
            raise UsageError(f"invalid {flag} value '': expected a registry ref or type=...,key=value pairs")
        # A bare REF means type=registry,ref=REF; messages quote what was typed.
        fields_text = text if "=" in text.split(",", 1)[0] else f"type=registry,ref={text}"
        fields: dict[str, str] = {}
        for part in fields_text.split(","):
            key, sep, value = part.partition("=")
            if not sep or not key.strip():
                raise UsageError(f"invalid {flag} value {text!r}: expected key=value pairs, got {part!r}")
            fields[key.strip().lower()] = value.strip()
        try:
            kind = CacheType(fields.pop("type", "registry"))
        except ValueError:
            raise UsageError(f"invalid {flag} value {text!r}: type must be registry, local or inline") from None
        mode = _choice(fields.pop("mode", "min"), CacheMode, flag, "mode")
        compression = _choice(fields.pop("compression", "gzip"), Compression, flag, "compression")
        if compression is Compression.NONE:
            raise UsageError(f"invalid {flag} value {text!r}: compression must be gzip or zstd")
        from builder.layers.compression import parse_compression_level

        def flag_value(name: str, default: bool) -> bool:
            value = fields.pop(name, None)
            if value is None:
                return default
            if value.lower() in ("true", "1", ""):
                return True
            if value.lower() in ("false", "0"):
                return False
            raise UsageError(f"invalid {flag} value {text!r}: {name} must be true or false")

        level = parse_compression_level(fields.pop("compression-level", None), compression, f"{flag} value {text!r}")
        oci = flag_value("oci-mediatypes", True)
        image_manifest = flag_value("image-manifest", oci)  # BuildKit's default: a manifest, with OCI types
        if image_manifest and not oci:
            raise UsageError(f"invalid {flag} value {text!r}: image-manifest=true needs oci-mediatypes=true "
                             "(a docker manifest has no artifact type to mark a cache)")
        if compression is Compression.ZSTD and not oci:
            raise UsageError(f"invalid {flag} value {text!r}: compression=zstd needs oci-mediatypes=true "
                             "(docker's media types have no zstd layer)")
        fields.pop("name", None)  # buildx's, for an image exporter: nothing for a cache
        common = {"mode": mode, "compression": compression, "cache_mounts": flag_value("cache-mounts", False),
                  "ignore_error": flag_value("ignore-error", False),
                  "force_compression": flag_value("force-compression", False), "compression_level": level,
                  "oci_mediatypes": oci, "image_manifest": image_manifest}
        if kind is CacheType.INLINE:
            if not export:
                raise UsageError(f"invalid {flag} value {text!r}: an inline cache is read from its image: "
                                 "--cache-from REF")
            if mode is CacheMode.MAX:
                raise UsageError(f"invalid {flag} value {text!r}: an inline cache holds the final image's "
                                 "steps only (mode=min); use type=registry for mode=max")
            spec = cls(CacheType.INLINE, **common)
        elif kind is CacheType.REGISTRY:
            ref = fields.pop("ref", "")
            if not ref:
                raise UsageError(f"invalid {flag} value {text!r}: type=registry needs ref=")
            from builder.image.reference import Reference

            try:  # a typo in the ref fails before the build, not after it
                parsed = Reference.parse(ref)
            except PybuildError as err:
                raise UsageError(f"invalid {flag} value {text!r}: {err}") from None
            if export and parsed.digest is not None:  # the cache written has a digest of its own
                raise UsageError(f"invalid {flag} value {text!r}: a cache is written under a tag, "
                                 "not a digest")
            spec = cls(CacheType.REGISTRY, ref=ref, **common)
        else:
            where = fields.pop("dest" if export else "src", "")
            if not where:
                raise UsageError(
                    f"invalid {flag} value {text!r}: type=local needs {'dest' if export else 'src'}=DIR")
            digest = fields.pop("digest", "")
            if digest and export:
                raise UsageError(f"invalid {flag} value {text!r}: digest= picks a cache to import "
                                 "(--cache-from); an export is named by tag=")
            if digest:
                try:
                    digest = Digest(digest)
                except PybuildError as err:
                    raise UsageError(f"invalid {flag} value {text!r}: {err}") from None
            spec = cls(CacheType.LOCAL, path=Path(where), tag=fields.pop("tag", "latest") or "latest",
                       digest=digest, **common)
        if fields:
            raise UsageError(f"invalid {flag} value {text!r}: unknown option {sorted(fields)[0]!r}")
        return spec


def _choice(value: str, enum: Any, flag: str, what: str) -> Any:
    try:
        return enum(value.lower())
    except ValueError:
        allowed = "|".join(m.value for m in enum)
        raise UsageError(f"invalid {flag} {what} {value!r}: expected {allowed}") from None


# --- where a cache lives ------------------------------------------------------------------

class CacheTarget(Protocol):
    """A place holding one cache artifact: its manifest, and blobs by digest."""

    description: str

    def read_manifest(self) -> bytes | None:
        """The artifact's manifest bytes, or None when there is none yet."""

    def read_child(self, descriptor: Descriptor) -> bytes:
        """A manifest that the ref's index names (verified against ``descriptor``)."""

    def blob_source(self) -> BlobSource:
        """Where the artifact's blobs are opened."""

    def put_blob(self, descriptor: Descriptor, opener: Callable[[], BinaryIO]) -> None:
        """Make the target hold the blob (skipped when it already does)."""

    def put_manifest(self, raw: bytes, media_type: str = MediaType.OCI_MANIFEST.value) -> None:
        """Point the ref at this manifest (or index), atomically; every blob it names is already there."""

    def close(self) -> None:
        """Release connections."""


class RegistryTarget:
    """A cache under a registry ref (a tag or digest)."""

    def __init__(self, ref: str, insecure_registries: Sequence[str] = (),
                 known: BlobSources | None = None, options: ClientOptions | None = None) -> None:
        """``known``: the store's records of where blobs live, to mount the cache's layers from
        another repository of the registry (an image pushed there) and to record them.
        ``options``: the client's (its insecure registries are these ``insecure_registries``)."""
        from builder.image.reference import Reference
        from builder.registry.client import ClientOptions, RegistryClient

        try:
            self.ref = Reference.parse(ref)
        except PybuildError as err:
            raise UsageError(f"invalid cache ref {ref!r}: {err}") from None
        self.description = ref
        self.known = known
        self.client = RegistryClient(self.ref.registry, replace(
            options or ClientOptions(), insecure_registries=frozenset(insecure_registries)))

    def read_manifest(self) -> bytes | None:
        from builder.errors import RemoteImageNotFoundError

        try:
            # Every kind accepted, or a registry may down-convert a docker image to schema 1.
            raw, _ = self.client.get_manifest(self.ref.repository, self.ref.identifier, (
                MediaType.OCI_MANIFEST.value, MediaType.DOCKER_MANIFEST.value,
                MediaType.OCI_INDEX.value, MediaType.DOCKER_MANIFEST_LIST.value))
        except RemoteImageNotFoundError:
            return None
        if self.ref.digest is not None and Digest.of(raw) != self.ref.digest:
            raise CacheError(f"cache {self.description}: the registry sent a manifest with another digest")
        return raw

    def read_child(self, descriptor: Descriptor) -> bytes:
        """A manifest an index names."""
        raw, _ = self.client.get_manifest(self.ref.repository, str(descriptor.digest), (
            MediaType.OCI_MANIFEST.value, MediaType.DOCKER_MANIFEST.value))
        if Digest.of(raw) != descriptor.digest:
            raise CacheError(f"cache {self.description}: the registry sent a manifest with another digest")
        return raw

    def blob_source(self) -> BlobSource:
        from builder.registry.remote import RemoteBlobSource

        return RemoteBlobSource(self.client, self.ref.repository)

    def put_blob(self, descriptor: Descriptor, opener: Callable[[], BinaryIO]) -> None:
        from builder.registry.remote import PushBlob, upload_blob

        registry, repository, digest = self.client.registry, self.ref.repository, str(descriptor.digest)
        sources: list[str] = []
        refused = None
        if self.known is not None:
            sources = self.known.candidates(registry, [digest], exclude=repository).get(digest, [])
            refused = functools.partial(self.known.forget, registry, digest=digest)
        upload_blob(self.client, repository, PushBlob(descriptor, opener, "cache"),
                    mount_from=sources, refused=refused)

    def put_manifest(self, raw: bytes, media_type: str = MediaType.OCI_MANIFEST.value) -> None:
        identifier = self.ref.tag or str(Digest.of(raw))
        self.client.put_manifest(self.ref.repository, identifier, raw, media_type)
        if self.known is not None:
            manifest = _cache_manifest(raw, self.description)
            self.known.record(self.client.registry, self.ref.repository,
                              [manifest.config.digest, *(d.digest for d in manifest.layers)])

    def close(self) -> None:
        self.client.close()


class _DirBlobSource:
    """The blobs of a cache directory, each opened below its root (the user's ``src=DIR``, opened
    anew for each) through descriptors: see :class:`builder.fileio.Directory`."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _open(self, d: Digest) -> BinaryIO:
        """The blob file; FileNotFoundError when absent, BeneathError when it is no regular file
        below the root (a FIFO, a link out of the directory)."""
        try:
            root = Directory.open(self.root)
        except NotADirectoryError:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), str(self.root)) from None
        with root:
            return root.open_beneath(f"blobs/{d.algorithm}/{d.hex}")

    def has_blob(self, descriptor: Descriptor) -> bool:
        """Whether the blob is there; one of another size (a copy of the directory cut short, a
        full disk: writers rename only whole blobs into place) is damaged, an error."""
        d = Digest(descriptor.digest)
        try:
            with self._open(d) as f:
                size = os.fstat(f.fileno()).st_size
        except (FileNotFoundError, NotADirectoryError, BeneathError):
            return False
        except OSError as err:
            raise CacheError(f"cannot read {self.root / 'blobs' / d.algorithm / d.hex}: "
                             f"{err.strerror or err}") from None
        if size != descriptor.size:
            raise CacheError(f"its blob is {size} bytes, not {descriptor.size}")
        return True

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        d = Digest(descriptor.digest)
        try:
            return self._open(d)
        except FileNotFoundError:
            raise CacheError(f"cache {self.root}: blob {d} is missing") from None
        except BeneathError as err:  # a FIFO planted in a shared directory would block the build
            raise CacheError(f"cache {self.root}: blob {d}: {err}") from None

    def discard_damaged(self, descriptor: Descriptor) -> bool:
        """Remove the blob if its bytes do not hash to its name (hashed again here: a writer
        may have put a whole one in place meanwhile), so that the next build runs its step
        and an export writes it anew, rather than every build failing on it. False when it
        is whole, gone, or cannot be removed (a read-only share)."""
        d = Digest(descriptor.digest)
        try:
            with Directory.open(self.root) as root, root.subdir(f"blobs/{d.algorithm}") as blobs:
                with blobs.open_beneath(d.hex) as f:
                    if _stream_digest(f) == d:
                        return False
                os.unlink(d.hex, dir_fd=blobs.fd)
        except (OSError, BeneathError):
            return False
        return True


class LocalTarget:
    """A cache in an OCI image layout directory (a shared file system), as entry ``tag``.

    Others write there too: everything below the directory goes through its descriptor
    (:class:`builder.fileio.Directory`), so that a part swapped for a symlink meanwhile is
    refused or never reached, and nothing is written out of the directory."""

    def __init__(self, path: Path, tag: str = "latest", digest: str = "") -> None:
        """``digest``: read that manifest (an older export, still among the blobs) instead of
        the one ``tag`` names now, as BuildKit's ``digest=``."""
        self.root = Path(path)
        self.tag = tag
        self.digest = digest
        self.description = f"{self.root}@{digest}" if digest else f"{self.root}:{tag}"

    def _index(self, root: Directory) -> dict[str, Any]:
        try:
            data = json.loads(root.read("index.json", MAX_CONFIG_SIZE))
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value, "manifests": []}
        except (OSError, ValueError) as err:
            raise CacheError(f"cache {self.root}: index.json is unreadable: {err}") from None
        if not isinstance(data, dict) or not isinstance(data.get("manifests", []), list):
            raise CacheError(f"cache {self.root}: index.json is not an OCI index")
        return data

    def read_manifest(self) -> bytes | None:
        try:
            root = Directory.open(self.root)
        except (FileNotFoundError, NotADirectoryError):
            return None
        with root:
            if self.digest:
                d = Digest(self.digest)
                try:
                    with root.open_beneath(f"blobs/{d.algorithm}/{d.hex}") as f:
                        size = os.fstat(f.fileno()).st_size
                except FileNotFoundError:
                    return None
                except BeneathError as err:
                    raise CacheError(f"cache {self.description}: {err}") from None
                if size > MAX_CONFIG_SIZE:
                    raise CacheError(f"cache {self.description}: a manifest of {size} bytes is too large")
                return read_verified(_DirBlobSource(self.root),
                                     Descriptor(MediaType.OCI_MANIFEST.value, d, size), "cache manifest")
            entries = self._index(root).get("manifests", [])
        for entry in entries:
            if (entry.get("annotations") or {}).get(REF_ANNOTATION) == self.tag:
                desc = Descriptor.from_dict(entry)
                return read_verified(_DirBlobSource(self.root), desc, "cache manifest")
        return None

    def read_child(self, descriptor: Descriptor) -> bytes:
        return read_verified(_DirBlobSource(self.root), descriptor, "manifest")

    def blob_source(self) -> BlobSource:
        return _DirBlobSource(self.root)

    def _refused(self, err: BeneathError) -> CacheError:
        """A link (or another kind of file) where the cache keeps a directory of its own."""
        return CacheError(f"cannot write cache {self.root}: {err}; pybuild writes only into the cache's own "
                          "directories")

    def put_blob(self, descriptor: Descriptor, opener: Callable[[], BinaryIO]) -> None:
        d = Digest(descriptor.digest)
        try:
            with Directory.open(self.root, create=True) as root, \
                    root.subdir(f"blobs/{d.algorithm}", create=True) as blobs:
                st = blobs.lstat(d.hex)
                if st is not None and stat.S_ISREG(st.st_mode) and st.st_size == descriptor.size:
                    return
                with opener() as src, blobs.replacing(d.hex) as out:
                    reader = VerifyingReader(src, d, descriptor.size, f"cache blob {d.short}")
                    while chunk := reader.read(CHUNK):
                        out.write(chunk)
        except BeneathError as err:  # a link planted in a shared directory: blobs would go out of it
            raise self._refused(err) from None

    def put_manifest(self, raw: bytes, media_type: str = MediaType.OCI_MANIFEST.value) -> None:
        artifact = MediaType.PYBUILD_CACHE_CONFIG.value if media_type == MediaType.OCI_MANIFEST else None
        desc = Descriptor.of(media_type, raw, annotations={REF_ANNOTATION: self.tag}, artifact_type=artifact)
        self.put_blob(desc, lambda: io.BytesIO(raw))
        with Directory.open(self.root, create=True) as root:
            if root.lstat("oci-layout") is None:
                with root.replacing("oci-layout") as f:
                    f.write(LAYOUT_FILE)
            with root.locked(".pybuild-cache.lock"):
                _sweep_stale_temps(root)
                index = self._index(root)
                kept = [e for e in index.get("manifests", [])
                        if (e.get("annotations") or {}).get(REF_ANNOTATION) != self.tag]
                index["manifests"] = [*kept, desc.to_dict()]
                index.setdefault("schemaVersion", 2)
                index.setdefault("mediaType", MediaType.OCI_INDEX.value)
                with root.replacing("index.json") as f:
                    f.write(json.dumps(index, indent=2).encode())

    def close(self) -> None:
        pass


STALE_TEMP_SECONDS = 3600


def _sweep_stale_temps(root: Directory) -> None:
    """Remove the temp files of writers killed mid-export.

    The directory may be shared by several machines, so a writer's pid says
    nothing here; a live writer keeps its file's mtime fresh, a dead one's
    file is untouched for an hour.
    """
    limit = now() - STALE_TEMP_SECONDS
    try:
        blobs = root.subdir("blobs/sha256")
    except (OSError, BeneathError):
        blobs = None
    for folder in (root, blobs):
        if folder is None:
            continue
        try:
            names = os.listdir(folder.fd)
        except OSError:
            continue
        for name in names:
            if not (name.startswith(".") and name.endswith(".tmp")):
                continue
            with contextlib.suppress(OSError):
                if os.lstat(name, dir_fd=folder.fd).st_mtime < limit:
                    os.unlink(name, dir_fd=folder.fd)
    if blobs is not None:
        blobs.close()


def open_target(spec: CacheSpec, insecure_registries: Sequence[str] = (),
                known: BlobSources | None = None, options: ClientOptions | None = None) -> CacheTarget:
    if spec.type is CacheType.REGISTRY:
        return RegistryTarget(spec.ref, insecure_registries, known, options)
    assert spec.path is not None
    return LocalTarget(spec.path, spec.tag, spec.digest)


# --- import -----------------------------------------------------------------------------

@dataclass(frozen=True)
class ImportedRecord:
    """A cache record read from a shared cache; its layer stays there until read."""

    key: str
    parent: str
    result: StepResult
    layer: Descriptor | None
    inputs: dict[str, Any]
    source: BlobSource
    origin: str


class FetchingLayer:
    """A layer of an imported record: downloaded into the store the first time it is read.

    After that it is an ordinary store layer (blob + layer-form rows), so the
    final image's write and later builds find it there and nothing is fetched twice.
    """

    def __init__(self, cache: ImportedCache, record: ImportedRecord) -> None:
        assert record.layer is not None and record.result.diff_id is not None
        self._cache = cache
        self._record = record
        self._desc: Descriptor = record.layer
        self._diff_id = Digest(record.result.diff_id)

    def digest(self) -> Digest:
        return self._desc.digest

    def diff_id(self) -> Digest:
        return self._diff_id

    def size(self) -> int:
        return self._desc.size

    def media_type(self) -> str:
        return self._desc.media_type

    def descriptor(self) -> Descriptor:
        return self._desc

    def compressed(self) -> BinaryIO:
        return self._cache.fetch(self._record).compressed()

    def uncompressed(self) -> BinaryIO:
        return self._cache.fetch(self._record).uncompressed()

    def __repr__(self) -> str:
        return f"FetchingLayer({self._desc.digest.short}, diff_id={self._diff_id.short})"


@dataclass
class ImportStats:
    records: int = 0
    hits: int = 0
    layers_fetched: int = 0
    bytes_fetched: int = 0
    mounts_seeded: int = 0


class ImportedCache:
    """The records of every ``--cache-from``, merged (the first source naming a key wins)."""

    def __init__(self, store: Store, progress: Progress | None = None) -> None:
        self.store = store
        self.progress = progress
        self.records: dict[str, ImportedRecord] = {}
        self.later: dict[str, list[ImportedRecord]] = {}  # a key's records in later --cache-froms
        self.mounts: dict[str, list[tuple[Descriptor, BlobSource, str]]] = {}  # id -> [blob, source, origin]
        self.stats = ImportStats()
        self._targets: list[CacheTarget] = []
        self._lock = threading.Lock()
        self._fetch_locks: dict[str, threading.Lock] = {}

    def load(self, spec: CacheSpec, insecure_registries: Sequence[str] = (),
             options: ClientOptions | None = None) -> int:
        """Read one cache's manifest and config; returns how many records it added.

        A cache that does not exist yet is not an error (the first build of a
        farm has nothing to import): BuildKit only warns, and so does this. Nor is a registry
        that does not answer: each request gives up after ``options.deadline``
        (30 s a read, 60 s a request), and the build runs without that cache.
        """
        target = open_target(spec, insecure_registries, options=options or _import_options())
        self._targets.append(target)
        try:
            raw = target.read_manifest()
        except OSError as err:
            raise CacheError(f"cannot read cache {target.description}: {err.strerror or err}") from None
        if raw is None:
            self._warn(f"cache {target.description} not found: building without it")
            return 0
        manifest = _image_manifest(target, raw)
        if manifest.config.media_type in (MediaType.OCI_CONFIG, MediaType.DOCKER_CONFIG):
            added = self._load_inline(target, manifest)
            self.stats.records += added
            return added
        if manifest.config.media_type != MediaType.PYBUILD_CACHE_CONFIG:
            raise CacheError(
                f"cache {target.description} is not a pybuild cache (its config is "
                f"{manifest.config.media_type or 'untyped'})")
        if manifest.config.size > MAX_CONFIG_SIZE:
            raise CacheError(f"cache {target.description}: config of {manifest.config.size} bytes is too large")
        source = target.blob_source()
        config = read_cache_config(read_verified(source, manifest.config, "cache config"),
                                   target.description)
        blobs = {str(d.digest): d for d in manifest.layers}
        added = 0
        for item in config.get("records", []):
            try:
                record = _record_from_json(item, blobs, source, target.description)
            except (KeyError, TypeError, ValueError, AttributeError, PybuildError) as err:
                raise CacheError(f"cache {target.description}: invalid record: {err}") from None
            if record.key not in self.records:
                self.records[record.key] = record
                added += 1
            else:
                self.later.setdefault(record.key, []).append(record)
        for desc in manifest.layers:
            cache_id = (desc.annotations or {}).get(_mount_annotation())
            if desc.media_type == MediaType.PYBUILD_CACHE_MOUNT and cache_id:  # in --cache-from order
                self.mounts.setdefault(cache_id, []).append((desc, source, target.description))
        self.stats.records += added
        return added

    def _load_inline(self, target: CacheTarget, manifest: Manifest) -> int:
        """An image built with ``--cache-to type=inline``: its records, whose layers are its own."""
        if manifest.config.size > MAX_CONFIG_SIZE:
            raise CacheError(f"image {target.description}: config of {manifest.config.size} bytes is too large")
        source = target.blob_source()
        try:
            config = json.loads(read_verified(source, manifest.config, "image config"))
            inline = config.get(INLINE_KEY)
            diff_ids = list(config["rootfs"]["diff_ids"])
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise CacheError(f"image {target.description}: unreadable config ({err})") from None
        if inline is None:
            self._warn(f"image {target.description} carries no build cache (build it with "
                       "--cache-to type=inline): building without it")
            return 0
        if not isinstance(inline, dict) or inline.get("version") != CONFIG_VERSION:
            found = inline.get("version") if isinstance(inline, dict) else None
            raise CacheError(f"image {target.description}: its inline cache is version {found!r}; "
                             f"this pybuild reads version {CONFIG_VERSION}")
        added = 0
        for item in inline.get("records", []):
            try:
                index = item.get("layer")
                if index is not None:
                    if not (isinstance(index, int) and 0 <= index < len(manifest.layers) == len(diff_ids)):
                        raise ValueError(f"layer index {index!r} is not one of the image's")
                    if item["result"].get("diff_id") != diff_ids[index]:
                        raise ValueError(f"layer {index} of the image is not the record's")
                    item = {**item, "layer": str(manifest.layers[index].digest)}
                record = _record_from_json(item, {str(d.digest): d for d in manifest.layers}, source,
                                           target.description)
            except (KeyError, TypeError, ValueError, AttributeError, PybuildError) as err:
                raise CacheError(f"image {target.description}: invalid inline cache record: {err}") from None
            if record.key not in self.records:
                self.records[record.key] = record
                added += 1
            else:
                self.later.setdefault(record.key, []).append(record)
        return added

    def _warn(self, text: str) -> None:
        if self.progress is not None:
            self.progress.warning(text)

    def get(self, key: str) -> ImportedRecord | None:
        return self.records.get(key)

    def sibling(self, parent: str, stage: str, exclude: str, display: str = "") -> tuple[str, dict[str, Any]] | None:
        """The imported build of the step after ``parent`` in ``stage`` (its key and inputs):
        the earlier build a miss is explained by on a machine that built none itself."""
        from cache.records import pick_sibling

        return pick_sibling(((r.key, r.inputs) for r in self.records.values()
                             if r.parent == parent and r.key != exclude), stage, display)

    def follows(self, parent: str, stage: str, display: str) -> bool:
        """Whether an imported step ``display`` of ``stage`` was built on ``parent``."""
        return any(r.parent == parent and r.inputs.get("stage") == stage and r.inputs.get("display") == display
                   for r in self.records.values())

    def layer(self, record: ImportedRecord) -> Layer:
        """The record's layer: the store's when it holds it and knows the record's blob to be
        that layer (:meth:`_held`), else one fetched (and checked) when read."""
        assert record.result.diff_id is not None
        from cache.store import BuildLayers

        if self._held(record):
            with contextlib.suppress(ImageNotFoundError):
                return BuildLayers(self.store).layer(record.result.diff_id)
        return FetchingLayer(self, record)

    def _held(self, record: ImportedRecord) -> bool:
        """Whether the store holds the record's layer *and* has itself seen the record's blob
        unpack to it. A record is only a claim: one naming the diff_id of a layer of another
        image of this store (a private one, its digest seen in a log) with a blob the cache
        does not hold, or one that is not that layer, would have put that layer into this
        build's image without the cache ever giving its bytes."""
        from cache.store import BuildLayers

        assert record.layer is not None and record.result.diff_id is not None
        try:
            BuildLayers(self.store).layer(record.result.diff_id)
        except ImageNotFoundError:
            return False
        if str(record.layer.digest) == str(record.result.diff_id):
            return True  # an uncompressed blob is its layer
        return self.store.db.query_one(
            "SELECT 1 FROM layers WHERE blob_digest=? AND diff_id=? AND verified=1",
            (str(record.layer.digest), str(record.result.diff_id))) is not None

    def usable(self, key: str) -> ImportedRecord | None:
        """The first record of ``key`` whose layer can be had (see :meth:`has_layer`), in
        --cache-from order: one cache that lost the blob does not hide another that has it."""
        first = self.records.get(key)
        if first is None:
            return None
        for record in [first, *self.later.get(key, [])]:
            if self.has_layer(record, warn=False):
                self.records[key] = record  # what get() gives from now on: an export passes it on
                return record
        self.has_layer(first)  # says why its step runs
        return None

    def has_layer(self, record: ImportedRecord, *, warn: bool = True) -> bool:
        """Whether the record's layer can be had: its cache still has the blob (a stat, or a HEAD;
        asked even when the store holds the layer). A hit whose blob is gone from the cache (pruned by hand, a
        registry's garbage collection) reruns its step, warned, rather than fail the build later
        when the layer is read. A blob that is there but damaged is found only when read."""
        if record.layer is None or record.result.diff_id is None:
            return True
        # Asked even when the store holds the layer: the cache must hold the blob its record
        # names (see _held), or this build would take a layer from the store on a mere claim.
        has_blob = getattr(record.source, "has_blob", None)
        if has_blob is None:  # a source that cannot say: found out when read
            return True
        try:
            found = has_blob(record.layer)
        except CacheError as err:
            if warn:
                self._warn(f"cache {record.origin}: layer {record.layer.digest} is damaged ({err}): "
                           "its step runs")
            return False
        except PybuildError as err:
            if warn:
                self._warn(f"cache {record.origin}: layer {record.layer.digest} cannot be checked ({err}): "
                           "its step runs")
            return False
        if not found and warn:
            self._warn(f"cache {record.origin}: layer {record.layer.digest} is missing: its step runs")
        return bool(found)

    def fetch(self, record: ImportedRecord) -> BlobLayer:
        """Download the record's layer blob into the store (once), checking it against its diff_id."""
        from cache.store import BuildLayers

        assert record.layer is not None and record.result.diff_id is not None
        desc, diff_id = record.layer, record.result.diff_id
        with self._lock:
            lock = self._fetch_locks.setdefault(str(desc.digest), threading.Lock())
        with lock:
            layers = BuildLayers(self.store)
            row = self.store.db.query_one(
                "SELECT 1 FROM layers l JOIN blobs b ON b.digest=l.blob_digest WHERE l.blob_digest=? "
                "AND l.diff_id=? AND l.verified=1", (desc.digest, diff_id))
            if row is None or not self.store.blobs.exists(desc.digest):
                self._download(record)
            return BlobLayer(_store_source(self.store), desc, Digest(diff_id)) if self.store.blobs.exists(
                desc.digest) else layers.layer(diff_id)

    def prefetch(self, layers: Iterable[Layer]) -> None:
        """Fetch the imported layers among ``layers`` (the final image's) concurrently."""
        pending = [layer for layer in layers if isinstance(layer, FetchingLayer)]
        _run_all([functools.partial(self.fetch, f._record) for f in pending])

    def _download(self, record: ImportedRecord) -> None:
        from cache.store import PAIR_VERIFIED

        assert record.layer is not None and record.result.diff_id is not None
        desc, diff_id, store = record.layer, Digest(record.result.diff_id), self.store
        if self.progress is not None:
            self.progress.message(f"importing cache layer {desc.digest.short} ({desc.size} bytes) "
                                  f"from {record.origin}")
        with store.gc_lock.shared():
            written = False
            try:
                if not store.blobs.exists(desc.digest):
                    with record.source.open_blob(desc) as stream:
                        store.blobs.write(stream, desc.digest, desc.size)
                    written = True
                compression = layer_compression(desc.media_type)
                with open_decompressed(store.blobs.open(desc.digest, desc.size), compression) as raw:
                    reader = HashingReader(raw)
                    while reader.read(CHUNK):
                        pass
            except CacheError:
                raise
            except PybuildError as err:  # a damaged cache: say which one, keep nothing of it
                if written:
                    store.blobs.delete(desc.digest)
                removed = ""
                if (isinstance(err, DigestMismatchError) and isinstance(record.source, _DirBlobSource)
                        and record.source.discard_damaged(desc)):
                    removed = " (the damaged blob is removed from the cache: the next build runs its step)"
                raise CacheError(f"cache {record.origin}: layer {desc.digest}: {err}{removed}") from None
            if reader.digest() != diff_id:
                store.blobs.delete(desc.digest)
                raise CacheError(
                    f"cache {record.origin}: layer {desc.digest} holds {reader.digest()}, "
                    f"not the diff_id {diff_id} its record names")
            t = now()
            with store.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO blobs(digest, size, media_type, last_used) VALUES (?,?,?,?) "
                    "ON CONFLICT(digest) DO UPDATE SET last_used=excluded.last_used",
                    (desc.digest, desc.size, desc.media_type, t))
                conn.execute(PAIR_VERIFIED, (diff_id, compression.value, desc.digest))
                conn.execute("INSERT OR IGNORE INTO diffs VALUES (?,?)", (diff_id, reader.size))
        from builder.registry.remote import RemoteBlobSource

        if isinstance(record.source, RemoteBlobSource):  # a push there can mount it from the cache
            BlobSources(store.db).record(record.source.client.registry, record.source.repository,
                                         [desc.digest])
        with self._lock:
            self.stats.layers_fetched += 1
            self.stats.bytes_fetched += desc.size

    def seed_mount(self, cache_id: str, *, mode: int | None = None, uid: int | None = None,
                   gid: int | None = None) -> bool:
        """Give a cache mount that does not exist here yet the exported content."""
        from cache.mounts import mount_path, seed_mount

        found = self.mounts.get(cache_id, [])
        if not found or mount_path(self.store.root, cache_id).exists():
            return False
        with self._lock:
            lock = self._fetch_locks.setdefault(f"mount {cache_id}", threading.Lock())
        seeded = False
        with lock:
            for desc, source, origin in found:  # the first --cache-from that can give it
                try:
                    stream = VerifyingReader(source.open_blob(desc), desc.digest, desc.size,
                                             f"cache mount {cache_id}")
                    with stream:
                        seeded = seed_mount(self.store.root, cache_id, stream,  # type: ignore[arg-type]  # a file-like reader, no typing.BinaryIO subclass
                                            mode=mode, uid=uid, gid=gid)
                    break
                except PybuildError as err:
                    # A cache only saves work: a mount it cannot give starts empty, as without it.
                    self._warn(f"cache mount {cache_id} from {origin} not used: {err}")
        if seeded:
            with self._lock:
                self.stats.mounts_seeded += 1
            if self.progress is not None:
                self.progress.message(f"imported cache mount {cache_id}")
        return seeded

    def close(self) -> None:
        for target in self._targets:
            target.close()


def _mount_annotation() -> str:
    from cache.mounts import ID_ANNOTATION

    return ID_ANNOTATION


def _cache_manifest(raw: bytes, where: str) -> Manifest:
    """A cache's manifest, or its index (``image-manifest=false``) read as one: the entry of the
    cache config's type is the config, the others are the layers (and cache mounts)."""
    from builder.image.manifest import parse_manifest

    parsed = parse_manifest(raw)
    if isinstance(parsed, Manifest):
        return parsed
    cache = _index_as_manifest(parsed, where)
    if cache is None:
        raise CacheError(f"cache {where}: an index without a cache config")
    return cache


def _index_as_manifest(index: Index, where: str) -> Manifest | None:
    """A cache index as the manifest it stands for, or None when it is an image's index."""
    configs = [d for d in index.manifests if d.media_type == MediaType.PYBUILD_CACHE_CONFIG]
    if not configs:
        return None
    if len(configs) > 1:
        raise CacheError(f"cache {where}: its index names {len(configs)} cache configs")
    return Manifest(config=configs[0], layers=tuple(d for d in index.manifests if d is not configs[0]),
                    media_type=MediaType.OCI_MANIFEST, annotations=index.annotations)


def _image_manifest(target: CacheTarget, raw: bytes) -> Manifest:
    """The manifest itself; for a cache's index (``image-manifest=false``) the manifest it
    stands for; for an image's index (an image pushed for several platforms), the host's."""
    from builder.image.manifest import parse_manifest
    from builder.image.platform import Platform
    from builder.registry.remote import select_platform

    parsed = parse_manifest(raw)
    if isinstance(parsed, Index) and (cache := _index_as_manifest(parsed, target.description)) is not None:
        return cache
    if isinstance(parsed, Index):
        chosen = select_platform(parsed, Platform.host(), f"cache {target.description}")
        parsed = parse_manifest(target.read_child(chosen))
        if isinstance(parsed, Index):
            raise CacheError(f"cache {target.description}: an index inside an index")
    return parsed


def inline_cache(records: CacheRecords, imported: ImportedCache | None, keys: Sequence[str],
                 diff_ids: Sequence[str]) -> dict[str, Any]:
    """``--cache-to type=inline``: the records of ``keys`` (the final image's steps) for its config,
    each layer named by its index in the image, whose layers carry them."""
    positions = {d: i for i, d in enumerate(diff_ids)}
    entries = []
    for key in keys:
        local = records.get(key)
        remote = imported.get(key) if imported is not None else None
        found = local or remote
        if found is None:
            continue
        entry: dict[str, Any] = {"key": key, "parent": found.parent, "result": found.result.to_json(),
                                 "inputs": found.inputs}
        if found.result.diff_id is not None:
            if found.result.diff_id not in positions:
                continue  # not a layer of this image
            entry["layer"] = positions[found.result.diff_id]
        entries.append(entry)
    return {"version": CONFIG_VERSION, "records": entries}


def _store_source(store: Store) -> BlobSource:
    from cache.store import BlobFileSource

    return BlobFileSource(store.blobs)


def read_cache_config(raw: bytes, where: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise CacheError(f"cache {where}: the config is not JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("records"), list):
        raise CacheError(f"cache {where}: the config has no records list")
    if data.get("version") != CONFIG_VERSION:
        raise CacheError(f"cache {where}: config version {data.get('version')!r} is not supported "
                         f"(this pybuild reads version {CONFIG_VERSION})")
    return data


def _record_from_json(item: dict[str, Any], blobs: dict[str, Descriptor], source: BlobSource,
                      where: str) -> ImportedRecord:
    result = StepResult.from_json(item["result"])
    layer = None
    if result.diff_id is not None:
        digest = item["layer"]
        if digest not in blobs:
            raise ValueError(f"record {item['key']} names layer {digest}, which the manifest does not list")
        layer = blobs[digest]
        layer_compression(layer.media_type)  # refuse unknown layer types now, not mid-build
    key = str(item["key"])
    if not key.startswith("sha256:"):
        raise ValueError(f"bad key {key!r}")
    return ImportedRecord(key=key, parent=str(item.get("parent", "")), result=result, layer=layer,
                          inputs=dict(item.get("inputs") or {}), source=source, origin=where)


def load_imports(specs: Iterable[str], store: Store, progress: Progress | None = None,
                 insecure_registries: Sequence[str] = (), options: ClientOptions | None = None) -> ImportedCache:
    """Every ``--cache-from``; one that cannot be read is a warning, as in BuildKit (the build
    then runs without it), but a malformed value is an error before anything runs."""
    cache = ImportedCache(store, progress)
    for spec in [CacheSpec.parse(text, export=False) for text in specs]:
        try:
            cache.load(spec, insecure_registries, options)
        except UsageError:
            raise
        except PybuildError as err:
            cache._warn(f"cannot import cache {spec.description}: {err}")
    return cache


# --- export -----------------------------------------------------------------------------

@dataclass
class ExportReport:
    target: str
    manifest_digest: Digest
    records: int
    layers: int
    mounts: int
    skipped: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Blob:
    descriptor: Descriptor
    opener: Callable[[], BinaryIO]


def select_keys(records: CacheRecords, used: Sequence[str], final_key: str, mode: CacheMode) -> list[str]:
    """mode=max: every step key the build used; mode=min: the chain that led to the final image."""
    if mode is CacheMode.MAX:
        return list(dict.fromkeys(k for k in used if k))
    chain: list[str] = []
    key, seen = final_key, set()
    while key and key not in seen:
        seen.add(key)
        record = records.get(key)
        if record is None:
            break
        chain.append(key)
        key = record.parent
    return list(reversed(chain))


def export_cache(spec: CacheSpec, store: Store, records: CacheRecords, keys: Sequence[str], *,
                 imported: ImportedCache | None = None, mount_ids: Iterable[str] = (),
                 cached_mount_ids: Iterable[str] = (), progress: Progress | None = None,
                 insecure_registries: Sequence[str] = ()) -> ExportReport:
    """Write the records ``keys`` (and their layers, compressed once, deterministically) as
    the cache artifact of ``spec``: blobs first, the manifest last.

    With cache-mounts=true: the mounts ``mount_ids`` (of steps that ran) as they are now, and
    those of steps that hit (``cached_mount_ids``, unchanged by this build) passed on from the
    --cache-from that has them, else packed from here: a farm's cached rebuild keeps its ref's
    mounts without packing them again."""
    from cache.mounts import ID_ANNOTATION, mount_path, pack_mount

    target = open_target(spec, insecure_registries, BlobSources(store.db))
    temps: list[Path] = []
    if progress is not None:
        progress.message(f"exporting cache to {target.description} (mode={spec.mode.value})")
    try:
        blobs: dict[str, _Blob] = {}
        entries: list[dict[str, Any]] = []
        skipped: list[str] = []
        # Compress the layers (once each, kept in the store) on both cores; order stays the keys'.
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="pybuild-compress") as pool:
            made = list(pool.map(lambda k: _export_record(k, spec, store, records, imported), keys))
        for key, (entry, blob) in zip(keys, made, strict=True):
            if entry is None:
                skipped.append(key)
                continue
            entries.append(entry)
            if blob is not None:
                blobs.setdefault(str(blob.descriptor.digest), blob)
        layer_count = len(blobs)
        mounts: list[_Blob] = []
        if spec.cache_mounts:
            ran = set(mount_ids)
            for cache_id in sorted(ran | set(cached_mount_ids)):
                imports = imported.mounts.get(cache_id, []) if imported is not None else []
                passed = next((m for m in imports if _still_there(m[1], m[0])), None) if cache_id not in ran else None
                if passed is not None:
                    desc, source = passed[0], passed[1]
                    mounts.append(_Blob(desc, functools.partial(source.open_blob, desc)))
                    continue
                path = mount_path(store.root, cache_id)
                if not path.is_dir():
                    continue
                tmp = store.temp_path(".mount.tar.gz")
                temps.append(tmp)
                try:
                    with open(tmp, "wb") as out:
                        pack_mount(path, out)
                except PybuildError as err:  # e.g. another build changing it under us
                    if progress is not None:
                        progress.warning(f"cache mount {cache_id} not exported: {err}")
                    continue
                desc = Descriptor(MediaType.PYBUILD_CACHE_MOUNT.value, _file_digest(tmp), tmp.stat().st_size,
                                  annotations={ID_ANNOTATION: cache_id})
                mounts.append(_Blob(desc, functools.partial(open_binary, tmp)))
        config = {"version": CONFIG_VERSION, "records": entries}
        raw_config = canonical_json(config)
        config_desc = Descriptor.of(MediaType.PYBUILD_CACHE_CONFIG.value, raw_config)
        layer_descs = [b.descriptor for b in blobs.values()] + [m.descriptor for m in mounts]
        annotations = {"dev.pybuild.cache.mode": spec.mode.value}
        artifact: Manifest | Index
        if spec.image_manifest:
            artifact = Manifest(config=config_desc, layers=tuple(layer_descs), media_type=MediaType.OCI_MANIFEST,
                                artifact_type=MediaType.PYBUILD_CACHE_CONFIG.value, annotations=annotations)
        else:  # BuildKit's index: the blobs, the config last (docker's manifest list has no annotations)
            artifact = Index(manifests=(*layer_descs, config_desc),
                             media_type=MediaType.OCI_INDEX if spec.oci_mediatypes else MediaType.DOCKER_MANIFEST_LIST,
                             annotations=annotations if spec.oci_mediatypes else None)
        raw_manifest = artifact.to_bytes()
        uploads = [*blobs.values(), *mounts, _Blob(config_desc, lambda: io.BytesIO(raw_config))]
        try:
            _run_all([functools.partial(target.put_blob, b.descriptor, b.opener) for b in uploads])
            target.put_manifest(raw_manifest, artifact.media_type)
        except OSError as err:
            raise CacheError(f"cannot write cache {target.description}: "
                             f"{err.strerror or err}{f' ({err.filename})' if err.filename else ''}") from None
        except RegistryError as err:  # its text names a push: say that it was the cache's
            raise CacheError(f"cannot write cache {target.description}: {err}") from None
        if progress is not None:
            progress.message(f"exported cache {target.description}: {len(entries)} record(s), "
                             f"{layer_count} layer(s), {len(mounts)} cache mount(s)")
        return ExportReport(target.description, Digest.of(raw_manifest), len(entries), layer_count,
                            len(mounts), skipped)
    finally:
        target.close()
        for tmp in temps:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _export_record(key: str, spec: CacheSpec, store: Store, records: CacheRecords,
                   imported: ImportedCache | None) -> tuple[dict[str, Any] | None, _Blob | None]:
    local = records.get(key)
    remote = imported.get(key) if imported is not None else None
    if local is not None:
        parent, result, inputs = local.parent, local.result, local.inputs
    elif remote is not None:
        parent, result, inputs = remote.parent, remote.result, remote.inputs
    else:
        return None, None
    entry: dict[str, Any] = {"key": key, "parent": parent, "result": result.to_json(), "inputs": inputs}
    if result.diff_id is None:
        return entry, None
    docker = not spec.oci_mediatypes
    try:
        desc = store.export_blob(result.diff_id, spec.compression, force=spec.force_compression,
                                 level=spec.compression_level, docker=docker)
        blob = _Blob(desc, functools.partial(store.blobs.open, desc.digest, desc.size))
    except ImageNotFoundError:
        # Not held here (an imported hit nothing read): pass the other cache's blob through.
        if remote is None or remote.layer is None:
            return None, None
        desc = remote.layer
        held = layer_compression(desc.media_type)
        if spec.force_compression and held is not spec.compression:
            blob = None  # fetched and compressed as asked, below
        else:
            desc = replace(desc, media_type=layer_media_type(held, docker=docker).value)
            blob = _Blob(desc, functools.partial(remote.source.open_blob, desc))
        if blob is None:
            imported.fetch(remote)  # type: ignore[union-attr]  # remote is imported's
            desc = store.export_blob(result.diff_id, spec.compression, force=True,
                                     level=spec.compression_level, docker=docker)
            blob = _Blob(desc, functools.partial(store.blobs.open, desc.digest, desc.size))
    entry["layer"] = str(desc.digest)
    return entry, blob


def _still_there(source: BlobSource, desc: Descriptor) -> bool:
    """Whether an imported cache still holds a blob to pass on (a stat, or a HEAD): one gone
    since the import (garbage-collected) is not exported rather than fail the export."""
    has_blob = getattr(source, "has_blob", None)
    try:
        return has_blob is None or bool(has_blob(desc))
    except PybuildError:
        return False


def _file_digest(path: Path) -> Digest:
    try:
        f = open_regular(path)
    except ValueError as err:
        raise OSError(f"{path}: {err}") from None
    with f:
        return _stream_digest(f)


def _stream_digest(f: BinaryIO) -> Digest:
    hasher = hashlib.sha256()
    while chunk := f.read(CHUNK):
        hasher.update(chunk)
    return Digest.from_hasher(hasher)


def _run_all(tasks: Sequence[Callable[[], object]]) -> None:  # what they return is not used
    """Run blob transfers concurrently, as a pull does: the first failure, Ctrl-C or SIGTERM stops
    the others, a download or upload stalled on its connection included, at once."""
    if not tasks:
        return
    from builder.registry.client import TransferStop
    from builder.registry.remote import run_transfers

    run_transfers(tasks, TRANSFER_WORKERS, TransferStop())


__all__ = [
    "CacheError", "CacheMode", "CacheSpec", "CacheTarget", "CacheType", "ExportReport", "FetchingLayer",
    "ImportedCache", "ImportedRecord", "LocalTarget", "RegistryTarget", "export_cache", "load_imports",
    "select_keys",
]
