"""Round trips through the real docker engine, skopeo and umoci: an image docker built and
saved loads into pybuild; pybuild's docker-format save loads back into docker with the same
image ID; its OCI save is what skopeo and umoci read, with the same diff_ids."""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.image.mediatypes import Compression
from tests.helpers.tools import require_tool, run_pybuild
from tests.store.imagegen import make_image, write_archive

pytestmark = pytest.mark.docker


def _docker(docker: str, *args: str, input: bytes | None = None) -> str:
    proc = subprocess.run([docker, *args], capture_output=True, input=input, timeout=300,
                          env={**os.environ, "DOCKER_BUILDKIT": "0"})
    assert proc.returncode == 0, f"docker {' '.join(args)}: {proc.stderr.decode()}"
    return proc.stdout.decode()


@pytest.fixture(scope="module")
def docker_image(docker: str, busybox_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A two-layer image built by docker's classic builder on a busybox base."""
    work = tmp_path_factory.mktemp("dockerimg")
    suffix = os.urandom(4).hex()
    base, name = f"pybuild-test-base-{suffix}:1", f"pybuild-test-rt-{suffix}:1"
    with tarfile.open(work / "rootfs.tar", "w") as tar:
        tar.add(busybox_rootfs, arcname=".")
    _docker(docker, "import", str(work / "rootfs.tar"), base)
    (work / "ctx").mkdir()
    (work / "ctx" / "Dockerfile").write_text(
        f"FROM {base}\n"
        "RUN mkdir -p /data && echo hello > /data/a && echo gone > /data/b\n"
        "RUN rm /data/b && echo more >> /data/a\n"
        'ENV GREETING="hi there"\nLABEL test=pybuild\nCMD ["/bin/sh"]\n'
    )
    _docker(docker, "build", "--force-rm", "--network", "host", "-q", "-t", name, str(work / "ctx"))
    inspect = json.loads(_docker(docker, "image", "inspect", name))[0]
    _docker(docker, "save", "-o", str(work / "saved.tar"), name)
    yield {"name": name, "base": base, "inspect": inspect, "saved": work / "saved.tar", "work": work}
    subprocess.run([docker, "rmi", "-f", name, base], capture_output=True)


def test_docker_save_loads_into_pybuild(docker_image: dict, tmp_path: Path):
    root = tmp_path / "root"
    out = run_pybuild("load", "-i", str(docker_image["saved"]), root=root, check=True).stdout.decode()
    assert out.strip() == f"Loaded image: {docker_image['name']}"
    ours = json.loads(run_pybuild("inspect", docker_image["name"], root=root, check=True).stdout)[0]
    theirs = docker_image["inspect"]
    for key in ("Id", "RepoTags", "Created", "Architecture", "Os", "RootFS", "Comment", "Author", "Size"):
        assert ours[key] == theirs[key], key
    for key in ("Env", "Cmd", "Labels", "Entrypoint", "WorkingDir", "User"):
        assert ours["Config"][key] == theirs["Config"][key], key
    history = run_pybuild("history", "--no-trunc", "--format", "json", docker_image["name"],
                          root=root, check=True).stdout.decode().splitlines()
    theirs_history = _docker(require_tool("docker"), "history", "--no-trunc", "--format", "{{json .}}",
                             docker_image["name"]).splitlines()
    assert [json.loads(h)["CreatedBy"] for h in history] == [json.loads(h)["CreatedBy"] for h in theirs_history]
    assert [json.loads(h)["Size"] for h in history] == [json.loads(h)["Size"] for h in theirs_history]
    ours_table = run_pybuild("images", docker_image["name"], root=root, check=True).stdout.decode()
    theirs_table = _docker(require_tool("docker"), "images", docker_image["name"])
    assert ours_table.split()[-1] == theirs_table.split()[-1]  # SIZE, as docker rounds it
    assert run_pybuild("store", "check", root=root).returncode == 0


def test_pybuild_docker_save_loads_into_docker_with_the_same_id(docker_image: dict, docker: str, tmp_path: Path):
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(docker_image["saved"]), root=root, check=True)
    run_pybuild("tag", docker_image["name"], docker_image["name"] + "-copy", root=root, check=True)
    out = tmp_path / "out.tar"
    run_pybuild("save", "-o", str(out), docker_image["name"] + "-copy", root=root, check=True)
    loaded = _docker(docker, "load", "-i", str(out))
    assert f"Loaded image: {docker_image['name']}-copy" in loaded
    try:
        again = json.loads(_docker(docker, "image", "inspect", docker_image["name"] + "-copy"))[0]
        assert again["Id"] == docker_image["inspect"]["Id"]
        assert again["RootFS"] == docker_image["inspect"]["RootFS"]
    finally:
        subprocess.run([docker, "rmi", docker_image["name"] + "-copy"], capture_output=True)


@pytest.mark.parametrize("compression", [Compression.GZIP, Compression.ZSTD, Compression.NONE])
def test_any_layer_compression_loads_into_docker(docker: str, tmp_path: Path, compression: Compression):
    """zstd layers are saved as gzip for docker (docker 20.10 cannot load zstd)."""
    root = tmp_path / "root"
    name = f"pybuild-test-comp-{os.urandom(3).hex()}:{compression}"
    img = make_image(f"comp-{compression}", compression=compression)
    write_archive(tmp_path / "in.tar", img, (name,), "oci")
    run_pybuild("load", "-i", str(tmp_path / "in.tar"), root=root, check=True)
    run_pybuild("save", "-o", str(tmp_path / "out.tar"), name, root=root, check=True)
    _docker(docker, "load", "-i", str(tmp_path / "out.tar"))
    try:
        info = json.loads(_docker(docker, "image", "inspect", name))[0]
        assert info["Id"] == img.config_digest()
        assert info["RootFS"]["Layers"] == [str(layer.diff_id()) for layer in img.layers()]
    finally:
        subprocess.run([docker, "rmi", name], capture_output=True)
    assert run_pybuild("store", "check", root=root).returncode == 0


def test_pybuild_oci_save_is_read_by_skopeo_and_umoci(docker_image: dict, tmp_path: Path):
    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(docker_image["saved"]), root=root, check=True)
    out = tmp_path / "oci.tar"
    run_pybuild("save", "--format", "oci", "-o", str(out), docker_image["name"], root=root, check=True)
    config = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{out}"],
                                       capture_output=True, check=True).stdout)
    diff_ids = docker_image["inspect"]["RootFS"]["Layers"]
    assert config["rootfs"]["diff_ids"] == diff_ids
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(out) as tar:
        tar.extractall(layout, filter="data")
    tag = docker_image["name"].rsplit(":", 1)[1]
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:{tag}", str(bundle)], capture_output=True, check=True)
    assert (bundle / "rootfs" / "data" / "a").read_text() == "hello\nmore\n"
    assert not (bundle / "rootfs" / "data" / "b").exists()
    assert (bundle / "rootfs" / "bin" / "busybox").is_file()


def test_saving_twice_gives_identical_files(docker_image: dict, tmp_path: Path):
    root = tmp_path / "root"
    run_pybuild("load", "-i", str(docker_image["saved"]), root=root, check=True)
    for fmt in ("docker", "oci"):
        a, b = tmp_path / f"a-{fmt}.tar", tmp_path / f"b-{fmt}.tar"
        run_pybuild("save", "--format", fmt, "-o", str(a), docker_image["name"], root=root, check=True)
        run_pybuild("save", "--format", fmt, "-o", str(b), docker_image["name"], root=root, check=True)
        assert a.read_bytes() == b.read_bytes()


def test_two_images_sharing_a_base_in_one_archive(docker_image: dict, docker: str, tmp_path: Path):
    both = tmp_path / "both.tar"
    _docker(docker, "save", "-o", str(both), docker_image["name"], docker_image["base"])
    base_id = json.loads(_docker(docker, "image", "inspect", docker_image["base"]))[0]["Id"]
    root = tmp_path / "root"
    out = run_pybuild("load", "-i", str(both), root=root, check=True).stdout.decode().splitlines()
    assert sorted(out) == sorted([f"Loaded image: {docker_image['name']}", f"Loaded image: {docker_image['base']}"])
    # The base layer is stored once.
    base_layer = docker_image["inspect"]["RootFS"]["Layers"][0]
    assert (root / "blobs" / "sha256" / base_layer[7:]).is_file()
    copies = {docker_image["name"]: docker_image["name"] + "-two", docker_image["base"]: docker_image["base"] + "-two"}
    for source, target in copies.items():
        run_pybuild("tag", source, target, root=root, check=True)
    run_pybuild("save", "-o", str(tmp_path / "out.tar"), *copies.values(), root=root, check=True)
    _docker(docker, "load", "-i", str(tmp_path / "out.tar"))
    try:
        ids = {json.loads(_docker(docker, "image", "inspect", t))[0]["Id"] for t in copies.values()}
        assert ids == {docker_image["inspect"]["Id"], base_id}
    finally:
        subprocess.run([docker, "rmi", *copies.values()], capture_output=True)
