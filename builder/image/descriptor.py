"""Descriptors: the typed pointer (media type, digest, size) that links OCI objects."""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field, replace
from typing import Any

from builder.errors import ImageError
from builder.image.digest import Digest
from builder.image.platform import Platform


def canonical_json(obj: Any) -> bytes:
    """The bytes pybuild writes for JSON it creates: compact, key order as given, UTF-8.

    Objects read from elsewhere keep their original bytes; this is only used
    for new manifests and configs, so the same value always gets one digest.
    A string that held bytes that are not UTF-8 (a Dockerfile read with ``surrogateescape``:
    ``RUN echo \xff`` in the history) gets U+FFFD for each, as Go's encoding/json writes them.
    """
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _LONE_SURROGATE.sub("\ufffd", text).encode("utf-8")


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Descriptor:
    """An OCI descriptor: what a manifest or index says of a blob (type, digest, size)."""

    media_type: str
    digest: Digest
    size: int
    annotations: dict[str, str] | None = None
    platform: Platform | None = None
    urls: tuple[str, ...] | None = None
    artifact_type: str | None = None
    data: bytes | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "digest", Digest(self.digest))
        if not isinstance(self.size, int) or self.size < 0:
            raise ImageError(f"invalid size {self.size!r} in descriptor of {self.digest}")

    @classmethod
    def of(cls, media_type: str, data: bytes, **kwargs: Any) -> Descriptor:
        """Describe in-memory content (a manifest or config about to be written)."""
        return cls(media_type=media_type, digest=Digest.of(data), size=len(data), **kwargs)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Descriptor:
        if not isinstance(data, dict):
            raise ImageError(f"invalid descriptor: expected an object, got {type(data).__name__}")
        try:
            platform = data.get("platform")
            raw = data.get("data")
            return cls(
                media_type=str(data.get("mediaType", "")),
                digest=Digest(data["digest"]),
                size=data["size"],
                annotations=dict(data["annotations"]) if data.get("annotations") else None,
                platform=Platform.from_dict(platform) if platform else None,
                urls=tuple(data["urls"]) if data.get("urls") else None,
                artifact_type=data.get("artifactType"),
                data=base64.b64decode(raw) if raw else None,
            )
        except KeyError as missing:
            raise ImageError(f"invalid descriptor: missing {missing}") from None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": str(self.digest), "size": self.size}
        if self.urls:
            out["urls"] = list(self.urls)
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.data is not None:
            out["data"] = base64.b64encode(self.data).decode()
        if self.platform:
            out["platform"] = self.platform.to_dict()
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        return out

    def with_annotations(self, **annotations: str) -> Descriptor:
        merged = dict(self.annotations or {})
        merged.update(annotations)
        return replace(self, annotations=merged)
