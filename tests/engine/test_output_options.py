"""The options of ``--output`` as BuildKit's exporters take them: compression, compression-level,
force-compression, oci-mediatypes, store=false, tar=false, annotation.*, push-by-digest, registry.insecure; checked by skopeo,
umoci, docker and a real registry, and a clear error for any option an exporter does not take."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from tests.engine.conftest import Builder
from tests.helpers.tools import REPO, docker_tag, require_tool, run_pybuild, small_fs

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"


def _raw(transport: str) -> dict:
    skopeo = require_tool("skopeo")
    tls = ["--tls-verify=false"] if transport.startswith("docker://") else []  # the loopback registry
    return json.loads(subprocess.run([skopeo, "inspect", *tls, "--raw", transport], check=True,
                                     capture_output=True).stdout)


def _image_id(builder: Builder, image: str) -> str:
    return json.loads(run_pybuild("inspect", image, root=builder.root, check=True).stdout)[0]["Id"]


def _context(builder: Builder, name: str) -> Path:
    return builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /made\n"}, name)


def test_compression_and_media_types_of_archives(builder: Builder, docker: str, tmp_path: Path) -> None:
    """compression=zstd gives the layers this build made zstd blobs (a base held compressed keeps
    its own, unless force-compression); oci-mediatypes=false gives docker's types, which
    docker loads with the same image ID; the image ID never changes."""
    ctx = _context(builder, "archives")
    tag = docker_tag("outputs")  # loaded into docker below
    builder.build(ctx, "-t", tag, "-o", f"type=oci,dest={tmp_path / 'zstd.tar'},compression=zstd",
                  "-o", f"type=docker,dest={tmp_path / 'docker.tar'},oci-mediatypes=false,compression=gzip,"
                        "force-compression=true")
    image_id = _image_id(builder, tag)
    zstd = _raw(f"oci-archive:{tmp_path / 'zstd.tar'}")
    assert zstd["mediaType"] == OCI_MANIFEST
    assert {layer["mediaType"] for layer in zstd["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    assert zstd["config"]["digest"] == image_id
    dock = _raw(f"docker-archive:{tmp_path / 'docker.tar'}")
    assert dock["mediaType"] == DOCKER_MANIFEST
    assert dock["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    assert {layer["mediaType"] for layer in dock["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    subprocess.run([docker, "load", "-i", str(tmp_path / "docker.tar")], check=True, capture_output=True)
    try:
        loaded = subprocess.run([docker, "image", "inspect", "-f", "{{.Id}}", tag], check=True,
                                capture_output=True).stdout.decode().strip()
    finally:
        subprocess.run([docker, "rmi", "-f", tag], capture_output=True)
    assert loaded == image_id
    fresh = tmp_path / "fresh-store"  # the zstd archive loads back to the same image
    run_pybuild("load", "-i", str(tmp_path / "zstd.tar"), root=fresh, check=True)
    assert image_id in run_pybuild("images", "-q", "--no-trunc", root=fresh, check=True).stdout.decode()


def test_an_oci_layout_directory_with_annotations(builder: Builder, tmp_path: Path) -> None:
    """tar=false writes the OCI layout as a directory, which skopeo and umoci read; the
    output's own annotation.* / annotation-index.* options land where --annotation's would."""
    umoci = require_tool("umoci")
    ctx = _context(builder, "layout-dir")
    layout = tmp_path / "layout"
    builder.build(ctx, "-o", f"type=oci,dest={layout},tar=false,name=outputs/dir:1,"
                             "annotation.org.opencontainers.image.title=Titled,annotation-index.Index.Key=kept")
    index = json.loads((layout / "index.json").read_text())
    assert index["annotations"] == {"Index.Key": "kept"}  # keys keep their case
    manifest = _raw(f"oci:{layout}:1")  # ref.name is the tag, as BuildKit writes it
    assert manifest["annotations"]["org.opencontainers.image.title"] == "Titled"
    subprocess.run([umoci, "unpack", "--image", f"{layout}:1", str(tmp_path / "bundle")],
                   check=True, capture_output=True)
    assert (tmp_path / "bundle" / "rootfs" / "made").is_file()


@pytest.mark.parametrize("output", ["type=oci,dest={fs}/layout,tar=false", "type=oci,dest={fs}/x.tar",
                                    "type=docker,dest={fs}/x.tar", "type=tar,dest={fs}/x.tar",
                                    "type=local,dest={fs}/files"])
def test_an_output_onto_a_full_disk_is_one_line(builder: Builder, tmp_path: Path, output: str) -> None:
    """Every exporter meets a full file system with one line naming where it wrote (the OCI
    layout directory's was an internal error), and leaves no temp file there."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY big /big\n", "big": os.urandom(3 << 20)},
                          "full-output")
    with small_fs(tmp_path / "small", "1m") as small:
        p = builder.build(ctx, "-q", "-o", output.format(fs=small), check=False)
        err = p.stderr.decode()
        assert p.returncode == 1 and err.count("\n") == 1, err
        assert err.startswith("ERROR: cannot write ") or err.startswith("ERROR: cannot extract"), err
        assert f"{small}/" in err and err.endswith(": No space left on device\n"), err
        temps = list(small.rglob(".*"))  # whole blobs of a layout may stay: a retry reuses them
        assert temps == [], temps


def test_push_options(builder: Builder, registry: str) -> None:
    """type=registry with compression=zstd,force-compression=true pushes every layer as zstd;
    compression=uncompressed pushes plain tars; push-by-digest moves no tag; all pull back to
    the same image ID."""
    ctx = _context(builder, "push-options")
    repo = f"{registry}/outputs/push-{uuid.uuid4().hex[:8]}"
    builder.build(ctx, "-t", "outputs:push", "-o", f"type=registry,name={repo}:zstd,compression=zstd,"
                  "force-compression=true,registry.insecure=true")
    builder.build(ctx, "-o", f"type=image,name={repo}:plain,push=true,compression=uncompressed")
    image_id = _image_id(builder, "outputs:push")
    zstd = _raw(f"docker://{repo}:zstd")
    assert {layer["mediaType"] for layer in zstd["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    plain = _raw(f"docker://{repo}:plain")
    assert {layer["mediaType"] for layer in plain["layers"]} == {"application/vnd.oci.image.layer.v1.tar"}
    assert zstd["config"]["digest"] == plain["config"]["digest"] == image_id
    digest_only = builder.build(ctx, "-q", "-o", f"type=image,name={repo}:never,push=true,push-by-digest=true,"
                                "compression=gzip")
    assert digest_only.returncode == 0
    tags = requests.get(f"http://{registry}/v2/{repo.split('/', 1)[1]}/tags/list", timeout=30).json()["tags"]
    assert sorted(tags) == ["plain", "zstd"]
    for tag in ("zstd", "plain"):
        fresh = builder.tmp / f"pulled-{tag}"
        run_pybuild("pull", f"{repo}:{tag}", root=fresh, check=True)
        assert _image_id(Builder(fresh, builder.tmp), f"{repo}:{tag}") == image_id


@pytest.mark.parametrize("output, message", [
    ("type=oci,dest=x,compression=brotli", b"compression must be one of gzip, zstd, uncompressed"),
    ("type=oci,dest=x,compression-level=10", b"compression-level=10 is not a gzip level (-2 to 9"),
    ("type=image,compression=gzip,compression-level=fast", b"compression-level='fast' is not an integer"),
    ("type=local,dest=x,compression-level=1", b"type=local takes no option 'compression-level'"),
    ("type=local,dest=x,compression=zstd", b"type=local takes no option 'compression'"),
    ("type=docker,dest=x,tar=false", b"type=docker takes no option 'tar'"),
    ("type=oci,dest=x,compression=zstd,oci-mediatypes=false", b"needs oci-mediatypes=true"),
    ("type=oci,dest=x,force-compression=perhaps", b"is not a boolean"),
    ("type=image,store=perhaps", b"is not a boolean"),
    ("type=tar,dest=x,annotation.a=b", b"takes no annotations"),
    ("type=oci,dest=-,tar=false", b"tar=false writes a directory"),
    ("type=cacheonly,dest=x", b"it takes no options"),
    ("type=oci,dest=x,annotation-bogus.k=v", b"annotation types are"),
    ("type=registry", b"push needs an image name"),  # no -t: known before the build, not after it
    ("type=image,push=true", b"push needs an image name"),
])
def test_output_option_errors_come_before_the_build(builder: Builder, output: str, message: bytes) -> None:
    marker = uuid.uuid4().hex
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {marker}\n"}, "output-errors")
    p = builder.build(ctx, "-o", output, check=False)
    assert p.returncode == 125 and message in p.stderr and b"Traceback" not in p.stderr, p.stderr
    assert marker.encode() not in p.stderr  # refused before any step ran


def test_cacheonly_builds_for_the_cache_alone(builder: Builder, tmp_path: Path) -> None:
    """buildx's type=cacheonly: the steps run and are cached; nothing is written anywhere else."""
    ctx = _context(builder, "cacheonly")
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    first = builder.build(ctx, "-o", "type=cacheonly", cwd=cwd)
    assert b"CACHED" not in first.stderr and not list(cwd.iterdir())
    assert b"CACHED" in builder.build(ctx).stderr


def test_metadata_file_names_the_manifest_the_registry_holds(builder: Builder, registry: str,
                                                             tmp_path: Path) -> None:
    """Built layers are held uncompressed and pushed as gzip, so the pushed manifest is not the
    stored one: --metadata-file gives the pushed digest, the one to sign or deploy by."""
    ctx = _context(builder, "metadata-push")
    ref = f"{registry}/outputs/metadata:{uuid.uuid4().hex[:8]}"
    meta = tmp_path / "meta.json"
    builder.build(ctx, "-t", ref, "--push", "--metadata-file", str(meta))
    data = json.loads(meta.read_text())
    pushed = requests.get(f"http://{registry}/v2/{ref.split('/', 1)[1].replace(':', '/manifests/')}", timeout=30,
                          headers={"Accept": OCI_MANIFEST})
    assert data["containerimage.digest"] == pushed.headers["Docker-Content-Digest"]
    assert data["containerimage.descriptor"] == {"mediaType": OCI_MANIFEST, "digest": data["containerimage.digest"],
                                                 "size": len(pushed.content)}
    assert data["containerimage.config.digest"] == _image_id(builder, ref)


def test_metadata_file_names_the_manifest_an_output_wrote(builder: Builder, registry: str, tmp_path: Path) -> None:
    """An archive whose layers were compressed on the way holds another manifest than the store:
    --metadata-file gives the archive's (the digest skopeo copies it by), and a push with
    oci-mediatypes=false gives docker's manifest type, as the registry serves it."""
    ctx = _context(builder, "metadata-archive")
    meta, archive = tmp_path / "meta.json", tmp_path / "zstd.tar"
    builder.build(ctx, "-o", f"type=oci,dest={archive},compression=zstd,force-compression=true",
                  "--metadata-file", str(meta))
    data = json.loads(meta.read_text())
    index = json.loads(subprocess.run(["tar", "-xOf", str(archive), "index.json"], check=True,
                                      capture_output=True).stdout)
    held = index["manifests"][0]
    assert data["containerimage.digest"] == held["digest"]
    assert data["containerimage.descriptor"] == {"mediaType": OCI_MANIFEST, "digest": held["digest"],
                                                 "size": held["size"]}
    ref = f"{registry}/outputs/metadata-docker:{uuid.uuid4().hex[:8]}"
    builder.build(ctx, "-o", f"type=image,name={ref},push=true,oci-mediatypes=false", "--metadata-file", str(meta))
    data = json.loads(meta.read_text())
    pushed = requests.get(f"http://{registry}/v2/{ref.split('/', 1)[1].replace(':', '/manifests/')}", timeout=30,
                          headers={"Accept": f"{OCI_MANIFEST}, {DOCKER_MANIFEST}"})
    assert pushed.headers["Content-Type"] == DOCKER_MANIFEST
    assert data["containerimage.descriptor"] == {"mediaType": DOCKER_MANIFEST,
                                                 "digest": pushed.headers["Docker-Content-Digest"],
                                                 "size": len(pushed.content)}


def test_an_oci_layout_directory_keeps_the_images_it_held(builder: Builder, tmp_path: Path) -> None:
    """tar=false adds to a layout directory as BuildKit does: an image of another name stays
    in index.json, one of the same name is replaced, an unnamed one is "latest"; an
    index.json that is not one is a one-line error, left as it was."""
    layout = tmp_path / "layout"
    first = _context(builder, "layout-first")
    second = _context(builder, "layout-second")
    builder.build(first, "-o", f"type=oci,dest={layout},tar=false,name=outputs/keep:1")
    builder.build(second, "-o", f"type=oci,dest={layout},tar=false,name=outputs/keep:2")
    builder.build(second, "-o", f"type=oci,dest={layout},tar=false,name=outputs/keep:1")  # :1 moves
    builder.build(first, "-o", f"type=oci,dest={layout},tar=false")
    builder.build(second, "-o", f"type=oci,dest={layout},tar=false")  # latest moves too
    index = json.loads((layout / "index.json").read_text())
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert sorted(refs) == ["1", "2", "latest"], index
    assert _raw(f"oci:{layout}:1") == _raw(f"oci:{layout}:2") == _raw(f"oci:{layout}:latest")
    (layout / "index.json").write_text("not json")
    p = builder.build(first, "-q", "-o", f"type=oci,dest={layout},tar=false", check=False)
    err = p.stderr.decode()
    assert p.returncode == 1 and err.count("\n") == 1 and "index.json" in err and str(layout) in err, err
    assert (layout / "index.json").read_text() == "not json"


def test_push_flag_pushes_the_image_output_s_names(builder: Builder, registry: str) -> None:
    """`-o type=image,name=REF --push` without -t: as buildx, --push makes that output push, to
    its own name (it was "push needs an image name"), with its own options."""
    ctx = _context(builder, "push-flag")
    ref = f"{registry}/outputs/push-flag:{uuid.uuid4().hex[:8]}"
    builder.build(ctx, "-o", f"type=image,name={ref},compression=zstd,force-compression=true", "--push")
    pushed = _raw(f"docker://{ref}")
    assert {layer["mediaType"] for layer in pushed["layers"]} == {"application/vnd.oci.image.layer.v1.tar+zstd"}
    tagged = f"{registry}/outputs/push-flag:{uuid.uuid4().hex[:8]}"  # -t names it: its annotations go too
    builder.build(ctx, "-t", tagged, "-o", "type=image,annotation.org.example.pushed=yes", "--push")
    assert _raw(f"docker://{tagged}")["annotations"]["org.example.pushed"] == "yes"


def test_builds_adding_to_one_layout_directory_at_once_keep_each_other(builder: Builder, tmp_path: Path) -> None:
    """Several builds writing tar=false into one layout at the same time (a CI matrix): index.json
    names every image after, none lost to another's read-modify-write."""
    layout = tmp_path / "layout"
    env = {**os.environ, "PYBUILD_ROOT": str(builder.root)}
    procs = []
    for i in range(6):
        ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY big /big\n", "big": os.urandom(4 << 20)},
                              f"layout-race-{i}")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "builder", "build", "-q", "-o",
             f"type=oci,dest={layout},tar=false,name=outputs/race:{i}", str(ctx)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=REPO))
    for proc in procs:
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert proc.wait(timeout=300) == 0, err
    index = json.loads((layout / "index.json").read_text())
    refs = sorted(m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"])
    assert refs == [str(i) for i in range(6)], refs
    assert sorted(p.name for p in layout.iterdir()) == ["blobs", "index.json", "oci-layout"]  # no lock file


def test_archives_carry_gzip_layers_by_default_as_a_push_does(builder: Builder, registry: str,
                                                               tmp_path: Path) -> None:
    """BuildKit's default compression is gzip for every image output: the layers built here (held
    uncompressed) went into an oci or docker archive uncompressed, several times the size, and
    the archive's manifest was not the one the registry holds after a push."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY text /text\n",
                           "text": f"{uuid.uuid4().hex}\n" * 200_000}, "gzip-default")
    ref = f"{registry}/outputs/gzip-default:1"
    oci, dock = tmp_path / "oci.tar", tmp_path / "docker.tar"
    builder.build(ctx, "-t", ref, "--push", "-o", f"type=oci,dest={oci}", "-o", f"type=docker,dest={dock}")
    for archive in (oci, dock):
        index = json.loads(subprocess.run(["tar", "-xOf", str(archive), "index.json"], check=True,
                                          capture_output=True).stdout)
        manifest = _raw(f"oci-archive:{archive}")
        assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.oci.image.layer.v1.tar+gzip"}
        pushed = requests.get(f"http://{registry}/v2/outputs/gzip-default/manifests/1", timeout=30,
                              headers={"Accept": OCI_MANIFEST})
        assert index["manifests"][0]["digest"] == pushed.headers["Docker-Content-Digest"]
    assert oci.stat().st_size < 2_000_000  # the 6.6 MB text layer, compressed


def test_a_full_store_while_compressing_for_an_archive_is_one_line(tmp_path: Path) -> None:
    """An archive's layers are gzip'd into the store first (kept for the next export or push): a
    store that fills up then is one line naming it, not an internal error; nothing is left."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY blob /blob\n")
    (ctx / "blob").write_bytes(os.urandom(14 << 20))  # incompressible: the gzip copy needs as much again
    with small_fs(tmp_path / "store", "24m") as root:
        run_pybuild("build", "-q", str(ctx), root=root, check=True)
        p = run_pybuild("build", "-q", "-o", f"type=oci,dest={tmp_path / 'out.tar'}", str(ctx), root=root)
        err = p.stderr.decode()
        assert p.returncode == 1 and err.count("\n") == 1, err
        assert err.startswith("ERROR: cannot compress layer sha256:") and f"into {root}: No space left" in err, err
        assert not list((root / "tmp").iterdir()) and not (tmp_path / "out.tar").exists()


def _layers(manifest: dict) -> list[tuple[str, int]]:
    """Each layer's compression (gzip, zstd or tar, docker's or OCI's type) and size."""
    return [(next((k for k in ("gzip", "zstd") if layer["mediaType"].endswith(k)), "tar"), layer["size"])
            for layer in manifest["layers"]]


def test_compression_level_and_force_over_a_pulled_gzip_base(builder: Builder, registry: str,
                                                              tmp_path: Path) -> None:
    """compression-level was refused. Now, as BuildKit: gzip at Go's levels (0 stores, 9 is
    smallest), zstd's mapped to its encoders; a level applies where a layer is compressed (the
    ones this build made, held uncompressed). compression=zstd leaves a pulled gzip base gzip;
    force-compression makes it zstd too. Every form pulls back to the same image ID."""
    base = f"{registry}/outputs/level-base:{uuid.uuid4().hex[:8]}"
    run_pybuild("tag", "busybox:local", base, root=builder.root, check=True)
    run_pybuild("push", base, root=builder.root, check=True)
    ctx = builder.context({"Dockerfile": f"FROM {base}\nRUN yes pybuild | head -c 400000 > /data && "
                                         f"echo {uuid.uuid4().hex} > /made\n"}, "level")
    repo = f"{registry}/outputs/level-{uuid.uuid4().hex[:8]}"
    sizes = {}
    for tag, options in (("stored", "compression-level=0"), ("best", "compression=gzip,compression-level=9"),
                         ("zstd", "compression=zstd,compression-level=19"),
                         ("forced", "compression=zstd,force-compression=true")):
        fresh = tmp_path / f"store-{tag}"  # each pulls the base (gzip) and compresses the new layer first
        run_pybuild("build", "-q", "-t", "outputs:level", "-o", f"type=image,name={repo}:{tag},push=true,{options}",
                    str(ctx), root=fresh, check=True)
        sizes[tag] = _layers(_raw(f"docker://{repo}:{tag}"))
        image_id = _image_id(Builder(fresh, tmp_path), "outputs:level")
        pulled = tmp_path / f"pulled-{tag}"
        run_pybuild("pull", f"{repo}:{tag}", root=pulled, check=True)
        assert _image_id(Builder(pulled, tmp_path), f"{repo}:{tag}") == image_id
    base_layers = _layers(_raw(f"docker://{base}"))
    assert sizes["stored"][:-1] == sizes["best"][:-1] == sizes["zstd"][:-1] == base_layers  # the base as pulled
    assert sizes["stored"][-1][0] == sizes["best"][-1][0] == "gzip" and sizes["zstd"][-1][0] == "zstd"
    assert sizes["stored"][-1][1] > 400_000 > 100 * sizes["best"][-1][1]  # level 0 stores the 400 kB; 9 squeezes it
    assert {kind for kind, _ in sizes["forced"]} == {"zstd"}


def test_oci_mediatypes_false_in_an_oci_layout(builder: Builder, tmp_path: Path) -> None:
    """type=oci,oci-mediatypes=false was ignored (the layout held OCI's types). BuildKit writes
    docker's then, into the OCI layout's index too; skopeo reads it, and it loads back to the
    same image."""
    ctx = _context(builder, "oci-docker-types")
    archive, layout = tmp_path / "docker-types.tar", tmp_path / "layout"
    meta = tmp_path / "meta.json"
    builder.build(ctx, "-t", "outputs:docker-types", "--metadata-file", str(meta),
                  "-o", f"type=oci,dest={archive},oci-mediatypes=false,name=outputs/types:1",
                  "-o", f"type=oci,dest={layout},tar=false,oci-mediatypes=false,name=outputs/types:1")
    index = json.loads(subprocess.run(["tar", "-xOf", str(archive), "index.json"], check=True,
                                      capture_output=True).stdout)
    assert index["manifests"][0]["mediaType"] == DOCKER_MANIFEST
    for transport in (f"oci-archive:{archive}", f"oci:{layout}"):  # its one image (this skopeo finds
        # a ref.name only among OCI-typed entries)
        manifest = _raw(transport)
        assert manifest["mediaType"] == DOCKER_MANIFEST
        assert {layer["mediaType"] for layer in manifest["layers"]} == {"application/vnd.docker.image.rootfs.diff.tar.gzip"}
    assert json.loads(meta.read_text())["containerimage.descriptor"]["mediaType"] == DOCKER_MANIFEST
    fresh = tmp_path / "fresh"
    run_pybuild("load", "-i", str(archive), root=fresh, check=True)
    assert _image_id(Builder(fresh, tmp_path), "outputs/types:1") == _image_id(builder, "outputs:docker-types")


def test_store_false_pushes_without_naming_the_image_here(builder: Builder, registry: str) -> None:
    """type=image,push=true,store=false was refused. As BuildKit's, it pushes and names nothing in
    the store (-t's names neither): the image stays there untagged, as the build cache holds it."""
    ctx = _context(builder, "store-false")
    ref = f"{registry}/outputs/store-false:{uuid.uuid4().hex[:8]}"
    p = builder.build(ctx, "-t", ref, "-o", "type=image,push=true,store=false")
    assert b"naming to" not in p.stderr and f"pushing {ref}@".encode() in p.stderr, p.stderr
    image_id = _raw(f"docker://{ref}")["config"]["digest"]
    listed = run_pybuild("images", "--no-trunc", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}",
                         root=builder.root, check=True).stdout.decode()
    assert ref.split(":")[1] not in listed and f"<none>:<none> {image_id}" in listed, listed
    assert b"CACHED" in builder.build(ctx, "-o", f"type=image,name={ref}-2,push=true,store=false").stderr
