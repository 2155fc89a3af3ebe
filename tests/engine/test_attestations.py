"""buildx's --provenance / --sbom / --attest: off is taken, a bad value is one usage error, and
provenance is stored as BuildKit stores it (an index of the image manifest and an attestation
manifest whose layer is the in-toto statement), checked with skopeo, docker and a real registry."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.engine.conftest import Builder
from tests.helpers.tools import require_tool, run_pybuild

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
PREDICATE = "https://slsa.dev/provenance/v0.2"


def _skopeo(*args: str) -> bytes:
    return subprocess.run([require_tool("skopeo"), *args], check=True, capture_output=True, timeout=120).stdout


def _raw(transport: str) -> dict:
    tls = ["--tls-verify=false"] if transport.startswith("docker://") else []
    return json.loads(_skopeo("inspect", *tls, "--raw", transport))


def _blob(registry: str, repo: str, digest: str) -> bytes:
    import requests

    response = requests.get(f"http://{registry}/v2/{repo}/blobs/{digest}", timeout=30)
    response.raise_for_status()
    return response.content


def _context(builder: Builder, name: str) -> Path:
    return builder.context({"Dockerfile": "FROM busybox:local\nARG TOKEN\nRUN --mount=type=secret,id=npm "
                                          f"echo {uuid.uuid4().hex} > /made\nCOPY a /a\n", "a": "a\n",
                            "npmrc": "s3cr3t-npm-value\n"}, name)


@pytest.mark.parametrize("flags", [
    ("--provenance=false",), ("--sbom=false",), ("--provenance", "0"), ("--provenance=mode=max,disabled=true",),
    ("--attest", "type=provenance,disabled=true", "--attest", "type=sbom,disabled=true"),
])
def test_attestations_turned_off_build_a_plain_image(builder: Builder, registry: str, flags: tuple[str, ...]) -> None:
    """CI scripts written for buildx give --provenance=false / --sbom=false: the push is the image
    manifest itself, no index (BUILDX_NO_DEFAULT_ATTESTATIONS=1 too: pybuild adds none by default)."""
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /x\n"}, "off")
    ref = f"{registry}/attest/off:{uuid.uuid4().hex[:8]}"
    builder.build(ctx, *flags, "-t", ref, "--push", env={"BUILDX_NO_DEFAULT_ATTESTATIONS": "1"})
    assert _raw(f"docker://{ref}")["mediaType"] == OCI_MANIFEST


@pytest.mark.parametrize("flags, message", [
    (("--provenance=mode=maximal",), b"invalid --provenance=mode=maximal: invalid mode 'maximal'"),
    (("--provenance=maybe",), b"invalid --provenance=maybe: invalid value 'maybe'"),
    (("--attest", "mode=max"), b"attestation type not specified"),
    (("--attest", "type=spdx"), b"unknown attestation type 'spdx'"),
    (("--sbom", "disabled=perhaps"), b"invalid value 'perhaps' for disabled"),
    (("--provenance=true", "--attest", "type=provenance,mode=max"), b"duplicate attestation field provenance"),
    (("--provenance=version=v1",), b"SLSA provenance v0.2 only"),
    (("--attest", "type=sbom,generator=example/scanner"), b"pybuild runs no scanner image (example/scanner)"),
    (("--sbom=scan-stage=true",), b"no scan-context or scan-stage"),
])
def test_a_bad_attestation_flag_is_one_usage_error(builder: Builder, flags: tuple[str, ...], message: bytes) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\n"}, "bad")
    p = builder.build(ctx, "-q", *flags, check=False)
    assert p.returncode == 125 and message in p.stderr and p.stdout == b"", p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and b"Traceback" not in p.stderr


def test_provenance_push_is_buildkit_s_attestation_storage(builder: Builder, registry: str, docker: str,
                                                           tmp_path: Path) -> None:
    """--provenance=true (mode=min) pushes an OCI index: the image manifest for the host platform,
    and an attestation manifest (unknown/unknown) pointing at it, whose layer is the in-toto
    statement. Build-arg values and secrets stay out; pybuild pull, skopeo copy and docker pull
    of the tag get the image."""
    ctx = _context(builder, "min")
    repo = f"attest/min-{uuid.uuid4().hex[:8]}"
    ref = f"{registry}/{repo}:1"
    meta = tmp_path / "meta.json"
    builder.build(ctx, "--provenance=true", "--build-arg", "TOKEN=hunter2-build-arg", "--secret",
                  f"id=npm,src={ctx / 'npmrc'}", "-t", ref, "--push", "--metadata-file", str(meta))
    index = _raw(f"docker://{ref}")
    assert index["mediaType"] == OCI_INDEX
    image_desc, att_desc = index["manifests"]
    host = json.loads(run_pybuild("inspect", ref, root=builder.root, check=True).stdout)[0]
    assert image_desc["mediaType"] == OCI_MANIFEST
    assert image_desc["platform"] == {"architecture": host["Architecture"], "os": host["Os"]}
    assert att_desc["platform"] == {"architecture": "unknown", "os": "unknown"}
    assert att_desc["annotations"] == {"vnd.docker.reference.type": "attestation-manifest",
                                       "vnd.docker.reference.digest": image_desc["digest"]}
    data = json.loads(meta.read_text())
    assert data["containerimage.descriptor"]["mediaType"] == OCI_INDEX
    assert data["containerimage.digest"] == "sha256:" + __import__("hashlib").sha256(
        _skopeo("inspect", "--tls-verify=false", "--raw", f"docker://{ref}")).hexdigest()

    att = _raw(f"docker://{registry}/{repo}@{att_desc['digest']}")
    assert att["mediaType"] == OCI_MANIFEST
    [layer] = att["layers"]
    assert layer["mediaType"] == "application/vnd.in-toto+json"
    assert layer["annotations"] == {"in-toto.io/predicate-type": PREDICATE}
    config = json.loads(_blob(registry, repo, att["config"]["digest"]))
    assert config["architecture"] == "unknown" and config["os"] == "unknown"
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]
    raw_statement = _blob(registry, repo, layer["digest"])
    statement = json.loads(raw_statement)
    assert statement["_type"] == "https://in-toto.io/Statement/v0.1"
    assert statement["predicateType"] == PREDICATE
    assert statement["subject"] == [{"name": f"pkg:docker/{registry}/{repo}@1?platform="
                                             f"{host['Os']}%2F{host['Architecture']}",
                                     "digest": {"sha256": image_desc["digest"].split(":")[1]}}]
    predicate = statement["predicate"]
    assert predicate["buildType"] == "https://mobyproject.org/buildkit@v1"
    assert predicate["builder"] == {"id": ""}
    base_digest = json.loads(run_pybuild("inspect", "--format", "{{json .}}", "busybox:local",
                                         root=builder.root, check=True).stdout)
    assert [m["uri"] for m in predicate["materials"]] == [
        f"pkg:docker/busybox@local?platform={host['Os']}%2F{host['Architecture']}"]
    assert predicate["materials"][0]["digest"]["sha256"]
    assert base_digest  # the base is in the store it was read from
    invocation = predicate["invocation"]
    assert invocation["configSource"] == {"entryPoint": "Dockerfile"}
    assert invocation["parameters"]["frontend"] == "dockerfile.v0"
    assert invocation["parameters"]["args"] == {}  # min: no build-arg values
    assert invocation["parameters"]["locals"] == [{"name": "context"}, {"name": "dockerfile"}]
    metadata = predicate["metadata"]
    assert metadata["completeness"] == {"parameters": False, "environment": True, "materials": False}
    assert metadata["reproducible"] is False
    assert metadata["buildStartedOn"] <= metadata["buildFinishedOn"]
    assert "buildConfig" not in predicate
    assert b"hunter2" not in raw_statement and b"s3cr3t" not in raw_statement and b"npm" not in raw_statement

    # what pulls the tag gets the host's image, never the attestation
    root = tmp_path / "pull-root"
    run_pybuild("pull", ref, root=root, check=True)
    pulled = json.loads(run_pybuild("inspect", ref, root=root, check=True).stdout)[0]
    assert pulled["Id"] == host["Id"]
    layout = tmp_path / "copied"
    _skopeo("copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{layout}:x")
    copied = json.loads((layout / "index.json").read_text())["manifests"][0]
    assert copied["digest"] == image_desc["digest"]
    subprocess.run([docker, "pull", ref], check=True, capture_output=True, timeout=120)
    try:
        inspected = json.loads(subprocess.run([docker, "image", "inspect", ref], check=True,
                                              capture_output=True).stdout)[0]
        assert inspected["Id"] == host["Id"]
    finally:
        subprocess.run([docker, "rmi", "--force", ref], capture_output=True)


def test_provenance_max_in_an_oci_archive(builder: Builder, tmp_path: Path) -> None:
    """mode=max in a type=oci tar: index.json names the attested index, whose attestation holds
    the build args, the secret's ID (never its value), the steps and the Dockerfile source;
    umoci and skopeo read the image out of it."""
    ctx = _context(builder, "max")
    archive = tmp_path / "out.tar"
    p = builder.build(ctx, "--attest", "type=provenance,mode=max,builder-id=https://ci.example/run/7",
                  "--build-arg", "TOKEN=visible-in-max", "--secret", f"id=npm,src={ctx / 'npmrc'}",
                  "--build-context", f"extra={tmp_path}", "--build-context", "img=docker-image://busybox:local",
                  "-t", "attest:max", "-o", f"type=oci,dest={archive}")
    assert b"provenance mode=max records the value of build-arg TOKEN, whose name reads as a secret's" in p.stderr
    layout = tmp_path / "layout"
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(archive), "-C", str(layout)], check=True)
    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    assert entry["mediaType"] == OCI_INDEX
    assert entry["annotations"]["io.containerd.image.name"] == "docker.io/library/attest:max"

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    index = json.loads(blob(entry["digest"]))
    image_desc, att_desc = index["manifests"]
    assert att_desc["annotations"]["vnd.docker.reference.digest"] == image_desc["digest"]
    raw_statement = blob(json.loads(blob(att_desc["digest"]))["layers"][0]["digest"])
    statement = json.loads(raw_statement)
    assert statement["subject"][0]["name"].startswith("pkg:docker/attest@max?platform=")
    assert statement["subject"][0]["digest"]["sha256"] == image_desc["digest"].split(":")[1]
    predicate = statement["predicate"]
    assert predicate["builder"] == {"id": "https://ci.example/run/7"}
    params = predicate["invocation"]["parameters"]
    assert params["args"] == {"build-arg:TOKEN": "visible-in-max",  # max shows build args, as BuildKit
                              "context:extra": "local:extra", "context:img": "docker-image://busybox:local"}
    assert params["locals"] == [{"name": "context"}, {"name": "dockerfile"}, {"name": "extra"}]
    assert params["secrets"] == [{"id": "npm", "optional": True}]
    assert b"s3cr3t" not in raw_statement
    assert predicate["metadata"]["completeness"]["parameters"] is True
    steps = predicate["buildConfig"]["llbDefinition"]
    assert steps[0]["op"]["Op"]["source"]["identifier"].startswith("docker-image://docker.io/library/busybox:local@")
    assert steps[1]["op"]["Op"]["exec"]["meta"]["args"][:2] == ["/bin/sh", "-c"]
    assert steps[2]["op"]["Op"]["file"]["actions"][0]["copy"] == {"src": ["a"], "dest": "/a"}
    assert steps[2]["inputs"] == ["step1:0"]
    source = predicate["metadata"]["https://mobyproject.org/buildkit@v1#metadata"]["source"]
    assert base64.b64decode(source["infos"][0]["data"]) == (ctx / "Dockerfile").read_bytes()
    assert source["locations"]["step2"]["locations"][0]["ranges"][0]["start"] == {"line": 4}
    assert source["locations"]["step0"]["locations"][0]["ranges"][0]["start"] == {"line": 1}
    # readers of the layout take the image, not the attestation
    _skopeo("copy", f"oci-archive:{archive}:max", f"oci:{tmp_path / 'copy'}:x")
    run_pybuild("load", "-i", str(archive), root=tmp_path / "load-root", check=True)
    loaded = json.loads(run_pybuild("inspect", "attest:max", root=tmp_path / "load-root", check=True).stdout)[0]
    assert loaded["Id"] == json.loads(blob(image_desc["digest"]))["config"]["digest"]


def _oci_predicate(archive: Path, layout: Path) -> dict:
    """The provenance predicate of the attested image a type=oci tar holds."""
    return _statements(archive, layout)[PREDICATE]["predicate"]


def test_provenance_materials_name_the_git_and_http_sources_by_digest(builder: Builder, git_daemon: str,
                                                                      tmp_path: Path) -> None:
    """As BuildKit's: after the base image, an ADD's git repository (``REMOTE#REF``, by the
    commit it named, sha1) and an ADD's URL (by the sha256 of what it served, its credentials
    masked as BuildKit masks them), on the build that downloaded them and on a rebuild whose steps were cache
    hits by the server's ETag and downloaded nothing."""
    import hashlib

    from tests.helpers.fileserver import serve_files

    commit = subprocess.run([require_tool("git"), "ls-remote", git_daemon, "refs/tags/v1"], check=True,
                            capture_output=True, text=True).stdout.split()[0]
    body = b"served over http\n"
    log: list[str] = []
    with serve_files({"/f.txt": body}, headers={"ETag": '"v1"'}, log=log) as base:
        authed = base.replace("http://", "http://user:pw@")
        ctx = builder.context({"Dockerfile": f"FROM busybox:local\nADD {git_daemon}#v1 /src\n"
                                             f"ADD {authed}/f.txt /f.txt\n"}, "sources")
        for attempt in ("first", "cached"):
            archive = tmp_path / f"{attempt}.tar"
            p = builder.build(ctx, "--provenance=mode=min", "-o", f"type=oci,dest={archive}",
                              "--progress=plain")
            assert (b"CACHED" in p.stderr) == (attempt == "cached")
            predicate = _oci_predicate(archive, tmp_path / attempt)
            assert predicate["materials"][0]["uri"].startswith("pkg:docker/busybox@local")
            assert predicate["materials"][1:] == [
                {"uri": f"{git_daemon}#v1", "digest": {"sha1": commit}},
                {"uri": base.replace("http://", "http://xxxxx:xxxxx@") + "/f.txt",
                 "digest": {"sha256": hashlib.sha256(body).hexdigest()}},
            ], attempt
    assert log.count("GET /f.txt") == 2  # the step's download, and the rebuild's for its digest


def test_a_git_context_is_the_config_source_pinned_by_its_commit(builder: Builder, git_daemon: str,
                                                                  git_repo: Path, tmp_path: Path) -> None:
    """``pybuild build git://...#main``: the provenance's configSource is the context's URL with
    the commit it named, and the repository is among the materials, as BuildKit records them."""
    git = require_tool("git")
    work = tmp_path / "work"
    work.mkdir()
    env = ["-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"]
    (work / "Dockerfile").write_text("FROM busybox:local\nCOPY hello /hello\n")
    (work / "hello").write_text("from git\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-q", "-m", "ctx"]):
        subprocess.run([git, *env, *args], cwd=work, check=True, capture_output=True)
    name = f"ctx-{uuid.uuid4().hex[:8]}.git"
    subprocess.run([git, "clone", "-q", "--bare", str(work), str(git_repo.parent / name)], check=True,
                   capture_output=True)
    commit = subprocess.run([git, "rev-parse", "HEAD"], cwd=work, check=True, capture_output=True,
                            text=True).stdout.strip()
    url = git_daemon.rsplit("/", 1)[0] + f"/{name}#main"
    archive = tmp_path / "out.tar"
    run_pybuild("build", "--provenance=mode=min", "-o", f"type=oci,dest={archive}", url,
                root=builder.root, check=True)
    predicate = _oci_predicate(archive, tmp_path / "layout")
    assert predicate["invocation"]["configSource"] == {"uri": url, "digest": {"sha1": commit},
                                                       "entryPoint": "Dockerfile"}
    assert predicate["materials"][1:] == [{"uri": url, "digest": {"sha1": commit}}]
    assert "locals" not in predicate["invocation"]["parameters"]


def test_an_http_context_is_the_config_source_pinned_by_its_digest(builder: Builder, tmp_path: Path) -> None:
    """``pybuild build http://.../ctx.tar``: configSource names the archive with its sha256, and the
    archive is among the materials, as BuildKit records an http context; so is an http
    ``--build-context``."""
    import hashlib
    import io
    import tarfile

    from tests.helpers.fileserver import serve_files

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Dockerfile", b"FROM busybox:local\nCOPY hello /hello\n"), ("hello", b"hi\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive_bytes = buf.getvalue()
    with serve_files({"/ctx.tar": archive_bytes}) as base:
        archive = tmp_path / "out.tar"
        run_pybuild("build", "--provenance=mode=min", "-o", f"type=oci,dest={archive}", f"{base}/ctx.tar",
                    root=builder.root, check=True)
        named = tmp_path / "named.tar"
        ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY --from=web hello /hello\n"}, "named-web")
        builder.build(ctx, "--provenance=mode=min", "--build-context", f"web={base}/ctx.tar",
                      "-o", f"type=oci,dest={named}")
    predicate = _oci_predicate(archive, tmp_path / "layout")
    digest = {"sha256": hashlib.sha256(archive_bytes).hexdigest()}
    assert predicate["invocation"]["configSource"] == {"uri": f"{base}/ctx.tar", "digest": digest,
                                                       "entryPoint": "Dockerfile"}
    assert predicate["materials"][1:] == [{"uri": f"{base}/ctx.tar", "digest": digest}]
    predicate = _oci_predicate(named, tmp_path / "named-layout")
    assert predicate["invocation"]["configSource"] == {"entryPoint": "Dockerfile"}
    assert predicate["invocation"]["parameters"]["args"]["context:web"] == f"{base}/ctx.tar"
    assert predicate["materials"][1:] == [{"uri": f"{base}/ctx.tar", "digest": digest}]


def test_docker_output_and_the_store_keep_the_image_alone(builder: Builder, tmp_path: Path) -> None:
    """type=docker drops attestations as buildx's docker exporter does; the store keeps the image."""
    ctx = _context(builder, "docker-out")
    archive = tmp_path / "docker.tar"
    builder.build(ctx, "--provenance=mode=max", "-t", "attest:docker", "-o", f"type=docker,dest={archive}")
    index = json.loads(subprocess.run(["tar", "-xOf", str(archive), "index.json"], check=True,
                                      capture_output=True).stdout)
    assert [m["mediaType"] for m in index["manifests"]] == [OCI_MANIFEST]
    builder.build(ctx, "--provenance=true", "-t", "attest:stored")
    assert json.loads(run_pybuild("inspect", "attest:stored", root=builder.root, check=True).stdout)[0]["Id"]


APK_DB = """C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
L:MIT
o:musl
m:Natanael Copa <ncopa@alpinelinux.org>

C:Q1def=
P:busybox-binsh
V:1.36.1-r15
A:x86_64
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
"""


def _statements(layout_tar: Path, layout: Path) -> dict[str, dict]:
    """The in-toto statements of the attested image a type=oci tar holds, by predicate type
    (the tar unpacked into ``layout``)."""
    layout.mkdir()
    subprocess.run(["tar", "-xf", str(layout_tar), "-C", str(layout)], check=True)

    def blob(digest: str) -> bytes:
        return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    [entry] = json.loads((layout / "index.json").read_text())["manifests"]
    _, att_desc = json.loads(blob(entry["digest"]))["manifests"]
    layers = json.loads(blob(att_desc["digest"]))["layers"]
    return {layer["annotations"]["in-toto.io/predicate-type"]: json.loads(blob(layer["digest"])) for layer in layers}


def test_sbom_lists_the_packages_dpkg_installed(builder: Builder, bookworm_base: str, tmp_path: Path) -> None:
    """--sbom=true: an SPDX 2.3 document (predicate https://spdx.dev/Document) of what dpkg
    recorded in the final image, beside the provenance in the same attestation manifest."""
    ctx = builder.context({"Dockerfile": f"FROM {bookworm_base}\nRUN rm -rf /usr/share/doc\n"}, "sbom-deb")
    archive = tmp_path / "deb.tar"
    builder.build(ctx, "--sbom=true", "--provenance=true", "-t", "attest:deb", "-o", f"type=oci,dest={archive}")
    found = _statements(archive, tmp_path / "layout-sbom")
    assert list(found) == ["https://spdx.dev/Document", PREDICATE]
    doc = found["https://spdx.dev/Document"]["predicate"]
    assert doc["spdxVersion"] == "SPDX-2.3" and doc["dataLicense"] == "CC0-1.0"
    by_name = {p["name"]: p for p in doc["packages"]}
    assert {"bash", "dpkg", "libc6", "coreutils"} <= set(by_name)
    purl = by_name["bash"]["externalRefs"][0]["referenceLocator"]
    assert purl.startswith(f"pkg:deb/debian/bash@{quote_plus_version(by_name['bash']['versionInfo'])}?arch=")
    assert len(doc["relationships"]) == len(doc["packages"])


def quote_plus_version(version: str) -> str:
    from urllib.parse import quote

    return quote(version, safe="")


def test_sbom_reads_apk_s_database(builder: Builder, tmp_path: Path) -> None:
    ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY installed /lib/apk/db/installed\n"
                                         "RUN echo ID=alpine > /etc/os-release\n", "installed": APK_DB}, "sbom-apk")
    archive = tmp_path / "apk.tar"
    builder.build(ctx, "--attest", "type=sbom", "-t", "attest:apk", "-o", f"type=oci,dest={archive}")
    found = _statements(archive, tmp_path / "layout-sbom")
    assert list(found) == ["https://spdx.dev/Document"]
    doc = found["https://spdx.dev/Document"]["predicate"]
    refs = sorted(p["externalRefs"][0]["referenceLocator"] for p in doc["packages"])
    assert refs == ["pkg:apk/alpine/busybox-binsh@1.36.1-r15?arch=x86_64&upstream=busybox",
                    "pkg:apk/alpine/musl@1.2.4-r2?arch=x86_64"]
    assert found["https://spdx.dev/Document"]["subject"][0]["name"].startswith("pkg:docker/attest@apk?platform=")


def test_provenance_max_steps_of_a_multi_stage_build(builder: Builder, tmp_path: Path) -> None:
    """A stage built on another continues from that stage's last step; each base image read is a
    material once; the stages the target does not need are not steps."""
    ctx = builder.context({"Dockerfile": "FROM busybox:local AS a\nRUN echo a > /a\n"
                                         "FROM busybox:local AS unused\nRUN echo never\n"
                                         "FROM a\nWORKDIR /w\nENV X=1\nCOPY --from=a /a /w/a\n"}, "multi")
    archive = tmp_path / "multi.tar"
    builder.build(ctx, "--provenance=mode=max", "-o", f"type=oci,dest={archive}")
    statement = _statements(archive, tmp_path / "layout-sbom")[PREDICATE]
    assert statement["subject"] == []  # an unnamed image: BuildKit's default subjects are its names
    predicate = statement["predicate"]
    assert len(predicate["materials"]) == 1
    ops = [(s["id"], next(iter(s["op"]["Op"])), s.get("inputs")) for s in predicate["buildConfig"]["llbDefinition"]]
    assert ops == [("step0", "source", None), ("step1", "exec", ["step0:0"]), ("step2", "file", ["step1:0"]),
                   ("step3", "file", ["step2:0"])]


def test_attested_push_with_docker_media_types_asked_is_oci(builder: Builder, registry: str) -> None:
    """oci-mediatypes=false cannot hold an attestation manifest: overridden, with a warning, as
    BuildKit turns OCI types on; push-by-digest pushes the index by digest, no tag."""
    ctx = builder.context({"Dockerfile": f"FROM busybox:local\nRUN echo {uuid.uuid4().hex} > /x\n"}, "docker-types")
    ref = f"{registry}/attest/docker-types:{uuid.uuid4().hex[:8]}"
    p = builder.build(ctx, "--provenance=true", "-o", f"type=registry,name={ref},oci-mediatypes=false")
    assert b"oci-mediatypes=false is overridden" in p.stderr
    index = _raw(f"docker://{ref}")
    assert index["mediaType"] == OCI_INDEX
    assert [m["mediaType"] for m in index["manifests"]] == [OCI_MANIFEST, OCI_MANIFEST]
    repo = ref.split("/", 1)[1].split(":")[0]
    meta = builder.tmp / "by-digest.json"
    builder.build(ctx, "--provenance=true", "-o", f"type=registry,name={registry}/{repo}:never,push-by-digest=true",
                  "--metadata-file", str(meta))
    digest = json.loads(meta.read_text())["containerimage.digest"]
    assert _raw(f"docker://{registry}/{repo}@{digest}")["mediaType"] == OCI_INDEX
    import requests

    tags = requests.get(f"http://{registry}/v2/{repo}/tags/list", timeout=30).json()["tags"]
    assert tags == [ref.rsplit(":", 1)[1]]


def test_local_and_tar_outputs_get_the_statements_as_files(builder: Builder, tmp_path: Path) -> None:
    """As BuildKit's local and tar exporters: provenance.json and sbom.spdx.json (mode 0600) at the
    output's root, their subjects every regular file of the output with its sha256."""
    import hashlib
    import tarfile

    ctx = builder.context({"Dockerfile": "FROM busybox:local\nCOPY installed /lib/apk/db/installed\n",
                           "installed": APK_DB}, "files")
    dest = tmp_path / "out"
    builder.build(ctx, "--provenance=true", "--sbom=true", "-o", f"type=local,dest={dest}")
    provenance = json.loads((dest / "provenance.json").read_text())
    sbom = json.loads((dest / "sbom.spdx.json").read_text())
    assert (dest / "provenance.json").stat().st_mode & 0o777 == 0o600
    assert provenance["predicateType"] == PREDICATE and sbom["predicateType"] == "https://spdx.dev/Document"
    subjects = {s["name"]: s["digest"]["sha256"] for s in provenance["subject"]}
    assert subjects["lib/apk/db/installed"] == hashlib.sha256(APK_DB.encode()).hexdigest()
    assert "provenance.json" not in subjects and len(subjects) > 3
    assert sbom["subject"] == provenance["subject"]
    archive = tmp_path / "fs.tar"
    builder.build(ctx, "--provenance=mode=max", "-o", f"type=tar,dest={archive}")
    with tarfile.open(archive) as tf:
        names = tf.getnames()
        member = tf.getmember(next(n for n in names if n.lstrip("./") == "provenance.json"))
        data = json.loads(tf.extractfile(member).read())  # type: ignore[union-attr]
    assert data["predicate"]["buildConfig"]["llbDefinition"]
    assert not any(n.lstrip("./") == "sbom.spdx.json" for n in names)
    again = tmp_path / "inline-only"
    builder.build(ctx, "--provenance=mode=min,inline-only=true", "-o", f"type=local,dest={again}")
    assert not (again / "provenance.json").exists() and (again / "lib/apk/db/installed").is_file()
