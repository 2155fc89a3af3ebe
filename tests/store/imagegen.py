"""Small images made in memory with the image model (no docker needed): tar layers of
given files, any compression, OCI or docker media types, and archives of them."""

from __future__ import annotations

import hashlib
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from builder.export import TaggedImage
from builder.export.archive import save
from builder.image.config import ConfigFile, ContainerConfig, History
from builder.image.digest import Digest, VerifyingReader
from builder.image.mediatypes import Compression, MediaType, layer_media_type
from builder.image.mutate import DerivedImage
from builder.image.platform import Platform
from builder.layers.compression import compress_stream

# A file's content, or None for a whiteout of that path.
Files = dict[str, bytes | None]


def make_tar(files: Files) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            parent, _, base = name.rpartition("/")
            if data is None:
                name = f"{parent}/.wh.{base}" if parent else f".wh.{base}"
                data = b""
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@dataclass
class BytesLayer:
    """A Layer held in memory."""

    blob: bytes
    tar: bytes
    mediatype: str

    def digest(self) -> Digest:
        return Digest.of(self.blob)

    def diff_id(self) -> Digest:
        return Digest.of(self.tar)

    def size(self) -> int:
        return len(self.blob)

    def media_type(self) -> str:
        return self.mediatype

    def compressed(self):  # type: ignore[no-untyped-def]
        return VerifyingReader(io.BytesIO(self.blob), self.digest(), self.size())

    def uncompressed(self):  # type: ignore[no-untyped-def]
        return io.BytesIO(self.tar)


def make_layer(files: Files, compression: Compression = Compression.GZIP, docker: bool = False) -> BytesLayer:
    tar = make_tar(files)
    out = io.BytesIO()
    compress_stream(io.BytesIO(tar), out, compression)
    return BytesLayer(out.getvalue(), tar, layer_media_type(compression, docker=docker))


def noise(seed: str, size: int) -> bytes:
    """Reproducible, incompressible bytes."""
    return hashlib.shake_256(seed.encode()).digest(size) if size else b""


def image_of(layers: list[Files], *, compression: Compression = Compression.GZIP, docker: bool = False,
             created: str = "2024-01-02T03:04:05.123456789Z", env: tuple[str, ...] = ("A=1",),
             platform: Platform | None = None) -> DerivedImage:
    made = [make_layer(files, compression, docker) for files in layers]
    plat = platform or Platform.host()
    history = tuple(History(created=created, created_by=f"/bin/sh -c #(nop) COPY layer {i}")
                    for i in range(len(layers)))
    history += (History(created=created, created_by='/bin/sh -c #(nop)  CMD ["/bin/sh"]', empty_layer=True),)
    config = ConfigFile(architecture=plat.architecture, os=plat.os, variant=plat.variant, created=created,
                        config=ContainerConfig(env=env, cmd=("/bin/sh",)), history=history)
    return DerivedImage(made, config,
                        manifest_media_type=MediaType.DOCKER_MANIFEST if docker else MediaType.OCI_MANIFEST)


def make_image(seed: str = "x", layers: int = 2, size: int = 2048, **kwargs) -> DerivedImage:  # type: ignore[no-untyped-def]
    """``layers`` layers, each with one file of ``size`` bytes unique to ``seed``."""
    return image_of([{f"d{i}/f{i}.bin": noise(f"{seed}-{i}", size), f"d{i}/name": seed.encode()}
                     for i in range(layers)], **kwargs)


def write_archive(path: Path, image, names: tuple[str, ...] = (), fmt: str = "docker") -> Path:  # type: ignore[no-untyped-def]
    save([TaggedImage(image, names)], path, fmt)
    return path
