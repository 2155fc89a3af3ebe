"""The image model: descriptors, manifests, configs, and the Image/Layer interfaces.

Shaped after go-containerregistry's ``pkg/v1``: small values and protocols that
every source and sink (store, registry, OCI layout, docker-archive) speaks.
"""

from builder.image.config import ConfigFile, ContainerConfig, Healthcheck, History
from builder.image.descriptor import Descriptor, canonical_json
from builder.image.digest import Digest, HashingReader, VerifyingReader, is_digest
from builder.image.image import BlobLayer, BlobSource, Image, Layer, SourceImage, SourceIndex
from builder.image.manifest import Index, Manifest, parse_manifest
from builder.image.mediatypes import Compression, MediaType
from builder.image.platform import Platform

__all__ = [
    "BlobLayer", "BlobSource", "Compression", "ConfigFile", "ContainerConfig", "Descriptor",
    "Digest", "HashingReader", "Healthcheck", "History", "Image", "Index", "Layer", "Manifest",
    "MediaType", "Platform", "SourceImage", "SourceIndex", "VerifyingReader", "canonical_json",
    "is_digest", "parse_manifest",
]
