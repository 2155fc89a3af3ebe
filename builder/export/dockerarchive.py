"""docker-archive: the tar of ``docker save`` (``manifest.json``, configs, layer tars).

Reading builds a docker schema2 manifest for each ``manifest.json`` entry;
layers may be plain tars or gzip/zstd (sniffed, since the archive does not
say), and the store checks each against the config's diff_id when it copies
it. Writing adds ``manifest.json`` and ``repositories`` that name the blobs of
an OCI layout (``blobs/sha256/<hex>``), which is how BuildKit's docker
exporter makes one file that ``docker load`` and OCI tools both read.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any, BinaryIO

from builder.errors import ImageError
from builder.export import TaggedImage
from builder.export.archive import ArchiveError, ArchiveFiles, Entry, bytes_entry, write_tar
from builder.image.config import ConfigFile
from builder.image.descriptor import Descriptor, canonical_json
from builder.image.digest import Digest
from builder.image.image import SourceImage
from builder.image.manifest import Manifest
from builder.image.mediatypes import Compression, MediaType, layer_media_type
from builder.layers.compression import CHUNK, detect

_BLOB_PATH_RE = re.compile(r"^(?:\./)?blobs/sha256/([a-f0-9]{64})$")


def _manifest_json(files: ArchiveFiles) -> list[dict[str, Any]]:
    try:
        data = json.loads(files.read("manifest.json"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ArchiveError(f"{files.description}: manifest.json is not JSON ({err})") from None
    if not isinstance(data, list) or not all(isinstance(e, dict) for e in data):
        raise ArchiveError(f"{files.description}: manifest.json is not a list of objects")
    return data


def repo_tags_by_config(files: ArchiveFiles) -> dict[str, tuple[str, ...]]:
    """Config digest -> RepoTags, to name the images of a combined archive's OCI index."""
    out: dict[str, tuple[str, ...]] = {}
    for entry in _manifest_json(files):
        config = str(entry.get("Config", ""))
        match = _BLOB_PATH_RE.match(config)
        digest = "sha256:" + match.group(1) if match else _hash_member(files, config)
        out[digest] = _repo_tags(entry, f"{files.description}: manifest.json")
    return out


def _repo_tags(entry: dict, where: str) -> tuple[str, ...]:
    """An entry's RepoTags: a list of names (a bare string would read as one name per letter)."""
    tags = entry.get("RepoTags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ArchiveError(f"{where}: RepoTags is not a list of image names")
    return tuple(tags)


def _hash_member(files: ArchiveFiles, name: str) -> str:
    hasher = hashlib.sha256()
    with files.open(name) as f:
        while chunk := f.read(CHUNK):
            hasher.update(chunk)
    return "sha256:" + hasher.hexdigest()


class DockerArchiveBlobs:
    """Blobs of a docker-archive by digest, mapped to the member that holds each."""

    def __init__(self, files: ArchiveFiles) -> None:
        self.files = files
        self.paths: dict[str, str] = {}

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        path = self.paths.get(descriptor.digest)
        if path is None:
            raise ArchiveError(f"{self.files.description}: no blob {descriptor.digest}")
        return self.files.open(path)


def read_docker_archive(files: ArchiveFiles) -> list[TaggedImage]:
    """One image per manifest.json entry, named by its RepoTags."""
    blobs = DockerArchiveBlobs(files)
    out: list[TaggedImage] = []
    for number, entry in enumerate(_manifest_json(files)):
        where = f"{files.description}: manifest.json entry {number + 1}"
        config_path = entry.get("Config")
        layer_paths = entry.get("Layers") or []
        if not isinstance(config_path, str) or not isinstance(layer_paths, list):
            raise ArchiveError(f"{where}: needs Config (a path) and Layers (a list)")
        raw_config = files.read(config_path)
        config_desc = Descriptor.of(MediaType.DOCKER_CONFIG, raw_config)
        blobs.paths[config_desc.digest] = config_path
        try:
            config = ConfigFile.from_bytes(raw_config)
        except ImageError as err:
            raise ArchiveError(f"{where}: {err}") from None
        if len(config.diff_ids) != len(layer_paths):
            raise ArchiveError(
                f"{where}: {len(layer_paths)} layers, but the config lists {len(config.diff_ids)} diff_ids"
            )
        layers = []
        for path, diff_id in zip(layer_paths, config.diff_ids, strict=True):
            desc = _layer_descriptor(files, str(path), diff_id)
            blobs.paths[desc.digest] = str(path)
            layers.append(desc)
        manifest = Manifest(config=config_desc, layers=tuple(layers), media_type=MediaType.DOCKER_MANIFEST)
        image = SourceImage(blobs, manifest.to_bytes(), MediaType.DOCKER_MANIFEST)
        names = _repo_tags(entry, where)
        out.append(TaggedImage(image, names))
    if not out:
        raise ArchiveError(f"{files.description}: manifest.json lists no images")
    return out


def _layer_descriptor(files: ArchiveFiles, path: str, diff_id: Digest) -> Descriptor:
    """Describe a layer member; a plain tar's digest is its diff_id (checked when copied)."""
    size = files.size(path)
    with files.open(path) as f:
        compression = detect(f.read(8))
    media_type = layer_media_type(compression, docker=True)
    if compression is Compression.NONE:
        return Descriptor(media_type, diff_id, size)
    match = _BLOB_PATH_RE.match(path)
    digest = "sha256:" + match.group(1) if match else _hash_member(files, path)
    return Descriptor(media_type, Digest(digest), size)


# --- writing ---------------------------------------------------------------------------

def docker_entries(images: Sequence[TaggedImage]) -> list[Entry]:
    """``manifest.json`` and ``repositories`` for images whose blobs are in ``blobs/sha256/``."""
    from builder.export.layout import blob_path
    from builder.image.reference import Reference

    manifest: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    for tagged in images:
        image = tagged.image
        layers = list(image.layers())
        tags = []
        for name in tagged.names:
            ref = Reference.parse(name)
            tags.append(ref.familiar)
            if layers and ref.tag:
                repositories.setdefault(ref.familiar_name, {})[ref.tag] = layers[-1].digest().hex
        manifest.append({
            "Config": blob_path(image.config_digest()),
            "RepoTags": tags or None,
            "Layers": [blob_path(layer.digest()) for layer in layers],
        })
    entries = [bytes_entry("manifest.json", canonical_json(manifest))]
    if repositories:
        entries.append(bytes_entry("repositories", canonical_json(repositories)))
    return entries


def write_docker_archive(images: Sequence[TaggedImage], dest: Any) -> None:
    """The combined archive (OCI layout + manifest.json): ``docker load`` reads it."""
    from builder.export.layout import layout_entries

    write_tar(layout_entries(images) + docker_entries(images), dest)
