"""``--output``/``-o``: where a build's result goes besides the local store.

``type=image`` (the default: the store, and the registry with ``push=true``),
``type=oci`` and ``type=docker`` (image tarballs, the writers of ``pybuild
save``), ``type=tar`` and ``type=local`` (the final file system as a tar or a
directory, as BuildKit's exporters of the same names). ``dest=-`` writes a
tarball to stdout.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from builder.errors import PybuildError, UsageError
from builder.export import TaggedImage
from builder.fileio import DIR_FLAGS, BeneathError, Directory
from builder.image.descriptor import Descriptor
from builder.image.image import Image
from builder.image.mediatypes import Compression, MediaType

if TYPE_CHECKING:
    from builder.export.attestation import AttestationManifest, Attestor

TYPES = ("image", "oci", "docker", "tar", "local", "registry", "cacheonly")
_IMAGE_OPTIONS = ("compression", "compression-level", "force-compression", "oci-mediatypes", "rewrite-timestamp")
# The options each exporter takes, as BuildKit's do (annotation.* and annotation-TYPE.* too,
# for image, registry, oci and docker).
OPTIONS = {
    "image": ("name", "push", "push-by-digest", "registry.insecure", "store", "unpack", *_IMAGE_OPTIONS),
    "oci": ("dest", "name", "tar", *_IMAGE_OPTIONS),
    "docker": ("dest", "name", *_IMAGE_OPTIONS),
    "tar": ("dest", "platform-split"),
    "local": ("dest", "platform-split"),
    "cacheonly": (),  # buildx's: build for the cache alone (pybuild's store keeps the image anyway)
}
OPTIONS["registry"] = OPTIONS["image"]
COMPRESSIONS = {"gzip": Compression.GZIP, "zstd": Compression.ZSTD, "uncompressed": Compression.NONE}


@dataclass(frozen=True)
class OutputSpec:
    """One ``--output``, its options checked and typed.

    ``compression`` is what layers held uncompressed (the ones this build made) are written
    as, every layer's with ``force_compression`` (an archive's default is gzip, BuildKit's),
    at ``compression_level`` where a layer is compressed; ``oci_mediatypes`` chooses OCI or docker
    media types (None: as the image has them). ``annotations`` are the output's own
    ``annotation[-TYPE].KEY=VALUE`` options. ``store=false`` (an image output) names nothing
    in the store: the image stays there untagged, as the build cache holds it. ``unpack``,
    ``platform-split`` and ``rewrite-timestamp`` are taken and change nothing: the store always
    unpacks the image, the build is for one platform, and with SOURCE_DATE_EPOCH every file of
    a layer the build makes is already clamped to it.
    """

    type: str
    dest: str | None = None
    push: bool = False
    names: tuple[str, ...] = ()
    compression: Compression | None = None
    force_compression: bool = False
    compression_level: int | None = None
    oci_mediatypes: bool | None = None
    store: bool = True
    tar: bool = True
    push_by_digest: bool = False
    insecure: bool = False
    annotations: tuple[str, ...] = ()  # as --annotation takes them: [TYPE:]KEY=VALUE

    def check_destination(self) -> None:
        """The destination is writable and of the right kind: checked before the build runs."""
        from builder.export.destination import OutputPathError, check_output_file

        if self.type == "local" or (self.type in ("oci", "docker") and not self.tar):
            dest = Path(self.dest or ".")
            try:
                is_dir = dest.is_dir()
                exists = is_dir or dest.exists()
            except OSError as err:  # under a directory we may not search
                raise OutputPathError(f'invalid output path "{dest}": {err.strerror}') from None
            if exists and not is_dir:
                raise OutputPathError(f'invalid output path: "{dest}" exists and is not a directory')
            check_output_file(dest / "x", make_parents=True)  # its directory can be made and written
        elif self.type in ("oci", "docker", "tar") and self.dest not in (None, "-"):
            check_output_file(self.dest, make_parents=True)

    @classmethod
    def parse(cls, text: str) -> OutputSpec:
        """``type=local,dest=out`` or docker's shorthand: a bare path means ``type=local,dest=PATH``.
        Fields are CSV, as buildx reads them: ``"name=a,b"`` quoted names two images."""
        import csv

        if "=" not in text:
            if text == "-":
                return cls("tar", "-")
            return cls("local", text)
        fields: dict[str, str] = {}
        annotations: list[str] = []
        for part in next(csv.reader([text]), []):
            key, sep, value = part.partition("=")
            if not sep:
                raise UsageError(f"invalid --output {text!r}: {part!r} is not key=value")
            name, dot, rest = key.strip().partition(".")
            name = name.lower()
            if name == "annotation" or name.startswith("annotation-"):
                kind = name.removeprefix("annotation").removeprefix("-") or "manifest"
                if kind not in ANNOTATION_TYPES:
                    raise UsageError(f"invalid --output {text!r}: {key.strip()!r}: annotation types are "
                                     f"{', '.join(ANNOTATION_TYPES)}")
                if not dot or not rest:
                    raise UsageError(f"invalid --output {text!r}: {part!r}: expected annotation.KEY=VALUE")
                annotations.append(f"{kind}:{rest}={value}")
                continue
            fields[name + dot + rest.lower()] = value.strip()
        if "type" not in fields:  # buildx's rule: only a bare path means type=local
            raise UsageError(f"invalid --output {text!r}: type is required for output "
                             f"(type={'|'.join(TYPES)})")
        kind = fields.pop("type")
        if kind not in TYPES:
            raise UsageError(f"invalid --output {text!r}: type must be one of {', '.join(TYPES)}")
        allowed = OPTIONS[kind]
        for name in fields:
            if name not in allowed:
                takes = f"it takes {', '.join(allowed)}" if allowed else "it takes no options"
                raise UsageError(f"invalid --output {text!r}: type={kind} takes no option {name!r} ({takes})")
        if annotations and kind in ("tar", "local"):
            raise UsageError(f"invalid --output {text!r}: type={kind} writes a file system, not an image: "
                             "it takes no annotations")

        def flag(name: str, default: bool = False) -> bool:
            value = fields.get(name)
            if value is None:
                return default
            if value.lower() in ("1", "true", "yes", ""):
                return True
            if value.lower() in ("0", "false", "no"):
                return False
            raise UsageError(f"invalid --output {text!r}: {name}={value!r} is not a boolean (true or false)")

        compression = None
        if "compression" in fields:
            compression = COMPRESSIONS.get(fields["compression"].lower())
            if compression is None:
                raise UsageError(f"invalid --output {text!r}: compression must be one of "
                                 f"{', '.join(COMPRESSIONS)}")
        from builder.layers.compression import parse_compression_level

        level = parse_compression_level(fields.get("compression-level"), compression, f"--output {text!r}")
        if level is not None and compression is None:
            compression = Compression.GZIP  # BuildKit's default compression, which the level is for
        oci = flag("oci-mediatypes") if "oci-mediatypes" in fields else None
        if compression is Compression.ZSTD:
            if oci is False:
                raise UsageError(f"invalid --output {text!r}: compression=zstd needs oci-mediatypes=true "
                                 "(docker's media types have no zstd layer)")
            oci = True  # as BuildKit: zstd layers exist only as OCI media types
        # unpack=false is BuildKit's default (buildx sends it with a push): pybuild's unpacked store
        # changes nothing the user sees.
        flag("unpack", False)
        tar = flag("tar", True)
        dest = fields.get("dest")
        if kind in ("oci", "tar") and not dest and tar:
            dest = "-"  # as buildx: an archive with no dest goes to stdout
        if kind == "docker" and not dest:
            raise UsageError(f"invalid --output {text!r}: type=docker needs dest=FILE (buildx loads it into "
                             "docker; `docker load -i FILE` does that here)")
        if kind in ("oci", "local") and not dest:
            raise UsageError(f"invalid --output {text!r}: type={kind} needs dest=PATH")
        if not tar and dest == "-":
            raise UsageError(f"invalid --output {text!r}: tar=false writes a directory, not stdout")
        if kind == "local" and dest == "-":
            raise UsageError(f"invalid --output {text!r}: dest cannot be stdout for the local exporter, "
                             "which writes a directory (type=tar,dest=- writes the files as a tar to stdout)")
        return cls(
            type="image" if kind == "registry" else kind, dest=dest,
            push=flag("push", kind == "registry"), names=tuple(n for n in fields.get("name", "").split(",") if n),
            compression=compression, force_compression=flag("force-compression"), compression_level=level,
            oci_mediatypes=oci, store=flag("store", True), tar=tar, push_by_digest=flag("push-by-digest"), insecure=flag("registry.insecure"),
            annotations=tuple(annotations),
        )

    @property
    def to_stdout(self) -> bool:
        """Whether this output is an archive written to stdout (``dest=-``, or a path that is the
        file stdout is: ``dest=/dev/stdout``)."""
        if self.type not in ("oci", "docker", "tar") or not self.tar or not self.dest:
            return False
        return self.dest == "-" or is_stdout(self.dest)

    @property
    def converts(self) -> bool:
        """Whether the image is written in another form than the store holds it in."""
        return self.compression is not None or self.oci_mediatypes is not None or bool(self.annotations)


def stores_names(specs: Sequence[str]) -> bool:
    """Whether the build's -t names go into the store: not when an image output says
    ``store=false`` (a push without keeping the image, as BuildKit's)."""
    return not any(out.type == "image" and not out.store for out in (OutputSpec.parse(s) for s in _given(specs)))


def is_stdout(path: str) -> bool:
    """Whether ``path`` is the file stdout is (``/dev/stdout``, or the file it was redirected to)."""
    try:
        st, out = os.stat(path), os.fstat(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # no such file yet, or stdout closed or not a file
        return False
    return (st.st_dev, st.st_ino) == (out.st_dev, out.st_ino)


def _given(specs: Sequence[str]) -> list[str]:
    """The ``--output`` values, an empty one (``-o "$OUT"`` with OUT unset) left out as buildx
    leaves it: read as the bare path "", it was the current directory, and the image's files
    were merged into whatever the user ran pybuild from."""
    return [text for text in specs if text]


def check_outputs(specs: Sequence[str], *, stdout: TextIO | None, tags: Sequence[str] = (),
                  push: bool = False, id_files: Mapping[str, str | None] | None = None) -> tuple[OutputSpec, ...]:
    """Every ``--output`` parsed and its destination checked, before the build runs. Stdout takes
    one archive, and never a terminal (buildx's rules: two archives there would be one corrupt
    stream, and a tar on a terminal is only noise), nor an ID file with it (``id_files``: flag
    -> path). ``stdout`` is None when it was closed. A push needs a name (``tags`` or the
    output's own): found out now, not after the build."""
    specs = _given(specs)
    outputs = tuple(OutputSpec.parse(text) for text in specs)
    if not tags and any(out.push and not out.names for out in _with_push(outputs, push, tags)):
        raise UsageError(_NO_PUSH_NAME)
    to_stdout = [out for out in outputs if out.to_stdout]
    if len(to_stdout) > 1:
        raise UsageError("multiple outputs configured to write to stdout: "
                         f"{', '.join(repr(text) for text in specs if OutputSpec.parse(text).to_stdout)}")
    if to_stdout and stdout is None:
        raise UsageError(f"the {to_stdout[0].type} output goes to stdout, which is closed: give dest=FILE")
    for flag, path in (id_files or {}).items():
        if to_stdout and path and is_stdout(path):
            raise UsageError(f"{flag} {path} is stdout, where the {to_stdout[0].type} archive goes: the two "
                             "would be one corrupt stream; give it a file")
    if to_stdout and stdout is not None and stdout.isatty():
        raise UsageError(f"dest file is required for the {to_stdout[0].type} exporter, refusing to write "
                         "to console: redirect stdout to a file or a pipe, or give dest=FILE")
    for out in outputs:
        out.check_destination()
    return outputs


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

    def merged(self, other: Annotations) -> Annotations:
        """These with ``other``'s over them (an output's own over the build's)."""
        return Annotations({**self.manifest, **other.manifest},
                           {**self.manifest_descriptor, **other.manifest_descriptor},
                           {**self.index, **other.index})


@dataclass(frozen=True)
class Exported:
    """What the outputs wrote: each push (PushResult), and the manifest each image output holds,
    pushes first (the registry's, an archive's index.json entry, the store's annotated one).
    These differ from the build's manifest when an output compressed layers, changed media
    types or added annotations, and --metadata-file must name the one a user copies, signs or
    deploys by."""

    pushed: tuple = ()
    manifests: tuple[Descriptor, ...] = ()


_EXPORTED_TO = {"oci": "oci image format", "docker": "docker image format", "tar": "client tarball",
                "local": "client directory"}


def export_outputs(specs: Sequence[str], image: Image, tags: Sequence[str], *, store, push: bool = False,
                   insecure_registries: Sequence[str] = (), progress=None,
                   annotations: Annotations | None = None, platform: str = "",
                   source_date_epoch: int | None = None, attestor: Attestor | None = None) -> Exported:
    """Write every output. With ``source_date_epoch``, every file a tar or local output writes
    has it as its time, as BuildKit's exporters of the file system set it (base image files too).
    With ``attestor``, a push and an OCI archive carry the image in an index beside its
    attestation manifest (BuildKit's attestation storage), type=local and type=tar get each
    statement as a file at their root, naming every file of the output; the store and a
    docker archive keep the image alone, as BuildKit's docker exporter drops attestations."""
    annotations = annotations or Annotations()
    pushed: list = []
    pushed_manifests: list[Descriptor] = []
    written: list[Descriptor] = []
    for out in _with_push([OutputSpec.parse(s) for s in _given(specs)], push, tags):
        started = time.monotonic()
        if out.type in ("oci", "docker") and out.compression is None:
            # BuildKit's default: an archive's layers leave the machine gzip'd, as a push sends
            # them (the same blobs, compressed once): the layers built here are held uncompressed
            out = replace(out, compression=Compression.GZIP)
        names = out.names or tuple(tags)
        theirs = Annotations.parse(out.annotations, platform)  # the output's own annotation.* options
        own = annotations.merged(theirs)
        attested = attestor is not None and (out.type == "oci" or (out.type == "image" and out.push))
        if attested and out.oci_mediatypes is False and progress is not None:
            progress.warning("oci-mediatypes=false is overridden: an image with attestations is an OCI "
                             "index of OCI manifests (as BuildKit turns OCI media types on for them)")
        exported = _as_output(image, out, own, store, oci=attested)
        if out.type == "image":
            if not out.store:
                pass  # store=false: nothing named in the store (the image stays there, untagged)
            elif theirs.manifest and names:
                # the output's own annotations are content of the image it names (BuildKit stores
                # it so): a later push or save of that name has them; the image ID stays
                annotated = store.converted(image, annotations={**(image.manifest().annotations or {}),
                                                                **own.manifest})
                digest = store.write_image(annotated, names)
                if not out.push:
                    written.append(Descriptor(annotated.manifest().media_type, digest,
                                               len(annotated.raw_manifest())))
            elif out.names:
                for name in out.names:
                    store.tag(str(image.digest()), name)
            if out.push:
                results = _push(exported, names, store, insecure_registries, progress, out, attestor)
                pushed += results
                # a push keeps the media type, may compress layers; attested, the index is pushed
                media_type = MediaType.OCI_INDEX if attestor else exported.manifest().media_type
                pushed_manifests += [Descriptor(media_type, r.digest, r.size) for r in results]
        elif out.type in ("oci", "docker"):
            from builder.export.archive import save
            from builder.export.layout import layout_manifest, write_oci_layout

            if out.type == "docker" and out.compression is not Compression.ZSTD:
                # docker (20.10 here) cannot load zstd layers: the docker format carries gzip ones
                # (a zstd base's too), unless zstd is what was asked for
                exported = store.docker_compatible(exported)
            tagged = [TaggedImage(exported, names, own.manifest_descriptor,
                                  docker_types=out.oci_mediatypes is False and not attested)]
            if attestor is not None and out.type == "oci":
                tagged = [replace(tagged[0], attestation=attestor.manifest_for(
                    layout_manifest(tagged[0]).digest, names, _platform_of(exported)))]
                written.append(_attested_descriptor(tagged[0]))
            else:
                written.append(layout_manifest(tagged[0]))
            if not out.tar:
                write_oci_layout(tagged, Path(out.dest or "."), tar=False, index_annotations=own.index)
            else:
                with _destination(out.dest) as dest:
                    save(tagged, dest, format=out.type, index_annotations=own.index)
        elif out.type == "tar":
            with tempfile.TemporaryDirectory(prefix=f"{os.getpid()}-", dir=store.tmp_dir) as tmp, \
                    _destination(out.dest) as dest:
                root = Path(tmp) / "rootfs"
                flatten(image, root, source_date_epoch=source_date_epoch)
                if attestor is not None:
                    with Directory.open(root) as opened:
                        _write_attestation_files(opened, attestor, _platform_of(image), source_date_epoch)
                from builder.layers.tarwriter import write_layer

                write_layer(root, dest)
        elif out.type == "local":
            export_local(image, Path(out.dest or "."), source_date_epoch=source_date_epoch,
                         also=None if attestor is None else functools.partial(
                             _write_attestation_files, attestor=attestor, platform=_platform_of(image),
                             source_date_epoch=source_date_epoch))
        if progress is not None and out.type in _EXPORTED_TO:
            # where the result went, as BuildKit's "exporting to oci image format" step says
            where = "stdout" if out.dest in (None, "-") and out.tar and out.type != "local" else out.dest or "."
            progress.message(f"exporting to {_EXPORTED_TO[out.type]} {where} done "
                             f"({time.monotonic() - started:.1f}s)")
    return Exported(tuple(pushed), (*pushed_manifests, *written))


def _with_push(outputs: Sequence[OutputSpec], push: bool, tags: Sequence[str]) -> list[OutputSpec]:
    """The outputs as ``--push`` makes them, unless one already pushes: the first image output
    pushes (buildx's rule: its options, its annotations), unless both it and -t give names,
    which differ here (pybuild's output names win, buildx's -t): then a push of the -t names
    is added, as when there is no image output."""
    outputs = list(outputs)
    if not push or any(o.type == "image" and o.push for o in outputs):
        return outputs
    for i, out in enumerate(outputs):
        if out.type == "image" and not (tags and out.names):
            outputs[i] = replace(out, push=True)
            return outputs
    return [*outputs, OutputSpec("image", push=True)]


_NO_PUSH_NAME = "push needs an image name: give -t NAME or -o type=image,name=NAME,push=true"


def export_local(image: Image, dest_dir: Path, *, source_date_epoch: int | None = None,
                 also: Callable[[Directory], None] | None = None) -> None:
    """The image's final file system merged into ``dest_dir``, as BuildKit's local exporter
    receives it (fsutil ``Merge``): its files replace those of the same name, its directories
    merge, and whatever else the directory held stays. The layers are applied in a scratch
    directory inside ``dest_dir`` first: applied in place, an image's whiteouts and opaque
    directories (``.wh..wh..opq`` at its root) would delete the user's own files there, as
    ``-o .`` exports into the project itself.

    Others may write into ``dest_dir`` (``-o /tmp/out``, a shared directory): it is opened
    once, and the scratch directory and everything merged are reached through descriptors
    (:class:`builder.fileio.Directory`), so that nothing swapped for a symlink meanwhile sends
    the image's files out of it."""
    from builder.export.destination import make_dir

    make_dir(dest_dir)
    try:
        dest = Directory.open(dest_dir)
    except OSError as err:
        raise PybuildError(f'cannot write the output directory "{dest_dir}": {err.strerror}') from None
    with dest:
        _sweep_scratch(dest)
        try:
            name, scratch = _make_scratch(dest)
        except OSError as err:
            raise PybuildError(f'cannot write the output directory "{dest_dir}": {err.strerror}') from None
        try:
            with scratch:
                flatten(image, scratch, same_owner=os.geteuid() == 0, source_date_epoch=source_date_epoch)
                if also is not None:  # what goes beside the file system (attestation files)
                    also(scratch)
                _merge_tree(scratch, dest)
        except OSError as err:
            raise PybuildError(f'cannot write the output directory "{dest_dir}": '
                               f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")) from None
        finally:
            with contextlib.suppress(OSError):
                _remove_scratch(dest, name)


_SCRATCH = ".pybuild-export-"


def _make_scratch(dest: Directory) -> tuple[str, Directory]:
    """A new private directory in ``dest``, opened: its name, and it. One that is not the
    directory made here by the time it is opened (renamed away and replaced by someone who
    writes into ``dest``) is an error, never written into."""
    import secrets

    while True:
        name = f"{_SCRATCH}{os.getpid()}-{secrets.token_hex(4)}"
        try:
            os.mkdir(name, 0o700, dir_fd=dest.fd)
            break
        except FileExistsError:
            continue
    fd = os.open(name, DIR_FLAGS, dir_fd=dest.fd)
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077:
        os.close(fd)
        raise PybuildError(f'cannot write the output directory "{dest.path}": its scratch directory {name} '
                           "was replaced by someone else's while the export ran")
    return name, Directory(fd, dest.path / name)


def _sweep_scratch(dest: Directory) -> None:
    """Remove the scratch dirs that killed exports into ``dest`` left (their pid is gone)."""
    from cache.blobs import pid_alive

    with contextlib.suppress(OSError):
        for name in os.listdir(dest.fd):
            pid = name[len(_SCRATCH):].split("-", 1)[0]
            if name.startswith(_SCRATCH) and pid.isdigit() and not pid_alive(int(pid)):
                st = dest.lstat(name)
                if st is not None and stat.S_ISDIR(st.st_mode):
                    _remove_scratch(dest, name)


def _remove_scratch(dest: Directory, name: str) -> None:
    """rmtree of ``name`` in ``dest``, the read-only directories a user's export left in it
    opened first (through descriptors: never through an image's symlink, nor one swapped in)."""
    if os.geteuid() != 0:
        with contextlib.suppress(OSError):
            fd = os.open(name, DIR_FLAGS, dir_fd=dest.fd)
            try:
                for _top, dirnames, _files, dir_fd in os.fwalk(".", dir_fd=fd):
                    for child in dirnames:  # before fwalk lists them
                        with contextlib.suppress(OSError):
                            os.chmod(child, 0o700, dir_fd=dir_fd, follow_symlinks=False)
            finally:
                os.close(fd)
    shutil.rmtree(name, dir_fd=dest.fd)


def _merge_tree(src: Directory, dest: Directory) -> None:
    """Move every entry of ``src`` into ``dest`` (same file system: renames, so hard links stay
    links); an entry there of the same name is replaced, unless both are directories, which
    merge. Nothing in ``dest`` is followed: a symlink there is replaced, never written through,
    and a directory merged into is opened once and reached through its descriptor."""
    for name in sorted(os.listdir(src.fd)):
        st = os.lstat(name, dir_fd=src.fd)
        is_dir = stat.S_ISDIR(st.st_mode)
        existing = dest.lstat(name)
        if is_dir and existing is not None and stat.S_ISDIR(existing.st_mode):
            # Not root: both must take changes meanwhile (an image's 0555 /usr/bin), and be
            # opened; the image's mode is set after.
            os.chmod(name, 0o700, dir_fd=src.fd, follow_symlinks=False)
            try:
                inner = _open_merged(dest, name, existing)
            except BeneathError:  # swapped for a link or a file since the look: replaced below
                existing = dest.lstat(name)
            else:
                with inner, src.subdir(name) as child:
                    _merge_dir(child, inner, st)
                continue
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            shutil.rmtree(name, dir_fd=dest.fd)  # the image has a file where the directory was
        elif existing is not None and is_dir:
            dest.unlink(name)  # a directory where a file or symlink was (rename cannot)
        # A directory moved to another parent must be writable (its '..' changes): not root,
        # a 0555 one is opened for the move and closed again.
        reopen = is_dir and not os.access(name, os.W_OK, dir_fd=src.fd, follow_symlinks=False)
        if reopen:
            os.chmod(name, stat.S_IMODE(st.st_mode) | stat.S_IWUSR, dir_fd=src.fd, follow_symlinks=False)
        try:
            # replaces a file or symlink, never follows one
            os.rename(name, name, src_dir_fd=src.fd, dst_dir_fd=dest.fd)
        except OSError as err:
            if err.errno != errno.EXDEV:  # a mount point inside dest: copy across it
                raise
            dest.unlink(name)
            # through the descriptors' /proc links: the directories opened, not their paths again
            shutil.move(f"/proc/self/fd/{src.fd}/{name}", f"/proc/self/fd/{dest.fd}/{name}")
        if reopen:
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dest.fd, follow_symlinks=False)


def _open_merged(dest: Directory, name: str, existing: os.stat_result) -> Directory:
    """The directory ``name`` of ``dest`` an image's directory merges into, opened and writable
    (not root, an earlier export's 0555 one is opened up; its mode is the image's after)."""
    try:
        inner = dest.subdir(name)
    except PermissionError:
        os.chmod(name, stat.S_IMODE(existing.st_mode) | stat.S_IRWXU, dir_fd=dest.fd, follow_symlinks=False)
        return dest.subdir(name)
    if not os.access(name, os.W_OK | os.X_OK, dir_fd=dest.fd, follow_symlinks=False):
        os.fchmod(inner.fd, stat.S_IMODE(os.fstat(inner.fd).st_mode) | stat.S_IRWXU)  # the one opened
    return inner


def _merge_dir(src: Directory, dest: Directory, st: os.stat_result) -> None:
    """:func:`_merge_tree` of two directories, then the image's owner, mode and times on ``dest``."""
    _merge_tree(src, dest)
    with contextlib.suppress(OSError):  # not the owner: docker keeps what it can too
        os.fchown(dest.fd, st.st_uid, st.st_gid)
    os.fchmod(dest.fd, stat.S_IMODE(st.st_mode))
    os.utime(dest.fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _as_output(image: Image, out: OutputSpec, annotations: Annotations, store, *, oci: bool = False) -> Image:
    """The image in the form ``out`` writes it: its compression, media types, manifest annotations.
    With ``oci`` (attestations), OCI media types whatever was asked, as BuildKit turns them on."""
    if oci and image.manifest().media_type != MediaType.OCI_MANIFEST:
        image = store.converted(image, docker=False)
    if not out.converts:
        return image
    manifest_annotations = {**(image.manifest().annotations or {}), **annotations.manifest}
    docker = None if out.oci_mediatypes is None else not out.oci_mediatypes
    if oci:
        docker = False
    return store.converted(image, compression=out.compression, force=out.force_compression, docker=docker,
                           annotations=manifest_annotations or None, level=out.compression_level)


def flatten(image: Image, target: Path | Directory, *, same_owner: bool = True,
            source_date_epoch: int | None = None) -> None:
    """The image's final file system in ``target`` (a path, made; or a directory opened already:
    reached through its descriptor), layers applied in order, whiteouts honoured, every
    entry's time ``source_date_epoch`` when given."""
    from builder.errors import UnsafeLayerError
    from builder.layers.extract import extract_layer

    if isinstance(target, Path):
        target.mkdir(parents=True, exist_ok=True)
    for layer in image.layers():
        try:
            with layer.uncompressed() as stream:
                extract_layer(stream, target, apply_whiteouts=True, same_owner=same_owner)
        except UnsafeLayerError as err:  # which layer: the entry alone names no image
            raise UnsafeLayerError(f"cannot export the image: its layer {layer.digest()}: {err}") from None
    if source_date_epoch is None:
        return
    ns = source_date_epoch * 1_000_000_000
    top = os.open(target, DIR_FLAGS) if isinstance(target, Path) else os.dup(target.fd)
    try:
        # a child's new time leaves its parent's
        for _dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top):
            for name in (*dirnames, *filenames):
                os.utime(name, ns=(ns, ns), dir_fd=dir_fd, follow_symlinks=False)
    finally:
        os.close(top)


@contextlib.contextmanager
def _destination(dest: str | None):
    """A file to write an archive into: atomically renamed into place, or stdout for ``-``."""
    if dest in (None, "-"):
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    from builder.export.destination import output_file

    with output_file(dest, make_parents=True) as f:
        yield f


def _platform_of(image: Image):
    from builder.image.platform import Platform

    config = image.config_file()
    return Platform(os=config.os or "linux", architecture=config.architecture or Platform.host().architecture,
                    variant=config.variant)


def _attested_descriptor(tagged: TaggedImage) -> Descriptor:
    from builder.export.layout import attested_index_bytes, layout_manifest_bytes

    return Descriptor.of(MediaType.OCI_INDEX, attested_index_bytes(tagged, layout_manifest_bytes(tagged)))


def _push(image: Image, names: Sequence[str], store, insecure, progress,
          out: OutputSpec, attestor: Attestor | None = None) -> list:
    from builder.image.reference import Reference
    from builder.registry import ClientOptions, push

    if not names:
        raise UsageError(_NO_PUSH_NAME)
    refs = [Reference.parse(name) for name in names]
    insecure = set(insecure) | ({ref.registry for ref in refs} if out.insecure else set())
    options = ClientOptions(insecure_registries=frozenset(insecure))
    results = []
    attestations: dict = {}  # one attestation manifest per image digest, whatever the names
    for ref in refs:
        # push-by-digest: only the manifest's digest names it, no tag moves (BuildKit's option)
        target = f"{ref.name}@{image.digest()}" if out.push_by_digest and attestor is None else str(ref)
        compress = out.compression is not Compression.NONE
        if progress is None:
            result = push(image, target, options=options, store=store, compress=compress, tag=attestor is None)
            results.append(_attest(result, ref, names, image, attestor, options, out, None, attestations))
            continue
        from builder.progress import StepTransfers

        # a push of a big image is not silent: its blobs are lines of a "pushing" step
        handle = progress.start(f"pushing {target}", counted=False)
        try:
            result = push(image, target, options=options, store=store, progress=StepTransfers(progress, handle),
                          compress=compress, tag=attestor is None)
            results.append(_attest(result, ref, names, image, attestor, options, out, progress, attestations))
        except PybuildError as err:
            progress.failed(handle, str(err).splitlines()[0] if str(err) else type(err).__name__)
            raise
        progress.done(handle)
    return results


def _attest(result, ref, names: Sequence[str], image: Image, attestor: Attestor | None, options,
            out: OutputSpec, progress, made: dict[str, AttestationManifest]):
    """After an attested image's push (by digest): its attestation manifest, then the index
    of both under the tag (or by digest with push-by-digest); the result names the index."""
    if attestor is None:
        return result
    from builder.export.attestation import attested_index
    from builder.registry.remote import push_manifests

    platform = _platform_of(image)
    key = str(result.digest)
    if key not in made:
        made[key] = attestor.manifest_for(result.digest, names, platform)
    att = made[key]
    image_desc = Descriptor(image.manifest().media_type, result.digest, result.size, platform=platform)
    index = attested_index(image_desc, att)
    target = replace(ref, tag=None) if out.push_by_digest else ref
    digest = push_manifests(target, att.blobs, [(att.raw, MediaType.OCI_MANIFEST), (index, MediaType.OCI_INDEX)],
                            options=options, progress=progress)
    return replace(result, digest=digest, size=len(index))


def _regular_files(root: Directory, prefix: str = "") -> Iterator[tuple[str, Directory, str]]:
    """The regular files under ``root`` (no symlink followed), in fsutil's walk order (by name):
    each one's relative path, its directory and its name there."""
    for name in sorted(os.listdir(root.fd)):
        st = root.lstat(name)
        if st is None:
            continue
        rel = prefix + name
        if stat.S_ISDIR(st.st_mode):
            with root.subdir(name) as child:
                yield from _regular_files(child, rel + "/")
        elif stat.S_ISREG(st.st_mode):
            yield rel, root, name


def _write_attestation_files(root: Directory, attestor: Attestor, platform, source_date_epoch: int | None) -> None:
    """BuildKit's local/tar exporters: the statements as files at the output's root, each
    naming every regular file of the output (path and sha256) as its subjects; mode 0600."""
    import hashlib

    from builder.image.digest import Digest

    files = []
    for rel, folder, name in _regular_files(root):
        hasher = hashlib.sha256()
        with os.fdopen(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder.fd), "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                hasher.update(chunk)
        files.append((rel, Digest.from_hasher(hasher)))
    for name, data in attestor.file_statements(files, platform):
        st = root.lstat(name)
        if st is not None and (stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise PybuildError(f"cannot write the attestation {name}: the image has a {name} of another kind")
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                     dir_fd=root.fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o600)
            if source_date_epoch is not None:
                f.flush()
                os.utime(f.fileno(), (source_date_epoch, source_date_epoch))
