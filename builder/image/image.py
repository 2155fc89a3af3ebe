"""The two interfaces everything speaks: :class:`Image` and :class:`Layer`.

Modelled on go-containerregistry's ``v1.Image``/``v1.Layer``. Every source
(local store, registry, OCI layout, docker-archive) produces these, every sink
consumes them, and the build engine derives new ones with
:mod:`builder.image.mutate`. Sources only need to open blobs by descriptor:
:class:`SourceImage` turns that into a full, lazy, verifying Image.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import BinaryIO, Protocol, runtime_checkable

from builder.errors import ImageError
from builder.image.config import ConfigFile
from builder.image.descriptor import Descriptor
from builder.image.digest import Digest, VerifyingReader
from builder.image.manifest import Index, Manifest, parse_manifest
from builder.image.mediatypes import is_index, layer_compression


@runtime_checkable
class Layer(Protocol):
    def digest(self) -> Digest:
        """The hash of the blob as stored or sent (compressed); not the DiffID."""

    def diff_id(self) -> Digest:
        """The hash of the uncompressed tar: what the config's rootfs.diff_ids lists."""

    def size(self) -> int:
        """The size of the blob as stored or sent (compressed)."""

    def media_type(self) -> str:
        """The layer media type, which says how the blob is compressed."""

    def compressed(self) -> BinaryIO:
        """Open the blob as stored; reading it to the end verifies its digest."""

    def uncompressed(self) -> BinaryIO:
        """Open the layer's tar stream."""


@runtime_checkable
class Image(Protocol):
    def raw_manifest(self) -> bytes:
        """The manifest's exact bytes, which ``digest()`` covers."""

    def manifest(self) -> Manifest:
        """The parsed manifest."""

    def digest(self) -> Digest:
        """The hash of the manifest bytes: the image's RepoDigest, changes with compression."""

    def raw_config(self) -> bytes:
        """The config's exact bytes, which ``config_digest()`` covers."""

    def config_file(self) -> ConfigFile:
        """The parsed config."""

    def config_digest(self) -> Digest:
        """The image ID as docker shows it: the hash of the config, the same for any compression."""

    def layers(self) -> Sequence[Layer]:
        """The layers, base first, paired with the config's diff_ids."""


class BlobSource(Protocol):
    """Somewhere blobs can be opened by descriptor: the store, a registry, a layout, a tarball."""

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        """Open the blob's bytes (unverified; callers wrap them in a VerifyingReader)."""


def damage_hint(source: BlobSource) -> str:
    """What a source says to do about a blob that does not match its digest (none by default)."""
    return str(getattr(source, "damage_hint", ""))


def layer_descriptor(layer: Layer) -> Descriptor:
    return Descriptor(media_type=layer.media_type(), digest=layer.digest(), size=layer.size())


def read_verified(source: BlobSource, descriptor: Descriptor, what: str = "blob") -> bytes:
    with VerifyingReader(source.open_blob(descriptor), descriptor.digest, descriptor.size, what,
                         damage_hint(source)) as r:
        data = r.read()
    if len(data) != descriptor.size:
        raise ImageError(
            f"size mismatch for {what} {descriptor.digest}: expected {descriptor.size}, got {len(data)}"
        )
    return data


class BlobLayer:
    """A layer whose compressed blob comes from a BlobSource; its DiffID comes from the config."""

    def __init__(self, source: BlobSource, descriptor: Descriptor, diff_id: Digest) -> None:
        self._source = source
        self._descriptor = descriptor
        self._diff_id = Digest(diff_id)

    def digest(self) -> Digest:
        return self._descriptor.digest

    def diff_id(self) -> Digest:
        return self._diff_id

    def size(self) -> int:
        return self._descriptor.size

    def media_type(self) -> str:
        return self._descriptor.media_type

    def descriptor(self) -> Descriptor:
        return self._descriptor

    def compressed(self) -> BinaryIO:
        return VerifyingReader(  # type: ignore[return-value]  # a file-like reader, no typing.BinaryIO subclass
            self._source.open_blob(self._descriptor), self._descriptor.digest,
            self._descriptor.size, f"layer {self._descriptor.digest}", damage_hint(self._source),
        )

    def uncompressed(self) -> BinaryIO:
        # Imported here: builder.layers.compression itself imports the image model's media types.
        from builder.layers.compression import open_decompressed

        compression = layer_compression(self._descriptor.media_type)
        return open_decompressed(self.compressed(), compression)

    def __repr__(self) -> str:
        return f"BlobLayer({self._descriptor.digest.short}, diff_id={self._diff_id.short})"


class SourceImage:
    """An Image defined by its manifest bytes and a BlobSource; blobs are fetched lazily."""

    def __init__(self, source: BlobSource, raw_manifest: bytes, media_type: str | None = None) -> None:
        parsed = parse_manifest(raw_manifest, media_type)
        if isinstance(parsed, Index):
            raise ImageError("expected an image manifest, got an image index")
        self._source = source
        self._raw_manifest = raw_manifest
        self._manifest = parsed

    def raw_manifest(self) -> bytes:
        return self._raw_manifest

    def manifest(self) -> Manifest:
        return self._manifest

    @functools.cache  # noqa: B019 - one value per immutable image
    def digest(self) -> Digest:
        return Digest.of(self._raw_manifest)

    @functools.cache  # noqa: B019
    def raw_config(self) -> bytes:
        return read_verified(self._source, self._manifest.config, "image config")

    @functools.cache  # noqa: B019
    def config_file(self) -> ConfigFile:
        return ConfigFile.from_bytes(self.raw_config())

    def config_digest(self) -> Digest:
        return self._manifest.config.digest

    @functools.cache  # noqa: B019
    def layers(self) -> tuple[BlobLayer, ...]:
        diff_ids = self.config_file().diff_ids
        descriptors = self._manifest.layers
        if len(diff_ids) != len(descriptors):
            raise ImageError(
                f"image {self.digest().short}: manifest has {len(descriptors)} layers "
                f"but config lists {len(diff_ids)} diff_ids"
            )
        return tuple(BlobLayer(self._source, d, i) for d, i in zip(descriptors, diff_ids, strict=True))


class SourceIndex:
    """An image index whose child manifests are opened from the same BlobSource."""

    def __init__(self, source: BlobSource, raw_manifest: bytes, media_type: str | None = None) -> None:
        parsed = parse_manifest(raw_manifest, media_type)
        if not isinstance(parsed, Index):
            raise ImageError("expected an image index, got an image manifest")
        self._source = source
        self._raw = raw_manifest
        self._index = parsed

    def raw_manifest(self) -> bytes:
        return self._raw

    def index(self) -> Index:
        return self._index

    def digest(self) -> Digest:
        return Digest.of(self._raw)

    def child(self, descriptor: Descriptor) -> SourceImage | SourceIndex:
        raw = read_verified(self._source, descriptor, "manifest")
        if is_index(descriptor.media_type):
            return SourceIndex(self._source, raw, descriptor.media_type)
        return SourceImage(self._source, raw, descriptor.media_type)
