"""``--output``/``-o``: where a build's result goes besides the local store.

``type=image`` (the default: the store, and the registry with ``push=true``),
``type=oci`` and ``type=docker`` (image tarballs, the writers of ``pybuild
save``), ``type=tar`` and ``type=local`` (the final file system as a tar or a
directory, as BuildKit's exporters of the same names). ``dest=-`` writes a
tarball to stdout.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import UsageError
from builder.export import TaggedImage
from builder.image.image import Image

TYPES = ("image", "oci", "docker", "tar", "local", "registry")


@dataclass(frozen=True)
class OutputSpec:
    type: str
    dest: str | None = None
    push: bool = False
    names: tuple[str, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> OutputSpec:
        """``type=local,dest=out`` or docker's shorthand: a bare path means ``type=local,dest=PATH``."""
        if "=" not in text:
            if text == "-":
                return cls("tar", "-")
            return cls("local", text)
        fields: dict[str, str] = {}
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise UsageError(f"invalid --output {text!r}: {part!r} is not key=value")
            fields[key.strip().lower()] = value.strip()
        kind = fields.pop("type", "local")
        if kind not in TYPES:
            raise UsageError(f"invalid --output {text!r}: type must be one of {', '.join(TYPES)}")
        push = fields.pop("push", "false").lower() in ("1", "true", "yes") or kind == "registry"
        names = tuple(n for n in fields.pop("name", "").split(",") if n)
        dest = fields.pop("dest", None)
        if kind in ("oci", "docker", "tar", "local") and not dest:
            raise UsageError(f"invalid --output {text!r}: type={kind} needs dest=PATH")
        return cls("image" if kind == "registry" else kind, dest, push, names, fields)


ANNOTATION_TYPES = ("manifest", "manifest-descriptor", "index", "index-descriptor")


@dataclass(frozen=True)
class Annotations:
    """``--annotation [TYPE[,TYPE][PLATFORM]:]KEY=VALUE``, as buildx takes them, by where they go.

    ``manifest`` (the default) goes on the image manifest, wherever it is stored or pushed;
    ``manifest-descriptor`` and ``index`` on an OCI layout output's index.json entry and index.
    """

    manifest: dict[str, str] = field(default_factory=dict)
    manifest_descriptor: dict[str, str] = field(default_factory=dict)
    index: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, items: Sequence[str], platform: str) -> Annotations:
        import re

        found = cls()
        for item in items:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise UsageError(f"invalid --annotation {item!r}: expected [TYPE:]KEY=VALUE")
            types = ["manifest"]
            m = re.fullmatch(r"([a-z,-]+)(?:\[([^\]]+)\])?:(.+)", key)
            if m and all(t in ANNOTATION_TYPES for t in m[1].split(",")):
                types, key = m[1].split(","), m[3]
                if m[2] and m[2] != platform:
                    continue  # for another platform than the one built
            for kind in types:
                if kind == "index-descriptor":
                    raise UsageError(f"invalid --annotation {item!r}: an index descriptor exists only in a "
                                     "multi-platform build, and pybuild builds for the host platform")
                getattr(found, kind.replace("-", "_"))[key] = value
        return found


def export_outputs(specs: Sequence[str], image: Image, tags: Sequence[str], *, store, push: bool = False,  # type: ignore[no-untyped-def]
                   insecure_registries: Sequence[str] = (), progress=None,  # type: ignore[no-untyped-def]
                   annotations: Annotations | None = None) -> None:
    annotations = annotations or Annotations()
    outputs = [OutputSpec.parse(s) for s in specs]
    if push and not any(o.type == "image" and o.push for o in outputs):
        outputs.append(OutputSpec("image", push=True))
    for out in outputs:
        names = out.names or tuple(tags)
        if out.type == "image":
            if out.names:
                for name in out.names:
                    store.tag(str(image.digest()), name)
            if out.push:
                _push(image, names, store, insecure_registries, progress)
        elif out.type in ("oci", "docker"):
            from builder.export.archive import save

            # docker (20.10 here) cannot load zstd layers: the docker format carries gzip ones.
            exported = store.docker_compatible(image) if out.type == "docker" else image
            with _destination(out.dest) as dest:
                save([TaggedImage(exported, names, annotations.manifest_descriptor)], dest, format=out.type,
                     index_annotations=annotations.index)
        elif out.type == "tar":
            with tempfile.TemporaryDirectory(dir=store.tmp_dir) as tmp, _destination(out.dest) as dest:
                root = Path(tmp) / "rootfs"
                flatten(image, root)
                from builder.layers.tarwriter import write_layer

                write_layer(root, dest)
        elif out.type == "local":
            dest_dir = Path(out.dest or ".")
            dest_dir.mkdir(parents=True, exist_ok=True)
            flatten(image, dest_dir, same_owner=os.geteuid() == 0)


def flatten(image: Image, target: Path, *, same_owner: bool = True) -> None:
    """The image's final file system in ``target`` (layers applied in order, whiteouts honoured)."""
    from builder.layers.extract import extract_layer

    target.mkdir(parents=True, exist_ok=True)
    for layer in image.layers():
        with layer.uncompressed() as stream:
            extract_layer(stream, target, apply_whiteouts=True, same_owner=same_owner)


@contextlib.contextmanager
def _destination(dest: str | None):  # type: ignore[no-untyped-def]
    """A file to write an archive into: atomically renamed into place, or stdout for ``-``."""
    if dest in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _push(image: Image, names: Sequence[str], store, insecure, progress) -> None:  # type: ignore[no-untyped-def]
    from builder.registry import ClientOptions, push

    if not names:
        raise UsageError("push needs an image name: give -t NAME or -o type=image,name=NAME,push=true")
    options = ClientOptions(insecure_registries=frozenset(insecure))
    for name in names:
        push(image, name, options=options, store=store)
