"""Registry credentials and authentication: docker's config.json, credential helpers, tokens.

Credentials come from ``$DOCKER_CONFIG/config.json`` (default ``~/.docker``),
exactly as docker keeps them: ``credHelpers`` per registry, then ``credsStore``,
then base64 ``auths`` entries. Secrets never reach a log line, an exception
message or a repr.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import AuthError, RegistryError

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_HUB_ALIASES = {"docker.io", "index.docker.io", "registry-1.docker.io", DOCKER_HUB_KEY,
                "https://index.docker.io/v1", "https://registry-1.docker.io"}
IDENTITY_TOKEN_USER = "<token>"


def config_key(registry: str) -> str:
    """The key docker uses for a registry in config.json (Docker Hub's is a URL)."""
    return DOCKER_HUB_KEY if registry in _HUB_ALIASES else registry


def _normalise_key(key: str) -> str:
    """``https://host:5000/v1/`` and ``host:5000`` name the same registry."""
    if key in _HUB_ALIASES:
        return DOCKER_HUB_KEY
    key = re.sub(r"^https?://", "", key)
    return key.split("/", 1)[0]


@dataclass(frozen=True)
class Credentials:
    """A user name and secret (password or identity token); the secret never shows in a repr."""

    username: str
    password: str = field(repr=False)
    identity_token: str | None = field(default=None, repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


class CredentialHelper:
    """A ``docker-credential-NAME`` program speaking docker's get/store/erase protocol."""

    def __init__(self, name: str, origin: str = "") -> None:
        self.name = name
        self.program = f"docker-credential-{name}"
        self.origin = origin  # where it is configured, for messages: "credsStore in <config.json>"

    def _run(self, action: str, payload: bytes, server: str) -> bytes:
        path = shutil.which(self.program)
        if path is None:
            where = f" ({self.origin})" if self.origin else ""
            raise AuthError(f"credential helper {self.program}{where} not found in PATH")
        try:
            proc = subprocess.run([path, action], input=payload, capture_output=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AuthError(f"credential helper {self.program} {action} timed out") from None
        if proc.returncode != 0:
            out = proc.stdout.decode(errors="replace").strip()
            err = proc.stderr.decode(errors="replace").strip()
            if "credentials not found" in (out or err).lower():
                raise KeyError(action)
            # The helper's own message, about the helper; never output that carries a secret
            # (a helper may print the credentials and still fail).
            text = next((t for t in (out, err) if t and '"Secret"' not in t), "")
            detail = f": {text[:200]}" if text else ""
            raise AuthError(f"credential helper {self.program} {action} for {server} failed "
                            f"(exit status {proc.returncode}){detail}")
        return proc.stdout

    def get(self, server: str) -> Credentials | None:
        try:
            out = self._run("get", server.encode(), server)
        except KeyError:
            return None
        try:
            data = json.loads(out)
            user, secret = data.get("Username", ""), data.get("Secret", "")
        except (ValueError, AttributeError):
            raise AuthError(f"credential helper {self.program} returned invalid JSON") from None
        if not secret:
            return None
        if user == IDENTITY_TOKEN_USER:
            return Credentials(user, "", identity_token=secret)
        return Credentials(user, secret)

    def store(self, server: str, credentials: Credentials) -> None:
        payload = {"ServerURL": server, "Username": credentials.username,
                   "Secret": credentials.identity_token or credentials.password}
        self._run("store", json.dumps(payload).encode(), server)

    def erase(self, server: str) -> bool:
        try:
            self._run("erase", server.encode(), server)
        except KeyError:
            return False
        return True


class DockerConfig:
    """``config.json`` as docker reads and writes it; unknown keys are kept untouched."""

    def __init__(self, directory: Path | None = None) -> None:
        if directory is None:
            env = os.environ.get("DOCKER_CONFIG")
            directory = Path(env) if env else Path.home() / ".docker"
        self.directory = directory
        self.path = directory / "config.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except OSError as err:
            raise AuthError(f"cannot read {self.path}: {err.strerror or type(err).__name__}") from None
        except json.JSONDecodeError as err:  # its position only: the text may hold credentials
            raise AuthError(f"cannot read {self.path}: invalid JSON at line {err.lineno} "
                            f"column {err.colno}") from None
        except ValueError:
            raise AuthError(f"cannot read {self.path}: not UTF-8 text") from None
        if not isinstance(data, dict):
            raise AuthError(f"cannot read {self.path}: not a JSON object")
        return data

    def proxy_build_args(self) -> dict[str, str]:
        """``proxies.default`` as the build args docker's CLI makes of it: HTTP_PROXY and http_proxy
        for ``httpProxy``, and so on (docker's ParseProxyConfig)."""
        proxies = self._load().get("proxies")
        default = proxies.get("default") if isinstance(proxies, dict) else None
        if not isinstance(default, dict):
            return {}
        found: dict[str, str] = {}
        for key, name in (("httpProxy", "HTTP_PROXY"), ("httpsProxy", "HTTPS_PROXY"), ("noProxy", "NO_PROXY"),
                          ("ftpProxy", "FTP_PROXY"), ("allProxy", "ALL_PROXY")):
            value = default.get(key)
            if isinstance(value, str) and value:
                found[name] = found[name.lower()] = value
        return found

    def _save(self, data: dict[str, Any]) -> None:
        """Atomic, private write: temp file in the same dir, fsync, rename, mode 0600."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=".config.json.", dir=self.directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent="\t")
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _helper_for(self, data: dict[str, Any], registry: str) -> CredentialHelper | None:
        helpers = data.get("credHelpers") or {}
        for key, name in helpers.items():
            if _normalise_key(key) == _normalise_key(config_key(registry)) and name:
                return CredentialHelper(name, f"credHelpers in {self.path}")
        if data.get("credsStore"):
            return CredentialHelper(data["credsStore"], f"credsStore in {self.path}")
        return None

    def get(self, registry: str) -> Credentials | None:
        """Credentials for a registry (``host[:port]`` or ``docker.io``), or None (anonymous)."""
        data = self._load()
        key = config_key(registry)
        helper = self._helper_for(data, registry)
        if helper is not None:
            return helper.get(key)
        for entry_key, entry in (data.get("auths") or {}).items():
            if _normalise_key(entry_key) != _normalise_key(key) or not isinstance(entry, dict):
                continue
            if entry.get("identitytoken"):
                return Credentials(entry.get("username", ""), "", identity_token=entry["identitytoken"])
            if entry.get("auth"):
                try:
                    user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    raise AuthError(f"invalid auth entry for {registry} in {self.path}") from None
                return Credentials(user, password)
            if entry.get("username") and entry.get("password"):
                return Credentials(entry["username"], entry["password"])
        return None

    def store(self, registry: str, credentials: Credentials) -> str:
        """Save credentials (in the creds store if one is configured); returns where."""
        data = self._load()
        key = config_key(registry)
        helper = self._helper_for(data, registry)
        if helper is not None:
            helper.store(key, credentials)
            data.setdefault("auths", {}).setdefault(key, {})
            self._save(data)
            return helper.program
        auths = data.setdefault("auths", {})
        for existing in [k for k in auths if _normalise_key(k) == _normalise_key(key)]:
            del auths[existing]
        if credentials.identity_token:
            auths[key] = {"identitytoken": credentials.identity_token}
        else:
            raw = f"{credentials.username}:{credentials.password}".encode()
            auths[key] = {"auth": base64.b64encode(raw).decode()}
        self._save(data)
        return str(self.path)

    def erase(self, registry: str) -> bool:
        """Forget credentials for a registry; False when there were none."""
        data = self._load()
        key = config_key(registry)
        found = False
        helper = self._helper_for(data, registry)
        if helper is not None:
            found = helper.erase(key)
        auths = data.get("auths") or {}
        for existing in [k for k in auths if _normalise_key(k) == _normalise_key(key)]:
            del auths[existing]
            found = True
        if found:
            self._save(data)
        return found


# --- WWW-Authenticate challenges and tokens ------------------------------------------------

# One piece of a WWW-Authenticate value: a parameter (name=value or name="value") or a bare
# token, which starts a new challenge (its scheme).
_PIECE_RE = re.compile(r'([A-Za-z_][\w-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))|([^\s,=]+)')


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: scheme (``bearer``/``basic``) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse_all(cls, header: str) -> list[Challenge]:
        """Every challenge in a header (a registry may offer several, in one header or in
        several that the HTTP stack joins with commas)."""
        found: list[tuple[str, dict[str, str]]] = []
        for m in _PIECE_RE.finditer(header):
            if m[4] is not None:
                found.append((m[4].lower(), {}))
            elif found:
                found[-1][1][m[1].lower()] = (m[2] if m[2] is not None else m[3]).replace('\\"', '"')
        return [cls(scheme, params) for scheme, params in found]

    @classmethod
    def parse(cls, header: str) -> Challenge | None:
        """The challenge to answer: bearer when offered (as docker), then basic, then the first."""
        challenges = cls.parse_all(header)
        for scheme in ("bearer", "basic"):
            for challenge in challenges:
                if challenge.scheme == scheme:
                    return challenge
        return challenges[0] if challenges else None


@dataclass
class _Token:
    """A bearer token and when it stops being usable."""

    value: str
    expires: float


class TokenCache:
    """Bearer tokens per (realm, service, scope), kept until shortly before they expire."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._tokens: dict[tuple[str, str, str], _Token] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def get(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            token = self._tokens.get(key)
            if token is None or token.expires <= self._clock():
                self._tokens.pop(key, None)
                return None
            return token.value

    def put(self, key: tuple[str, str, str], value: str, expires_in: float) -> None:
        # Renew 10% (at least 5 s) early so a token never expires mid-request.
        margin = max(5.0, expires_in * 0.1)
        with self._lock:
            self._tokens[key] = _Token(value, self._clock() + max(1.0, expires_in - margin))

    def drop(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._tokens.pop(key, None)


def repository_scope(repository: str, actions: tuple[str, ...]) -> str:
    return f"repository:{repository}:{','.join(actions)}"


def parse_token_response(body: bytes, realm_host: str) -> tuple[str, float]:
    """The token and its lifetime (seconds) from a token server's JSON answer."""
    try:
        data = json.loads(body)
        token = data.get("token") or data.get("access_token")
    except (ValueError, AttributeError):
        token, data = None, {}
    if isinstance(token, str):
        token = token.strip()  # a stray newline would make an invalid header
    if not token or not isinstance(token, str):
        raise RegistryError(f"token server {realm_host} returned no token")
    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in token):
        raise RegistryError(f"token server {realm_host} returned a token with characters no HTTP "
                            "header may carry")
    try:
        expires_in = float(data.get("expires_in") or 60)
    except (TypeError, ValueError):
        expires_in = 60.0
    return token, max(expires_in, 60.0)
