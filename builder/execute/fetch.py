"""Downloading ADD's URLs: each at most once per build.

A URL whose server sends no ETag is keyed on its content, so keying it downloads
it; :class:`UrlFetches` keeps that body for the step, should it miss.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

DOWNLOAD_TIMEOUT = 60
_CHUNK = 1 << 20


UNNAMED = "__unnamed__"  # BuildKit's name for a download whose URL path names no file


def url_filename(url: str) -> str:
    """The name a download gets, as BuildKit's Dockerfile frontend gives it: the last element of
    the URL's decoded path (``/dir/`` names ``dir``), else ``__unnamed__``. A server's
    Content-Disposition never counts (BuildKit passes its own file name to the HTTP source; only
    docker's classic builder read the header, and failed where neither named a file). ``..`` and
    a NUL name no file either: ``dest/..`` is a layer entry every extractor refuses."""
    path = unquote(urlsplit(url).path).rstrip("/")
    name = path.rsplit("/", 1)[-1]
    return UNNAMED if name in ("", ".", "..") or "\0" in name else name


@dataclass(frozen=True)
class Fetched:
    """A URL's body on disk, with what its response said about it."""

    path: Path
    name: str  # from the URL's path (url_filename)
    last_modified: str | None


def proxies_for(url: str) -> dict[str, Any] | None:
    """No proxy for a loopback server, as Go's ProxyFromEnvironment that docker and BuildKit use:
    an HTTP(S)_PROXY in the environment is for the outside world, and cannot reach this
    machine's 127.0.0.1 (requests would send it there). None: requests' own choice. (A None
    value is how requests is told "no proxy" for a scheme: its stubs say str.)"""
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return {"http": None, "https": None, "all": None} if loopback else None


class FetchFailed(Exception):
    """An HTTP status or connection error; the caller decides whose message it becomes."""


def fetch(url: str, target: Path, updates: Sequence[Callable[[bytes], object]]) -> Fetched:
    import requests  # here, not at the top: every COPY imports this module, few download

    try:
        with requests.get(url, stream=True, timeout=DOWNLOAD_TIMEOUT, proxies=proxies_for(url)) as response:
            if response.status_code != 200:
                raise FetchFailed(f"HTTP {response.status_code} {response.reason or ''}".rstrip())
            name = url_filename(url)
            modified = response.headers.get("Last-Modified")
            with open(target, "wb") as f:
                for chunk in response.iter_content(_CHUNK):
                    f.write(chunk)
                    for update in updates:
                        update(chunk)
    except requests.RequestException as err:
        from builder.registry.client import describe_exception

        raise FetchFailed(describe_exception(err)) from None
    return Fetched(target, name, modified)


class UrlFetches:
    """The bodies one build downloaded to key its ADD steps (from servers that send no ETag).

    The step that then misses copies the very bytes its key hashed: no second download, and no
    layer stored under the key of content that changed in between. A URL is asked about once
    per build, however many steps (or the cache probe before the build) name it.
    """

    def __init__(self, make_dir: Callable[[], Path]) -> None:
        self._make_dir = make_dir
        self._dir: Path | None = None
        self._answers: dict[str, str] = {}
        self._kept: dict[str, Fetched] = {}
        self._pins: dict[str, str] = {}  # URL -> the sha256 digest of the content this build read
        self._lock = threading.Lock()

    def pin(self, url: str, digest: str) -> None:
        """Note the digest of ``url``'s content as this build downloaded it."""
        with self._lock:
            self._pins[url] = digest

    def pins(self) -> dict[str, str]:
        """Every URL this build's steps depend on, with the sha256 digest of its content, as
        provenance materials. A URL whose step was a cache hit by its ETag was not downloaded:
        it is now (BuildKit knows the digest from its own cache); one that fails is left out."""
        with self._lock:
            wanted = [url for url in self._answers if url not in self._pins]
        for url in wanted:
            target = self._directory() / f"pin-{len(self._pins)}-{threading.get_ident()}"
            h = hashlib.sha256()
            try:
                fetch(url, target, [h.update])
            except FetchFailed:
                continue
            finally:
                target.unlink(missing_ok=True)
            self.pin(url, f"sha256:{h.hexdigest()}")
        with self._lock:
            return dict(self._pins)

    def _directory(self) -> Path:
        with self._lock:
            if self._dir is None:
                self._dir = self._make_dir()
                self._dir.mkdir()
            return self._dir

    def validator(self, url: str) -> str:
        """What says the URL's content changed: its ETag (BuildKit trusts one too), else the digest
        of the content itself (a Last-Modified of one-second granularity, or none, cannot tell)."""
        with self._lock:
            answer = self._answers.get(url)
        if answer is None:
            answer = self._ask(url)
            with self._lock:
                answer = self._answers.setdefault(url, answer)
        return answer

    def _ask(self, url: str) -> str:
        import requests
        import xxhash

        try:
            response = requests.head(url, allow_redirects=True, timeout=30, proxies=proxies_for(url))
        except requests.RequestException as err:
            return f"unreachable ({type(err).__name__})"
        etag = response.headers.get("ETag") if response.ok else None
        if etag:
            return f"etag {etag}"
        target = self._directory() / f"url-{len(self._answers)}-{threading.get_ident()}"
        h = xxhash.xxh3_128()
        sha = hashlib.sha256()
        try:
            fetched = fetch(url, target, [h.update, sha.update])
        except FetchFailed as err:
            target.unlink(missing_ok=True)
            return str(err)
        with self._lock:
            self._kept.setdefault(url, fetched)
            self._pins.setdefault(url, f"sha256:{sha.hexdigest()}")
        return f"content {h.hexdigest()}"

    def take(self, url: str, target: Path) -> Fetched | None:
        """The body keying fetched, linked (or copied) to ``target``; None when there is none."""
        with self._lock:
            fetched = self._kept.get(url)
        if fetched is None:
            return None
        try:
            os.link(fetched.path, target)
        except OSError:
            shutil.copyfile(fetched.path, target)
        return replace(fetched, path=target)

    def close(self) -> None:
        with self._lock:
            if self._dir is not None:
                shutil.rmtree(self._dir, ignore_errors=True)
                self._dir = None
            self._kept.clear()
            self._answers.clear()
            self._pins.clear()
