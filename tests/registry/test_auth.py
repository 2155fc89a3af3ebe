"""Basic auth over TLS (certs.d CA), the bearer-token flow, docker's config.json and helpers, login/logout."""

from __future__ import annotations

import base64
import json
import os
import stat
import sys
from pathlib import Path

import pytest

from builder.errors import AuthError, TLSError
from builder.registry import ClientOptions, RegistryClient, pull, push
from builder.registry.auth import Challenge, Credentials, DockerConfig, TokenCache
from builder.registry.client import RetryPolicy
from cache.store import Store
from tests.helpers.tools import run_pybuild
from tests.registry.conftest import PASSWORD, USER, SecureRegistry, TokenRegistry
from tests.registry.images import make_image, random_name


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(tmp_path / "store") as s:
        yield s


def tls_options(reg: SecureRegistry, config_dir: Path) -> ClientOptions:
    return ClientOptions(docker_config=DockerConfig(config_dir), certs_d=reg.certs_d)


def write_config(directory: Path, registry: str, user: str = USER, password: str = PASSWORD) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
    return directory


# --- basic auth over TLS ---------------------------------------------------------------------

def test_tls_and_basic_auth_round_trip(tls_registry: SecureRegistry, tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path / "docker", tls_registry.address)
    options = tls_options(tls_registry, config)
    image = make_image(2, 20_000, seed=random_name())
    ref = f"{tls_registry.address}/{random_name('tls')}/app:1"
    assert push(image, ref, options=options).digest == image.digest()
    assert pull(ref, store, options=options).digest() == image.digest()
    client = RegistryClient(tls_registry.address, options)
    assert client.base_url(__import__("builder.registry.client", fromlist=["Call"]).Call("t", None, "x")) \
        == f"https://{tls_registry.address}"


def test_untrusted_certificate_is_a_clear_error(tls_registry: SecureRegistry, tmp_path: Path,
                                                store: Store) -> None:
    options = ClientOptions(docker_config=DockerConfig(tmp_path / "none"), certs_d=tmp_path / "empty")
    with pytest.raises(TLSError) as err:
        pull(f"{tls_registry.address}/x/app:1", store, options=options)
    assert f"TLS certificate of {tls_registry.address} is not trusted" in str(err.value)
    assert "certs.d" in str(err.value)


def test_insecure_registry_skips_verification(tls_registry: SecureRegistry, tmp_path: Path) -> None:
    config = write_config(tmp_path / "docker", tls_registry.address)
    options = ClientOptions(docker_config=DockerConfig(config), certs_d=tmp_path / "empty",
                            insecure_registries=frozenset({tls_registry.address}))
    image = make_image(1, 1000, seed=random_name())
    push(image, f"{tls_registry.address}/{random_name('ins')}/app:1", options=options)


def test_wrong_password_and_no_credentials(tls_registry: SecureRegistry, tmp_path: Path,
                                           store: Store) -> None:
    config = write_config(tmp_path / "docker", tls_registry.address, password="wrong-password")
    with pytest.raises(AuthError) as err:
        pull(f"{tls_registry.address}/x/app:1", store, options=tls_options(tls_registry, config))
    assert "incorrect username or password" in str(err.value)
    assert f"pybuild login {tls_registry.address}" in str(err.value)
    assert "wrong-password" not in str(err.value)
    with pytest.raises(AuthError) as err:
        pull(f"{tls_registry.address}/x/app:1", store,
             options=tls_options(tls_registry, tmp_path / "empty-config"))
    assert "authentication required" in str(err.value)


def test_cli_login_logout_over_tls(tls_registry: SecureRegistry, tmp_path: Path) -> None:
    docker_dir = tmp_path / "docker"
    env = {"DOCKER_CONFIG": str(docker_dir), "PYBUILD_CERTS_D": str(tls_registry.certs_d)}
    root = tmp_path / "root"
    proc = run_pybuild("login", "-u", USER, "--password-stdin", tls_registry.address,
                       input=b"wrong\n", env=env)
    assert proc.returncode == 1
    assert "incorrect username or password" in proc.stderr.decode()
    assert not (docker_dir / "config.json").exists()
    proc = run_pybuild("login", "-u", USER, "--password-stdin", tls_registry.address,
                       input=PASSWORD.encode() + b"\n", env=env, check=True)
    assert "Login Succeeded" in proc.stdout.decode()
    assert PASSWORD not in proc.stdout.decode() + proc.stderr.decode()
    config_file = docker_dir / "config.json"
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    entry = json.loads(config_file.read_text())["auths"][tls_registry.address]
    assert base64.b64decode(entry["auth"]).decode() == f"{USER}:{PASSWORD}"

    image = make_image(1, 5000, seed=random_name())
    with Store(root) as s:
        s.write_image(image, [f"{tls_registry.address}/cli/app:1"])
    run_pybuild("push", f"{tls_registry.address}/cli/app:1", root=root, env=env, check=True)
    proc = run_pybuild("pull", f"{tls_registry.address}/cli/app:1", root=tmp_path / "root2", env=env,
                       check=True)
    assert str(image.digest()) in proc.stdout.decode()

    proc = run_pybuild("logout", tls_registry.address, env=env, check=True)
    assert f"Removing login credentials for {tls_registry.address}" in proc.stdout.decode()
    assert json.loads(config_file.read_text())["auths"] == {}
    proc = run_pybuild("logout", tls_registry.address, env=env, check=True)
    assert f"Not logged in to {tls_registry.address}" in proc.stdout.decode()
    proc = run_pybuild("pull", f"{tls_registry.address}/cli/app:1", root=tmp_path / "root3", env=env)
    assert proc.returncode == 1 and "authentication required" in proc.stderr.decode()


def test_login_needs_a_tty_or_stdin(tmp_path: Path) -> None:
    proc = run_pybuild("login", "127.0.0.1:9", env={"DOCKER_CONFIG": str(tmp_path)}, input=b"")
    assert proc.returncode == 125 and "non TTY" in proc.stderr.decode()
    proc = run_pybuild("login", "--password-stdin", "127.0.0.1:9", input=b"x")
    assert proc.returncode == 125 and "--username" in proc.stderr.decode()


# --- bearer tokens ---------------------------------------------------------------------------

def test_token_flow_push_and_pull(token_registry: TokenRegistry, tmp_path: Path, store: Store) -> None:
    config = write_config(tmp_path / "docker", token_registry.address)
    options = ClientOptions(docker_config=DockerConfig(config))
    image = make_image(3, 10_000, seed=random_name())
    ref = f"{token_registry.address}/{random_name('tok')}/app:1"
    before = len(token_registry.tokens.requests)
    client = RegistryClient(token_registry.address, options)
    push(image, ref, client=client)
    pull(ref, store, client=client)
    issued = token_registry.tokens.requests[before:]
    # Tokens are cached per scope: one for pull+push, one for pull; not one per request.
    assert 1 <= len(issued) <= 3, issued
    assert all(r["authorization"] for r in issued)
    assert all(f"account={USER}" in str(r["path"]) for r in issued)  # as docker and skopeo ask
    scopes = {s for r in issued for s in r["scope"]}  # type: ignore[union-attr]
    assert f"repository:{ref.split('/', 1)[1].rsplit(':', 1)[0]}:pull,push" in scopes


def test_token_flow_anonymous_and_denied(token_registry: TokenRegistry, tmp_path: Path,
                                         store: Store) -> None:
    config = write_config(tmp_path / "docker", token_registry.address)
    image = make_image(1, 1000, seed=random_name())
    public = f"{token_registry.address}/public/{random_name('pub')}:1"
    private = f"{token_registry.address}/{random_name('priv')}/app:1"
    push(image, public, options=ClientOptions(docker_config=DockerConfig(config)))
    push(image, private, options=ClientOptions(docker_config=DockerConfig(config)))
    anonymous = ClientOptions(docker_config=DockerConfig(tmp_path / "nobody"))
    assert pull(public, store, options=anonymous).digest() == image.digest()
    with pytest.raises(AuthError) as err:
        pull(private, store, options=anonymous)
    assert "authentication required" in str(err.value)
    with pytest.raises(AuthError):
        push(image, f"{token_registry.address}/public/{random_name('pub')}:1", options=anonymous)
    wrong = write_config(tmp_path / "wrong", token_registry.address, password="nope-nope")
    with pytest.raises(AuthError) as err:
        pull(private, store, options=ClientOptions(docker_config=DockerConfig(wrong)))
    assert "incorrect username or password" in str(err.value)


def test_debug_output_never_shows_secrets(token_registry: TokenRegistry, tmp_path: Path) -> None:
    docker_dir = write_config(tmp_path / "docker", token_registry.address)
    env = {"DOCKER_CONFIG": str(docker_dir)}
    root = tmp_path / "root"
    image = make_image(1, 2000, seed=random_name())
    ref = f"{token_registry.address}/{random_name('dbg')}/app:1"
    with Store(root) as s:
        s.write_image(image, [ref])
    before = len(token_registry.tokens.requests)
    proc = run_pybuild("--debug", "push", ref, root=root, env=env, check=True)
    run_pybuild("--debug", "pull", ref, root=tmp_path / "r2", env=env, check=True)
    output = proc.stdout.decode() + proc.stderr.decode()
    assert "DEBU[registry]" in output
    secrets = [PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()]
    assert token_registry.tokens.requests[before:], "no token was issued"
    for secret in secrets:
        assert secret not in output
    assert "Bearer " not in output and "eyJ" not in output


# --- config.json and credential helpers ------------------------------------------------------

HELPER = """#!{python}
import json, sys
store = {store!r}
action = sys.argv[1]
data = json.load(open(store)) if __import__("os").path.exists(store) else {{}}
if action == "get":
    server = sys.stdin.read().strip()
    if server not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    print(json.dumps({{"ServerURL": server, "Username": data[server][0], "Secret": data[server][1]}}))
elif action == "store":
    req = json.load(sys.stdin)
    data[req["ServerURL"]] = [req["Username"], req["Secret"]]
    json.dump(data, open(store, "w"))
elif action == "erase":
    server = sys.stdin.read().strip()
    if server not in data:
        print("credentials not found in native keychain"); sys.exit(1)
    del data[server]; json.dump(data, open(store, "w"))
"""


def make_helper(tmp_path: Path, name: str = "pbtest") -> tuple[Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    store_file = tmp_path / f"{name}-creds.json"
    helper = bin_dir / f"docker-credential-{name}"
    helper.write_text(HELPER.format(python=sys.executable, store=str(store_file)))
    helper.chmod(0o755)
    return bin_dir, store_file


def test_credential_helper_and_creds_store(tls_registry: SecureRegistry, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, store: Store) -> None:
    bin_dir, store_file = make_helper(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    store_file.write_text(json.dumps({tls_registry.address: [USER, PASSWORD]}))
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({"credHelpers": {tls_registry.address: "pbtest"}}))
    config = DockerConfig(docker_dir)
    assert config.get(tls_registry.address) == Credentials(USER, PASSWORD)
    assert config.get("other.example:5000") is None
    image = make_image(1, 1000, seed=random_name())
    push(image, f"{tls_registry.address}/{random_name('helper')}/app:1",
         options=tls_options(tls_registry, docker_dir))

    # `pybuild login` with a credsStore stores through the helper, never in config.json.
    (docker_dir / "config.json").write_text(json.dumps({"credsStore": "pbtest"}))
    store_file.write_text("{}")
    env = {"DOCKER_CONFIG": str(docker_dir), "PYBUILD_CERTS_D": str(tls_registry.certs_d),
           "PATH": os.environ["PATH"]}
    proc = run_pybuild("login", "-u", USER, "--password-stdin", tls_registry.address,
                       input=PASSWORD.encode(), env=env, check=True)
    assert "unencrypted" not in proc.stderr.decode()
    assert json.loads(store_file.read_text()) == {tls_registry.address: [USER, PASSWORD]}
    assert PASSWORD not in (docker_dir / "config.json").read_text()
    run_pybuild("logout", tls_registry.address, env=env, check=True)
    assert json.loads(store_file.read_text()) == {}


def test_config_json_forms(tmp_path: Path) -> None:
    config = DockerConfig(tmp_path)
    assert config.get("docker.io") is None
    config.store("docker.io", Credentials("bob", "pw:with:colons"))
    data = json.loads((tmp_path / "config.json").read_text())
    assert list(data["auths"]) == ["https://index.docker.io/v1/"]
    assert config.get("docker.io") == Credentials("bob", "pw:with:colons")
    assert config.get("index.docker.io") == Credentials("bob", "pw:with:colons")
    (tmp_path / "config.json").write_text(json.dumps({
        "auths": {"https://myhost:5000/v1/": {"auth": base64.b64encode(b"u:p").decode()},
                  "tok.example": {"identitytoken": "abc"}},
        "proxies": {"default": {}}}))
    assert config.get("myhost:5000") == Credentials("u", "p")
    assert config.get("tok.example").identity_token == "abc"  # type: ignore[union-attr]
    config.store("myhost:5000", Credentials("v", "q"))
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["proxies"] == {"default": {}}  # unknown keys survive
    assert list(data["auths"]) == ["tok.example", "myhost:5000"]
    assert config.erase("myhost:5000") and not config.erase("myhost:5000")
    assert "pw" not in repr(Credentials("bob", "pw"))


def test_challenge_parsing_and_token_cache() -> None:
    c = Challenge.parse('Bearer realm="https://auth.example/token",service="registry.example",'
                        'scope="repository:a/b:pull,push"')
    assert c is not None and c.scheme == "bearer"
    assert c.params == {"realm": "https://auth.example/token", "service": "registry.example",
                        "scope": "repository:a/b:pull,push"}
    assert Challenge.parse('Basic realm="x"').scheme == "basic"  # type: ignore[union-attr]
    now = [0.0]
    cache = TokenCache(clock=lambda: now[0])
    cache.put(("r", "s", "scope"), "tok", 300)
    assert cache.get(("r", "s", "scope")) == "tok"
    assert cache.get(("r", "s", "other")) is None
    now[0] = 269
    assert cache.get(("r", "s", "scope")) == "tok"
    now[0] = 271
    assert cache.get(("r", "s", "scope")) is None


def _behind_redirecting_proxy(token_registry: TokenRegistry, fault_proxy, tmp_path: Path,  # type: ignore[no-untyped-def]
                              layers: int, size: int, prefix: str):
    """An image pushed to the token registry, and a proxy in front of it that sends blob GETs to
    signed storage URLs; the docker config holds the login for both."""
    from tests.registry.conftest import Faults

    config = write_config(tmp_path / "docker", token_registry.address)
    image = make_image(layers, size, seed=random_name())
    path = f"{random_name(prefix)}/app:1"
    push(image, f"{token_registry.address}/{path}", options=ClientOptions(docker_config=DockerConfig(config)))
    proxy = fault_proxy(Faults(redirect_blobs=True), upstream=token_registry.address)
    write_config(config, proxy.address)
    return image, path, proxy, config


def test_redirected_blobs_get_no_credentials(token_registry: TokenRegistry, fault_proxy,  # type: ignore[no-untyped-def]
                                             tmp_path: Path, store: Store,
                                             caplog: pytest.LogCaptureFixture) -> None:
    image, path, proxy, config = _behind_redirecting_proxy(token_registry, fault_proxy, tmp_path, 2, 20_000, "redir")
    caplog.set_level("DEBUG", logger="builder.registry")
    pulled = pull(f"{proxy.address}/{path}", store,
                  client=RegistryClient(proxy.address, ClientOptions(docker_config=DockerConfig(config))))
    assert pulled.digest() == image.digest()
    assert len(proxy.storage.seen) == 3  # config and two layers, all from storage
    assert all("authorization" not in seen for seen in proxy.storage.seen)
    assert "SIGNED-" not in caplog.text and "X-Amz-Signature" not in caplog.text
    assert "127.0.0.2" in caplog.text


def test_rejected_token_is_refreshed_once(token_registry: TokenRegistry, tmp_path: Path,
                                          store: Store) -> None:
    config = write_config(tmp_path / "docker", token_registry.address)
    options = ClientOptions(docker_config=DockerConfig(config))
    image = make_image(1, 1000, seed=random_name())
    ref = f"{token_registry.address}/{random_name('exp')}/app:1"
    push(image, ref, options=options)
    before = len(token_registry.tokens.requests)
    token_registry.tokens.expired_grants = 1
    try:
        assert pull(ref, store, options=options).digest() == image.digest()
    finally:
        token_registry.tokens.expired_grants = 0
    assert len(token_registry.tokens.requests) - before == 2


def test_cli_login_with_a_token_server(token_registry: TokenRegistry, tmp_path: Path) -> None:
    env = {"DOCKER_CONFIG": str(tmp_path / "docker")}
    proc = run_pybuild("login", "-u", USER, "--password-stdin", token_registry.address,
                       input=b"not-the-password", env=env)
    assert proc.returncode == 1
    assert "incorrect username or password" in proc.stderr.decode()
    proc = run_pybuild("login", "-u", USER, "-p", PASSWORD, token_registry.address, env=env)
    assert proc.returncode == 0, proc.stderr.decode()
    assert "Login Succeeded" in proc.stdout.decode()
    assert "--password-stdin" in proc.stderr.decode()  # the warning about -p
    assert DockerConfig(tmp_path / "docker").get(token_registry.address) == Credentials(USER, PASSWORD)


def test_search_with_a_token(token_registry: TokenRegistry, tmp_path: Path) -> None:
    docker_dir = write_config(tmp_path / "docker", token_registry.address)
    name = random_name("srch")
    push(make_image(1, 500, seed=random_name()), f"{token_registry.address}/{name}/app:7",
         options=ClientOptions(docker_config=DockerConfig(docker_dir)))
    proc = run_pybuild("search", name, "--registry", token_registry.address,
                       env={"DOCKER_CONFIG": str(docker_dir)}, check=True)
    assert [f"{token_registry.address}/{name}/app", "7"] in [line.split() for line in
                                                             proc.stdout.decode().splitlines()]
    proc = run_pybuild("search", name, "--registry", token_registry.address,
                       env={"DOCKER_CONFIG": str(tmp_path / "nobody")})
    assert proc.returncode == 1 and "authentication required" in proc.stderr.decode()


def test_missing_credential_helper_is_named(tls_registry: SecureRegistry, tmp_path: Path,
                                            store: Store) -> None:
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({"credsStore": "nosuchhelper"}))
    with pytest.raises(AuthError) as err:
        pull(f"{tls_registry.address}/x/app:1", store, options=tls_options(tls_registry, docker_dir))
    # Where it is configured: a config.json copied from a Mac names "desktop".
    assert str(err.value) == (f"credential helper docker-credential-nosuchhelper (credsStore in "
                              f"{docker_dir / 'config.json'}) not found in PATH")


def test_push_with_wrong_password_fails_before_uploading(tls_registry: SecureRegistry,
                                                         tmp_path: Path) -> None:
    config = write_config(tmp_path / "docker", tls_registry.address, password="bad-password")
    with pytest.raises(AuthError) as err:
        push(make_image(1, 1000, seed=random_name()), f"{tls_registry.address}/w/app:1",
             options=tls_options(tls_registry, config))
    assert str(err.value).startswith(f"push {tls_registry.address}/w/app: unauthorized")
    assert "bad-password" not in str(err.value)


def test_address_with_credentials_is_refused_without_echoing_them(tmp_path: Path) -> None:
    # `login https://bob:pw@host` once went to a host named "bob:pw@host" and quoted it
    # (password included) in the error; nothing may be sent or stored.
    for args in (("login", "-u", "bob", "--password-stdin", "https://bob:hunter2@127.0.0.1:9/v2/"),
                 ("logout", "bob:hunter2@127.0.0.1:9"),
                 ("search", "x", "--registry", "bob:hunter2@127.0.0.1:9")):
        proc = run_pybuild(*args, env={"DOCKER_CONFIG": str(tmp_path)}, input=b"pw")
        err = proc.stderr.decode()
        assert proc.returncode != 0 and "invalid registry address" in err, err
        assert "hunter2" not in err + proc.stdout.decode() and "Traceback" not in err
    assert not (tmp_path / "config.json").exists()


def test_credentials_never_go_in_clear_to_an_http_location(tls_registry: SecureRegistry,
                                                           tmp_path: Path) -> None:
    """A registry that speaks https and answers an upload with ``Location: http://<itself>/…``
    (a misconfigured proxy) gets the next request without the Authorization header: basic
    credentials are never sent in clear, as docker keys its auth by scheme and host."""
    import http.server
    import socket
    import ssl
    import threading

    cert, key = tls_registry.ca.issue("downgrade", "IP:127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    plain: list[str] = []  # the header lines of requests that came without TLS

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            if not isinstance(self.connection, ssl.SSLSocket):
                plain.append(str(self.headers))
                self.send_response(400)
            elif self.headers.get("Authorization") is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
            elif self.command == "POST":
                self.send_response(202)
                self.send_header("Location", f"http://{address}/v2/downgrade/blobs/uploads/u1")
            else:
                self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def get_request(self) -> tuple[socket.socket, object]:
            conn, peer = self.socket.accept()
            if conn.recv(1, socket.MSG_PEEK) == b"\x16":  # a TLS hello: this port speaks https
                conn = context.wrap_socket(conn, server_side=True)
            return conn, peer

    server = Server(("127.0.0.1", 0), Handler)
    address = f"127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    certs_d = tmp_path / "certs.d"
    (certs_d / address).mkdir(parents=True)
    (certs_d / address / "ca.crt").write_bytes(tls_registry.ca.cert.read_bytes())
    options = ClientOptions(docker_config=DockerConfig(write_config(tmp_path / "docker", address)),
                            certs_d=certs_d)
    try:
        with pytest.raises(Exception):  # noqa: B017 - the upload fails; what was sent is the point
            push(make_image(1, 100, seed=random_name()), f"{address}/downgrade:1", options=options)
    finally:
        server.shutdown()
        server.server_close()
    assert plain, "the client never followed the http:// Location"
    assert not any("authorization" in headers.lower() for headers in plain), plain


def test_a_login_without_access_is_not_a_wrong_password(token_registry: TokenRegistry, tmp_path: Path,
                                                        store: Store) -> None:
    """The token server accepts alice but grants her nothing on denied/: the registry's 401 used
    to read "incorrect username or password" (docker: "requested access to the resource is
    denied"); a wrong password is still called one."""
    options = ClientOptions(docker_config=DockerConfig(write_config(tmp_path / "ok", token_registry.address)))
    ref = f"{token_registry.address}/denied/{random_name('d')}:1"
    with pytest.raises(AuthError) as err:
        push(make_image(1, 100, seed=random_name()), ref, options=options)
    assert str(err.value) == (f"push {ref.removesuffix(':1')}: denied: logged in as {USER}, but not "
                              "allowed to push this repository (or it does not exist)")
    with pytest.raises(AuthError, match="denied: logged in as alice, but not allowed to pull"):
        pull(ref, store, options=options)
    wrong = ClientOptions(docker_config=DockerConfig(
        write_config(tmp_path / "wrong", token_registry.address, password="not-it")))
    with pytest.raises(AuthError, match="incorrect username or password"):
        pull(ref, store, options=wrong)


def test_several_challenges_in_one_header() -> None:
    both = 'Basic realm="reg, \\"main\\"", Bearer realm="https://auth.example/token",service="r"'
    assert Challenge.parse_all(both) == [Challenge("basic", {"realm": 'reg, "main"'}),
                                         Challenge("bearer", {"realm": "https://auth.example/token",
                                                              "service": "r"})]
    assert Challenge.parse(both) == Challenge.parse_all(both)[1]
    assert Challenge.parse('Negotiate, Basic realm="x"') == Challenge("basic", {"realm": "x"})
    assert Challenge.parse("Negotiate") == Challenge("negotiate", {})
    assert Challenge.parse("  ") is None


def test_a_failing_credential_helper_is_named_without_the_secret(tls_registry: SecureRegistry,
                                                                 tmp_path: Path) -> None:
    """A helper that prints the credentials and still exits non-zero had its output, secret and
    all, quoted in the error."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-leaky"
    helper.write_text("#!/bin/sh\nread server\n"
                      'echo "{\\"ServerURL\\":\\"$server\\",\\"Username\\":\\"u\\",\\"Secret\\":\\"TOPSECRET-42\\"}"\n'
                      "echo 'keyring is locked' >&2\nexit 3\n")
    helper.chmod(0o755)
    docker_dir = tmp_path / "docker"
    docker_dir.mkdir()
    (docker_dir / "config.json").write_text(json.dumps({"credHelpers": {tls_registry.address: "leaky"}}))
    env = {"DOCKER_CONFIG": str(docker_dir), "PYBUILD_CERTS_D": str(tls_registry.certs_d),
           "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = run_pybuild("--debug", "pull", f"{tls_registry.address}/x/app:1", env=env, root=tmp_path / "root")
    err = proc.stderr.decode()
    assert proc.returncode == 1 and "TOPSECRET" not in err + proc.stdout.decode()
    assert err.strip().splitlines()[-1] == (f"ERROR: credential helper docker-credential-leaky get for "
                                            f"{tls_registry.address} failed (exit status 3): keyring is locked")


def test_a_mount_from_a_repository_the_login_cannot_read_falls_back_to_an_upload(
        token_registry: TokenRegistry, tmp_path: Path, store: Store) -> None:
    """The registry answers a mount request with 401 when the token lacks pull on the source:
    the whole push failed ("denied"), where docker uploads the blob instead."""
    options = ClientOptions(docker_config=DockerConfig(write_config(tmp_path / "d", token_registry.address)))
    image = make_image(2, 1000, seed=random_name())
    ref = f"{token_registry.address}/{random_name('mnt')}/app:1"
    result = push(image, ref, options=options, mount_from=["denied/base"])
    assert (result.uploaded, result.mounted) == (3, 0)
    assert pull(ref, store, options=options).digest() == image.digest()


def test_tokens_the_registry_always_rejects_are_not_called_a_wrong_password(
        token_registry: TokenRegistry, tmp_path: Path, store: Store) -> None:
    """A token server whose clock runs ahead issues tokens the registry finds expired: even the
    fresh one fetched after the first 401 fails. That used to read as a wrong password."""
    options = ClientOptions(docker_config=DockerConfig(write_config(tmp_path / "d", token_registry.address)))
    ref = f"{token_registry.address}/{random_name('skew')}/app:1"
    push(make_image(1, 100, seed=random_name()), ref, options=options)
    token_registry.tokens.expired_grants = 2
    try:
        with pytest.raises(AuthError) as err:
            pull(ref, store, options=options)
    finally:
        token_registry.tokens.expired_grants = 0
    assert "rejects the tokens its token server issues (invalid_token" in str(err.value)
    assert "password" not in str(err.value)


def test_a_build_that_pushes_and_shares_cache_keeps_no_credential_anywhere(
        token_registry: TokenRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Everything a build with a login leaves behind (the store, its SQLite cache, the
    --metadata-file, the --debug log, an error) holds neither the password, nor the basic
    auth header, nor a bearer token the token server issued."""
    issued: list[str] = []
    sign = token_registry.tokens.sign

    def recording(claims: dict[str, object]) -> str:
        token = sign(claims)
        issued.append(token)
        return token

    monkeypatch.setattr(token_registry.tokens, "sign", recording)
    env = {"DOCKER_CONFIG": str(write_config(tmp_path / "docker", token_registry.address))}
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "f").write_text(random_name())
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY f /f\n")
    repo = f"{token_registry.address}/{random_name('leak')}/app"
    outputs = []
    for root, extra in ((tmp_path / "root1", ("--push", "-t", f"{repo}:1",
                                              "--cache-to", f"type=registry,ref={repo}:cache,mode=max")),
                        (tmp_path / "root2", ("--cache-from", f"type=registry,ref={repo}:cache",
                                              "-t", f"{repo}:2", "--push"))):
        proc = run_pybuild("--debug", "build", "--progress", "plain", "--metadata-file",
                           str(tmp_path / f"{root.name}.json"), *extra, str(ctx), root=root, env=env,
                           check=True)
        outputs.append(proc.stdout + proc.stderr)
    denied = run_pybuild("--debug", "build", "-t", f"{token_registry.address}/denied/app:1", "--push",
                         str(ctx), root=tmp_path / "root1", env=env)
    assert denied.returncode == 1 and b"not allowed to push" in denied.stderr
    outputs.append(denied.stdout + denied.stderr)
    assert issued, "no token was issued"
    secrets = [PASSWORD, base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
               *{token.rsplit(".", 1)[1] for token in issued}]
    for path in [*(tmp_path / "root1").rglob("*"), *(tmp_path / "root2").rglob("*"),
                 tmp_path / "root1.json", tmp_path / "root2.json"]:
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            for secret in secrets:
                assert secret.encode() not in data, f"{path} holds a credential"
    for output in outputs:
        for secret in secrets:
            assert secret.encode() not in output


def test_a_failing_signed_storage_url_is_never_quoted(token_registry: TokenRegistry, fault_proxy,  # type: ignore[no-untyped-def]
                                                     tmp_path: Path, store: Store,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A blob GET the registry sent to signed storage that answers 404 or refuses the
    connection: the error and the debug log name the storage host, never the signed URL."""
    from builder.errors import PybuildError
    from tests.helpers.tools import closed_port

    _image, path, proxy, config = _behind_redirecting_proxy(token_registry, fault_proxy, tmp_path, 1, 5_000, "signed")
    caplog.set_level("DEBUG", logger="builder.registry")
    with closed_port("127.0.0.2") as dead:  # refused until the end of the test
        for where in (f"http://{proxy.storage.address}/bucket/gone", f"http://127.0.0.2:{dead}/bucket/dead"):
            proxy.storage.put = lambda data, where=where: f"{where}?X-Amz-Signature=SIGNED-abc&X-Amz-Credential=AKIA-KEY"
            with pytest.raises(PybuildError) as err:
                pull(f"{proxy.address}/{path}", store, client=RegistryClient(
                    proxy.address, ClientOptions(docker_config=DockerConfig(config), retry=RetryPolicy(attempts=1))))
            for text in (str(err.value), caplog.text):
                assert "SIGNED-" not in text and "AKIA-KEY" not in text, text
            assert "127.0.0.2" in str(err.value) or "connection refused" in str(err.value), str(err.value)
