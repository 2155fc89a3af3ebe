"""Registries with TLS and auth, a token server, and a fault-injecting proxy, all on loopback.

Every server here is real: Debian's ``docker-registry`` configured with
``http.tls`` + ``auth.htpasswd`` or ``auth.token``; the token server and the
proxy are small Python servers started in threads on 127.0.0.1.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import socket
import socketserver
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.helpers.tools import free_port, require_tool

USER = "alice"
PASSWORD = "s3cret-Pa55word"


def _openssl(*args: str, cwd: Path) -> None:
    openssl = require_tool("openssl")
    proc = subprocess.run([openssl, *args], cwd=cwd, capture_output=True, timeout=60)
    if proc.returncode != 0:
        raise AssertionError(f"openssl {' '.join(args)} failed: {proc.stderr.decode()}")


@dataclass(frozen=True)
class CA:
    directory: Path
    cert: Path
    key: Path

    def issue(self, name: str, san: str) -> tuple[Path, Path]:
        """A server certificate for ``san`` (e.g. ``IP:127.0.0.1``) signed by this CA."""
        key, csr, cert = (self.directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        ext = self.directory / f"{name}.ext"
        ext.write_text(f"subjectAltName={san}\nbasicConstraints=CA:FALSE\n"
                       "keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-subj", f"/CN={name}",
                 "-out", str(csr), cwd=self.directory)
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                 "-CAcreateserial", "-days", "2", "-sha256", "-extfile", str(ext), "-out", str(cert),
                 cwd=self.directory)
        return cert, key


def make_ca(directory: Path, name: str = "pybuild-test-ca") -> CA:
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.crt", directory / "ca.key"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=directory)
    return CA(directory, cert, key)


def start_registry(root: Path, extra_config: str, tls: bool = False) -> tuple[str, subprocess.Popen]:
    """docker-registry on a free loopback port with extra YAML (auth, tls); returns host:port.

    The port is free when chosen, but another process on the machine (another test run's
    server) may take it before the registry binds it: then the registry tries another."""
    binary = require_tool("docker-registry")
    root.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        port = free_port()
        config = root / "config.yml"
        config.write_text(
            "version: 0.1\nlog: {level: error}\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:{port}\n" + extra_config
        )
        with open(root / "registry.log", "wb") as log:
            proc = subprocess.Popen([binary, "serve", str(config)], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while proc.poll() is None:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return f"127.0.0.1:{port}", proc
            if time.monotonic() > deadline:
                proc.kill()
                break
            time.sleep(0.05)
        said = (root / "registry.log").read_text()
        if "address already in use" not in said:
            raise AssertionError(f"docker-registry did not start: {said}")
    raise AssertionError(f"docker-registry found no free port: {said}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


@dataclass(frozen=True)
class SecureRegistry:
    address: str
    certs_d: Path
    ca: CA
    user: str = USER
    password: str = PASSWORD


@pytest.fixture(scope="session")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureRegistry]:
    """TLS with a self-signed CA (trusted through a certs.d dir) and htpasswd basic auth."""
    root = tmp_path_factory.mktemp("tls-registry")
    ca = make_ca(root / "ca")
    cert, key = ca.issue("registry", "IP:127.0.0.1,DNS:localhost")
    htpasswd = root / "htpasswd"
    proc = subprocess.run([require_tool("htpasswd"), "-Bbn", USER, PASSWORD], capture_output=True,
                          check=True)
    htpasswd.write_bytes(proc.stdout)
    address, server = start_registry(root / "reg", (
        f"  tls:\n    certificate: {cert}\n    key: {key}\n"
        f"auth:\n  htpasswd:\n    realm: pybuild-test\n    path: {htpasswd}\n"
    ))
    certs_d = root / "certs.d"
    (certs_d / address).mkdir(parents=True)
    (certs_d / address / "ca.crt").write_bytes(ca.cert.read_bytes())
    yield SecureRegistry(address, certs_d, ca)
    stop(server)


# --- a token server (the registry's auth.token realm) -------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(public_der: bytes) -> str:
    """The ``kid`` the registry derives from a trusted key: base32 of sha256, 4-char groups."""
    digest = hashlib.sha256(public_der).digest()[:30]
    text = base64.b32encode(digest).decode().rstrip("=")
    return ":".join(text[i:i + 4] for i in range(0, len(text), 4))


@dataclass
class TokenServer:
    """Issues RS256 JWTs (signed by ``openssl dgst``) for the right user; logs requests."""

    key: Path
    kid: str
    issuer: str = "pybuild-test-issuer"
    service: str = "pybuild-test-registry"
    requests: list[dict[str, object]] = field(default_factory=list)
    expires_in: int = 300
    anonymous_pull: tuple[str, ...] = ("public/",)
    address: str = ""
    expired_grants: int = 0  # hand out this many already-expired tokens first
    denied: tuple[str, ...] = ("denied/",)  # repositories even a logged-in user gets no access to

    def sign(self, claims: dict[str, object]) -> str:
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        proc = subprocess.run([require_tool("openssl"), "dgst", "-sha256", "-sign", str(self.key)],
                              input=signing_input.encode(), capture_output=True, check=True)
        return f"{signing_input}.{_b64url(proc.stdout)}"

    def grant(self, authorization: str | None, scopes: list[str]) -> tuple[int, dict[str, object]]:
        user = None
        if authorization:
            if not authorization.startswith("Basic "):
                return 401, {"details": "bad auth"}
            name, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            if (name, password) != (USER, PASSWORD):
                return 401, {"details": "incorrect username or password"}
            user = name
        access = []
        for scope in scopes:
            for one in scope.split(" "):
                parts = one.split(":")
                if len(parts) < 3:
                    continue
                kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
                if kind == "repository" and name.startswith(self.denied):
                    continue
                if user is None:
                    if kind != "repository" or not name.startswith(self.anonymous_pull):
                        continue
                    actions = [a for a in actions if a == "pull"]
                access.append({"type": kind, "name": name, "actions": actions})
        now = int(time.time())
        expires = now + self.expires_in
        if self.expired_grants > 0:
            self.expired_grants -= 1
            expires, now = now - 600, now - 900  # beyond the registry's 60 s leeway
        claims = {"iss": self.issuer, "sub": user or "", "aud": self.service, "exp": expires,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        return 200, {"token": self.sign(claims), "expires_in": self.expires_in}


def start_token_server(server: TokenServer) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query)
            authorization = self.headers.get("Authorization")
            server.requests.append({"path": self.path, "authorization": authorization,
                                    "scope": query.get("scope", [])})
            status, body = server.grant(authorization, query.get("scope", []))
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    server.address = f"127.0.0.1:{httpd.server_address[1]}"
    return httpd


@dataclass(frozen=True)
class TokenRegistry:
    address: str
    tokens: TokenServer
    user: str = USER
    password: str = PASSWORD


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenRegistry]:
    """A plain-HTTP loopback registry whose auth is a bearer-token flow against our token server."""
    root = tmp_path_factory.mktemp("token-registry")
    key, cert = root / "token.key", root / "token.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
             "-days", "2", "-subj", "/CN=pybuild-token-signer", cwd=root)
    der = subprocess.run([require_tool("openssl"), "x509", "-in", str(cert), "-pubkey", "-noout"],
                         capture_output=True, check=True).stdout
    public_der = subprocess.run([require_tool("openssl"), "pkey", "-pubin", "-outform", "DER"],
                                input=der, capture_output=True, check=True).stdout
    tokens = TokenServer(key=key, kid=libtrust_key_id(public_der))
    httpd = start_token_server(tokens)
    address, proc = start_registry(root / "reg", (
        f"auth:\n  token:\n    realm: http://{tokens.address}/token\n    service: {tokens.service}\n"
        f"    issuer: {tokens.issuer}\n    rootcertbundle: {cert}\n"
    ))
    yield TokenRegistry(address, tokens)
    stop(proc)
    httpd.shutdown()


# --- a fault-injecting HTTP proxy -------------------------------------------------------------

@dataclass
class Faults:
    """Per-request fault probabilities (0..1); ``seed`` makes a run repeatable."""

    reset: float = 0.0          # RST the connection (half-way through the body, if any)
    stall: float = 0.0          # sleep ``stall_seconds`` before answering
    stall_body: float = 0.0     # send half a blob body, then sleep ``stall_seconds``
    stall_first_bodies: int = 0  # ... and so for the first N blob GETs, for sure
    stall_first_heads: int = 0   # hold the first N blob GETs' answers back (no headers yet)
    stall_first_uploads: int = 0  # hold back the answers to the first N blob uploads (a PUT)
    refuse_small_uploads: bool = False  # answer 400 to a small blob's PUT, once those stall
    stall_min_bytes: int = 2     # bodies shorter than this (a config) are never stalled
    unavailable: float = 0.0    # answer 503 with Retry-After
    flip_blob_bytes: bool = False
    redirect_blobs: bool = False  # answer blob GETs with 307 to a "storage" server on 127.0.0.2
    stall_seconds: float = 2.0
    retry_after: str = "1"
    seed: int = 6
    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.random = random.Random(self.seed)

    def first(self, name: str, times: int) -> bool:
        """Whether ``name`` happened fewer than ``times`` times yet (then it happens now): a fault
        that no order of concurrent requests can make miss, as a roll of the seeded dice can."""
        with self.lock:
            hit = self.counts.get(name, 0) < times
            if hit:
                self.counts[name] = self.counts.get(name, 0) + 1
            return hit

    def roll(self, name: str, probability: float) -> bool:
        with self.lock:
            hit = self.random.random() < probability
            if hit:
                self.counts[name] = self.counts.get(name, 0) + 1
            return hit


def _read_head(stream: socket.SocketIO | object) -> bytes | None:
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        line = stream.readline(65537)  # type: ignore[attr-defined]
        if not line:
            return None
        head += line
    return head


def _headers(head: bytes) -> dict[str, str]:
    out = {}
    for line in head.split(b"\r\n")[1:]:
        if b":" in line:
            k, _, v = line.partition(b":")
            out[k.decode().strip().lower()] = v.decode().strip()
    return out


class FaultProxy:
    """An HTTP/1.1 proxy on loopback in front of ``upstream`` that breaks things on purpose."""

    def __init__(self, upstream: str, faults: Faults) -> None:
        self.upstream = upstream
        self.faults = faults
        self.requests = 0
        proxy = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    proxy._serve(self.connection, self.rfile)
                except OSError:
                    pass  # the client or the registry went away: so does this connection

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self._server = Server(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        self.storage = StorageServer() if faults.redirect_blobs else None

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self.storage is not None:
            self.storage.close()

    def _serve(self, conn: socket.socket, rfile: object) -> None:
        if rfile.peek(1)[:1] == b"\x16":  # type: ignore[attr-defined]
            return  # a TLS hello: this proxy speaks plain HTTP only, say so at once by closing
        while True:
            head = _read_head(rfile)
            if head is None:
                return
            headers = _headers(head)
            body = rfile.read(int(headers.get("content-length", "0") or 0))  # type: ignore[attr-defined]
            request_line = head.split(b"\r\n", 1)[0].decode()
            method, path = request_line.split(" ")[:2]
            self.requests += 1
            faults = self.faults
            is_blob_get = method == "GET" and "/blobs/sha256:" in path
            if faults.roll("unavailable", faults.unavailable):
                conn.sendall(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: " + faults.retry_after.encode()
                             + b"\r\nContent-Length: 0\r\n\r\n")
                continue
            if faults.roll("stall", faults.stall):
                time.sleep(faults.stall_seconds)
            if method == "PUT" and "/blobs/uploads/" in path and "digest=" in path:
                if len(body) >= faults.stall_min_bytes and faults.first("stall_upload",
                                                                        faults.stall_first_uploads):
                    time.sleep(faults.stall_seconds)  # as a registry verifying a big blob
                elif len(body) < faults.stall_min_bytes and faults.refuse_small_uploads:
                    deadline = time.monotonic() + 60
                    while faults.counts.get("stall_upload", 0) < faults.stall_first_uploads \
                            and time.monotonic() < deadline:
                        time.sleep(0.01)
                    time.sleep(0.2)  # the stalled uploads reach their wait for an answer
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                    continue
            response = self._forward(head, body)
            resp_head, _, resp_body = response.partition(b"\r\n\r\n")
            if is_blob_get and len(resp_body) >= faults.stall_min_bytes \
                    and faults.first("stall_head", faults.stall_first_heads):
                time.sleep(faults.stall_seconds)  # as a pull-through cache fetching upstream first
            if is_blob_get and self.storage is not None and resp_head.split(b" ")[1] == b"200":
                # As registries backed by S3 do: send the client to signed storage URLs.
                location = self.storage.put(resp_body)
                conn.sendall(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: " + location.encode()
                             + b"\r\nContent-Length: 0\r\n\r\n")
                continue
            if is_blob_get and faults.flip_blob_bytes and resp_head.split(b" ")[1] in (b"200", b"206") \
                    and len(resp_body) > 10:
                index = len(resp_body) // 2
                resp_body = resp_body[:index] + bytes([resp_body[index] ^ 0xFF]) + resp_body[index + 1:]
                faults.counts["flip"] = faults.counts.get("flip", 0) + 1
            if faults.roll("reset", faults.reset):
                cut = len(resp_head) + 4 + len(resp_body) // 2 if resp_body else 0
                conn.sendall((resp_head + b"\r\n\r\n" + resp_body)[:cut])
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                conn.close()
                return
            if is_blob_get and len(resp_body) >= faults.stall_min_bytes and (faults.first("stall_body", faults.stall_first_bodies)
                                                       or faults.roll("stall_body", faults.stall_body)):
                half = len(resp_head) + 4 + len(resp_body) // 2
                whole = resp_head + b"\r\n\r\n" + resp_body
                conn.sendall(whole[:half])
                time.sleep(faults.stall_seconds)
                conn.sendall(whole[half:])
                continue
            resp_headers = _headers(resp_head + b"\r\n")
            keep = "content-length" in resp_headers or "chunked" in resp_headers.get("transfer-encoding", "")
            conn.sendall(resp_head + b"\r\n\r\n" + resp_body)
            if not keep and method != "HEAD":
                conn.close()
                return

    def _forward(self, head: bytes, body: bytes) -> bytes:
        """Send one request upstream on a fresh connection and return the raw response."""
        lines = [line for line in head.rstrip(b"\r\n").split(b"\r\n")
                 if not line.lower().startswith(b"connection:")]
        lines.append(b"Connection: close")
        host, port = self.upstream.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=30) as up:
            up.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
            chunks = []
            while True:
                data = up.recv(1 << 20)
                if not data:
                    break
                chunks.append(data)
        raw = b"".join(chunks)
        resp_head, _, resp_body = raw.partition(b"\r\n\r\n")
        kept = [line for line in resp_head.split(b"\r\n") if not line.lower().startswith(b"connection:")]
        return b"\r\n".join(kept) + b"\r\n\r\n" + resp_body


class StorageServer:
    """Blob storage on another host (127.0.0.2) serving signed URLs; records what it was sent."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.seen: list[dict[str, str]] = []
        storage = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                storage.seen.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
                key = urlsplit(self.path).path.rsplit("/", 1)[-1]
                data = storage.blobs.get(key)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes="):
                    start = int(rng[6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        self.address = f"127.0.0.2:{self._httpd.server_address[1]}"

    def put(self, data: bytes) -> str:
        key = uuid.uuid4().hex
        self.blobs[key] = data
        return f"http://{self.address}/bucket/{key}?X-Amz-Signature=SIGNED-{key}&X-Amz-Expires=300"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def fault_proxy(registry: str) -> Iterator[callable]:
    """Make proxies in front of the plain registry: ``fault_proxy(Faults(reset=0.2))``."""
    made: list[FaultProxy] = []

    def make(faults: Faults, upstream: str | None = None) -> FaultProxy:
        proxy = FaultProxy(upstream or registry, faults)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()


# --- a scripted proxy: the real registry, with chosen answers changed ---------------------------

@dataclass(frozen=True)
class Seen:
    """One request a scripted server received."""

    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


Answer = tuple[int, dict[str, str], bytes]


class ScriptedProxy:
    """An HTTP server on loopback that forwards to ``upstream`` (the real registry) unless
    ``script(proxy, request)`` returns an answer of its own; upstream's ``Location`` headers are
    rewritten to point back at the proxy. ``forward(request)`` gives upstream's answer to a script."""

    def __init__(self, script, upstream: str | None = None, host: str = "127.0.0.1",  # type: ignore[no-untyped-def]
                 tls: tuple[Path, Path] | None = None) -> None:
        import ssl

        import requests

        self.script = script
        self.upstream = upstream
        self.seen: list[Seen] = []
        self._session = requests.Session()
        self._session.trust_env = False
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                request = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                proxy.seen.append(request)
                status, headers, data = proxy.script(proxy, request) or proxy.forward(request)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        if tls is not None:  # (certificate, key): the proxy speaks https
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls is not None else "http"
        self.address = f"{host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def forward(self, request: Seen, path: str | None = None) -> Answer:
        assert self.upstream is not None, "a proxy without upstream must answer every request"
        headers = {k: v for k, v in request.headers.items()
                   if k not in ("host", "content-length", "transfer-encoding", "connection")}
        up = self._session.request(request.method, f"http://{self.upstream}{path or request.path}",
                                   headers=headers, data=request.body, allow_redirects=False)
        dropped = ("transfer-encoding", "connection", "content-encoding") \
            + (() if request.method == "HEAD" else ("content-length",))
        kept = {k: v for k, v in up.headers.items() if k.lower() not in dropped}
        if "Location" in kept:
            kept["Location"] = kept["Location"].replace(f"http://{self.upstream}",
                                                        f"{self.scheme}://{self.address}")
        return up.status_code, kept, up.content

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._session.close()


@pytest.fixture
def scripted_proxy(registry: str) -> Iterator[callable]:
    """Make scripted servers: ``scripted_proxy(script)`` in front of the plain registry,
    ``scripted_proxy(script, upstream=None, host="127.0.0.2")`` answering everything itself."""
    made: list[ScriptedProxy] = []

    def make(script, upstream: str | None = registry, host: str = "127.0.0.1",  # type: ignore[no-untyped-def]
             tls: tuple[Path, Path] | None = None) -> ScriptedProxy:
        proxy = ScriptedProxy(script, upstream, host, tls)
        made.append(proxy)
        return proxy

    yield make
    for proxy in made:
        proxy.close()
