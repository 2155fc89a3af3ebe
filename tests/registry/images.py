"""Small test images built in memory: random tar layers, any compression, OCI or docker types."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

from builder.image.config import ConfigFile, History
from builder.image.digest import Digest
from builder.image.mediatypes import Compression, MediaType, layer_media_type
from builder.image.mutate import DerivedImage
from builder.image.platform import Platform
from builder.layers.compression import compress_stream, open_decompressed
from tests.store.imagegen import BytesLayer  # one in-memory Layer for all tests


def make_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_layer(files: dict[str, bytes], compression: Compression = Compression.GZIP,
               docker: bool = False) -> BytesLayer:
    tar = make_tar(files)
    out = io.BytesIO()
    compress_stream(io.BytesIO(tar), out, compression)
    return BytesLayer(out.getvalue(), tar, layer_media_type(compression, docker=docker))


def make_image(layers: int = 3, size: int = 4096, compression: Compression = Compression.GZIP,
               docker: bool = False, seed: str = "x", platform: Platform | None = None) -> DerivedImage:
    """An image of ``layers`` layers, each one file of ``size`` pseudo-random bytes."""
    made = []
    for i in range(layers):
        data = _random_bytes(f"{seed}-{i}", size)
        made.append(make_layer({f"file{i}.bin": data, f"dir{i}/note": f"{seed} {i}\n".encode()},
                               compression, docker))
    plat = platform or Platform.host()
    config = ConfigFile(architecture=plat.architecture, os=plat.os, variant=plat.variant,
                        history=tuple(History(created_by=f"layer {i}") for i in range(layers)))
    return DerivedImage(made, config,
                        manifest_media_type=MediaType.DOCKER_MANIFEST if docker else MediaType.OCI_MANIFEST)


def _random_bytes(seed: str, size: int) -> bytes:
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    # Incompressible but reproducible: a SHAKE stream seeded by the name.
    out += hashlib.shake_256(block).digest(size) if size else b""
    return bytes(out)


def write_oci_layout(image: DerivedImage, directory: Path, tag: str = "latest") -> Path:
    """An OCI image layout of one image (what skopeo copies from ``oci:DIR:TAG``)."""
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')

    def put(data: bytes) -> None:
        (blobs / Digest.of(data).hex).write_bytes(data)

    for layer in image.layers():
        put(layer.blob)  # type: ignore[attr-defined]
    put(image.raw_config())
    put(image.raw_manifest())
    import json

    index = {"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX.value, "manifests": [{
        "mediaType": image.manifest().media_type, "digest": str(image.digest()),
        "size": len(image.raw_manifest()),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def layer_tar(blob: bytes, compression: Compression) -> bytes:
    with open_decompressed(io.BytesIO(blob), compression) as raw:
        return raw.read()


def random_name(prefix: str = "t") -> str:
    return f"{prefix}{os.urandom(4).hex()}"
