"""OCI layouts and docker-archives: what pybuild writes is deterministic and readable by
itself, skopeo and umoci; what others write (any layer compression, nested indexes,
several platforms) reads back as the same image; broken archives are clear errors."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from builder.errors import ImageError, PybuildError
from builder.export import TaggedImage
from builder.export.archive import ArchiveError, open_archive, read_images, save
from builder.export.layout import write_oci_layout
from builder.image.descriptor import Descriptor, canonical_json
from builder.image.digest import Digest
from builder.image.mediatypes import Compression, MediaType
from builder.image.platform import Platform
from tests.helpers.tools import require_tool
from tests.store.imagegen import make_image, make_tar, noise


def _read(path: Path, tmp: Path) -> list[TaggedImage]:
    with open_archive(path, tmp) as files:
        images = read_images(files)
        # Touch everything while the archive is open.
        for tagged in images:
            for layer in tagged.image.layers():
                with layer.compressed() as f:
                    while f.read(1 << 16):
                        pass
        return images


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_save_is_deterministic(tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch):
    img = make_image("det", layers=3)
    save([TaggedImage(img, ("det:1",))], tmp_path / "a.tar", fmt)
    save([TaggedImage(make_image("det", layers=3), ("det:1",))], tmp_path / "b.tar", fmt)
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == sorted(names)
    assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    save([TaggedImage(img, ("det:1",))], tmp_path / "c.tar", fmt)
    with tarfile.open(tmp_path / "c.tar") as tar:
        assert {m.mtime for m in tar.getmembers()} == {1700000000}


@pytest.mark.parametrize("compression", list(Compression))
@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_save_then_read_gives_the_same_image(tmp_path: Path, fmt: str, compression: Compression):
    img = make_image("rt", compression=compression)
    save([TaggedImage(img, ("example.com:5000/team/rt:v1",))], tmp_path / "x.tar", fmt)
    (back,) = _read(tmp_path / "x.tar", tmp_path)
    assert back.names == ("example.com:5000/team/rt:v1",)
    assert back.image.raw_manifest() == img.raw_manifest()
    assert back.image.config_digest() == img.config_digest()
    with tarfile.open(tmp_path / "x.tar") as tar:
        layout = json.loads(tar.extractfile("index.json").read())
    (entry,) = layout["manifests"]
    assert entry["annotations"] == {"io.containerd.image.name": "example.com:5000/team/rt:v1",
                                    "org.opencontainers.image.ref.name": "v1"}


def test_docker_manifest_is_written_as_oci_with_the_same_image_id(tmp_path: Path):
    img = make_image("dock", docker=True)
    save([TaggedImage(img, ("dock:1",))], tmp_path / "x.tar", "docker")
    with tarfile.open(tmp_path / "x.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
        index = json.loads(tar.extractfile("index.json").read())
        repositories = json.loads(tar.extractfile("repositories").read())
    assert manifest == [{
        "Config": f"blobs/sha256/{img.config_digest().hex}",
        "RepoTags": ["dock:1"],
        "Layers": [f"blobs/sha256/{layer.digest().hex}" for layer in img.layers()],
    }]
    assert repositories == {"dock": {"1": img.layers()[-1].digest().hex}}
    assert index["manifests"][0]["mediaType"] == MediaType.OCI_MANIFEST
    (back,) = _read(tmp_path / "x.tar", tmp_path)
    assert back.image.config_digest() == img.config_digest()
    assert back.image.manifest().media_type == MediaType.OCI_MANIFEST


def test_several_images_and_untagged(tmp_path: Path):
    a, b = make_image("a"), make_image("b")
    save([TaggedImage(a, ("a:1", "a:2")), TaggedImage(b)], tmp_path / "x.tar", "docker")
    images = _read(tmp_path / "x.tar", tmp_path)
    by_id = {t.image.config_digest(): t.names for t in images}
    assert by_id[a.config_digest()] == ("docker.io/library/a:1", "docker.io/library/a:2")
    assert by_id[b.config_digest()] == ()


def _docker_archive(tmp: Path, img, compression: Compression, diff_ids=None) -> Path:  # type: ignore[no-untyped-def]
    """A docker-archive as `docker save` (< 25) writes it: <id>/layer.tar, <id>.json."""
    from builder.layers.compression import compress_stream

    files: dict[str, bytes] = {}
    layers = []
    for i, layer in enumerate(img.layers()):
        out = io.BytesIO()
        compress_stream(io.BytesIO(layer.tar), out, compression)
        files[f"l{i}/layer.tar"] = out.getvalue()
        layers.append(f"l{i}/layer.tar")
    config = img.raw_config()
    if diff_ids is not None:
        data = json.loads(config)
        data["rootfs"]["diff_ids"] = diff_ids
        config = json.dumps(data).encode()
    files["cfg.json"] = config
    files["manifest.json"] = json.dumps([{"Config": "cfg.json", "RepoTags": ["legacy:1"], "Layers": layers}]).encode()
    path = tmp / f"docker-{compression}.tar"
    path.write_bytes(make_tar(files))  # type: ignore[arg-type]
    return path


@pytest.mark.parametrize("compression", list(Compression))
def test_docker_archive_layers_in_any_compression(tmp_path: Path, compression: Compression):
    from cache import Store

    img = make_image("legacy", compression=Compression.NONE)
    path = _docker_archive(tmp_path, img, compression)
    (tagged,) = _read(path, tmp_path)
    assert tagged.names == ("docker.io/library/legacy:1",)
    assert tagged.image.config_digest() == img.config_digest()
    with Store(tmp_path / "root") as store, open_archive(path, tmp_path) as files:
        (tagged,) = read_images(files)
        store.write_image(tagged.image, ["legacy:1"])
        back = store.image("legacy:1")
        assert [lay.diff_id() for lay in back.layers()] == list(img.config_file().diff_ids)
        assert store.check().clean


def test_docker_archive_with_wrong_diff_id_is_refused(tmp_path: Path):
    from cache import Store

    img = make_image("liar", compression=Compression.NONE)
    wrong = [str(Digest.of(b"x")), str(img.layers()[1].diff_id())]
    for compression in (Compression.NONE, Compression.GZIP):
        path = _docker_archive(tmp_path, img, compression, diff_ids=wrong)
        with Store(tmp_path / "root") as store, open_archive(path, tmp_path) as files:
            (tagged,) = read_images(files)
            with pytest.raises(ImageError):
                store.write_image(tagged.image, ["liar:1"])
            assert store.images() == [] and store.check().clean


def test_compressed_archive_is_read(tmp_path: Path):
    import gzip

    img = make_image("gz")
    save([TaggedImage(img, ("gz:1",))], tmp_path / "x.tar", "docker")
    (tmp_path / "x.tar.gz").write_bytes(gzip.compress((tmp_path / "x.tar").read_bytes()))
    (back,) = _read(tmp_path / "x.tar.gz", tmp_path)
    assert back.image.digest() == img.digest()
    assert not list(tmp_path.glob("*-archive.tar"))


def _layout_dir(tmp: Path, img, platform_images=()) -> Path:  # type: ignore[no-untyped-def]
    """A layout whose index.json points at a nested index of several platforms."""
    root = tmp / "layout"
    write_oci_layout([TaggedImage(img)], root, tar=False)
    blobs = root / "blobs" / "sha256"
    children = []
    for plat, other in platform_images:
        write_oci_layout([TaggedImage(other)], tmp / "scratch", tar=False)
        for blob in (tmp / "scratch" / "blobs" / "sha256").iterdir():
            (blobs / blob.name).write_bytes(blob.read_bytes())
        children.append(Descriptor.of(MediaType.OCI_MANIFEST, other.raw_manifest(), platform=plat).to_dict())
    children.append(Descriptor.of(MediaType.OCI_MANIFEST, img.raw_manifest(), platform=Platform.host()).to_dict())
    nested = canonical_json({"schemaVersion": 2, "mediaType": MediaType.OCI_INDEX, "manifests": children})
    (blobs / Digest.of(nested).hex).write_bytes(nested)
    top = {"schemaVersion": 2, "manifests": [Descriptor.of(
        MediaType.OCI_INDEX, nested, annotations={"org.opencontainers.image.ref.name": "reg.example/multi:2"}
    ).to_dict()]}
    (root / "index.json").write_text(json.dumps(top))
    return root


def test_nested_index_picks_the_host_platform(tmp_path: Path):
    host = make_image("host")
    other = make_image("other")
    root = _layout_dir(tmp_path, host, [(Platform.parse("linux/s390x"), other)])
    (tagged,) = _read(root, tmp_path)
    assert tagged.image.digest() == host.digest()
    assert tagged.names == ("reg.example/multi:2",)


def test_index_without_the_host_platform_is_a_clear_error(tmp_path: Path):
    s390x = make_image("p", platform=Platform.parse("linux/s390x"))
    arm = make_image("q", platform=Platform.parse("linux/arm/v7"))
    root = _layout_dir(tmp_path, s390x, [(Platform.parse("linux/arm/v7"), arm)])
    # Relabel the entry _layout_dir gave the host's platform: now no entry fits this machine.
    nested_digest = json.loads((root / "index.json").read_text())["manifests"][0]["digest"]
    nested = json.loads((root / "blobs" / "sha256" / nested_digest[7:]).read_text())
    nested["manifests"][-1]["platform"] = {"os": "linux", "architecture": "s390x"}
    data = canonical_json(nested)
    (root / "blobs" / "sha256" / Digest.of(data).hex).write_bytes(data)
    top = {"schemaVersion": 2, "manifests": [Descriptor.of(MediaType.OCI_INDEX, data).to_dict()]}
    (root / "index.json").write_text(json.dumps(top))
    with pytest.raises(ArchiveError, match=r"no image for linux/\w+ in index .* \(it has linux/arm/v7, linux/s390x\)"):
        _read(root, tmp_path)


def test_a_single_image_of_another_platform_loads(tmp_path: Path):
    """As docker load does: an arm64 image on an amd64 machine is still an image to hold."""
    img = make_image("p", platform=Platform.parse("linux/s390x"))
    root = tmp_path / "layout"
    write_oci_layout([TaggedImage(img, ("s390x/app:1",))], root, tar=False)
    (tagged,) = _read(root, tmp_path)
    assert tagged.image.digest() == img.digest()
    assert tagged.names == ("docker.io/s390x/app:1",)


def test_top_level_platform_entries_pick_the_host(tmp_path: Path):
    host, other = make_image("h"), make_image("o", platform=Platform.parse("linux/s390x"))
    root = tmp_path / "layout"
    write_oci_layout([TaggedImage(host, ("multi:1",)), TaggedImage(other, ("multi:1",))], root, tar=False)
    (tagged,) = _read(root, tmp_path)
    assert tagged.image.digest() == host.digest()


@pytest.mark.parametrize("case, message", [
    ("empty", "neither an OCI image layout"),
    ("legacy", "legacy docker-archive"),
    ("not-json", "manifest.json is not JSON"),
    ("escape", "leaves the archive"),
    ("missing-blob", "missing from the layout"),
    ("not-tar", "not a tar archive"),
])
def test_broken_archives_are_clear_errors(tmp_path: Path, case: str, message: str):
    path = tmp_path / "bad.tar"
    if case == "empty":
        path.write_bytes(make_tar({"hello": b"x"}))
    elif case == "legacy":
        path.write_bytes(make_tar({"repositories": b"{}", "abc/layer.tar": b""}))
    elif case == "not-json":
        path.write_bytes(make_tar({"manifest.json": b"[{"}))
    elif case == "escape":
        path.write_bytes(make_tar({"manifest.json": json.dumps(
            [{"Config": "../../etc/passwd", "RepoTags": [], "Layers": []}]).encode()}))
    elif case == "missing-blob":
        img = make_image("m")
        save([TaggedImage(img, ("m:1",))], path, "oci")
        with tarfile.open(path) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        del files[f"blobs/sha256/{img.config_digest().hex}"]
        path.write_bytes(make_tar(files))  # type: ignore[arg-type]
    elif case == "not-tar":
        path.write_bytes(b"hello, this is not a tar file at all" * 30)
    with pytest.raises(PybuildError, match=message):
        images = _read(path, tmp_path)
        for tagged in images:
            tagged.image.config_file()


def test_oci_archive_accepted_by_skopeo_and_umoci(tmp_path: Path):
    skopeo, umoci = require_tool("skopeo"), require_tool("umoci")
    img = make_image("tools", layers=3, compression=Compression.GZIP)
    zimg = make_image("ztools", layers=2, compression=Compression.ZSTD)
    save([TaggedImage(img, ("tools:v1",))], tmp_path / "oci.tar", "oci")
    info = json.loads(subprocess.run([skopeo, "inspect", f"oci-archive:{tmp_path / 'oci.tar'}"],
                                     capture_output=True, check=True).stdout)
    assert info["Digest"] == img.digest()
    assert info["Layers"] == [str(layer.digest()) for layer in img.layers()]
    raw = json.loads(subprocess.run([skopeo, "inspect", "--config", f"oci-archive:{tmp_path / 'oci.tar'}"],
                                    capture_output=True, check=True).stdout)
    assert raw["rootfs"]["diff_ids"] == [str(layer.diff_id()) for layer in img.layers()]

    save([TaggedImage(img, ("tools:v1",)), TaggedImage(zimg, ("ztools:v2",))], tmp_path / "two.tar", "docker")
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(tmp_path / "two.tar") as tar:
        tar.extractall(layout, filter="data")
    bundle = tmp_path / "bundle"
    subprocess.run([umoci, "unpack", "--rootless", "--image", f"{layout}:v1", str(bundle)],
                   capture_output=True, check=True)
    assert (bundle / "rootfs" / "d2" / "f2.bin").read_bytes() == noise("tools-2", 2048)
    assert (bundle / "rootfs" / "d0" / "name").read_bytes() == b"tools"
    stat = subprocess.run([umoci, "stat", "--json", "--image", f"{layout}:v1"], capture_output=True, check=True)
    history = json.loads(stat.stdout)["history"]
    assert [h["layer"]["digest"] for h in history if h.get("layer")] == [str(lay.digest()) for lay in img.layers()]
    # umoci checks every diff_id while unpacking; check them ourselves too.
    for layer in img.layers():
        assert hashlib.sha256(layer.tar).hexdigest() == layer.diff_id().hex


def test_layout_dir_entries_must_be_regular_files_inside_it(tmp_path: Path):
    import os

    img = make_image("fifo")
    root = tmp_path / "layout"
    write_oci_layout([TaggedImage(img, ("fifo:1",))], root, tar=False)
    config = root / "blobs" / "sha256" / img.config_digest().hex
    config.unlink()
    os.mkfifo(config)
    with pytest.raises(ArchiveError, match="not a regular file"):
        _read(root, tmp_path)
    config.unlink()
    (tmp_path / "outside").write_bytes(img.raw_config())
    config.symlink_to(tmp_path / "outside")
    with pytest.raises(ArchiveError, match="outside the layout"):
        _read(root, tmp_path)


def test_docker_25_style_archive_with_symlinked_legacy_layers(tmp_path: Path):
    """docker >= 25 saves blobs/sha256/... and links the legacy <id>/layer.tar paths to them."""
    img = make_image("linked", compression=Compression.NONE)
    path = tmp_path / "linked.tar"
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        add(f"blobs/sha256/{img.config_digest().hex}", img.raw_config())
        layers = []
        for i, layer in enumerate(img.layers()):
            add(f"blobs/sha256/{layer.diff_id().hex}", layer.tar)
            link = tarfile.TarInfo(f"legacy{i}/layer.tar")
            link.type = tarfile.SYMTYPE
            link.linkname = f"../blobs/sha256/{layer.diff_id().hex}"
            tar.addfile(link)
            layers.append(f"legacy{i}/layer.tar")
        add("manifest.json", json.dumps([{"Config": f"blobs/sha256/{img.config_digest().hex}",
                                          "RepoTags": ["linked:1"], "Layers": layers}]).encode())
    (tagged,) = _read(path, tmp_path)
    assert tagged.names == ("docker.io/library/linked:1",)
    assert [lay.diff_id() for lay in tagged.image.layers()] == [lay.diff_id() for lay in img.layers()]
    with open_archive(path, tmp_path) as files:
        (tagged,) = read_images(files)
        with tagged.image.layers()[1].uncompressed() as f:
            assert f.read() == img.layers()[1].tar
