"""Images in files: OCI image layouts, docker-archives, and the combined tar that is both.

Sources and sinks of :class:`~builder.image.Image` like the store and the
registry: ``read_archive`` turns a file into images, ``save`` writes images
into one (see :mod:`builder.export.archive`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from builder.image.image import Image

if TYPE_CHECKING:
    from builder.export.attestation import AttestationManifest


@dataclass(frozen=True)
class TaggedImage:
    """An image with the names it is saved or was loaded under (``busybox:latest`` style)."""

    image: Image
    names: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)  # on its descriptor in an index
    # docker schema2 kept in an OCI layout's index (BuildKit's oci-mediatypes=false), not made OCI
    docker_types: bool = False
    # its attestations (BuildKit's storage): the layout's entry is then an index of the image
    # manifest and this attestation manifest
    attestation: AttestationManifest | None = None


__all__ = ["TaggedImage"]
