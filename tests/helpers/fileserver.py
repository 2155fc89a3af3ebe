"""A loopback HTTP server of in-memory files, for ADD URLs and URL contexts in tests."""

from __future__ import annotations

import contextlib
import http.server
import threading
from collections.abc import Iterator, Mapping


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

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
