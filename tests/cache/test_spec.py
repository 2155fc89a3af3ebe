"""--cache-from/--cache-to values, as BuildKit's CLI accepts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import UsageError
from builder.image.mediatypes import Compression
from cache.remote import CacheMode, CacheSpec, CacheType


def test_registry_defaults_and_options() -> None:
    spec = CacheSpec.parse("type=registry,ref=127.0.0.1:5000/c:1", export=True)
    assert (spec.type, spec.ref, spec.mode, spec.compression, spec.cache_mounts) == (
        CacheType.REGISTRY, "127.0.0.1:5000/c:1", CacheMode.MIN, Compression.GZIP, False)
    spec = CacheSpec.parse("type=registry,ref=r/c:1,mode=max,compression=zstd,cache-mounts=true,"
                           "ignore-error=true,oci-mediatypes=true", export=True)
    assert (spec.mode, spec.compression, spec.cache_mounts, spec.ignore_error) == (
        CacheMode.MAX, Compression.ZSTD, True, True)


def test_a_bare_ref_is_a_registry_cache() -> None:
    spec = CacheSpec.parse("127.0.0.1:5000/c:1", export=False)
    assert spec.type is CacheType.REGISTRY and spec.ref == "127.0.0.1:5000/c:1"


def test_local_uses_dest_to_export_and_src_to_import() -> None:
    assert CacheSpec.parse("type=local,dest=/x", export=True).path == Path("/x")
    spec = CacheSpec.parse("type=local,src=/x,tag=t", export=False)
    assert (spec.path, spec.tag, spec.description) == (Path("/x"), "t", "/x (tag t)")
    with pytest.raises(UsageError, match="type=local needs src=DIR"):
        CacheSpec.parse("type=local,dest=/x", export=False)


def test_local_import_takes_a_manifest_digest() -> None:
    digest = "sha256:" + "ab" * 32
    spec = CacheSpec.parse(f"type=local,src=/x,digest={digest}", export=False)
    assert (spec.path, spec.digest, spec.description) == (Path("/x"), digest, f"/x@{digest}")
    with pytest.raises(UsageError, match="invalid digest 'sha256:12'"):
        CacheSpec.parse("type=local,src=/x,digest=sha256:12", export=False)
    with pytest.raises(UsageError, match="digest= picks a cache to import"):
        CacheSpec.parse(f"type=local,dest=/x,digest={digest}", export=True)


@pytest.mark.parametrize(("text", "message"), [
    ("type=gha", "type must be registry, local or inline"),
    ("type=registry,ref=r/c:1,mode=all", "expected min|max"),
    ("type=registry,ref=r/c:1,compression=none", "compression must be gzip or zstd"),
    ("type=registry,ref=r/c:1,cache-mounts=maybe", "cache-mounts must be true or false"),
    ("type=registry,ref=r/c:1,,", "expected key=value pairs"),
    ("type=registry,ref=r/c:1,color=blue", "unknown option 'color'"),
])
def test_bad_values_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        CacheSpec.parse(text, export=True)
    assert str(info.value).startswith("invalid --cache-to")
