"""The combined image archive, and the file access that layouts and docker-archives share.

``save(images, out, format="docker")`` writes what BuildKit's docker exporter
writes: an OCI image layout (``oci-layout``, ``index.json``, ``blobs/``) plus
docker's ``manifest.json`` and ``repositories`` naming the same blobs, so one
tar serves ``docker load``, ``skopeo inspect oci-archive:`` and ``umoci``.
``format="oci"`` leaves out the docker files. Output is deterministic: sorted
entries, numeric owners 0, mtime ``SOURCE_DATE_EPOCH`` or 0.

``read_archive(path)`` reads either kind (and plain docker-archives from
``docker save``), tar or directory, gzip- or zstd-compressed or not.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from builder.errors import DigestMismatchError, ImageError, PybuildError, UsageError
from builder.export import TaggedImage
from builder.fileio import BeneathError, Directory
from builder.image.digest import Digest
from builder.image.platform import Platform
from builder.layers.compression import CHUNK, detect, open_decompressed


class SaveFormat(StrEnum):
    OCI = "oci"
    DOCKER = "docker"


class ArchiveError(ImageError):
    """An archive is not a readable OCI layout or docker-archive."""


class MissingFileError(ArchiveError):
    """A file the archive's own index names is not in it."""


# --- reading: one interface over a tar file and a directory --------------------------------

class ArchiveFiles(ABC):
    """Read-only access to the files of an archive by their path inside it."""

    description: str

    @abstractmethod
    def exists(self, name: str) -> bool:
        """Whether the archive holds a regular file at ``name``."""

    @abstractmethod
    def size(self, name: str) -> int:
        """The size of the file at ``name``."""

    @abstractmethod
    def open(self, name: str) -> BinaryIO:
        """The bytes of the file at ``name``."""

    def read(self, name: str, limit: int = 64 << 20) -> bytes:
        """A small file (JSON) read whole; refuses absurd sizes instead of eating memory."""
        if self.size(name) > limit:
            raise ArchiveError(f"{self.description}: {name} is larger than {limit} bytes")
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:  # noqa: B027 - most archives hold nothing open
        """Release what reading holds open (a tar file); nothing by default."""


def clean_name(name: str) -> str:
    """A member name as a relative POSIX path (``./a//b`` -> ``a/b``); refuses ``..``."""
    path = PurePosixPath(name.lstrip("/"))
    parts = [p for p in path.parts if p not in ("", ".")]
    if ".." in parts:
        raise ArchiveError(f"refusing path {name!r}: it leaves the archive")
    return "/".join(parts)


class TarFiles(ArchiveFiles):
    """Random access to the members of an uncompressed tar file."""

    def __init__(self, path: Path, description: str | None = None) -> None:
        self.description = description or str(path)
        try:
            self._tar = tarfile.open(path, "r:")  # noqa: SIM115 - closed by close()
        except (tarfile.TarError, OSError) as err:
            raise ArchiveError(f"{self.description} is not a tar archive: {err}") from None
        self._members: dict[str, tarfile.TarInfo] = {}
        try:
            for member in self._tar.getmembers():
                with contextlib.suppress(ArchiveError):
                    self._members[clean_name(member.name)] = member
        except (tarfile.TarError, OSError, EOFError) as err:
            self._tar.close()
            raise ArchiveError(f"{self.description}: damaged tar archive: {err}") from None

    def _member(self, name: str) -> tarfile.TarInfo:
        member = self._members.get(clean_name(name))
        depth = 0
        while member is not None and (member.issym() or member.islnk()) and depth < 16:
            target = member.linkname
            if member.issym():
                target = str(PurePosixPath(clean_name(name)).parent / target)
            name = _normalize_link(target)
            member = self._members.get(name)
            depth += 1
        if member is None:
            raise MissingFileError(f"{self.description}: no file {name!r} in the archive")
        if not member.isfile():
            raise ArchiveError(f"{self.description}: {name!r} is not a regular file")
        return member

    def exists(self, name: str) -> bool:
        try:
            self._member(name)
        except ArchiveError:
            return False
        return True

    def size(self, name: str) -> int:
        return self._member(name).size

    def open(self, name: str) -> BinaryIO:
        f = self._tar.extractfile(self._member(name))
        assert f is not None
        return f  # type: ignore[return-value]  # tarfile's IO[bytes], no typing.BinaryIO subclass

    def close(self) -> None:
        self._tar.close()


def _normalize_link(target: str) -> str:
    parts: list[str] = []
    for part in PurePosixPath(target.lstrip("/")).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return "/".join(parts)


class DirFiles(ArchiveFiles):
    """Files of an unpacked layout, each opened below the directory through descriptors
    (:class:`builder.fileio.Directory`): a link is followed while it stays inside, and one
    swapped in by someone else meanwhile is never followed out of it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.description = str(root)

    def _open(self, name: str) -> BinaryIO:
        try:
            with Directory.open(self.root) as root:
                return root.open_beneath(clean_name(name))
        except FileNotFoundError:
            raise MissingFileError(f"{self.description}: no file {name!r}") from None
        except BeneathError as err:
            if err.kind == "escape":
                raise ArchiveError(f"{self.description}: {name!r} points outside the layout ({err})") from None
            raise ArchiveError(f"{self.description}: {name!r} is not a regular file") from None
        except OSError as err:
            raise ArchiveError(f"{self.description}: cannot read {name!r}: {err.strerror or err}") from None

    def exists(self, name: str) -> bool:
        try:
            self._open(name).close()
        except ArchiveError:
            return False
        return True

    def size(self, name: str) -> int:
        with self._open(name) as f:
            return os.fstat(f.fileno()).st_size

    def open(self, name: str) -> BinaryIO:
        return self._open(name)


@contextlib.contextmanager
def open_archive(path: Path, scratch_dir: Path, name: str | None = None) -> Iterator[ArchiveFiles]:
    """Open a layout dir, or a tar that may be gzip/zstd compressed (unpacked to scratch first).

    ``name`` is what messages call it (``stdin`` for a spooled copy)."""
    shown = name or str(path)
    if path.is_dir():
        yield DirFiles(path)
        return
    try:
        with open(path, "rb") as f:
            compression = detect(f.read(8))
    except FileNotFoundError:
        raise UsageError(f"open {shown}: no such file or directory") from None
    except PermissionError:
        raise UsageError(f"open {shown}: permission denied") from None
    except IsADirectoryError:
        raise UsageError(f"{shown} is a directory") from None
    plain = path
    try:
        if compression.value != "none":
            from cache.blobs import temp_name

            # One per call: parallel stages each unpack their own (FROM docker-archive://...).
            plain = temp_name(scratch_dir, "-archive.tar")
            try:
                with open(path, "rb") as src, open(plain, "wb") as dst:
                    shutil.copyfileobj(open_decompressed(src, compression, what="data"), dst, CHUNK)
            except ImageError as err:
                raise ArchiveError(f"{shown}: {err}") from None
            except OSError as err:
                raise ArchiveError(f"cannot unpack {shown}: {err.strerror or err}") from None
        files = TarFiles(plain, shown)
        try:
            yield files
        finally:
            files.close()
    finally:
        if plain != path:
            plain.unlink(missing_ok=True)


def read_images(files: ArchiveFiles, platform: Platform | None = None) -> list[TaggedImage]:
    """The images of an archive: an OCI layout (index.json) or a docker-archive (manifest.json).

    Where an index offers several platforms, ``platform`` (default: the host's) chooses.
    """
    from builder.export import dockerarchive, layout

    docker_names: dict[str, tuple[str, ...]] = {}
    if files.exists("manifest.json"):
        docker_names = dockerarchive.repo_tags_by_config(files)
    if files.exists("index.json"):
        images = layout.read_oci_layout(files, platform)
        images = [
            TaggedImage(t.image, (*t.names, *docker_names.get(t.image.config_digest(), ())))
            for t in images
        ]
    elif files.exists("manifest.json"):
        images = dockerarchive.read_docker_archive(files)
    else:
        images = []
    if images:
        return [TaggedImage(t.image, _normalized(t.names, files)) for t in images]
    if files.exists("repositories"):
        raise ArchiveError(
            f"{files.description} is a legacy docker-archive (no manifest.json, docker < 1.10): "
            "not supported; save it again with a newer docker"
        )
    raise ArchiveError(
        f"{files.description} is neither an OCI image layout (no index.json) "
        "nor a docker-archive (no manifest.json)"
    )


def _normalized(names: Sequence[str], files: ArchiveFiles) -> tuple[str, ...]:
    """Full names (``docker.io/library/busybox:latest``), each once, in archive order."""
    from builder.image.reference import Reference

    out: dict[str, None] = {}
    for name in names:
        ref = Reference.try_parse(name)
        if ref is None or ref.tag is None:
            raise ArchiveError(f"{files.description}: invalid image name {name!r} in the archive")
        out[str(ref.without_tag().with_tag(ref.tag))] = None
    return tuple(out)


# --- writing: deterministic tar ----------------------------------------------------------

def source_date_epoch() -> int:
    """Archive entry mtimes: ``$SOURCE_DATE_EPOCH`` when set (reproducible builds), else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not value:
        return 0
    try:
        return max(0, int(value))
    except ValueError:
        raise UsageError(f"invalid SOURCE_DATE_EPOCH {value!r}: expected seconds since 1970") from None


@dataclass(frozen=True)
class Entry:
    """One file to write: its bytes come from ``open()``; ``digest`` is checked when given."""

    name: str
    size: int
    open: Callable[[], BinaryIO]
    digest: Digest | None = None


def bytes_entry(name: str, data: bytes) -> Entry:
    return Entry(name, len(data), lambda: io.BytesIO(data))


class TarWriter:
    """Writes sorted entries as an uncompressed tar with fixed owners and mtimes."""

    def __init__(self, out: BinaryIO, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._written = 0

    def _header(self, info: tarfile.TarInfo) -> None:
        info.mtime = self._mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        data = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        self._write(data)

    def _write(self, data: bytes) -> None:
        self._out.write(data)
        self._written += len(data)

    def write_all(self, entries: Sequence[Entry]) -> None:
        dirs: set[str] = set()
        for entry in sorted(entries, key=lambda e: e.name):
            parent = PurePosixPath(entry.name).parent
            for d in reversed([parent, *parent.parents]):
                name = str(d)
                if name != "." and name not in dirs:
                    dirs.add(name)
                    info = tarfile.TarInfo(name + "/")
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    self._header(info)
            self._file(entry)
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))
        remainder = self._written % tarfile.RECORDSIZE
        if remainder:
            self._write(b"\0" * (tarfile.RECORDSIZE - remainder))

    def _file(self, entry: Entry) -> None:
        info = tarfile.TarInfo(entry.name)
        info.size = entry.size
        info.mode = 0o644
        self._header(info)
        hasher = hashlib.sha256()
        copied = 0
        with entry.open() as src:
            while copied < entry.size:
                chunk = src.read(min(CHUNK, entry.size - copied))
                if not chunk:
                    break
                hasher.update(chunk)
                self._write(chunk)
                copied += len(chunk)
        if copied != entry.size:
            raise ImageError(f"{entry.name}: expected {entry.size} bytes, got {copied}")
        if entry.digest is not None and "sha256:" + hasher.hexdigest() != entry.digest:
            raise DigestMismatchError(entry.digest, "sha256:" + hasher.hexdigest(), entry.name)
        pad = (-entry.size) % tarfile.BLOCKSIZE
        if pad:
            self._write(b"\0" * pad)


def write_tar(entries: Sequence[Entry], dest: Path | BinaryIO) -> None:
    """Write a deterministic tar to a path (atomically: temp file, fsync, rename) or a stream."""
    mtime = source_date_epoch()
    if not isinstance(dest, Path):
        try:
            TarWriter(dest, mtime).write_all(entries)
            dest.flush()
        except OSError as err:  # a reader that left too (EPIPE): the archive it got is cut short
            name = getattr(dest, "name", "the output")
            raise PybuildError(f"cannot write the archive to {name}: {err.strerror or err}") from None
        return
    from builder.export.destination import output_file

    with output_file(dest) as out:
        try:
            TarWriter(out, mtime).write_all(entries)
        except OSError as err:
            raise PybuildError(f"cannot write {dest}: {err.strerror or err}") from None


def save(images: Sequence[TaggedImage], dest: Path | BinaryIO, format: SaveFormat | str = "docker",
         index_annotations: Mapping[str, str] | None = None) -> None:
    """Write images into one tar: ``docker`` = OCI layout + manifest.json, ``oci`` = OCI layout."""
    from builder.export import dockerarchive, layout

    fmt = SaveFormat(format)
    entries = layout.layout_entries(images, index_annotations)
    if fmt is SaveFormat.DOCKER:
        entries += dockerarchive.docker_entries(images)
    write_tar(entries, dest)
