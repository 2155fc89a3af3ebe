"""OCI image layouts (``oci-layout``, ``index.json``, ``blobs/``), as a directory or a tar.

Reading follows nested indexes, picks the host's platform where an index
offers several, and takes names from ``io.containerd.image.name`` or a full
``org.opencontainers.image.ref.name``. Writing converts docker schema2
manifests to OCI media types (the config bytes, and so the image ID, stay the
same) and names each image as BuildKit does: ``io.containerd.image.name`` =
the full reference, ``org.opencontainers.image.ref.name`` = the tag.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from builder.errors import ImageError, PybuildError
from builder.export import TaggedImage
from builder.export.archive import (
    ArchiveError,
    ArchiveFiles,
    Entry,
    MissingFileError,
    bytes_entry,
    write_tar,
)
from builder.fileio import BeneathError, Directory
from builder.image.descriptor import Descriptor, canonical_json
from builder.image.digest import Digest
from builder.image.image import Image, SourceImage, read_verified
from builder.image.manifest import Index, Manifest, parse_manifest
from builder.image.mediatypes import MediaType, is_index, is_manifest
from builder.image.platform import Platform

LAYOUT_FILE = b'{"imageLayoutVersion":"1.0.0"}'
NAME_ANNOTATION = "io.containerd.image.name"
REF_ANNOTATION = "org.opencontainers.image.ref.name"
MAX_INDEX_DEPTH = 8
MAX_JSON_SIZE = 16 << 20


def blob_path(digest: str) -> str:
    d = Digest(digest)
    return f"blobs/{d.algorithm}/{d.hex}"


class LayoutBlobSource:
    """Blobs of a layout, opened by digest (never by a path the archive chose)."""

    def __init__(self, files: ArchiveFiles) -> None:
        self.files = files

    def open_blob(self, descriptor: Descriptor) -> BinaryIO:
        try:
            return self.files.open(blob_path(descriptor.digest))
        except MissingFileError:
            raise ArchiveError(
                f"{self.files.description}: blob {descriptor.digest} is missing from the layout"
            ) from None


# --- reading ---------------------------------------------------------------------------

def read_oci_layout(files: ArchiveFiles, platform: Platform | None = None) -> list[TaggedImage]:
    """Every image the layout's index.json names (one per entry; indexes resolved to ``platform``)."""
    want = platform or Platform.host()
    source = LayoutBlobSource(files)
    try:
        top = Index.from_bytes(files.read("index.json"))
    except ImageError as err:
        raise ArchiveError(f"{files.description}: index.json: {err}") from None
    candidates = [d for d in top.manifests if is_manifest(d.media_type) or is_index(d.media_type)]
    # A top-level index that is itself one multi-platform image: keep the host's entries.
    candidates = [d for d in candidates if not _is_attestation(d)]
    platformed = [d for d in candidates if d.platform is not None and is_manifest(d.media_type)]
    platforms = {str(d.platform) for d in platformed}
    if platformed and len(platformed) == len(candidates) and len(platforms) > 1:
        matching = [d for d in platformed if d.platform is not None and want.matches(d.platform)]
        if not matching:
            raise ArchiveError(
                f"{files.description}: no image for {want} (it has {', '.join(sorted(platforms))})"
            )
        candidates = matching
    out: dict[str, TaggedImage] = {}
    for desc in candidates:
        image = _resolve(source, desc, want, 0)
        key = image.digest()
        names = _names(desc)
        if key in out:
            names = tuple(dict.fromkeys((*out[key].names, *names)))
        out[key] = TaggedImage(image, names)
    if not out:
        raise ArchiveError(f"{files.description}: index.json lists no images")
    return list(out.values())


def _names(desc: Descriptor) -> tuple[str, ...]:
    from builder.image.reference import Reference

    annotations = desc.annotations or {}
    for key in (NAME_ANNOTATION, REF_ANNOTATION):
        value = annotations.get(key)
        # A bare ref.name ("latest") is only a tag: without a repository it names nothing.
        if value and ("/" in value or ":" in value or key == NAME_ANNOTATION):
            ref = Reference.try_parse(value)
            if ref is not None and ref.tag is not None:
                return (str(ref.without_tag().with_tag(ref.tag)),)
    return ()


def _resolve(source: LayoutBlobSource, desc: Descriptor, want: Platform, depth: int) -> Image:
    if depth > MAX_INDEX_DEPTH:
        raise ArchiveError("image indexes nested too deeply")
    _limit(desc, "manifest")
    raw = read_verified(source, desc, "manifest")
    parsed = parse_manifest(raw, desc.media_type)
    if isinstance(parsed, Manifest):
        _limit(parsed.config, "image config")
        return SourceImage(source, raw, desc.media_type)
    children = [d for d in parsed.manifests
                if (is_manifest(d.media_type) or is_index(d.media_type)) and not _is_attestation(d)]
    matching = [d for d in children if d.platform is None or want.matches(d.platform)]
    if not matching and len(children) == 1:
        matching = children  # an index of one image for another platform: that image
    if not matching:
        have = ", ".join(sorted({str(d.platform) for d in children if d.platform}))
        raise ArchiveError(f"no image for {want} in index {desc.digest.short} (it has {have or 'none'})")
    return _resolve(source, matching[0], want, depth + 1)


def _limit(desc: Descriptor, what: str) -> None:
    """JSON documents are read whole: refuse absurd sizes before allocating them."""
    if desc.size > MAX_JSON_SIZE:
        raise ArchiveError(f"{what} {desc.digest} claims {desc.size} bytes: more than {MAX_JSON_SIZE} is refused")


def _is_attestation(desc: Descriptor) -> bool:
    return bool(desc.annotations and "vnd.docker.reference.type" in desc.annotations)


# --- writing ---------------------------------------------------------------------------

def oci_manifest_bytes(image: Image) -> bytes:
    """The manifest to write into a layout: as it is if OCI, else converted (same config)."""
    manifest = image.manifest()
    if manifest.media_type == MediaType.OCI_MANIFEST:
        return image.raw_manifest()
    return manifest.as_oci().to_bytes()


def layout_manifest(tagged: TaggedImage) -> Descriptor:
    """The descriptor of the manifest a layout holds for ``tagged`` (see :func:`layout_manifest_bytes`)."""
    raw = layout_manifest_bytes(tagged)
    docker = tagged.docker_types and tagged.image.manifest().media_type == MediaType.DOCKER_MANIFEST
    return Descriptor.of(MediaType.DOCKER_MANIFEST if docker else MediaType.OCI_MANIFEST, raw)


def layout_manifest_bytes(tagged: TaggedImage) -> bytes:
    """OCI's manifest, or with ``docker_types`` a docker schema2 one as it is (BuildKit writes
    docker's media types into an OCI layout with oci-mediatypes=false)."""
    if tagged.docker_types and tagged.image.manifest().media_type == MediaType.DOCKER_MANIFEST:
        return tagged.image.raw_manifest()
    return oci_manifest_bytes(tagged.image)


def _platform(image: Image) -> Platform | None:
    config = image.config_file()
    if not config.architecture or not config.os:
        return None
    return Platform(os=config.os, architecture=config.architecture, variant=config.variant)


def _image_descriptor(tagged: TaggedImage, manifest: bytes) -> Descriptor:
    docker = json.loads(manifest).get("mediaType") == MediaType.DOCKER_MANIFEST  # kept: oci-mediatypes=false
    media_type = MediaType.DOCKER_MANIFEST if docker else MediaType.OCI_MANIFEST
    return Descriptor.of(media_type, manifest, platform=_platform(tagged.image))


def attested_index_bytes(tagged: TaggedImage, manifest: bytes) -> bytes:
    """The index BuildKit writes for an attested image: its manifest, then the attestation's."""
    from builder.export.attestation import attested_index

    assert tagged.attestation is not None
    return attested_index(_image_descriptor(tagged, manifest), tagged.attestation)


def _index_entries(tagged: TaggedImage, manifest: bytes) -> list[dict[str, Any]]:
    from builder.image.reference import Reference

    if tagged.attestation is not None:
        base = Descriptor.of(MediaType.OCI_INDEX, attested_index_bytes(tagged, manifest))
    else:
        base = _image_descriptor(tagged, manifest)
    if tagged.annotations:
        base = base.with_annotations(**tagged.annotations)
    if not tagged.names:
        return [base.to_dict()]
    out = []
    for name in tagged.names:
        ref = Reference.parse(name)
        annotations = {NAME_ANNOTATION: str(ref)}
        if ref.tag:
            annotations[REF_ANNOTATION] = ref.tag
        out.append(base.with_annotations(**annotations).to_dict())
    return out


def blob_entries(images: Sequence[TaggedImage]) -> tuple[list[Entry], list[bytes]]:
    """Entries for every blob of the images (deduplicated), and each image's layout manifest."""
    entries: dict[str, Entry] = {}
    manifests: list[bytes] = []
    for tagged in images:
        image = tagged.image
        manifest_bytes = layout_manifest_bytes(tagged)
        manifests.append(manifest_bytes)
        raw_config = image.raw_config()
        config_digest = Digest.of(raw_config)
        if config_digest != image.config_digest():
            raise ImageError(f"image config does not match its digest {image.config_digest()}")
        entries[blob_path(config_digest)] = bytes_entry(blob_path(config_digest), raw_config)
        m_digest = Digest.of(manifest_bytes)
        entries[blob_path(m_digest)] = bytes_entry(blob_path(m_digest), manifest_bytes)
        for layer in image.layers():
            name = blob_path(layer.digest())
            if name not in entries:
                entries[name] = Entry(name, layer.size(), layer.compressed, layer.digest())
        if tagged.attestation is not None:
            att = tagged.attestation
            index = attested_index_bytes(tagged, manifest_bytes)
            for desc, data in (*att.blobs, (att.descriptor, att.raw), (Descriptor.of(MediaType.OCI_INDEX, index), index)):
                entries[blob_path(desc.digest)] = bytes_entry(blob_path(desc.digest), data)
    return list(entries.values()), manifests


def layout_entries(images: Sequence[TaggedImage], index_annotations: Mapping[str, str] | None = None) -> list[Entry]:
    """All files of an OCI layout holding ``images``: blobs, index.json, oci-layout."""
    entries, manifests = blob_entries(images)
    index_manifests: list[dict[str, Any]] = []
    for tagged, manifest in zip(images, manifests, strict=True):
        index_manifests += _index_entries(tagged, manifest)
    index: dict[str, Any] = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": index_manifests}
    if index_annotations:
        index["annotations"] = dict(index_annotations)
    entries.append(bytes_entry("index.json", canonical_json(index)))
    entries.append(bytes_entry("oci-layout", LAYOUT_FILE))
    return entries


def write_oci_layout(images: Sequence[TaggedImage], dest: Path | BinaryIO, *, tar: bool = True,
                     index_annotations: Mapping[str, str] | None = None) -> None:
    """Write an OCI layout: a tar file (default) or stream, or, with ``tar=False``, a directory,
    added to what the directory held (:func:`_added_to_index`)."""
    if tar or not isinstance(dest, Path):
        write_tar(layout_entries(images, index_annotations), dest)
        return
    # an unnamed image is "latest" there, as BuildKit tags it: found by oci:DIR, replaced next time
    images = [t if t.names else replace(t, annotations={REF_ANNOTATION: "latest", **(t.annotations or {})})
              for t in images]
    entries = layout_entries(images, index_annotations)
    try:
        # Opened once: others may write into it (a shared /tmp, a build farm's directory), so
        # nothing below it is reached by a path the kernel walks again (builder.fileio.Directory).
        with Directory.open(dest, create=True) as root, root.locked():
            entries = [_added_to_index(e, root) if e.name == "index.json" else e for e in entries]
            _write_layout_dir(entries, root)
    except BeneathError as err:  # a link planted where the layout keeps a directory of its own
        raise PybuildError(f"cannot write the OCI layout to {dest}: {err}; pybuild writes only into "
                           "the layout's own directories") from None
    except OSError as err:  # a full disk, a read-only destination: one line, as for the tar form
        raise PybuildError(f"cannot write the OCI layout to {dest}: {err.strerror or err}") from None


def _added_to_index(entry: Entry, root: Directory) -> Entry:
    """The new index.json merged into the one ``root`` holds, as BuildKit's ``ociindex.Put``:
    its other images stay; an entry of the same name (``ref.name`` and
    ``io.containerd.image.name`` both) is replaced; index annotations are added to."""
    try:
        old_bytes = root.read("index.json", MAX_JSON_SIZE)
    except FileNotFoundError:
        return entry
    except ValueError as err:
        raise _index_error(root.path, str(err)) from None
    try:
        old = json.loads(old_bytes)
        if not isinstance(old, dict) or not isinstance(old.get("manifests", []), list):
            raise ValueError("not an image index")
    except ValueError as err:
        raise _index_error(root.path, str(err)) from None
    with entry.open() as f:
        new = json.loads(f.read())

    def name(m: Any) -> tuple[str | None, str | None]:
        annotations = m.get("annotations") if isinstance(m, dict) else None
        if not isinstance(annotations, dict):
            return None, None
        return annotations.get(REF_ANNOTATION), annotations.get(NAME_ANNOTATION)

    replaced = {name(m) for m in new["manifests"] if name(m)[0] is not None}
    kept = [m for m in old.get("manifests") or [] if name(m) not in replaced]
    merged = {**old, "schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": kept + new["manifests"]}
    if new.get("annotations"):
        merged["annotations"] = {**(old.get("annotations") or {}), **new["annotations"]}
    return bytes_entry("index.json", canonical_json(merged))


def _index_error(dest: Path, why: str) -> PybuildError:
    return PybuildError(f"cannot add to the OCI layout {dest}: its index.json is not an image index "
                        f"({why}); give an empty directory")


def _write_layout_dir(entries: Sequence[Entry], root: Directory) -> None:
    # Blobs first, index.json last: a reader never sees an index naming a missing blob.
    for entry in sorted(entries, key=lambda e: (e.name == "index.json", e.name)):
        folder, _, name = entry.name.rpartition("/")
        with root.subdir(folder, create=True) as where:
            st = where.lstat(name)
            if entry.name.startswith("blobs/") and st is not None and stat.S_ISREG(st.st_mode) \
                    and st.st_size == entry.size:
                continue
            with where.replacing(name, temp=f".{name}.{os.getpid()}.tmp") as out, entry.open() as src:
                remaining = entry.size
                while remaining:
                    chunk = src.read(min(1 << 20, remaining))
                    if not chunk:
                        raise ImageError(f"{entry.name}: content ended early")
                    out.write(chunk)
                    remaining -= len(chunk)


def index_json(files: ArchiveFiles) -> dict[str, Any]:
    return json.loads(files.read("index.json"))
