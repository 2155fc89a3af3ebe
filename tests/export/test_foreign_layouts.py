"""Layouts other tools write load into pybuild: skopeo (OCI dir with zstd layers, an
oci-archive with a full name, a docker-archive) and umoci (a layout it built itself)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.helpers.tools import require_tool, run_pybuild
from tests.store.imagegen import image_of, noise, write_archive


@pytest.fixture
def source(tmp_path: Path) -> Path:
    img = image_of([{"bin/a": noise("a", 40_000), "etc/conf": b"1"}, {"etc/conf": b"2", "bin/a": None}])
    return write_archive(tmp_path / "src.tar", img, ("src:1",), "oci")


def _skopeo(*args: str) -> bytes:
    return subprocess.run([require_tool("skopeo"), *args], capture_output=True, check=True, timeout=120).stdout


def _diff_ids(transport: str) -> list[str]:
    return json.loads(_skopeo("inspect", "--config", transport))["rootfs"]["diff_ids"]


def _loaded(root: Path, ref: str) -> dict:
    return json.loads(run_pybuild("inspect", ref, root=root, check=True).stdout)[0]


def test_skopeo_zstd_layout_dir(tmp_path: Path, source: Path):
    layout = tmp_path / "zstd"
    _skopeo("copy", "-q", "--dest-compress", "--dest-compress-format", "zstd",
            f"oci-archive:{source}", f"oci:{layout}:v1")
    manifest_digest = json.loads((layout / "index.json").read_text())["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest[7:]).read_text())
    assert {d["mediaType"] for d in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    root = tmp_path / "root"
    out = run_pybuild("load", "-i", str(layout), root=root, check=True).stdout.decode()
    # A bare ref.name ("v1") names no repository: the image loads untagged, as docker does.
    assert out.startswith("Loaded image ID: sha256:")
    image_id = out.split()[-1]
    assert _loaded(root, image_id)["RootFS"]["Layers"] == _diff_ids(f"oci:{layout}:v1")
    # Saved again for docker, the zstd layers become gzip but the image ID stays.
    run_pybuild("save", "-o", str(tmp_path / "again.tar"), image_id, root=root, check=True)
    assert _diff_ids(f"oci-archive:{tmp_path / 'again.tar'}") == _diff_ids(f"oci:{layout}:v1")
    assert run_pybuild("store", "check", root=root).returncode == 0


def test_skopeo_oci_archive_with_a_full_name_and_docker_archive(tmp_path: Path, source: Path):
    root = tmp_path / "root"
    _skopeo("copy", "-q", f"oci-archive:{source}", f"oci-archive:{tmp_path / 'named.tar'}:reg.example/team/app:7")
    out = run_pybuild("load", "-i", str(tmp_path / "named.tar"), root=root, check=True).stdout.decode()
    assert out == "Loaded image: reg.example/team/app:7\n"
    _skopeo("copy", "-q", f"oci-archive:{source}", f"docker-archive:{tmp_path / 'docker.tar'}:other/app:8")
    out = run_pybuild("load", "-i", str(tmp_path / "docker.tar"), root=root, check=True).stdout.decode()
    assert out == "Loaded image: other/app:8\n"
    expected = _diff_ids(f"oci-archive:{source}")
    assert _loaded(root, "reg.example/team/app:7")["RootFS"]["Layers"] == expected
    assert _loaded(root, "other/app:8")["RootFS"]["Layers"] == expected


def test_umoci_built_layout(tmp_path: Path):
    umoci = require_tool("umoci")
    layout = tmp_path / "layout"
    subprocess.run([umoci, "init", "--layout", str(layout)], check=True, capture_output=True)
    subprocess.run([umoci, "new", "--image", f"{layout}:base"], check=True, capture_output=True)
    # unpack + repack (umoci 0.4.7's `insert` writes tars without their end blocks).
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{layout}:base", str(bundle)],
                   check=True, capture_output=True)
    (bundle / "rootfs" / "srv").mkdir()
    (bundle / "rootfs" / "srv" / "hello.txt").write_text("hello from umoci\n")
    subprocess.run([umoci, "repack", "--image", f"{layout}:base", str(bundle)], check=True, capture_output=True)
    root = tmp_path / "root"
    out = run_pybuild("load", "-i", str(layout), root=root, check=True).stdout.decode()
    image_id = out.split()[-1]
    run_pybuild("tag", image_id, "from-umoci:1", root=root, check=True)
    files = run_pybuild("history", "--files", "from-umoci:1", root=root, check=True).stdout.decode()
    assert "A /srv/hello.txt" in files
