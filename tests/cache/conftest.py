"""Cache fixtures: fresh stores holding the busybox base, a context writer, a counting proxy."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from tests.engine.conftest import BASE, base_archive  # noqa: F401 - the fixture, shared
from tests.helpers.tools import run_pybuild

__all__ = ["BASE"]


class Machine:
    """One build machine of a farm: its own store ($PYBUILD_ROOT) with the base loaded."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def build(self, ctx: Path, *args: str, check: bool = True, env: dict[str, str] | None = None,  # type: ignore[no-untyped-def]
              timeout: float = 600):
        return run_pybuild("build", "--progress", "plain", *args, str(ctx), root=self.root,
                           check=check, env=env, timeout=timeout)

    def run(self, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
        return run_pybuild(*args, root=self.root, check=check)


@pytest.fixture
def machines(base_archive: Path, tmp_path: Path):  # noqa: F811
    """A factory of fresh machines (stores with busybox:local loaded)."""
    made = 0

    def make() -> Machine:
        nonlocal made
        made += 1
        root = tmp_path / f"store{made}"
        run_pybuild("load", "-i", str(base_archive), root=root, check=True)
        return Machine(root)

    return make


def write_context(ctx: Path, files: dict[str, str | bytes]) -> Path:
    ctx.mkdir(parents=True, exist_ok=True)
    for rel, content in files.items():
        path = ctx / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return ctx


def steps(output: bytes) -> dict[str, int]:
    """How many steps of a ``--progress plain`` log were CACHED and how many ran (DONE): the
    Dockerfile's (``#3 [build 2/4] RUN ...``), not the export's (``exporting to image``)."""
    text = output.decode(errors="replace")
    titled = {n for n, _ in re.findall(r"^#(\d+) (\[.*)$", text, re.M)}
    return {"cached": sum(n in titled for n in re.findall(r"^#(\d+) CACHED", text, re.M)),
            "done": sum(n in titled for n in re.findall(r"^#(\d+) DONE", text, re.M))}


def ran(output: bytes) -> list[str]:
    """The instructions that executed (their step line is followed by DONE, not CACHED)."""
    text = output.decode(errors="replace")
    titles = dict(re.findall(r"^#(\d+) (\[.*)$", text, re.M))
    done = re.findall(r"^#(\d+) DONE", text, re.M)
    return [titles[n] for n in done if n in titles and "FROM" not in titles[n].split("]", 1)[1][:6]]


class CountingProxy:
    """A loopback HTTP proxy in front of the registry that records every request it passes."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                with proxy.lock:
                    proxy.requests.append((self.command, self.path))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection")}
                upstream = requests.request(self.command, f"http://{proxy.upstream}{self.path}",
                                            headers=headers, data=body, allow_redirects=False,
                                            stream=False, timeout=60)
                content = b"" if self.command == "HEAD" else upstream.content
                self.send_response(upstream.status_code)
                for k, v in upstream.headers.items():
                    if k.lower() in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                        continue
                    self.send_header(k, v)
                self.send_header("Content-Length", upstream.headers.get("Content-Length", "0")
                                 if self.command == "HEAD" else str(len(content)))
                self.end_headers()
                if content:
                    self.wfile.write(content)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def blob_gets(self) -> list[str]:
        with self.lock:
            return [path.rsplit("/", 1)[1] for method, path in self.requests
                    if method == "GET" and "/blobs/sha256:" in path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(registry: str) -> Iterator[CountingProxy]:
    p = CountingProxy(registry)
    yield p
    p.close()
