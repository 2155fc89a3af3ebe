"""Push and pull against the real docker-registry; skopeo checks what we write and writes what we read."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.errors import DigestMismatchError, RegistryError, RemoteImageNotFoundError
from builder.image.descriptor import Descriptor
from builder.image.digest import Digest
from builder.image.manifest import Index
from builder.image.mediatypes import Compression, MediaType, layer_compression
from builder.image.platform import Platform
from builder.image.reference import Reference
from builder.registry import RegistryClient, pull, push, resolve
from builder.registry.progress import LineProgress, NullProgress
from builder.registry.remote import parse_range_end, pull_with_result
from cache.store import Store
from tests.helpers.tools import closed_port, require_tool, run_pybuild, small_fs
from tests.registry.images import make_image, random_name, write_oci_layout


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "store") as s:
        yield s


def assert_same_image(pulled, pushed) -> None:  # type: ignore[no-untyped-def]
    assert pulled.digest() == pushed.digest()
    assert pulled.config_digest() == pushed.config_digest()
    assert pulled.raw_manifest() == pushed.raw_manifest()
    assert [layer.digest() for layer in pulled.layers()] == [layer.digest() for layer in pushed.layers()]
    assert [layer.diff_id() for layer in pulled.layers()] == [layer.diff_id() for layer in pushed.layers()]


@pytest.mark.parametrize(("compression", "docker"), [
    (Compression.GZIP, False), (Compression.GZIP, True), (Compression.ZSTD, False),
])
def test_push_then_pull_keeps_every_digest(registry: str, store: Store, compression: Compression,
                                           docker: bool) -> None:
    image = make_image(3, 50_000, compression, docker, seed=random_name())
    ref = f"{registry}/{random_name('rt')}/app:1"
    result = push(image, ref)
    assert result.digest == image.digest()
    assert result.uploaded == 4 and result.existing == 0
    pulled = pull(ref, store)
    assert_same_image(pulled, image)
    assert_same_image(store.image(ref), image)
    assert store.check().clean
    again = push(image, ref)
    assert again.existing == 4 and again.uploaded == 0


def test_skopeo_reads_what_pybuild_pushed(registry: str, tmp_path: Path) -> None:
    skopeo = require_tool("skopeo")
    image = make_image(2, 20_000, seed=random_name())
    ref = f"{registry}/{random_name('sk')}/app:v1"
    push(image, ref)
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, check=True).stdout
    assert raw == image.raw_manifest()
    out = tmp_path / "oci"
    proc = subprocess.run([skopeo, "copy", "--src-tls-verify=false", f"docker://{ref}", f"oci:{out}:v1"],
                          capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    index = json.loads((out / "index.json").read_text())
    assert index["manifests"][0]["digest"] == image.digest()


@pytest.mark.parametrize(("fmt", "compress"), [("oci", None), ("v2s2", None), ("oci", "zstd")])
def test_pybuild_pulls_what_skopeo_pushed(registry: str, store: Store, tmp_path: Path, fmt: str,
                                          compress: str | None) -> None:
    skopeo = require_tool("skopeo")
    image = make_image(2, 30_000, seed=random_name())
    layout = write_oci_layout(image, tmp_path / "layout")
    ref = f"{registry}/{random_name('sp')}/app:1"
    cmd = [skopeo, "copy", "--dest-tls-verify=false", "--format", fmt]
    if compress:
        cmd += ["--dest-compress", "--dest-compress-format", compress]
    proc = subprocess.run([*cmd, f"oci:{layout}:latest", f"docker://{ref}"], capture_output=True)
    assert proc.returncode == 0, proc.stderr.decode()
    raw = subprocess.run([skopeo, "inspect", "--raw", "--tls-verify=false", f"docker://{ref}"],
                         capture_output=True, check=True).stdout
    pulled = pull(ref, store)
    assert pulled.raw_manifest() == raw
    assert pulled.config_digest() == image.config_digest()
    assert [layer.diff_id() for layer in pulled.layers()] == [layer.diff_id() for layer in image.layers()]
    media_types = [d.media_type for d in pulled.manifest().layers]
    if fmt == "v2s2":
        assert pulled.manifest().media_type == MediaType.DOCKER_MANIFEST
        assert set(media_types) == {MediaType.DOCKER_LAYER_GZIP}
    if compress == "zstd":
        assert {layer_compression(m) for m in media_types} == {Compression.ZSTD}
    stored = store.image(ref)
    assert stored.digest() == Digest.of(raw)
    for layer in stored.layers():
        with layer.uncompressed() as tar:
            assert Digest.of(tar.read()) == layer.diff_id()


def test_uncompressed_layers_are_pushed_as_gzip(registry: str, store: Store) -> None:
    image = make_image(2, 10_000, Compression.NONE, seed=random_name())
    store.write_image(image, ["local/plain:1"])
    ref = f"{registry}/{random_name('gz')}/plain:1"
    result = push(store.image("local/plain:1"), ref, store=store)
    client = RegistryClient(registry)
    remote = resolve(client, Reference.parse(ref))
    assert remote.digest() == result.digest != image.digest()
    assert {d.media_type for d in remote.manifest().layers} == {MediaType.OCI_LAYER_GZIP}
    assert [layer.diff_id() for layer in remote.layers()] == [layer.diff_id() for layer in image.layers()]
    for layer in remote.layers():
        with layer.uncompressed() as tar:
            assert Digest.of(tar.read()) == layer.diff_id()
    # The gzip form is kept in the store: a second push compresses nothing and uploads nothing.
    again = push(store.image("local/plain:1"), ref, store=store)
    assert again.digest == result.digest and again.uploaded == 0


def test_chunked_upload(registry: str, store: Store) -> None:
    image = make_image(2, 300_000, seed=random_name())
    ref = f"{registry}/{random_name('ch')}/app:1"
    result = push(image, ref, chunk_size=64 * 1024)
    assert result.uploaded == 3
    assert_same_image(pull(ref, store), image)


def test_cross_repository_mount_and_fallback(registry: str) -> None:
    image = make_image(3, 20_000, seed=random_name())
    base = f"{registry}/{random_name('mnt')}/base:1"
    push(image, base)
    client = RegistryClient(registry)
    remote = resolve(client, Reference.parse(base))
    mounted = push(remote, f"{registry}/{random_name('mnt')}/copy:1", client=client)
    assert (mounted.mounted, mounted.uploaded) == (4, 0)
    # A repository that lacks the blobs: the registry answers 202 and we upload instead.
    fresh = make_image(2, 20_000, seed=random_name())
    fallback = push(fresh, f"{registry}/{random_name('mnt')}/other:1",
                    mount_from=[f"{random_name('empty')}/nothing"])
    assert (fallback.mounted, fallback.uploaded) == (0, 3)


def test_push_by_digest_and_pull_by_digest(registry: str, store: Store) -> None:
    image = make_image(1, 5_000, seed=random_name())
    repo = f"{registry}/{random_name('dg')}/app"
    result = push(image, f"{repo}@{image.digest()}")
    assert result.digest == image.digest()
    pulled = pull(f"{repo}@{image.digest()}", store)
    assert pulled.digest() == image.digest()
    assert store.image(f"{repo}@{image.digest()}").digest() == image.digest()


def test_pull_by_wrong_digest_is_refused(registry: str, store: Store) -> None:
    image = make_image(1, 5_000, seed=random_name())
    repo = f"{registry}/{random_name('dg')}/app"
    push(image, f"{repo}:1")
    other = make_image(1, 5_000, seed=random_name())
    push(other, f"{repo}@{other.digest()}")
    # Asking for a digest gets exactly that manifest, never what a tag points at.
    assert pull(f"{repo}@{other.digest()}", store).digest() == other.digest()
    with pytest.raises(RemoteImageNotFoundError, match="not found"):
        pull(f"{repo}@sha256:{'0' * 64}", store)


def _put_index(registry: str, repo: str, tag: str, images: dict[str, object],
               attestation_first: bool = True, docker: bool = False) -> Index:
    client = RegistryClient(registry)
    entries = []
    for platform, image in images.items():
        push(image, f"{registry}/{repo}@{image.digest()}", client=client)  # type: ignore[attr-defined]
        entries.append(Descriptor(image.manifest().media_type, image.digest(),  # type: ignore[attr-defined]
                                  len(image.raw_manifest()), platform=Platform.parse(platform)))  # type: ignore[attr-defined]
    attestation = make_image(1, 100, seed=random_name())
    push(attestation, f"{registry}/{repo}@{attestation.digest()}", client=client)
    att = Descriptor(MediaType.OCI_MANIFEST, attestation.digest(), len(attestation.raw_manifest()),
                     platform=Platform("unknown", "unknown"),
                     annotations={"vnd.docker.reference.type": "attestation-manifest",
                                  "vnd.docker.reference.digest": str(entries[0].digest)})
    if docker:  # docker manifest lists have no attestations
        index = Index(tuple(entries), media_type=MediaType.DOCKER_MANIFEST_LIST)
    else:
        index = Index(tuple([att, *entries] if attestation_first else [*entries, att]))
    client.put_manifest(repo, tag, index.to_bytes(), index.media_type)
    return index


def test_docker_manifest_list_and_cli_platform(registry: str, tmp_path: Path) -> None:
    repo = f"{random_name('ml')}/app"
    host = Platform.host()
    other = Platform("linux", "arm64" if host.architecture != "arm64" else "amd64")
    images = {str(host): make_image(1, 1000, seed=random_name(), platform=host, docker=True),
              str(other): make_image(1, 1000, seed=random_name(), platform=other, docker=True)}
    index = _put_index(registry, repo, "list", images, docker=True)
    ref = f"{registry}/{repo}:list"
    root = tmp_path / "root"
    proc = run_pybuild("pull", "--platform", str(other), ref, root=root, check=True)
    assert f"Digest: {index_digest(index)}" in proc.stdout.decode()
    with Store(root) as s:
        stored = s.image(ref)
        assert stored.digest() == images[str(other)].digest()
        assert stored.manifest().media_type == MediaType.DOCKER_MANIFEST
    proc = run_pybuild("pull", "--platform", "linux/s390x", ref, root=root)
    assert proc.returncode == 1
    assert "no matching manifest for linux/s390x" in proc.stderr.decode()
    proc = run_pybuild("pull", "--platform", "nonsense", ref, root=root)
    assert proc.returncode == 125 and "invalid platform" in proc.stderr.decode()


def test_platform_selection_skips_attestations(registry: str, store: Store) -> None:
    repo = f"{random_name('mp')}/app"
    host = Platform.host()
    other_arch = "arm64" if host.architecture != "arm64" else "amd64"
    images = {str(host): make_image(1, 1000, seed=random_name(), platform=host),
              f"linux/{other_arch}": make_image(1, 1000, seed=random_name(),
                                                platform=Platform("linux", other_arch)),
              "linux/arm/v7": make_image(1, 1000, seed=random_name(), platform=Platform.parse("linux/arm/v7"))}
    index = _put_index(registry, repo, "multi", images)
    ref = f"{registry}/{repo}:multi"
    image, result = pull_with_result(ref, store)
    assert image.digest() == images[str(host)].digest()
    assert result.digest == index_digest(index)
    assert pull(ref, store, f"linux/{other_arch}").digest() == images[f"linux/{other_arch}"].digest()
    assert pull(ref, store, "linux/arm").digest() == images["linux/arm/v7"].digest()
    with pytest.raises(RemoteImageNotFoundError) as err:
        pull(ref, store, "linux/s390x")
    assert "no matching manifest for linux/s390x" in str(err.value)
    assert "unknown" not in str(err.value).split("available:")[1]


def index_digest(index: Index) -> Digest:
    return Digest.of(index.to_bytes())


def test_missing_image_and_repository_messages(registry: str, store: Store) -> None:
    with pytest.raises(RemoteImageNotFoundError) as err:
        pull(f"{registry}/{random_name('no')}/app:1.0", store)
    assert str(err.value).endswith("not found")
    assert f"image {registry}/" in str(err.value)


def test_range_header_forms() -> None:
    assert parse_range_end("0-99") == 99
    assert parse_range_end("bytes=0-99") == 99
    assert parse_range_end("") is None


def test_second_pull_downloads_nothing(registry: str, store: Store) -> None:
    image = make_image(2, 10_000, seed=random_name())
    ref = f"{registry}/{random_name('up')}/app:1"
    push(image, ref)
    first = pull_with_result(ref, store, progress=NullProgress())[1]
    second = pull_with_result(ref, store, progress=NullProgress())[1]
    assert first.downloaded > 0 and second.downloaded == 0


def test_progress_lines(registry: str, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    image = make_image(2, 10_000, seed=random_name())
    ref = f"{registry}/{random_name('pg')}/app:1"
    push(image, ref, progress=LineProgress())
    out = capsys.readouterr().out
    for layer in image.layers():
        assert f"{layer.digest().short}: Pushed" in out
    assert f"1: digest: {image.digest()} size: {len(image.raw_manifest())}" in out
    pull(ref, store, progress=LineProgress())
    out = capsys.readouterr().out
    for layer in image.layers():
        assert f"{layer.digest().short}: Pull complete" in out
    assert f"Digest: {image.digest()}" in out
    # As docker: "TAG: Pulling from PATH" (the repository without its registry).
    assert out.startswith(f"1: Pulling from {Reference.parse(ref).repository}\n")
    pull(f"{ref.rsplit(':', 1)[0]}@{image.digest()}", store, progress=LineProgress())
    assert capsys.readouterr().out.startswith(
        f"{ref.rsplit(':', 1)[0]}@{image.digest()}: Pulling from {Reference.parse(ref).repository}\n")


# --- the CLI -----------------------------------------------------------------------------------

def test_cli_pull_push_search(registry: str, tmp_path: Path) -> None:
    image = make_image(2, 10_000, seed=random_name())
    name = random_name("cli")
    ref = f"{registry}/{name}/app:1"
    push(image, ref)
    root = tmp_path / "root"
    proc = run_pybuild("pull", ref, root=root, check=True)
    out = proc.stdout.decode()
    assert f"Digest: {image.digest()}" in out and out.strip().endswith(ref)
    proc = run_pybuild("pull", "-q", ref, root=root, check=True)
    assert proc.stdout.decode() == f"{ref}\n"
    run_pybuild("tag", ref, f"{registry}/{name}/copy:2", root=root, check=True)
    proc = run_pybuild("push", f"{registry}/{name}/copy:2", root=root, check=True)
    assert f"2: digest: {image.digest()}" in proc.stdout.decode()
    proc = run_pybuild("search", name, "--registry", registry, check=True)
    lines = proc.stdout.decode().splitlines()
    assert lines[0].split() == ["NAME", "TAGS"]
    assert any(line.split() == [f"{registry}/{name}/app", "1"] for line in lines)
    assert any(line.split() == [f"{registry}/{name}/copy", "2"] for line in lines)
    proc = run_pybuild("search", name, "--registry", registry, "--limit", "1", check=True)
    assert len(proc.stdout.decode().splitlines()) == 2


def test_cli_errors_are_one_clear_line(registry: str, tmp_path: Path) -> None:
    root = tmp_path / "root"
    proc = run_pybuild("pull", f"{registry}/{random_name('no')}/app:1.0", root=root)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.startswith("ERROR: pull ") and "not found" in err
    proc = run_pybuild("push", f"{registry}/nothing/here:1", root=root)
    assert proc.returncode == 1
    assert "An image does not exist locally with the tag" in proc.stderr.decode()
    proc = run_pybuild("pull", "Busy/Box:1", root=root)
    assert proc.returncode == 125 and "must be lowercase" in proc.stderr.decode()
    with closed_port() as port:
        proc = run_pybuild("pull", f"127.0.0.1:{port}/app:1", root=root)
    assert proc.returncode == 1 and "GET /v2/: connection refused" in proc.stderr.decode()



def test_pushing_an_image_the_store_lost_a_layer_of_names_the_push(registry: str, scripted_proxy,  # type: ignore[no-untyped-def]
                                                                    tmp_path: Path) -> None:
    image = make_image(2, 10_000, seed=random_name())
    ref = f"{registry}/{random_name('lost')}/app:1"
    push(image, ref)
    root = tmp_path / "root"
    run_pybuild("pull", "-q", ref, root=root, check=True)
    layer = image.manifest().layers[-1].digest
    (root / "blobs" / "sha256" / layer.hex).unlink()
    # Within the registry the pull came from, the blob is mounted, never read (as docker does).
    copy = ref.replace("/app:1", "/copy:1")
    run_pybuild("tag", ref, copy, root=root, check=True)
    run_pybuild("push", copy, root=root, check=True)
    # To another registry it has to be read, and the store has lost it.
    elsewhere = scripted_proxy(lambda proxy, request: None).address
    copy = f"{elsewhere}/{random_name('lost')}/copy:1"
    run_pybuild("tag", ref, copy, root=root, check=True)
    proc = run_pybuild("push", copy, root=root)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err, err
    assert f"pushing {copy}: blob {layer} is missing from the store" in err, err


def test_pulling_onto_a_full_disk_names_the_pull(registry: str, tmp_path: Path) -> None:
    image = make_image(3, 1_500_000, seed=random_name())
    ref = f"{registry}/{random_name('full')}/app:1"
    push(image, ref)
    with small_fs(tmp_path / "root", "2m") as root:
        proc = run_pybuild("pull", "-q", ref, root=root)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and "Traceback" not in err, err
        assert f"pulling {ref}: " in err and "No space left on device" in err, err
        assert list((root / "tmp").iterdir()) == []
        assert run_pybuild("store", "check", root=root).returncode == 0

def test_registry_error_names_operation(registry: str) -> None:
    client = RegistryClient(registry)
    with pytest.raises(RegistryError) as err:
        client.put_manifest(f"{random_name('bad')}/app", "1", make_image(1, 10).raw_manifest(),
                            MediaType.OCI_MANIFEST)
    assert str(err.value).startswith(f"push {registry}/")
    assert "PUT manifest 1: 400 Bad Request (blob unknown to registry)" in str(err.value)


def test_digest_mismatch_of_manifest_by_digest(registry: str, store: Store) -> None:
    image = make_image(1, 1000, seed=random_name())
    repo = f"{registry}/{random_name('md')}/app"
    push(image, f"{repo}:1")
    client = RegistryClient(registry)
    ref = Reference.parse(f"{repo}:1").with_digest(image.digest())
    assert resolve(client, ref).digest() == image.digest()
    with pytest.raises((DigestMismatchError, RemoteImageNotFoundError)):
        resolve(client, Reference.parse(f"{repo}:1").with_digest("sha256:" + "1" * 64))


def test_catalog_pagination_follows_link(registry: str) -> None:
    from builder.registry.client import Call

    name = random_name("page")
    for i in range(5):
        push(make_image(1, 100, seed=f"{name}{i}"), f"{registry}/{name}/r{i}:t{i}")
    client = RegistryClient(registry)
    everything = list(client.catalog())
    paged = list(client.paginate("/v2/_catalog", Call("search", None, "catalog"), "repositories",
                                 page_size=2))
    assert paged == everything
    assert [f"{name}/r{i}" for i in range(5)] == [r for r in paged if r.startswith(name)]
    assert client.tags(f"{name}/r3") == ["t3"]


def test_redaction_of_urls_in_messages() -> None:
    import requests

    from builder.registry.client import describe_exception, redact

    assert redact("GET https://s3.example/b/k?X-Amz-Signature=abc&t=1 -> 200") == \
        "GET https://s3.example/b/k?… -> 200"
    err = requests.ConnectionError(
        "HTTPSConnectionPool(host='s3', port=443): Max retries exceeded with url: /k?sig=SECRET "
        "(Caused by NewConnectionError('Failed to establish a new connection: [Errno 111] "
        "Connection refused'))")
    assert describe_exception(err) == "connection refused"
    assert "SECRET" not in describe_exception(requests.RequestException("boom /k?sig=SECRET"))


def test_pull_tag_and_digest_uses_the_digest_and_leaves_the_tag(registry: str, store: Store,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # docker pull repo:1@digest pulls the digest, prints repo@digest and tags nothing:
    # the tag may have moved since the reference was written.
    repo = f"{registry}/{random_name('td')}/app"
    old = make_image(1, 5_000, seed=random_name())
    push(old, f"{repo}:1")
    new = make_image(1, 5_000, seed=random_name())
    push(new, f"{repo}:1")
    pulled = pull(f"{repo}:1@{old.digest()}", store, progress=LineProgress())
    assert pulled.digest() == old.digest()
    assert f"Status: Downloaded newer image for {repo}@{old.digest()}" in capsys.readouterr().out
    assert not any(name.endswith(":1") for record in store.images() for name in record.names)
    assert store.image(f"{repo}@{old.digest()}").digest() == old.digest()
    pull(f"{repo}:1", store)
    assert store.image(f"{repo}:1").digest() == new.digest()


@pytest.mark.parametrize("flag", ["--cache-to", "--cache-from"])
def test_bad_registry_cache_ref_fails_before_the_build(registry: str, tmp_path: Path, flag: str) -> None:
    # As BuildKit resolves cache refs before solving: a typo must not cost a whole build
    # (--cache-to used to fail only after it; --cache-from with --no-cache never said a word).
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "f").write_text("x")
    (tmp_path / "ctx" / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    proc = run_pybuild("build", "--progress", "plain", "--no-cache", flag,
                       f"type=registry,ref={registry}/Cache:1", str(tmp_path / "ctx"), root=tmp_path / "root")
    err = proc.stderr.decode()
    assert proc.returncode == 125 and "Traceback" not in err, err
    assert f"invalid {flag} value" in err and "must be lowercase" in err
    assert "COPY" not in err + proc.stdout.decode()


def test_pages_that_loop_are_an_error_not_a_hang() -> None:
    """A registry whose ``Link: rel="next"`` points back at a page already read (broken, or
    hostile) ends ``search`` with a message instead of paging forever."""
    import http.server

    from builder.errors import RegistryError
    from tests.helpers.fileserver import serve_handler

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b'{"repositories": ["a"], "tags": ["t"]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            if self.path != "/v2/":
                self.send_header("Link", f'<{self.path.split("?")[0]}?n=1&last=a>; rel="next"')
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serve_handler(Handler) as url:
        client = RegistryClient(url.removeprefix("http://"))
        with pytest.raises(RegistryError, match="pages loop"):
            list(client.catalog())
        with pytest.raises(RegistryError, match="pages loop"):
            client.tags("a")


def test_an_artifact_is_refused_before_its_layers_are_downloaded(registry: str, tmp_path: Path) -> None:
    """A Helm chart pushed as an OCI artifact: pybuild downloaded its layer, then failed with
    "manifest has 1 layers but config lists 0 diff_ids". Docker: "unsupported media type"."""
    import io

    from builder.image.manifest import Manifest
    from builder.registry.remote import PushBlob, upload_blob
    from tests.registry.images import make_tar

    repo = f"{random_name('helm')}/chart"
    config = b'{"name":"mychart","version":"0.1.0","apiVersion":"v2"}'
    chart = make_tar({"mychart/Chart.yaml": b"name: mychart\n"})
    config_desc = Descriptor.of("application/vnd.cncf.helm.config.v1+json", config)
    chart_desc = Descriptor.of("application/vnd.cncf.helm.chart.content.v1.tar+gzip", chart)
    manifest = Manifest(config=config_desc, layers=(chart_desc,), media_type=MediaType.OCI_MANIFEST)
    with RegistryClient(registry) as client:
        for desc, data in ((config_desc, config), (chart_desc, chart)):
            upload_blob(client, repo, PushBlob(desc, lambda d=data: io.BytesIO(d)))
        client.put_manifest(repo, "0.1.0", manifest.to_bytes(), MediaType.OCI_MANIFEST.value)
    root = tmp_path / "root"
    proc = run_pybuild("pull", f"{registry}/{repo}:0.1.0", root=root)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (
        f"ERROR: pull {registry}/{repo}:0.1.0: not a container image: unsupported config media type "
        "application/vnd.cncf.helm.config.v1+json (an OCI artifact, such as a Helm chart)")
    assert "Pull complete" not in proc.stdout.decode()
    assert not any(path.is_file() for path in (root / "blobs").rglob("*"))
