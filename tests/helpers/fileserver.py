"""Loopback HTTP servers: in-memory files for ADD URLs and URL contexts, git repositories behind basic auth."""

from __future__ import annotations

import contextlib
import http.server
import os
import subprocess
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path


@contextlib.contextmanager
def serve_handler(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` served on a free loopback port for the body of the with: its base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def serve_files(
    files: Mapping[str, bytes], headers: Mapping[str, str] | None = None, log: list[str] | None = None,
) -> Iterator[str]:
    """Serve ``files`` (path -> body, read at each request, so a test may change them) with
    ``headers`` on every answer (none by default: no ETag, no Last-Modified); yields the base URL.
    Each request is appended to ``log`` as ``"METHOD /path"``."""
    extra = dict(headers or {})
    requests = log if log is not None else []

    class Handler(http.server.BaseHTTPRequestHandler):
        def _head(self) -> bytes | None:
            requests.append(f"{self.command} {self.path}")
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return None
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            for key, value in extra.items():
                self.send_header(key, value)
            self.end_headers()
            return body

        def do_HEAD(self) -> None:
            self._head()

        def do_GET(self) -> None:
            body = self._head()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with serve_handler(Handler) as url:
        yield url


@contextlib.contextmanager
def serve_git(project_root: Path, authorization: str) -> Iterator[str]:
    """Serve the repositories under ``project_root`` over git's smart HTTP (``git http-backend``)
    to clients that send exactly ``authorization`` (a basic-auth header value); yields the base URL."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if self.headers.get("Authorization") != authorization:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            env = {**os.environ, "GIT_PROJECT_ROOT": str(project_root), "GIT_HTTP_EXPORT_ALL": "1",
                   "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": self.command,
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(length),
                   "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")}
            body = self.rfile.read(length) if length else b""
            out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
            head, _, rest = out.partition(b"\r\n\r\n")
            status, fields = 200, []
            for line in head.decode().split("\r\n"):
                key, _, value = line.partition(": ")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    fields.append((key, value))
            self.send_response(status)
            for key, value in fields:
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            self.wfile.write(rest)

        do_GET = do_POST = _serve

        def log_message(self, *args: object) -> None:
            pass

    with serve_handler(Handler) as url:
        yield url
