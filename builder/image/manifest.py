"""OCI/docker manifests and indexes (manifest lists), parsed from and written to bytes.

Parsed values are views: the bytes a manifest was read from are what its digest
covers, so sources keep the raw bytes and only new manifests are serialised
here (with :func:`canonical_json`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from builder.errors import ImageError
from builder.image.descriptor import Descriptor, canonical_json
from builder.image.mediatypes import (
    INDEX_TYPES,
    MANIFEST_TYPES,
    MediaType,
    is_docker,
    is_layer,
    layer_compression,
    layer_media_type,
)


def _load_json(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise ImageError(f"invalid {what}: not JSON ({err})") from None
    if not isinstance(data, dict):
        raise ImageError(f"invalid {what}: expected a JSON object")
    return data


@dataclass(frozen=True)
class Manifest:
    """An image manifest: one config and an ordered list of layers (base first)."""

    config: Descriptor
    layers: tuple[Descriptor, ...]
    media_type: str = MediaType.OCI_MANIFEST
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Manifest:
        data = _load_json(raw, "manifest")
        if data.get("schemaVersion") != 2:
            raise ImageError(
                f"unsupported manifest schemaVersion {data.get('schemaVersion')!r} "
                "(only schema 2: OCI and docker v2)"
            )
        media_type = data.get("mediaType") or MediaType.OCI_MANIFEST
        if media_type not in MANIFEST_TYPES:
            raise ImageError(f"not an image manifest: mediaType {media_type!r}")
        if "config" not in data:
            raise ImageError("invalid manifest: no config")
        return cls(
            config=Descriptor.from_dict(data["config"]),
            layers=tuple(Descriptor.from_dict(d) for d in data.get("layers") or ()),
            media_type=media_type,
            annotations=data.get("annotations") or None,
            subject=Descriptor.from_dict(data["subject"]) if data.get("subject") else None,
            artifact_type=data.get("artifactType"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["config"] = self.config.to_dict()
        out["layers"] = [d.to_dict() for d in self.layers]
        if self.subject:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def is_docker(self) -> bool:
        return self.media_type == MediaType.DOCKER_MANIFEST

    def as_docker(self) -> Manifest:
        """The same content described with docker schema2 media types (for docker-archive)."""
        return self._convert(docker=True)

    def as_oci(self) -> Manifest:
        return self._convert(docker=False)

    def _convert(self, docker: bool) -> Manifest:
        layers = tuple(
            Descriptor(
                media_type=layer_media_type(layer_compression(d.media_type), docker=docker)
                if is_layer(d.media_type) else d.media_type,
                digest=d.digest, size=d.size, annotations=None if docker else d.annotations,
                urls=d.urls,
            )
            for d in self.layers
        )
        config = Descriptor(
            media_type=MediaType.DOCKER_CONFIG if docker else MediaType.OCI_CONFIG,
            digest=self.config.digest, size=self.config.size,
        )
        return Manifest(
            config=config, layers=layers,
            media_type=MediaType.DOCKER_MANIFEST if docker else MediaType.OCI_MANIFEST,
            annotations=None if docker else self.annotations,
        )


@dataclass(frozen=True)
class Index:
    """An image index (docker: manifest list): one manifest per platform, or several images."""

    manifests: tuple[Descriptor, ...]
    media_type: str = MediaType.OCI_INDEX
    annotations: dict[str, str] | None = None
    subject: Descriptor | None = None
    artifact_type: str | None = None

    @classmethod
    def from_bytes(cls, raw: bytes) -> Index:
        data = _load_json(raw, "image index")
        media_type = data.get("mediaType") or MediaType.OCI_INDEX
        if media_type not in INDEX_TYPES:
            raise ImageError(f"not an image index: mediaType {media_type!r}")
        return cls(
            manifests=tuple(Descriptor.from_dict(d) for d in data.get("manifests") or ()),
            media_type=media_type,
            annotations=data.get("annotations") or None,
            subject=Descriptor.from_dict(data["subject"]) if data.get("subject") else None,
            artifact_type=data.get("artifactType"),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schemaVersion": 2, "mediaType": self.media_type}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        out["manifests"] = [d.to_dict() for d in self.manifests]
        if self.subject:
            out["subject"] = self.subject.to_dict()
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def is_docker(self) -> bool:
        return self.media_type == MediaType.DOCKER_MANIFEST_LIST


def sniff_media_type(raw: bytes, declared: str | None = None) -> str:
    """The media type of a manifest-like document: declared, in the body, or guessed from its shape."""
    if declared and declared not in ("application/json", "text/plain", "application/octet-stream"):
        return declared
    data = _load_json(raw, "manifest")
    if data.get("mediaType"):
        return str(data["mediaType"])
    if "manifests" in data:
        return MediaType.OCI_INDEX
    if "config" in data:
        return MediaType.OCI_MANIFEST
    raise ImageError("cannot tell what this document is: no mediaType, manifests or config")


def parse_manifest(raw: bytes, declared: str | None = None) -> Manifest | Index:
    media_type = sniff_media_type(raw, declared)
    if media_type in INDEX_TYPES:
        return Index.from_bytes(raw)
    if media_type in MANIFEST_TYPES:
        return Manifest.from_bytes(raw)
    raise ImageError(f"unsupported manifest media type {media_type!r}")


def docker_flavour(media_type: str) -> bool:
    return is_docker(media_type)
