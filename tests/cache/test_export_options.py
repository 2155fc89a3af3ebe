"""--cache-to's options as BuildKit's cache exporters take them: image-manifest, oci-mediatypes,
compression, compression-level, force-compression (they were taken and ignored); --cache-from
reads each shape. A second machine with an empty store proves the cache is used (CACHED)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from builder.errors import UsageError
from cache.remote import CacheSpec
from tests.cache.conftest import ran, steps, write_context
from tests.helpers.tools import require_tool

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CACHE_CONFIG = "application/vnd.pybuild.cache.config.v1+json"


def _raw(registry_ref: str) -> dict:
    skopeo = require_tool("skopeo")
    return json.loads(subprocess.run([skopeo, "inspect", "--tls-verify=false", "--raw", f"docker://{registry_ref}"],
                                     check=True, capture_output=True).stdout)


def _blobs(artifact: dict) -> list[dict]:
    """The layer descriptors of a cache manifest, or of its index (the config entry left out)."""
    return artifact.get("layers") or [d for d in artifact["manifests"] if d["mediaType"] != CACHE_CONFIG]


def _context(tmp_path: Path, name: str) -> Path:
    marker = uuid.uuid4().hex
    return write_context(tmp_path / name, {"Dockerfile": (
        "FROM busybox:local\n"
        # /run-id: a run of the step (--no-cache) is a new layer even within the same second
        f"RUN yes {marker} | head -c 300000 > /data; cat /proc/sys/kernel/random/uuid > /run-id\n"
        "RUN echo two > /two\n")})


def test_options_parse_as_buildkit_takes_them() -> None:
    spec = CacheSpec.parse("type=registry,ref=r/c:1", export=True)
    assert (spec.image_manifest, spec.oci_mediatypes, spec.force_compression, spec.compression_level) == (
        True, True, False, None)
    spec = CacheSpec.parse("type=registry,ref=r/c:1,oci-mediatypes=false", export=True)
    assert (spec.image_manifest, spec.oci_mediatypes) == (False, False)  # an index then, as BuildKit
    spec = CacheSpec.parse("type=local,dest=/x,image-manifest=false,compression=zstd,compression-level=19,"
                           "force-compression=true", export=True)
    assert (spec.image_manifest, spec.force_compression, spec.compression_level) == (False, True, 19)


@pytest.mark.parametrize("value, message", [
    ("image-manifest=true,oci-mediatypes=false", "image-manifest=true needs oci-mediatypes=true"),
    ("compression=zstd,oci-mediatypes=false", "compression=zstd needs oci-mediatypes=true"),
    ("compression-level=12", "compression-level=12 is not a gzip level"),
    ("compression-level=high", "compression-level='high' is not an integer"),
    ("force-compression=perhaps", "force-compression must be true or false"),
    ("image-manifest=yes-please", "image-manifest must be true or false"),
])
def test_option_errors(value: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        CacheSpec.parse(f"type=registry,ref=r/c:1,{value}", export=True)


@pytest.mark.parametrize("options, media_type", [
    ("image-manifest=true", OCI_MANIFEST),
    ("image-manifest=false", OCI_INDEX),
    ("oci-mediatypes=false", DOCKER_LIST),
])
def test_each_shape_serves_an_empty_machine(machines, tmp_path: Path, registry: str, options: str,
                                             media_type: str) -> None:
    """image-manifest=false and oci-mediatypes=false were ignored (always an OCI manifest). Now the
    ref holds the shape asked for (an index lists the blobs and the config, BuildKit's older
    shape; docker's manifest list with docker's layer types), and a machine with an empty store
    reads it: every step CACHED."""
    ctx = _context(tmp_path, "shape")
    ref = f"{registry}/cache/shape-{uuid.uuid4().hex[:8]}:1"
    first = machines()
    first.build(ctx, "--cache-to", f"type=registry,ref={ref},mode=max,{options}")
    artifact = _raw(ref)
    assert artifact["mediaType"] == media_type
    layer_type = ("application/vnd.docker.image.rootfs.diff.tar.gzip" if media_type == DOCKER_LIST
                  else "application/vnd.oci.image.layer.v1.tar+gzip")
    assert [d["mediaType"] for d in _blobs(artifact)] == [layer_type, layer_type]
    if media_type != OCI_MANIFEST:
        assert artifact["manifests"][-1]["mediaType"] == CACHE_CONFIG
    second = machines()
    built = second.build(ctx, "--cache-from", f"type=registry,ref={ref}")
    assert ran(built.stderr) == [] and steps(built.stderr)["cached"] == 2, built.stderr.decode()


def test_a_local_cache_index_serves_an_empty_machine(machines, tmp_path: Path) -> None:
    """type=local with image-manifest=false: index.json's entry is the cache's index; read back."""
    ctx = _context(tmp_path, "local-shape")
    cache = tmp_path / "cache"
    machines().build(ctx, "--cache-to", f"type=local,dest={cache},image-manifest=false")
    entry = json.loads((cache / "index.json").read_text())["manifests"][0]
    assert entry["mediaType"] == OCI_INDEX
    built = machines().build(ctx, "--cache-from", f"type=local,src={cache}")
    assert ran(built.stderr) == [] and steps(built.stderr)["cached"] == 2, built.stderr.decode()


def test_compression_level_and_force_compression(machines, tmp_path: Path, registry: str) -> None:
    """compression-level and force-compression were ignored. A level applies where a layer is
    compressed (the steps a machine ran, held uncompressed); a layer held in another compression
    (here gzip, fetched from a first cache) goes as it is into a zstd cache, unless
    force-compression, as BuildKit's exporters do. Each cache serves an empty machine."""
    ctx = _context(tmp_path, "levels")
    repo = f"{registry}/cache/levels-{uuid.uuid4().hex[:8]}"
    first = machines()
    first.build(ctx, "--cache-to", f"type=registry,ref={repo}:stored,mode=max,compression-level=0")
    stored = _blobs(_raw(f"{repo}:stored"))
    assert stored[0]["size"] > 300_000  # gzip level 0 stores the 300 kB of /data
    first.build(ctx, "--cache-to", f"type=registry,ref={repo}:gzip,mode=max,compression-level=9",
                "--no-cache")  # run again: the layers are new ones, held uncompressed
    squeezed = _blobs(_raw(f"{repo}:gzip"))
    assert squeezed[0]["size"] < 5_000
    second = machines()  # its layers come from the gzip cache: held gzip
    built = second.build(ctx, "--cache-from", f"type=registry,ref={repo}:gzip",
                         "--cache-to", f"type=registry,ref={repo}:zstd,mode=max,compression=zstd")
    assert ran(built.stderr) == [], built.stderr.decode()
    assert [d["digest"] for d in _blobs(_raw(f"{repo}:zstd"))] == [d["digest"] for d in squeezed]
    second.build(ctx, "--cache-to", f"type=registry,ref={repo}:forced,mode=max,compression=zstd,"
                                    "force-compression=true")
    forced = _blobs(_raw(f"{repo}:forced"))
    assert {d["mediaType"] for d in forced} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    for tag in ("stored", "forced"):
        built = machines().build(ctx, "--cache-from", f"type=registry,ref={repo}:{tag}")
        assert ran(built.stderr) == [] and steps(built.stderr)["cached"] == 2, built.stderr.decode()
