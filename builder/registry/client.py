"""One registry over HTTP(S): scheme detection, authentication, retries, errors for people.

:class:`RegistryClient` speaks the OCI distribution API for one registry
(``host[:port]``): it pings ``/v2/`` once to learn the scheme and the auth
challenge, adds basic or bearer credentials (tokens cached per scope),
retries what a flaky network or a busy registry gets wrong (connection
errors, 429/502/503/504, honouring Retry-After) with exponential backoff and
jitter, and turns every failure into one :class:`~builder.errors.RegistryError`
naming the operation, registry, repository and status. URLs in messages and
debug logs have their query strings (which may carry tokens) removed.
"""

from __future__ import annotations

import contextlib
import contextvars
import email.utils
import logging
import random
import re
import socket
import ssl
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
import requests.adapters
import urllib3

from builder import __version__
from builder.errors import AuthError, RegistryError, RemoteImageNotFoundError, TLSError
from builder.image.reference import DOCKER_HUB, DOCKER_HUB_API, is_loopback_host
from builder.registry.auth import (
    Challenge,
    Credentials,
    DockerConfig,
    TokenCache,
    parse_token_response,
    repository_scope,
)
from builder.registry.certs import RegistryTLS

log = logging.getLogger("builder.registry")

RETRY_STATUSES = frozenset({408, 429, 502, 503, 504})
USER_AGENT = f"pybuild/{__version__}"
MANIFEST_LIMIT = 4 << 20  # as containerd: a manifest or index is small; a huge one is an attack
_QUERY_RE = re.compile(r"\?[^\s'\")]*")


def redact(text: str) -> str:
    """Drop query strings (signed URLs, tokens) from a URL or a message that quotes one."""
    return _QUERY_RE.sub("?…", text)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry (delays in seconds)."""

    attempts: int = 5
    base_delay: float = 0.25
    max_delay: float = 8.0
    max_retry_after: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Exponential backoff with full jitter; a server's Retry-After wins (capped)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.max_delay, self.base_delay * (2 ** attempt))
        return random.uniform(ceiling / 2, ceiling)


@dataclass(frozen=True)
class ClientOptions:
    """Settings shared by every registry client of one command."""

    insecure_registries: frozenset[str] = frozenset()
    docker_config: DockerConfig | None = None
    certs_d: Path | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    connect_timeout: float = 15.0
    read_timeout: float = 60.0
    pool_size: int = 16
    # The longest one request may take, its attempts and the waits between them together (None:
    # as many attempts as the retry policy gives, each up to read_timeout): a registry that takes
    # connections but never answers cost five minutes and more per request.
    deadline: float | None = None


class TransferStopped(BaseException):
    """Raised in a transfer's thread when its pool stops (Ctrl-C, SIGTERM, another transfer's
    failure): not an error of its own, and no retry or ``except Exception`` takes it for one."""


class TransferStop(threading.Event):
    """The stop of a pool of transfers that also breaks the blocking reads in flight.

    A transfer checks the event between chunks; one whose read hangs on a stalled
    connection (a body that stopped coming, or an answer that never starts: a pull-through
    cache fetching a big layer upstream first) would only see it when its read timeout (a
    minute) ends, and the command would wait for it. What the transfers register with
    :meth:`when_set` (shutting their connection down) runs when the event is set.
    """

    def __init__(self) -> None:
        super().__init__()
        self._actions_lock = threading.Lock()
        self._actions: set[Callable[[], None]] = set()

    def set(self) -> None:
        with self._actions_lock:
            super().set()
            actions, self._actions = self._actions, set()
        for action in actions:
            with contextlib.suppress(Exception):
                action()

    def when_set(self, action: Callable[[], None]) -> None:
        """Run ``action`` when the event is set (until :meth:`forget`)."""
        with self._actions_lock:
            if not self.is_set():
                self._actions.add(action)
                return
        with contextlib.suppress(Exception):
            action()

    def forget(self, action: Callable[[], None]) -> None:
        with self._actions_lock:
            self._actions.discard(action)


def shut_down(sock: socket.socket) -> None:
    """End a connection under a thread blocked reading it: the read returns at once.

    socket.socket's own shutdown, not SSLSocket's (which would drop the TLS state under the
    reading thread): the reader sees the connection end, then the stop.
    """
    with contextlib.suppress(OSError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


# The stop of the transfer this thread works for (see stoppable).
_TRANSFER_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "pybuild_transfer_stop", default=None)


@contextlib.contextmanager
def stoppable(stop: threading.Event | None) -> Iterator[None]:
    """The requests this thread sends in the block end when ``stop`` is set: no attempt
    starts and no retry waits (TransferStopped), and with a TransferStop, sending a body or
    waiting for an answer breaks at once (the connection is shut down)."""
    token = _TRANSFER_STOP.set(stop)
    try:
        yield
    finally:
        _TRANSFER_STOP.reset(token)


def current_stop() -> threading.Event | None:
    """The stop of the transfer this thread works for (see :func:`stoppable`), if any."""
    return _TRANSFER_STOP.get()


def check_stop() -> None:
    """Raise TransferStopped if this thread's transfer was stopped (see :func:`stoppable`)."""
    stop = _TRANSFER_STOP.get()
    if stop is not None and stop.is_set():
        raise TransferStopped


class _StoppableConnection(urllib3.connection.HTTPConnection):
    """A connection whose sending and waiting for the answer a TransferStop breaks.

    requests gives no handle on the socket before the answer comes; this is where the
    sending and waiting happen. The body's reads are the caller's to break (BlobReader).
    """

    def _shut_down(self) -> None:
        if isinstance(self.sock, socket.socket):
            shut_down(self.sock)

    def _breakable(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        stop = _TRANSFER_STOP.get()
        if not isinstance(stop, TransferStop):
            return method(*args, **kwargs)
        action = self._shut_down  # looks the socket up when run: request() may connect first
        stop.when_set(action)
        try:
            return method(*args, **kwargs)
        finally:
            stop.forget(action)

    def request(self, *args: Any, **kwargs: Any) -> None:
        self._breakable(super().request, *args, **kwargs)

    def getresponse(self) -> Any:
        return self._breakable(super().getresponse)


class _StoppableHTTPSConnection(_StoppableConnection, urllib3.connection.HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _StoppableConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _StoppableHTTPSConnection


class TransientRegistryError(RegistryError):
    """Retries ran out on failures that another try later might not hit (network, 5xx)."""


class UntrustedCertificateError(TLSError):
    """The registry speaks TLS, but its certificate does not verify: never fall back to HTTP."""


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, description: str, retry_after: float | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


def retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def describe_exception(err: BaseException) -> str:
    """A short, secret-free description of a network failure."""
    if isinstance(err, requests.exceptions.InvalidHeader):
        return "invalid header value (not shown: it may hold a credential)"  # requests quotes it
    text = str(err)
    lowered = text.lower()
    if isinstance(err, requests.exceptions.SSLError):
        return "TLS error: " + redact(_innermost(text))
    if isinstance(err, requests.Timeout) or "timed out" in lowered:
        return "timed out"
    if "connection refused" in lowered:
        return "connection refused"
    if "nameresolutionerror" in lowered or "name or service not known" in lowered \
            or "temporary failure in name resolution" in lowered:
        host = re.search(r"resolve '([^']+)'", text)
        return f"cannot resolve {host[1] if host else 'the host'} (no network, or a wrong name?)"
    if "reset by peer" in lowered or "connection aborted" in lowered or "remotedisconnected" in lowered:
        return "connection reset"
    if "incompleteread" in lowered or "prematurely" in lowered or "connection broken" in lowered:
        return "connection broken mid-transfer"
    return redact(_innermost(text))[:200]


def _innermost(text: str) -> str:
    """urllib3 nests causes as ``(Caused by X(...))``; keep the last, most specific part."""
    if "Caused by" in text:
        text = text.rsplit("Caused by", 1)[1].strip(" ()")
    return text


def _small(response: requests.Response) -> bool:
    """Whether an error answer's body is short enough to read (never a blob streamed by mistake)."""
    try:
        return int(response.headers.get("Content-Length", "")) <= 64 << 10
    except ValueError:
        return False


def registry_error_detail(response: requests.Response) -> str:
    """The registry's own error message (``{"errors":[{"code","message"}]}``), if any."""
    try:
        errors = response.json().get("errors") or []
        parts = []
        for e in errors[:3]:
            code, message = e.get("code", ""), e.get("message", "")
            parts.append(message or code.lower())
        return "; ".join(dict.fromkeys(p for p in parts if p))
    except (ValueError, AttributeError, TypeError):
        return ""


class _TLSAdapter(requests.adapters.HTTPAdapter):
    """An adapter whose connections use our SSL context (system CAs + certs.d)."""

    def __init__(self, context: ssl.SSLContext | None, pool_size: int) -> None:
        self._context = context
        super().__init__(pool_connections=4, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False,
                         **pool_kwargs: Any) -> None:
        if self._context is not None:
            pool_kwargs["ssl_context"] = self._context
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}


@dataclass(frozen=True)
class Call:
    """What a request is, in words: for error messages and logs."""

    operation: str          # "pull", "push", "search", "login"
    repository: str | None  # None for registry-wide calls
    what: str               # "manifest 1.0", "blob sha256:ab12…", "catalog"


class RegistryClient:
    """The distribution API of one registry; thread-safe, one per registry per command."""

    def __init__(self, registry: str, options: ClientOptions | None = None,
                 credentials: Credentials | None = None,
                 session: requests.Session | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.registry = DOCKER_HUB if registry in ("index.docker.io", DOCKER_HUB_API) else registry
        self.options = options or ClientOptions()
        self.api_host = DOCKER_HUB_API if self.registry == DOCKER_HUB else self.registry
        self._credentials_loaded = credentials is not None
        self._credentials = credentials
        self._tokens = TokenCache()
        self._sleep = sleep
        self._lock = threading.Lock()
        self._token_lock = threading.Lock()
        self._base: str | None = None
        self._ping_error: RegistryError | None = None
        self._challenge: Challenge | None = None
        self.session = session or requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT
        if is_loopback_host(self.registry):
            # Never through an HTTP(S)_PROXY from the environment (nor ~/.netrc): it is local.
            self.session.trust_env = False
        tls = RegistryTLS.for_registry(self.registry, self.options.certs_d)
        # The hosts a registry sends us to (its token realm, blob storage) share its trust, as
        # in docker: system CAs and its certs.d CAs, never requests' own bundle alone. Its
        # client certificate goes to the registry only.
        # Without one, both are the same context: loading the system CAs costs ~25 ms each.
        others = replace(tls, client_pairs=())
        context = tls.ssl_context()
        self.session.mount("https://", _TLSAdapter(
            others.ssl_context() if tls.client_pairs else context, self.options.pool_size))
        self.session.mount(f"https://{self.api_host}/", _TLSAdapter(context, self.options.pool_size))
        self.session.mount(f"http://{self.api_host}/", _TLSAdapter(None, self.options.pool_size))
        self._verify_tls = True

    # --- scheme, ping and credentials ------------------------------------------------------

    @property
    def plain_http_allowed(self) -> bool:
        return is_loopback_host(self.registry) or self.registry in self.options.insecure_registries

    @property
    def credentials(self) -> Credentials | None:
        with self._lock:
            if not self._credentials_loaded:
                config = self.options.docker_config or DockerConfig()
                self._credentials = config.get(self.registry)
                self._credentials_loaded = True
            return self._credentials

    def base_url(self, call: Call) -> str:
        """``https://host`` (or ``http://`` for loopback/insecure registries without TLS)."""
        with self._lock:
            if self._ping_error is not None:
                raise self._ping_error
            if self._base is None:
                try:
                    # Errors name the request that failed (/v2/), not the one that needed it.
                    self._base, self._challenge = self._ping(replace(call, what="/v2/"))
                except RegistryError as err:
                    self._ping_error = err  # every transfer thread gets the same answer, once
                    raise
            return self._base

    def _ping(self, call: Call) -> tuple[str, Challenge | None]:
        """Find the scheme (HTTPS first, as docker does) and the auth challenge."""
        scheme = "https"
        if not self.plain_http_allowed:
            response = self._with_retries(call, "GET", lambda: self._raw_ping("https"))
        else:
            probed: requests.Response | None
            try:
                probed = self._with_retries(call, "GET", lambda: self._raw_ping("https", probe=True),
                                            attempts=1)
            except UntrustedCertificateError:
                raise
            except TLSError:
                probed = None
            except TransientRegistryError:
                probed = None
            if probed is not None:
                response = probed
            else:
                # No TLS here (or it failed once): a loopback or declared-insecure registry
                # may speak plain HTTP. Go's TLS servers answer plain HTTP with a 400.
                scheme = "http"
                response = self._with_retries(call, "GET", lambda: self._raw_ping("http"))
                if response.status_code == 400 and "HTTPS" in response.text:
                    scheme = "https"
                    response = self._with_retries(call, "GET", lambda: self._raw_ping("https"))
        challenge = None
        if response.status_code == 401:
            challenge = Challenge.parse(response.headers.get("WWW-Authenticate", ""))
        log.debug("ping %s://%s/v2/ -> %s (auth: %s)", scheme, self.api_host, response.status_code,
                  challenge.scheme if challenge else "none")
        response.close()
        return f"{scheme}://{self.api_host}", challenge

    def _raw_ping(self, scheme: str, probe: bool = False) -> requests.Response:
        url = f"{scheme}://{self.api_host}/v2/"
        # A plain-HTTP server may never answer a TLS hello: do not wait long for it.
        if probe:
            limit = 2.0 if is_loopback_host(self.registry) else 5.0
            timeout = (min(self.options.connect_timeout, limit), min(self.options.read_timeout, limit))
        else:
            timeout = self._timeout()
        try:
            response = self.session.get(url, timeout=timeout, allow_redirects=True,
                                        verify=self._verify_tls)
        except requests.exceptions.SSLError as err:
            text = str(err)
            if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
                if self.registry in self.options.insecure_registries:
                    # docker skips verification for registries the user declared insecure.
                    self._verify_tls = False
                    # The user asked for this registry to be unverified; one warning per
                    # request from urllib3 would only bury the output.
                    warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    self.session.mount(f"https://{self.api_host}/",
                                       _TLSAdapter(context, self.options.pool_size))
                    return self._raw_ping(scheme)
                raise UntrustedCertificateError(
                    f"TLS certificate of {self.registry} is not trusted "
                    f"({redact(_innermost(text))[:160]}); add its CA as "
                    f"/etc/docker/certs.d/{self.registry}/ca.crt or use --insecure-registry "
                    f"{self.registry}"
                ) from None
            raise TLSError(f"{self.registry} does not speak TLS: {describe_exception(err)}") from None
        except requests.RequestException as err:
            raise _Retryable(describe_exception(err)) from None
        if response.status_code in RETRY_STATUSES:
            response.close()
            raise _Retryable(f"{response.status_code} {response.reason}",
                             retry_after_seconds(response))
        return response

    def _timeout(self) -> tuple[float, float]:
        return (self.options.connect_timeout, self.options.read_timeout)

    def pause(self, seconds: float) -> None:
        """Wait before a retry; a stopped transfer (see :func:`stoppable`) waits no more."""
        stop = _TRANSFER_STOP.get()
        if stop is None:
            self._sleep(seconds)
        elif stop.wait(seconds):
            raise TransferStopped

    # --- authentication --------------------------------------------------------------------

    def _authorization(self, call: Call, scopes: tuple[str, ...], force: bool = False) -> str | None:
        challenge = self._challenge
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            creds = self.credentials
            return creds.basic() if creds else None
        if challenge.scheme != "bearer":
            return None
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, " ".join(scopes))
        if not force:
            token = self._tokens.get(key)
            if token:
                return f"Bearer {token}"
        with self._token_lock:
            # Concurrent transfers wait for one token fetch instead of each asking.
            token = None if force else self._tokens.get(key)
            if token is None:
                token, expires_in = self._fetch_token(call, realm, service, scopes)
                self._tokens.put(key, token, expires_in)
        return f"Bearer {token}"

    def _fetch_token(self, call: Call, realm: str, service: str,
                     scopes: tuple[str, ...]) -> tuple[str, float]:
        if not realm.startswith(("https://", "http://")):
            raise AuthError(f"{self._prefix(call)}: registry sent an invalid token realm")
        realm_host = urlsplit(realm).netloc
        if realm.startswith("http://") and not is_loopback_host(realm_host) \
                and realm_host not in self.options.insecure_registries:
            raise AuthError(f"{self._prefix(call)}: refusing to send credentials to plain-HTTP "
                            f"token server {realm_host}")
        creds = self.credentials
        params: list[tuple[str, str]] = []
        if service:
            params.append(("service", service))
        params.extend(("scope", s) for s in scopes)
        if creds and creds.username and not creds.identity_token:
            params.append(("account", creds.username))  # as docker and skopeo send it

        # A realm on the registry's own host shares its TLS trust: --insecure-registry skips
        # verification there too (its certs.d CA comes with the host's adapter).
        verify = self._verify_tls if realm_host == self.api_host else True

        def attempt() -> requests.Response:
            try:
                if creds and creds.identity_token:
                    data = dict(params)
                    data.update(grant_type="refresh_token", refresh_token=creds.identity_token,
                                client_id="pybuild")
                    data["scope"] = " ".join(scopes)
                    response = self.session.post(realm, data=data, timeout=self._timeout(),
                                                 verify=verify)
                else:
                    headers = {"Authorization": creds.basic()} if creds else {}
                    response = self.session.get(realm, params=params, headers=headers,
                                                timeout=self._timeout(), verify=verify)
            except requests.RequestException as err:
                raise _Retryable(describe_exception(err)) from None
            if response.status_code in RETRY_STATUSES:  # a busy token server, as a busy registry
                description = f"{response.status_code} {response.reason}"
                response.close()
                raise _Retryable(description, retry_after_seconds(response))
            return response

        token_call = Call(call.operation, call.repository, f"token from {realm_host}")
        response = self._with_retries(token_call, "GET", attempt)
        log.debug("token from %s for %s (%s): %s", realm_host, " ".join(scopes) or "no scope",
                  "as " + creds.username if creds else "anonymous", response.status_code)
        if response.status_code in (401, 403):
            raise self._auth_error(call, rejected=creds is not None)
        if response.status_code != 200:
            raise RegistryError(f"{self._prefix(call)}: token server {realm_host} answered "
                                f"{response.status_code} {response.reason}")
        return parse_token_response(response.content, realm_host)

    def _auth_error(self, call: Call, rejected: bool) -> AuthError:
        if rejected:
            return AuthError(f"{self._prefix(call)}: unauthorized: incorrect username or password "
                             f"(check `pybuild login {self.registry}`)")
        return AuthError(f"{self._prefix(call)}: unauthorized: authentication required "
                         f"(check `pybuild login {self.registry}`)")

    def check_login(self) -> None:
        """Verify the credentials against the registry, as ``docker login`` does."""
        call = Call("login", None, "/v2/")
        base = self.base_url(call)
        if self._challenge is None:
            # no auth asked: the server must still be a registry (a web server's 404 is not a
            # login), as docker's "login attempt to URL failed with status: 404 Not Found"
            response = self.request("GET", "/v2/", call, scopes=(), allow=range(100, 600))
            status = response.status_code
            response.close()
            if status != 200:
                from http import HTTPStatus

                reason = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
                raise RegistryError(f"login attempt to {base}/v2/ failed with status: {status} {reason}".rstrip())
            return
        if self.credentials is None:
            raise self._auth_error(call, rejected=False)
        response = self.request("GET", "/v2/", call, scopes=())
        response.close()

    # --- requests --------------------------------------------------------------------------

    def _prefix(self, call: Call) -> str:
        where = f"{self.registry}/{call.repository}" if call.repository else self.registry
        return f"{call.operation} {where}"

    def url(self, call: Call, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url(call) + "/", path.lstrip("/"))

    def request(
        self, method: str, path: str, call: Call, *,
        scopes: tuple[str, ...] | None = None, actions: tuple[str, ...] = ("pull",),
        headers: dict[str, str] | None = None,
        body: bytes | Callable[[], Any] | None = None,
        stream: bool = False, ok: Iterable[int] = (200,), allow: Iterable[int] = (),
        params: dict[str, str] | None = None, retry: bool = True,
    ) -> requests.Response:
        """Send one API request with auth and retries; raise a RegistryError unless ``ok``/``allow``.

        ``body`` may be a callable giving a fresh body for each attempt (a stream
        cannot be sent twice). ``scopes`` defaults to this repository with ``actions``.
        Inside :func:`stoppable`, the transfer's stop ends it (TransferStopped).
        """
        ok, allow = frozenset(ok), frozenset(allow)
        if scopes is None:
            scopes = (repository_scope(call.repository, actions),) if call.repository else ()
        url = self.url(call, path)
        if params:
            url = add_query(url, params)
        state = {"force": False}

        # Credentials only ever go to the registry itself (its scheme too: never in clear over
        # http:// when it speaks https), never to a host an upload Location or a paginated
        # Link points at.
        target = urlsplit(url)
        same_host = (target.scheme, target.netloc) == (urlsplit(self.base_url(call)).scheme, self.api_host)

        def attempt() -> requests.Response:
            auth = self._authorization(call, scopes, force=state["force"]) if same_host else None
            send_headers = dict(headers or {})
            if auth:
                send_headers["Authorization"] = auth
            data = body() if callable(body) else body
            try:
                response = self.session.request(
                    method, url, headers=send_headers, data=data, stream=stream,
                    timeout=self._timeout(), allow_redirects=method in ("GET", "HEAD"),
                    verify=self._verify_tls,
                )
            except requests.RequestException as err:
                raise _Retryable(describe_exception(err)) from None
            finally:
                if data is not None and hasattr(data, "close"):  # a stream body
                    data.close()
            log.debug("%s %s -> %s", method, redact(response.url), response.status_code)
            if response.status_code == 401 and not state["force"]:
                # Expired token or a scope we did not ask for: fetch a fresh token, once.
                # (A registry whose /v2/ was open may still protect a repository.) A challenge
                # counts only from the registry itself: a storage host a blob GET was redirected
                # to must never name the realm our credentials go to.
                fresh = Challenge.parse(response.headers.get("WWW-Authenticate", "")) \
                    if self._from_registry(response) else None
                if self._challenge is None:
                    if fresh is None:
                        return response
                    self._challenge = fresh
                elif fresh is not None and fresh.scheme == self._challenge.scheme:
                    self._challenge = Challenge(fresh.scheme, {**self._challenge.params,
                                                               **{k: v for k, v in fresh.params.items()
                                                                  if k in ("realm", "service")}})
                state["force"] = True
                response.close()
                raise _Retryable("unauthorized", retry_after=0.0)
            if response.status_code in RETRY_STATUSES and response.status_code not in allow:
                # The registry's words matter here (Docker Hub's 429 says which limit was hit).
                detail = registry_error_detail(response) if _small(response) else ""
                description = f"{response.status_code} {response.reason}" + (f" ({detail})" if detail else "")
                response.close()
                raise _Retryable(description, retry_after_seconds(response))
            return response

        response = self._with_retries(call, method, attempt, attempts=None if retry else 1)
        if response.status_code in ok or response.status_code in allow:
            return response
        raise self._status_error(call, method, response)

    def _from_registry(self, response: requests.Response) -> bool:
        """Whether a response came from the registry, not from a host it redirected us to."""
        final = urlsplit(response.url)
        return (final.scheme, final.netloc) == (urlsplit(self._base or "").scheme, self.api_host)

    def _unauthorized(self, call: Call, method: str, response: requests.Response) -> RegistryError:
        """A 401 from the registry in words that say what happened: a challenge we cannot
        answer, or credentials it did not take."""
        sent = "Authorization" in response.request.headers
        challenge = Challenge.parse(response.headers.get("WWW-Authenticate", "")) or self._challenge
        if not sent and challenge is None:
            return AuthError(f"{self._prefix(call)}: unauthorized: the registry answered 401 without "
                             "a WWW-Authenticate challenge, so there is no way to log in")
        if not sent and challenge is not None and challenge.scheme not in ("basic", "bearer"):
            return AuthError(f"{self._prefix(call)}: unauthorized: the registry asks for "
                             f"{challenge.scheme!r} authentication, which pybuild does not support "
                             "(only basic and bearer tokens)")
        creds = self.credentials
        if sent and challenge is not None and challenge.params.get("error") == "invalid_token":
            # A token fetched a moment ago (and once more) that the registry calls invalid.
            return AuthError(f"{self._prefix(call)}: unauthorized: the registry rejects the tokens its "
                             "token server issues (invalid_token: expired on arrival? check that "
                             "the clocks of both agree)")
        if sent and creds is not None and challenge is not None and challenge.scheme == "bearer":
            # The token server took the login (a wrong password fails at the token fetch): the
            # token it gave grants nothing here.
            who = f"logged in as {creds.username}" if creds.username else "logged in"
            target = "this repository (or it does not exist)" if call.repository else "this registry"
            return AuthError(f"{self._prefix(call)}: denied: {who}, but not allowed to "
                             f"{call.operation} {target}")
        return self._auth_error(call, rejected=creds is not None)

    def _status_error(self, call: Call, method: str, response: requests.Response) -> RegistryError:
        status = response.status_code
        detail = registry_error_detail(response)
        response.close()
        if status in (401, 403) and not self._from_registry(response):
            # An expired signed URL, say: nothing a login would fix.
            host = urlsplit(response.url).netloc
            why = "where the registry redirected the request" if response.history else "not the registry"
            return RegistryError(f"{self._prefix(call)}: {method} {call.what}: {host} ({why}) "
                                 f"answered {status} {response.reason}")
        if status == 401:
            return self._unauthorized(call, method, response)
        if status == 403:
            return AuthError(f"{self._prefix(call)}: denied: {detail or 'access forbidden'} "
                             f"(check `pybuild login {self.registry}`)")
        text = f"{self._prefix(call)}: {method} {call.what}: {status} {response.reason}"
        if response.history and not self._from_registry(response):
            # the storage a blob GET was sent to (its signed URL never shown): not the registry's word
            text = (f"{self._prefix(call)}: {method} {call.what}: {urlsplit(response.url).netloc} (where the "
                    f"registry redirected the request) answered {status} {response.reason}")
        elif detail:
            text += f" ({detail})"
        if status == 404:
            return RemoteImageNotFoundError(text)
        return RegistryError(text)

    def _with_retries(self, call: Call, method: str, attempt: Callable[[], requests.Response],
                      attempts: int | None = None) -> requests.Response:
        policy = self.options.retry
        total = attempts or policy.attempts
        last = "failed"
        auth_retries = 0
        n = 0
        started = time.monotonic()
        deadline = self.options.deadline
        while True:
            check_stop()
            try:
                return attempt()
            except _Retryable as err:
                check_stop()  # broken by the stop: no retry
                last = err.description
                if last == "unauthorized" and auth_retries == 0:
                    auth_retries += 1  # a token refresh is not a failed attempt
                    continue
                n += 1
                if n >= total:
                    break
                delay = policy.delay(n - 1, err.retry_after)
                if deadline is not None and time.monotonic() - started + delay >= deadline:
                    raise TransientRegistryError(
                        f"{self._prefix(call)}: {method} {call.what}: {last}: no answer within "
                        f"{deadline:g}s ({n} attempt{'s' if n > 1 else ''})") from None
                log.debug("%s: %s %s: %s; retrying in %.2fs (attempt %d/%d)", self._prefix(call),
                          method, call.what, last, delay, n + 1, total)
                self.pause(delay)
        suffix = f" after {total} attempts" if total > 1 else ""
        raise TransientRegistryError(f"{self._prefix(call)}: {method} {call.what}: {last}{suffix}")

    # --- the API: manifests -----------------------------------------------------------------

    def get_manifest(self, repository: str, identifier: str, accept: Iterable[str],
                     operation: str = "pull") -> tuple[bytes, str]:
        """The manifest's exact bytes and its media type (Content-Type, or sniffed later)."""
        call = Call(operation, repository, f"manifest {identifier}")
        policy = self.options.retry
        for attempt in range(1, policy.attempts + 1):
            response = self.request("GET", f"/v2/{repository}/manifests/{identifier}", call,
                                    headers={"Accept": ", ".join(accept)}, allow=(404,), stream=True)
            if response.status_code == 404:
                response.close()
                sep = "@" if identifier.startswith("sha256:") else ":"
                raise RemoteImageNotFoundError(
                    f"{operation} {self.registry}/{repository}{sep}{identifier}: image "
                    f"{self.registry}/{repository}{sep}{identifier} not found"
                )
            try:
                content = response.raw.read(MANIFEST_LIMIT + 1, decode_content=True)
                break
            except (urllib3.exceptions.HTTPError, OSError) as err:
                if attempt >= policy.attempts:
                    raise TransientRegistryError(
                        f"{self._prefix(call)}: GET {call.what}: {describe_exception(err)} "
                        f"after {attempt} attempts") from None
                self.pause(policy.delay(attempt - 1))
            finally:
                response.close()
        if len(content) > MANIFEST_LIMIT:
            raise RegistryError(f"{self._prefix(call)}: GET {call.what}: manifest larger than "
                                f"{MANIFEST_LIMIT // (1 << 20)} MiB; refusing it")
        media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        return content, media_type

    def head_manifest(self, repository: str, identifier: str, accept: Iterable[str],
                      operation: str = "pull") -> tuple[str, str, int] | None:
        """(digest, media type, size) of a manifest, or None if absent."""
        call = Call(operation, repository, f"manifest {identifier}")
        response = self.request("HEAD", f"/v2/{repository}/manifests/{identifier}", call,
                                headers={"Accept": ", ".join(accept)}, allow=(404,))
        response.close()
        if response.status_code == 404:
            return None
        return (response.headers.get("Docker-Content-Digest", ""),
                response.headers.get("Content-Type", ""),
                int(response.headers.get("Content-Length", "0") or 0))

    def put_manifest(self, repository: str, identifier: str, raw: bytes, media_type: str,
                     operation: str = "push") -> str:
        """Upload a manifest under a tag or digest; returns the digest the registry computed."""
        call = Call(operation, repository, f"manifest {identifier}")
        response = self.request(
            "PUT", f"/v2/{repository}/manifests/{identifier}", call, actions=("pull", "push"),
            headers={"Content-Type": media_type}, body=raw, ok=(200, 201, 202),
        )
        response.close()
        return response.headers.get("Docker-Content-Digest", "")

    # --- the API: blobs ---------------------------------------------------------------------

    def blob_exists(self, repository: str, digest: str, operation: str = "pull",
                    actions: tuple[str, ...] = ("pull",)) -> bool:
        call = Call(operation, repository, f"blob {digest[:19]}")
        response = self.request("HEAD", f"/v2/{repository}/blobs/{digest}", call, actions=actions,
                                allow=(404,))
        response.close()
        return response.status_code == 200

    def open_blob_response(self, repository: str, digest: str, offset: int = 0,
                           operation: str = "pull", urls: Sequence[str] = ()) -> requests.Response:
        """GET a blob (from ``offset`` with a Range header); the caller reads and closes it.

        A foreign (non-distributable) layer the registry does not hold is fetched from the
        ``urls`` its descriptor names, as docker does: without credentials, and verified by
        digest like any blob.
        """
        call = Call(operation, repository, f"blob {digest[:19]}")
        headers = {"Accept-Encoding": "identity"}
        if offset:
            headers["Range"] = f"bytes={offset}-"
        foreign = [u for u in urls if u.startswith(("http://", "https://"))]
        response = self.request("GET", f"/v2/{repository}/blobs/{digest}", call, headers=headers,
                                stream=True, ok=(200, 206), allow=(404,) if foreign else ())
        if response.status_code != 404:
            return response
        response.close()
        answers = []
        for url in foreign:
            log.debug("blob %s: not in the registry; trying its URL %s", digest[:19], redact(url))
            try:
                return self.request("GET", url, call, headers=headers, stream=True, ok=(200, 206))
            except RegistryError as err:
                answers.append(f"{urlsplit(url).netloc}: {str(err).rsplit(f'GET {call.what}: ', 1)[-1]}")
        raise RemoteImageNotFoundError(
            f"{self._prefix(call)}: GET {call.what}: a foreign layer the registry does not hold, "
            f"and no URL it names served it ({'; '.join(answers)})")

    # --- the API: catalog and tags ---------------------------------------------------------

    def paginate(self, path: str, call: Call, key: str, page_size: int = 1000) -> Iterator[str]:
        """Follow ``Link: <...>; rel="next"`` through a paginated list (catalog, tags)."""
        url: str | None = add_query(path, {"n": str(page_size)})
        scopes = ("registry:catalog:*",) if key == "repositories" else None
        seen: set[str] = set()
        while url:
            if url in seen:  # a registry whose next page is one already read would never end
                raise RegistryError(f"{self._prefix(call)}: GET {call.what}: the registry's pages "
                                    f"loop (next page {redact(url)} again)")
            seen.add(url)
            response = self.request("GET", url, call, scopes=scopes)
            try:
                items = response.json().get(key) or []
            except ValueError:
                raise RegistryError(f"{self._prefix(call)}: GET {call.what}: invalid JSON") from None
            yield from items
            nxt = response.links.get("next", {}).get("url")
            url = urljoin(response.url, nxt) if nxt else None

    def catalog(self, operation: str = "search") -> Iterator[str]:
        return self.paginate("/v2/_catalog", Call(operation, None, "catalog"), "repositories")

    def tags(self, repository: str, operation: str = "search") -> list[str]:
        call = Call(operation, repository, "tags")
        return list(self.paginate(f"/v2/{repository}/tags/list", call, "tags"))

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def add_query(url: str, params: dict[str, str]) -> str:
    """Add query parameters to a URL that may already have some (upload ``_state``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    query.extend(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


