"""Derive new images from old ones; nothing is changed in place.

As in go-containerregistry's ``mutate``: append layers with their history,
replace the config, start from scratch. The result is a :class:`DerivedImage`
whose config and manifest bytes are computed (canonically) when first asked.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypedDict

from builder.errors import ImageError
from builder.image.config import ConfigFile, ContainerConfig, History
from builder.image.descriptor import Descriptor
from builder.image.digest import Digest
from builder.image.image import Image, Layer, layer_descriptor
from builder.image.manifest import Manifest
from builder.image.mediatypes import MediaType
from builder.image.platform import Platform


@dataclass(frozen=True)
class Addendum:
    """One history entry and the layer it made (``layer=None`` for an empty_layer entry)."""

    history: History
    layer: Layer | None = None


class DerivedImage:
    """An Image assembled from Layer values and a ConfigFile."""

    def __init__(
        self,
        layers: Sequence[Layer],
        config: ConfigFile,
        *,
        manifest_media_type: str = MediaType.OCI_MANIFEST,
        annotations: dict[str, str] | None = None,
    ) -> None:
        self._layers = tuple(layers)
        self._config = config
        self._manifest_media_type = manifest_media_type
        self._annotations = annotations

    def layers(self) -> tuple[Layer, ...]:
        return self._layers

    @functools.cache  # noqa: B019 - immutable value
    def config_file(self) -> ConfigFile:
        return replace(self._config, diff_ids=tuple(layer.diff_id() for layer in self._layers))

    @functools.cache  # noqa: B019
    def raw_config(self) -> bytes:
        return self.config_file().to_bytes()

    def config_digest(self) -> Digest:
        return Digest.of(self.raw_config())

    @functools.cache  # noqa: B019
    def manifest(self) -> Manifest:
        docker = self._manifest_media_type == MediaType.DOCKER_MANIFEST
        config = Descriptor.of(MediaType.DOCKER_CONFIG if docker else MediaType.OCI_CONFIG, self.raw_config())
        return Manifest(
            config=config,
            layers=tuple(layer_descriptor(layer) for layer in self._layers),
            media_type=self._manifest_media_type,
            annotations=self._annotations,
        )

    @functools.cache  # noqa: B019
    def raw_manifest(self) -> bytes:
        return self.manifest().to_bytes()

    def digest(self) -> Digest:
        return Digest.of(self.raw_manifest())


def empty(platform: Platform | None = None) -> DerivedImage:
    """``FROM scratch``: no layers, an empty config for the platform."""
    plat = platform or Platform.host()
    return DerivedImage(
        (), ConfigFile(architecture=plat.architecture, os=plat.os, variant=plat.variant)
    )


def append(base: Image, addenda: Iterable[Addendum]) -> DerivedImage:
    """Add history entries, and the layers of those that made one, on top of ``base``."""
    config = base.config_file()
    layers = list(base.layers())
    history = list(config.history)
    for add in addenda:
        entry = replace(add.history, empty_layer=add.layer is None)
        history.append(entry)
        if add.layer is not None:
            layers.append(add.layer)
    return DerivedImage(layers, replace(config, history=tuple(history)), **_keep(base))


def with_config(base: Image, container_config: ContainerConfig) -> DerivedImage:
    config = replace(base.config_file(), config=container_config)
    return DerivedImage(base.layers(), config, **_keep(base))


def with_config_file(base: Image, config: ConfigFile) -> DerivedImage:
    """Replace the whole config (its diff_ids are recomputed from the layers)."""
    return DerivedImage(base.layers(), config, **_keep(base))


def with_layers(base: Image, layers: Sequence[Layer], manifest_media_type: str | None = None) -> DerivedImage:
    """Same config, other Layer values for the same diff_ids (e.g. recompressed for export)."""
    old = [layer.diff_id() for layer in base.layers()]
    new = [layer.diff_id() for layer in layers]
    if old != new:
        raise ImageError("with_layers: the new layers do not have the same diff_ids")
    keep = _keep(base)
    if manifest_media_type:
        keep["manifest_media_type"] = manifest_media_type
    return DerivedImage(layers, base.config_file(), **keep)


class _Kept(TypedDict, total=False):
    """What a derived image keeps of its base's manifest."""

    manifest_media_type: str
    annotations: dict[str, str] | None


def _keep(base: Image) -> _Kept:
    try:
        manifest = base.manifest()
    except ImageError:
        return {}
    return {"manifest_media_type": manifest.media_type, "annotations": manifest.annotations}
