"""Media types of OCI and docker schema2 objects, and what they say about a blob."""

from __future__ import annotations

from enum import StrEnum


class MediaType(StrEnum):
    OCI_INDEX = "application/vnd.oci.image.index.v1+json"
    OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
    OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
    OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
    OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
    OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
    OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
    OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
    OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
    OCI_EMPTY = "application/vnd.oci.empty.v1+json"
    DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
    DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
    DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
    DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
    DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
    DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
    DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
    BUILDKIT_CACHE_CONFIG = "application/vnd.buildkit.cacheconfig.v0"
    PYBUILD_CACHE_CONFIG = "application/vnd.pybuild.cache.config.v1+json"
    PYBUILD_CACHE_MOUNT = "application/vnd.pybuild.cache.mount.v1.tar+gzip"


class Compression(StrEnum):
    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"


INDEX_TYPES = frozenset({MediaType.OCI_INDEX, MediaType.DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({MediaType.OCI_MANIFEST, MediaType.DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({MediaType.OCI_CONFIG, MediaType.DOCKER_CONFIG})

_LAYER_COMPRESSION = {
    MediaType.OCI_LAYER: Compression.NONE,
    MediaType.OCI_LAYER_GZIP: Compression.GZIP,
    MediaType.OCI_LAYER_ZSTD: Compression.ZSTD,
    MediaType.OCI_LAYER_NONDIST: Compression.NONE,
    MediaType.OCI_LAYER_NONDIST_GZIP: Compression.GZIP,
    MediaType.OCI_LAYER_NONDIST_ZSTD: Compression.ZSTD,
    MediaType.DOCKER_LAYER: Compression.NONE,
    MediaType.DOCKER_LAYER_GZIP: Compression.GZIP,
    MediaType.DOCKER_LAYER_ZSTD: Compression.ZSTD,
    MediaType.DOCKER_FOREIGN_LAYER: Compression.GZIP,
    MediaType.PYBUILD_CACHE_MOUNT: Compression.GZIP,
}


def is_index(media_type: str) -> bool:
    return media_type in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return media_type in MANIFEST_TYPES


def is_layer(media_type: str) -> bool:
    return media_type in _LAYER_COMPRESSION


def is_docker(media_type: str) -> bool:
    return media_type.startswith("application/vnd.docker.")


def layer_compression(media_type: str) -> Compression:
    """How a layer blob of this media type is compressed (unknown types: error)."""
    try:
        return _LAYER_COMPRESSION[MediaType(media_type)]
    except (ValueError, KeyError):
        from builder.errors import ImageError

        raise ImageError(f"unsupported layer media type {media_type!r}") from None


def layer_media_type(compression: Compression, docker: bool = False) -> MediaType:
    """The layer media type for a compression, in OCI (default) or docker schema2 flavour."""
    if docker:
        return {
            Compression.NONE: MediaType.DOCKER_LAYER,
            Compression.GZIP: MediaType.DOCKER_LAYER_GZIP,
            Compression.ZSTD: MediaType.DOCKER_LAYER_ZSTD,
        }[compression]
    return {
        Compression.NONE: MediaType.OCI_LAYER,
        Compression.GZIP: MediaType.OCI_LAYER_GZIP,
        Compression.ZSTD: MediaType.OCI_LAYER_ZSTD,
    }[compression]
