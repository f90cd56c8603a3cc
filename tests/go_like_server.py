"""A stand-in for a Go setec server, for the client's fallbacks (tests/ is on sys.path:
import as ``from go_like_server import GoLikeServer``).

It serves Go's endpoints by passing them, bytes for bytes, to a real server of ours, and
answers any other path as Go's ServeMux does a path it does not route (``404 page not
found``), so the extensions our server offers are out of reach, as on a Go server.
Without a server of ours behind it, it answers Go's endpoints ``404 not found`` too:
enough to see what a client sends, and that it sends nothing beyond Go's API.
"""

from __future__ import annotations

import http.server
import threading
from typing import Any, ClassVar

import requests

from setec_core.wire import ENDPOINTS

#: The paths Go setec serves.
GO_PATHS = frozenset(e.path for e in ENDPOINTS if e.extension is None)


class _Handler(http.server.BaseHTTPRequestHandler):
    upstream: ClassVar[str | None] = None
    sent: ClassVar[list[tuple[str, bytes]]] = []
    lock: ClassVar[threading.Lock] = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            self.sent.append((self.path, body))
        if self.path not in GO_PATHS:
            self._answer(404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        if self.upstream is None:
            self._answer(404, b"not found\n", "text/plain; charset=utf-8")
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        answer = requests.post(self.upstream + self.path, data=body, headers=headers, timeout=30)
        self._answer(answer.status_code, answer.content, answer.headers.get("Content-Type", ""))

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class GoLikeServer:
    """A loopback server in front of ``upstream`` (a base URL) that offers only Go's
    API; with no ``upstream``, one that answers every request 404. :attr:`url` is its
    base URL; :attr:`seen` the paths it was sent, in order, and :attr:`sent` the paths
    with their bodies. Use it as a context manager."""

    def __init__(self, upstream: str | None = None) -> None:
        handler = type("Handler", (_Handler,), {"upstream": upstream, "sent": []})
        self._handler = handler
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def seen(self) -> list[str]:
        """The paths requested so far."""
        return [path for path, _ in self.sent]

    @property
    def sent(self) -> list[tuple[str, bytes]]:
        """The paths requested so far, each with the body it was sent."""
        with self._handler.lock:
            return list(self._handler.sent)

    def close(self) -> None:
        """Stop serving."""
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> GoLikeServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
