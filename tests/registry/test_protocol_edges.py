"""What real registries and their storage do at the edges of the protocol: redirects to other
hosts, challenges that cannot be answered, odd manifests, pagination, upload sessions.

Each case is the real registry behind a scripted loopback proxy that changes one answer.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from builder.errors import AuthError, RegistryError
from builder.registry import ClientOptions, pull, push
from builder.registry.auth import DockerConfig
from cache.store import Store
from tests.registry.conftest import ScriptedProxy, Seen
from tests.registry.images import make_image, random_name

BASIC = "Basic " + base64.b64encode(b"carol:pw-Secret-9").decode()
REFRESH = "refresh-Secret-77"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "store") as s:
        yield s


def options_for(tmp_path: Path, address: str) -> ClientOptions:
    """A docker config holding carol's password for ``address``."""
    directory = tmp_path / "docker"
    directory.mkdir(exist_ok=True)
    auth = base64.b64encode(b"carol:pw-Secret-9").decode()
    (directory / "config.json").write_text(json.dumps({"auths": {address: {"auth": auth}}}))
    return ClientOptions(docker_config=DockerConfig(directory))


def bearer_registry(redirect_blobs_to: ScriptedProxy | None = None, also_basic: bool = False):  # type: ignore[no-untyped-def]
    """A script: the registry wants a bearer token from its own /token (carol's password);
    blob GETs are sent to ``redirect_blobs_to`` as signed URLs. ``also_basic``: a Basic
    challenge comes first, in a header of its own."""
    issued: set[str] = set()

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.path.startswith("/token"):
            token = f"tok-{len(issued)}"
            if request.method == "POST":  # OAuth2 with the identity token (refresh token)
                form = parse_qs(request.body.decode())
                if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [REFRESH]:
                    return 401, {}, b""
                issued.add(token)
                return 200, {"Content-Type": "application/json"}, json.dumps(
                    {"access_token": token, "expires_in": 600, "refresh_token": REFRESH}).encode()
            if request.headers.get("authorization") != BASIC:
                return 401, {}, b""
            issued.add(token)
            return 200, {"Content-Type": "application/json"}, json.dumps({"token": token}).encode()
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in issued:
            challenge = f'Bearer realm="{proxy.scheme}://{proxy.address}/token",service="reg, edge"'
            if also_basic:  # two header lines (the names differ only in case)
                return 401, {"WWW-Authenticate": 'Basic realm="reg"', "Www-Authenticate": challenge}, b""
            return 401, {"WWW-Authenticate": challenge}, b""
        if redirect_blobs_to is not None and request.method == "GET" and "/blobs/sha256:" in request.path:
            key = request.path.rsplit(":", 1)[1]
            return 307, {"Location": f"http://{redirect_blobs_to.address}/bucket/{key}?X-Sig=s1&e=9"}, b""
        return None

    return script


def test_a_redirect_target_cannot_name_the_token_realm(scripted_proxy, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                       store: Store) -> None:
    """Blob storage on another host that answers 401 with its own Bearer challenge once got the
    user's password: pybuild took the challenge as the registry's and asked the storage's realm
    for a token with basic credentials. Only the registry names the realm now, and the error
    says which host refused (no talk of a wrong password)."""
    def storage_script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.path.startswith("/token"):
            return 200, {"Content-Type": "application/json"}, b'{"token": "stolen"}'
        return 401, {"WWW-Authenticate": f'Bearer realm="http://{proxy.address}/token",service="s"'}, b""

    storage = scripted_proxy(storage_script, upstream=None, host="127.0.0.2")
    registry = scripted_proxy(bearer_registry(redirect_blobs_to=storage))
    name = f"{registry.address}/{random_name('steal')}/app:1"
    options = options_for(tmp_path, registry.address)
    push(make_image(1, 2000, seed=random_name()), name, options=options)
    with pytest.raises(RegistryError) as err:
        pull(name, store, options=options)
    message = str(err.value)
    assert f"{storage.address} (where the registry redirected the request) answered 401" in message
    assert "password" not in message and not isinstance(err.value, AuthError)
    assert storage.seen and all("authorization" not in seen.headers for seen in storage.seen)
    assert not any(seen.path.startswith("/token") for seen in storage.seen)


@pytest.mark.parametrize("target", ["same host", "other port"])
def test_redirects_keep_credentials_only_on_the_registry(scripted_proxy, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                         store: Store, target: str) -> None:
    """A blob GET redirected within the registry (same host and port) keeps its token; one sent
    to another port of the same address does not. The signed query string arrives intact."""
    storage_seen: list[Seen] = []

    def storage_script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        storage_seen.append(request)
        return proxy.forward(request, request.path.split("/bucket", 1)[1].split("?")[0])

    other = scripted_proxy(storage_script)
    inner = bearer_registry()

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        answer = inner(proxy, request)
        if answer is not None:
            return answer
        if request.path.startswith("/bucket"):
            storage_seen.append(request)
            return proxy.forward(request, request.path.split("/bucket", 1)[1].split("?")[0])
        if request.method == "GET" and "/blobs/sha256:" in request.path:
            host = proxy.address if target == "same host" else other.address
            return 307, {"Location": f"http://{host}/bucket{request.path}?X-Sig=a%2Fb&e=9"}, b""
        return None

    registry = scripted_proxy(script)
    name = f"{registry.address}/{random_name('redir')}/app:1"
    options = options_for(tmp_path, registry.address)
    image = make_image(2, 3000, seed=random_name())
    push(image, name, options=options)
    assert pull(name, store, options=options).digest() == image.digest()
    assert len(storage_seen) == 3 and all(seen.path.endswith("?X-Sig=a%2Fb&e=9") for seen in storage_seen)
    sent = ["authorization" in seen.headers for seen in storage_seen]
    assert sent == ([True] * 3 if target == "same host" else [False] * 3)


@pytest.mark.parametrize(("challenge", "expected"), [
    (None, "the registry answered 401 without a WWW-Authenticate challenge"),
    ("Negotiate", "asks for 'negotiate' authentication, which pybuild does not support"),
])
def test_a_401_that_cannot_be_answered_is_not_a_wrong_password(scripted_proxy, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                               store: Store, challenge: str | None,
                                                               expected: str) -> None:
    """With credentials configured, a 401 whose challenge pybuild cannot answer (none at all, or
    a scheme it does not speak) used to read "incorrect username or password" though the
    password was never sent."""
    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        return 401, ({"WWW-Authenticate": challenge} if challenge else {}), b""

    registry = scripted_proxy(script)
    with pytest.raises(AuthError) as err:
        pull(f"{registry.address}/x/app:1", store, options=options_for(tmp_path, registry.address))
    assert expected in str(err.value) and "password" not in str(err.value)
    assert str(err.value).startswith(f"pull {registry.address}/x/app: unauthorized: ")
    assert all("authorization" not in seen.headers for seen in registry.seen)


def test_search_goes_on_past_a_repository_without_tags(registry: str, tmp_path: Path) -> None:
    """docker-registry lists a repository whose push was interrupted (blobs, no manifest) in its
    catalog and answers 404 for its tags: one such repository made every search of the registry
    fail. It is listed without tags now, and the search goes on."""
    import io

    from builder.registry import RegistryClient
    from builder.registry.remote import PushBlob, upload_blob
    from tests.helpers.tools import run_pybuild

    name = random_name("srch")
    image = make_image(1, 500, seed=random_name())
    with RegistryClient(registry) as client:
        config = image.manifest().config
        upload_blob(client, f"{name}/broken", PushBlob(config, lambda: io.BytesIO(image.raw_config())))
    push(image, f"{registry}/{name}/whole:3")
    proc = run_pybuild("search", name, "--registry", registry, root=tmp_path / "root")
    assert proc.returncode == 0, proc.stderr.decode()
    rows = [line.split() for line in proc.stdout.decode().splitlines()]
    assert [f"{registry}/{name}/broken"] in rows and [f"{registry}/{name}/whole", "3"] in rows


def test_search_on_a_registry_without_a_catalog_says_so(scripted_proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.helpers.tools import run_pybuild

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.path.startswith("/v2/_catalog"):
            return 404, {"Content-Type": "application/json"}, \
                b'{"errors":[{"code":"UNSUPPORTED","message":"The operation is unsupported."}]}'
        return None

    registry = scripted_proxy(script)
    proc = run_pybuild("search", "x", "--registry", registry.address, root=tmp_path / "root")
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (
        f"ERROR: search {registry.address}: the registry offers no catalog to search "
        "(GET /v2/_catalog: 404 Not Found (The operation is unsupported.))")


SCHEMA1 = json.dumps({"schemaVersion": 1, "name": "old/app", "tag": "1", "architecture": "amd64",
                      "fsLayers": [], "history": [], "signatures": []}).encode()


@pytest.mark.parametrize("content_type", ["application/vnd.docker.distribution.manifest.v1+prettyjws",
                                          "application/json"])
def test_a_schema1_image_is_refused_by_name(scripted_proxy, tmp_path: Path,  # type: ignore[no-untyped-def]
                                            content_type: str) -> None:
    """A schema 1 manifest used to end in "cannot tell what this document is"."""
    from tests.helpers.tools import run_pybuild

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if "/manifests/" in request.path:
            return 200, {"Content-Type": content_type}, SCHEMA1
        return None

    registry = scripted_proxy(script)
    proc = run_pybuild("pull", f"{registry.address}/old/app:1", root=tmp_path / "root")
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        f"ERROR: pull {registry.address}/old/app:1: the image is in Docker's schema 1 manifest "
        "format, which pybuild does not read (docker stopped reading it too): ask its author to "
        "push it again as Docker schema 2 or OCI")


def test_the_manifest_s_own_media_type_wins_over_content_type(scripted_proxy,  # type: ignore[no-untyped-def]
                                                              store: Store) -> None:
    """A proxy that labels an image manifest as an index (or anything else) used to fail the
    pull with "not an image index"; the body's mediaType is what the digest covers."""
    image = make_image(1, 2000, seed=random_name())

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if "/manifests/" in request.path and request.method == "GET":
            status, headers, body = proxy.forward(request)
            return status, headers | {"Content-Type": "application/vnd.oci.image.index.v1+json"}, body
        return None

    registry = scripted_proxy(script)
    ref = f"{registry.address}/{random_name('ct')}/app:1"
    push(image, ref)
    pulled = pull(ref, store)
    assert pulled.digest() == image.digest() and pulled.manifest().media_type == image.manifest().media_type
    assert store.image(ref).digest() == image.digest()


def test_a_416_on_a_chunk_resumes_where_the_registry_is(scripted_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    """A registry answering a PATCH with 416 (its upload holds other bytes than the chunk's
    start) failed the push; the 416 now means: ask the session's offset and go on from it."""
    patches: list[str] = []

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.method == "PATCH":
            patches.append(request.headers["content-range"])
            if len(patches) == 2:
                return 416, {"Content-Type": "application/json"}, \
                    b'{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"blob upload invalid"}]}'
        return None

    registry = scripted_proxy(script)
    image = make_image(1, 5000, seed=random_name())
    ref = f"{registry.address}/{random_name('416')}/app:1"
    push(image, ref, chunk_size=1000, workers=1)
    assert pull(ref, store).digest() == image.digest()
    assert patches[1] == patches[2] == "1000-1999"  # the refused chunk, sent again
    assert any(seen.method == "GET" and "/blobs/uploads/" in seen.path for seen in registry.seen)


def test_a_foreign_layer_comes_from_the_urls_its_descriptor_names(scripted_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    """A foreign (non-distributable) layer the registry does not hold failed the pull with "404
    blob unknown"; docker fetches it from the descriptor's ``urls`` (no credentials, digest
    checked). One URL that answers 404 is passed over; when none serves it, the message says so."""
    from builder.errors import RemoteImageNotFoundError
    from builder.image.mediatypes import MediaType
    from tests.helpers.fileserver import serve_files

    image = make_image(2, 3000, docker=True, seed=random_name())
    repo = random_name("foreign")
    manifest = json.loads(image.raw_manifest())
    foreign = manifest["layers"][0]
    with image.layers()[0].compressed() as f:
        blob = f.read()
    urls: list[str] = []

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if "/manifests/" in request.path and request.method == "GET":
            foreign.update(mediaType=MediaType.DOCKER_FOREIGN_LAYER.value, urls=urls)
            return 200, {"Content-Type": manifest["mediaType"]}, json.dumps(manifest).encode()
        if foreign["digest"] in request.path:
            return 404, {"Content-Type": "application/json"}, \
                b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}'
        return None

    registry = scripted_proxy(script)
    push(image, f"{registry.address}/{repo}:1")
    served: list[str] = []
    with serve_files({"/win/layer.tar.gz": blob}, log=served) as url:
        urls[:] = [f"{url}/gone.tar.gz?sig=1", f"{url}/win/layer.tar.gz"]
        pulled = pull(f"{registry.address}/{repo}:1", store)
        assert [layer.diff_id() for layer in store.image(f"{registry.address}/{repo}:1").layers()] == \
            [layer.diff_id() for layer in image.layers()]
        assert pulled.manifest().layers[0].urls == tuple(urls)
        urls[:] = [f"{url}/gone.tar.gz?sig=1"]
        with Store(store.root.parent / "other") as empty, pytest.raises(RemoteImageNotFoundError) as err:
            pull(f"{registry.address}/{repo}:1", empty)
    assert any("/win/layer.tar.gz" in line for line in served)
    host = url.removeprefix("http://")
    assert str(err.value) == (f"pull {registry.address}/{repo}: GET blob {foreign['digest'][:19]}: a foreign "
                              f"layer the registry does not hold, and no URL it names served it "
                              f"({host}: 404 Not Found)")


def test_a_registry_offering_basic_and_bearer_gets_a_token(scripted_proxy, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                           store: Store) -> None:
    """Two WWW-Authenticate headers (Basic, then Bearer) reach pybuild joined by a comma: it read
    them as one Basic challenge whose realm was the Bearer's, sent the password as basic auth and
    failed. Each challenge is parsed on its own and bearer is chosen, as docker does."""
    registry = scripted_proxy(bearer_registry(also_basic=True))
    options = options_for(tmp_path, registry.address)
    image = make_image(1, 1000, seed=random_name())
    ref = f"{registry.address}/{random_name('two')}/app:1"
    push(image, ref, options=options)
    assert pull(ref, store, options=options).digest() == image.digest()
    assert not any(seen.headers.get("authorization") == BASIC for seen in registry.seen
                   if not seen.path.startswith("/token"))


def test_an_identity_token_is_exchanged_by_oauth2(scripted_proxy, tmp_path: Path, store: Store,  # type: ignore[no-untyped-def]
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """config.json's ``identitytoken`` (what ``docker login`` keeps for OAuth2 registries) goes to
    the realm as a POSTed refresh token; the answer's ``access_token`` is the bearer token. Neither
    reaches the debug log."""
    registry = scripted_proxy(bearer_registry())
    image = make_image(1, 1000, seed=random_name())
    ref = f"{registry.address}/{random_name('oauth')}/app:1"
    push(image, ref, options=options_for(tmp_path, registry.address))
    directory = tmp_path / "oauth"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"auths": {
        f"https://{registry.address}/v2/": {"auth": "", "identitytoken": REFRESH}}}))
    caplog.set_level("DEBUG", logger="builder.registry")
    assert pull(ref, store, options=ClientOptions(docker_config=DockerConfig(directory))).digest() == image.digest()
    posts = [seen for seen in registry.seen if seen.method == "POST" and seen.path.startswith("/token")]
    assert posts and all("authorization" not in seen.headers for seen in posts)
    assert REFRESH not in caplog.text and "tok-" not in caplog.text


def test_a_busy_token_server_is_retried(scripted_proxy, tmp_path: Path, store: Store) -> None:  # type: ignore[no-untyped-def]
    """A token server answering 429 (rate limit) or 503 failed the pull at once ("token server
    answered 429"); it is retried like a busy registry, honouring Retry-After."""
    inner = bearer_registry()
    refused: list[int] = []

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.path.startswith("/token") and len(refused) < 2:
            refused.append(429 if not refused else 503)
            return refused[-1], {"Retry-After": "0"}, b""
        return inner(proxy, request)

    registry = scripted_proxy(script)
    options = options_for(tmp_path, registry.address)
    image = make_image(1, 1000, seed=random_name())
    ref = f"{registry.address}/{random_name('busy')}/app:1"
    push(image, ref, options=options)
    assert refused == [429, 503]
    assert pull(ref, store, options=options).digest() == image.digest()


def test_an_insecure_registry_s_own_token_server_is_not_verified_either(scripted_proxy, tls_registry,  # type: ignore[no-untyped-def]
                                                                        tmp_path: Path, store: Store) -> None:
    """``--insecure-registry`` for a registry with a self-signed certificate whose token realm
    is on the same host (Harbor's /service/token): the registry's requests skipped verification
    but the token fetch did not, so every pull failed with a TLS error."""
    cert, key = tls_registry.ca.issue("insecure-token", "IP:127.0.0.1")
    registry = scripted_proxy(bearer_registry(), tls=(cert, key))
    secure = ClientOptions(docker_config=options_for(tmp_path, registry.address).docker_config,
                           certs_d=tmp_path / "certs.d")
    (tmp_path / "certs.d" / registry.address).mkdir(parents=True)
    (tmp_path / "certs.d" / registry.address / "ca.crt").write_bytes(tls_registry.ca.cert.read_bytes())
    image = make_image(1, 1000, seed=random_name())
    ref = f"{registry.address}/{random_name('insec')}/app:1"
    push(image, ref, options=secure)
    insecure = ClientOptions(docker_config=secure.docker_config,
                             insecure_registries=frozenset({registry.address}))
    assert pull(ref, store, options=insecure).digest() == image.digest()
    assert any(seen.path.startswith("/token") for seen in registry.seen)


def test_an_html_page_instead_of_a_manifest_is_named(scripted_proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A proxy's login page served for every URL read "invalid manifest: not JSON (Expecting
    value: line 1 column 1 (char 0))"."""
    from tests.helpers.tools import run_pybuild

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        return 200, {"Content-Type": "text/html; charset=utf-8"}, b"<html>Please log in</html>"

    registry = scripted_proxy(script, upstream=None)
    proc = run_pybuild("pull", f"{registry.address}/x/app:1", root=tmp_path / "root")
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (
        f"ERROR: pull {registry.address}/x/app:1: the registry sent no manifest but 26 bytes of "
        "text/html that are not JSON (a proxy's login or error page?)")


def test_a_rate_limit_names_itself(scripted_proxy, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Docker Hub's pull limit is a 429 whose body says what happened; after the retries the
    message only read "429 Too Many Requests after 5 attempts"."""
    from tests.helpers.tools import run_pybuild

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if "/manifests/" in request.path:
            return 429, {"Retry-After": "0", "Content-Type": "application/json"}, json.dumps({"errors": [{
                "code": "TOOMANYREQUESTS", "message": "You have reached your pull rate limit."}]}).encode()
        return None

    registry = scripted_proxy(script)
    proc = run_pybuild("pull", f"{registry.address}/x/app:1", root=tmp_path / "root")
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == (
        f"ERROR: pull {registry.address}/x/app: GET manifest 1: 429 Too Many Requests (You have reached "
        "your pull rate limit.) after 5 attempts")


def test_a_token_with_a_trailing_newline_is_used_and_never_quoted(scripted_proxy, tmp_path: Path,  # type: ignore[no-untyped-def]
                                                                  store: Store) -> None:
    """A token server whose token ended in a newline made every request an invalid header, and
    requests' message for it, quoting 'Bearer <token>', became pybuild's error message."""
    import requests

    from builder.registry.client import describe_exception

    inner = bearer_registry()

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        answer = inner(proxy, request)
        if request.path.startswith("/token") and answer is not None and answer[0] == 200:
            token = json.loads(answer[2])["token"]
            return 200, answer[1], json.dumps({"token": token + "\n"}).encode()
        return answer

    registry = scripted_proxy(script)
    options = options_for(tmp_path, registry.address)
    image = make_image(1, 1000, seed=random_name())
    ref = f"{registry.address}/{random_name('nl')}/app:1"
    push(image, ref, options=options)
    assert pull(ref, store, options=options).digest() == image.digest()
    err = requests.exceptions.InvalidHeader("Invalid return character(s) in header value: 'Bearer SECRET\\n'")
    assert "SECRET" not in describe_exception(err)


def test_pages_linked_by_absolute_urls_are_followed(scripted_proxy) -> None:  # type: ignore[no-untyped-def]
    """Some registries give the next page as an absolute URL: followed like a relative one."""
    from builder.registry import RegistryClient
    from builder.registry.client import Call

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.path.startswith("/v2/_catalog"):
            status, headers, body = proxy.forward(request)
            if "Link" in headers:
                headers["Link"] = headers["Link"].replace("</v2/", f"<http://{proxy.address}/v2/")
            return status, headers, body
        return None

    registry = scripted_proxy(script)
    name = random_name("abs")
    for i in range(3):
        push(make_image(1, 100, seed=f"{name}{i}"), f"{registry.address}/{name}/r{i}:1")
    with RegistryClient(registry.address) as client:
        everything = list(client.catalog())
        before = len(registry.seen)
        pages = list(client.paginate("/v2/_catalog", Call("search", None, "catalog"), "repositories",
                                     page_size=2))
    assert pages == everything and {f"{name}/r{i}" for i in range(3)} <= set(pages)
    assert len(registry.seen) - before >= 2  # two repositories a page: every page was followed


@pytest.mark.parametrize("trust", ["certs.d", "system"])
def test_the_registry_s_ca_is_trusted_by_its_token_server_and_storage(scripted_proxy, tls_registry,  # type: ignore[no-untyped-def]
                                                                      tmp_path: Path, store: Store,
                                                                      monkeypatch: pytest.MonkeyPatch,
                                                                      trust: str) -> None:
    """A self-hosted GitLab: the registry and its token realm on two hosts, with a company CA
    given in the registry's certs.d (as docker's docs say) or installed system-wide. The registry
    was trusted, its token server and blob storage were not (requests' own CA bundle), so every
    pull failed with CERTIFICATE_VERIFY_FAILED. They share the registry's trust now, as in docker."""
    auth_cert = tls_registry.ca.issue("auth-host", "IP:127.0.0.2")
    registry_cert = tls_registry.ca.issue("registry-host", "IP:127.0.0.1")
    inner = bearer_registry()

    def storage_and_token(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.path.startswith("/token"):
            return inner(registry, request)
        return proxy.forward(request, request.path.split("/bucket", 1)[1].split("?")[0])

    auth = scripted_proxy(storage_and_token, host="127.0.0.2", tls=auth_cert)

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        answer = inner(proxy, request)
        if answer is not None and answer[0] == 401 and not request.path.startswith("/token"):
            return 401, {"WWW-Authenticate": f'Bearer realm="https://{auth.address}/token",service="s"'}, b""
        if answer is None and request.method == "GET" and "/blobs/sha256:" in request.path:
            return 307, {"Location": f"https://{auth.address}/bucket{request.path}?sig=1"}, b""
        return answer

    registry = scripted_proxy(script, tls=registry_cert)
    certs_d = tmp_path / "certs.d"
    (certs_d / registry.address).mkdir(parents=True)
    (certs_d / registry.address / "ca.crt").write_bytes(tls_registry.ca.cert.read_bytes())
    options = ClientOptions(docker_config=options_for(tmp_path, registry.address).docker_config,
                            certs_d=certs_d)
    image = make_image(2, 2000, seed=random_name())
    ref = f"{registry.address}/{random_name('ca')}/app:1"
    push(image, ref, options=options)
    if trust == "system":
        bundle = tmp_path / "system-bundle.pem"
        bundle.write_bytes(Path("/etc/ssl/certs/ca-certificates.crt").read_bytes() + tls_registry.ca.cert.read_bytes())
        monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
        options = ClientOptions(docker_config=options.docker_config, certs_d=tmp_path / "no-certs.d")
    assert pull(ref, store, options=options).digest() == image.digest()
    assert sum("/bucket/" in seen.path for seen in auth.seen) == 3


def test_tokens_expiring_mid_pull_are_renewed(scripted_proxy, tmp_path: Path, store: Store) -> None:  # type: ignore[no-untyped-def]
    """Tokens that run out after three requests (a long pull outliving its token): each blob
    request that meets a 401 fetches a fresh token once and goes on, on every transfer thread."""
    uses: dict[str, int] = {}

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.path.startswith("/token"):
            if request.headers.get("authorization") != BASIC:
                return 401, {}, b""
            token = f"short-{len(uses)}"
            uses[token] = 0
            return 200, {"Content-Type": "application/json"}, \
                json.dumps({"token": token, "expires_in": 3600}).encode()
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if uses.get(token, 3) >= 3:  # 3: other threads may use a fresh token before its fetcher does
            challenge = f'Bearer realm="http://{proxy.address}/token",service="s",error="invalid_token"'
            return 401, {"WWW-Authenticate": challenge}, b""
        uses[token] += 1
        return None

    registry = scripted_proxy(script)
    options = options_for(tmp_path, registry.address)
    image = make_image(5, 20_000, seed=random_name())
    ref = f"{registry.address}/{random_name('short')}/app:1"
    push(image, ref, options=options)
    before = len(uses)
    assert pull(ref, store, options=options).digest() == image.digest()
    assert len(uses) - before >= 2  # manifest, config and 5 layers: 7 requests, 3 a token


def test_a_session_dropped_after_a_lost_answer_starts_again_without_using_up_retries(
        scripted_proxy, store: Store) -> None:  # type: ignore[no-untyped-def]
    """A chunk whose answer is lost landed all the same; Distribution then drops the session
    (its signed state names an older offset) and answers the status GET with 404. Each such loss
    cost one of the push's attempts, so a flaky network failed pushes of big blobs; now a dropped
    session starts a new one, and only failures in a row (or far too many sessions) give up."""
    from builder.registry import RetryPolicy
    from builder.registry.client import RegistryClient

    lost = {"left": 6}  # twice the attempts: the most a push takes

    def script(proxy: ScriptedProxy, request: Seen):  # type: ignore[no-untyped-def]
        if request.method == "PATCH" and request.headers["content-range"].startswith("1000-") \
                and lost["left"] > 0:
            lost["left"] -= 1
            proxy.forward(request)  # the chunk lands; its answer does not come back
            return 503, {}, b""
        return None

    registry = scripted_proxy(script)
    policy = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.002)
    client = RegistryClient(registry.address, ClientOptions(retry=policy))
    image = make_image(1, 5000, seed=random_name())
    ref = f"{registry.address}/{random_name('lost')}/app:1"
    push(image, ref, client=client, chunk_size=1000, workers=1)
    assert pull(ref, store).digest() == image.digest()
    posts = [s for s in registry.seen if s.method == "POST" and "/blobs/uploads/" in s.path]
    dropped = [s for s in registry.seen if s.method == "GET" and "/blobs/uploads/" in s.path]
    assert len(dropped) == 6 and len(posts) == 7 + 1  # 6 dropped sessions of the layer; the config

    # A registry that loses every second chunk's answer: the push ends, it does not loop.
    lost["left"] = 10**6
    other = f"{registry.address}/{random_name('lost')}/app:1"
    with pytest.raises(RegistryError) as err:
        push(make_image(1, 5000, seed=random_name()), other, client=client, chunk_size=1000,
             workers=1)
    assert "dropped the upload session 7 times, giving up" in str(err.value)
    assert lost["left"] == 10**6 - 7
