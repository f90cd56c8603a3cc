"""One client connection of the HTTP front (:mod:`setec_core.http.front`).

A connection reads requests with llhttp (``httptools``), holds each until it is whole,
hands it to the front's app threads, and writes the answers in order. Its state says
what it is doing, and the front's trackers keep connections by state, oldest first:
``IDLE`` (between requests), ``READING`` (a request, or a TLS handshake, under way) and
``BUSY`` (a request is with the app). Each state but ``BUSY`` has a deadline, which the
front's sweep enforces.
"""

from __future__ import annotations

import asyncio
import io
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from setec_core.http.front import Front, Listener, Tracker

IDLE, READING, BUSY = 0, 1, 2
#: Whole requests a client may pipeline ahead of the one being answered before the
#: connection stops reading from it.
MAX_QUEUED = 8


@dataclass(slots=True)
class Request:
    """One request as it is read: head fields, then its body in pieces."""

    method: str = ""
    url: bytes = b""
    head: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: list[bytes] = field(default_factory=list)
    size: int = 0
    limit: int = 0
    keep_alive: bool = True
    http10: bool = False


class Refusal(Exception):  # noqa: N818 - control flow inside the front
    """Answer the request being read with ``code`` and ``reason``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Connection(asyncio.Protocol):
    """A client connection (an asyncio protocol, on the front's loop thread)."""

    def __init__(self, front: Front, source: str, tracker: Tracker, listener: Listener) -> None:
        self.front = front
        self.source = source
        self.tracker = tracker
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self.handshaking = False
        self.state = -1
        self.deadline = 0.0
        self.peer: tuple[str, int] = ("", 0)
        self.parser = httptools.HttpRequestParser(self)
        self.current: Request | None = None
        # Bytes received while a request head is incomplete. llhttp keeps a header until
        # its line ends, so this is what bounds memory (to within one read, 256 KiB).
        self.in_head = True
        self.head_bytes = 0
        self.queue: list[Request] = []
        self.closing = False
        self.write_paused = False
        self.read_paused = False
        self.base_environ: dict[str, Any] | None = None
        front.stats.open += 1
        # A new connection must begin its first request within read_timeout.
        self.enter(IDLE, front.limits.read_timeout)

    # --- state -------------------------------------------------------------------

    def enter(self, state: int, timeout: float = 0.0) -> None:
        """Move to ``state`` (at the young end of the trackers), with a deadline
        ``timeout`` seconds from now (0: none)."""
        front = self.front
        if self.state != state:
            if self.state >= 0:
                self.tracker.groups[self.state].pop(self, None)
                front.all.groups[self.state].pop(self, None)
            self.state = state
            self.tracker.groups[state][self] = None
            front.all.groups[state][self] = None
        self.deadline = time.monotonic() + timeout if timeout else 0.0

    def forget(self) -> None:
        """Drop this connection from the trackers (it is closed, or closing)."""
        if self.state >= 0:
            self.tracker.groups[self.state].pop(self, None)
            self.front.all.groups[self.state].pop(self, None)
            self.state = -1
            self.front.forget(self)

    def abort(self, reason: str) -> None:
        """Close at once, without an answer, for ``reason`` (counted)."""
        self.front.stats.close(reason)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self.forget()

    def expire(self) -> None:
        """The deadline passed: 408 if a request was under way, else just close."""
        if self.state == READING and self.transport is not None:
            self.refuse(408, "the request was not received in time")
            return
        self.abort({IDLE: "idle", READING: "read-timeout", BUSY: "write-timeout"}[self.state])

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.peer = (str(peer[0]), int(peer[1]))
        if self.handshaking:
            # The TLS handshake is done; the first request may begin.
            self.handshaking = False
            self.enter(IDLE, self.front.limits.read_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.forget()

    def pause_writing(self) -> None:
        # The client is not reading what we send: read nothing more from it until it
        # does, and give up on it after write_timeout.
        self.write_paused = True
        self._pause_reading()
        self.deadline = time.monotonic() + self.front.limits.write_timeout

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.state == IDLE:
            self.deadline = time.monotonic() + self.front.limits.idle_timeout
        self._maybe_resume_reading()

    def eof_received(self) -> bool:
        # The client will send nothing more (it may still read): answer what it sent
        # whole, say so if it stopped halfway through a request, then close.
        self.closing = True
        if self.current is not None and self.state != BUSY and not self.queue:
            if self.in_head:
                self.refuse(400, "the request ended before its headers did")
            else:
                self.refuse(400, "request body shorter than its Content-Length")
            return True
        if self.state != BUSY and not self.queue:
            self.close("eof")
            return False
        return True

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        if self.state == IDLE:
            # A request's first byte: it now has read_timeout to arrive whole.
            self.enter(READING, self.front.limits.read_timeout)
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
            if self.in_head and self.head_bytes > self.front.limits.max_header_bytes:
                raise Refusal(431, "request headers too large")
        except Refusal as r:
            self.refuse(r.code, r.reason)
            return
        except httptools.HttpParserCallbackError as e:
            if isinstance(e.__context__, Refusal):
                self.refuse(e.__context__.code, e.__context__.reason)
                return
            raise
        except httptools.HttpParserUpgrade:
            # Upgrades (websocket, h2c) are not offered: answer what was read, then close.
            if not self.queue:
                self.refuse(400, "protocol upgrades are not supported")
                return
            for request in self.queue:
                request.keep_alive = False
            self.closing = True
        except httptools.HttpParserError as e:
            # llhttp's reason names the rule, never the bytes that broke it.
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            self.refuse(400, f"malformed request: {reason}")
            return
        if len(self.queue) >= MAX_QUEUED:
            self._pause_reading()
        self.next()

    # --- llhttp callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request()

    def on_url(self, url: bytes) -> None:
        request = self.current
        assert request is not None
        request.url += url
        self._count_head(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count_head(len(name) + len(value) + 4)
        # A name with "_" would reach WSGI as its hyphenated twin: drop it (module docs
        # of setec_core.http.front).
        if b"_" not in name:
            assert self.current is not None
            self.current.headers.append((name, value))

    def _count_head(self, size: int) -> None:
        # The parsed size of the head; data_received bounds what llhttp buffers.
        request = self.current
        assert request is not None
        request.head += size
        if request.head > self.front.limits.max_header_bytes:
            raise Refusal(431, "request headers too large")

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        self.in_head = False
        parser = self.parser
        request.method = parser.get_method().decode("ascii", "replace")
        request.http10 = parser.get_http_version() == "1.0"
        request.keep_alive = parser.should_keep_alive()
        path = request.url.partition(b"?")[0].decode("latin-1")
        request.limit = self.front.body_limit(request.method, path)
        expect = b""
        for name, value in request.headers:
            lower = name.lower()
            if lower == b"content-length":
                # llhttp has checked it is digits, and is the only one.
                if int(value) > request.limit:
                    raise Refusal(413, _too_large(request.limit))
            elif lower == b"expect":
                expect = value.strip().lower()
        if expect == b"100-continue" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        request.size += len(body)
        if request.size > request.limit:
            raise Refusal(413, _too_large(request.limit))
        request.body.append(body)

    def on_message_complete(self) -> None:
        assert self.current is not None
        self.queue.append(self.current)
        self.current = None
        self.in_head = True
        self.head_bytes = 0

    # --- answering ---------------------------------------------------------------

    def next(self) -> None:
        """Hand the next whole request to the app, unless one is there already."""
        if self.state == BUSY or not self.queue or self.transport is None:
            return
        self.enter(BUSY)
        self.front.submit(self, self.queue.pop(0))

    def respond(self, data: bytes, keep_alive: bool) -> None:
        """Write an answer from the app (on the loop thread), then go on or close."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if not keep_alive or self.front.stopping:
            self.close("done")
            return
        if self.queue:
            self.front.submit(self, self.queue.pop(0))  # still BUSY
        elif self.closing:
            self.close("eof")
            return
        elif self.current is not None:
            self.enter(READING, self.front.limits.read_timeout)
        else:
            self.enter(IDLE, self.front.limits.idle_timeout)
        if self.write_paused:
            self.deadline = time.monotonic() + self.front.limits.write_timeout
        self._maybe_resume_reading()

    def refuse(self, code: int, reason: str) -> None:
        """Answer ``code`` with the one-line ``reason`` and close; the request goes no
        further."""
        front = self.front
        front.stats.refuse(code)
        transport = self.transport
        if transport is not None and not transport.is_closing():
            transport.write(front.plain_answer(code, reason))
        self.close(f"refused-{code}")

    def close(self, reason: str) -> None:
        """Close once what is written has been sent."""
        self.front.stats.close(reason)
        self.queue.clear()
        if self.transport is not None:
            self.transport.close()
        self.forget()

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self.read_paused
            and not self.write_paused
            and len(self.queue) < MAX_QUEUED
            and self.transport is not None
        ):
            self.read_paused = False
            self.transport.resume_reading()

    # --- WSGI --------------------------------------------------------------------

    def environ(self, request: Request) -> dict[str, Any]:
        """Return the WSGI environ of ``request`` (called on an app thread)."""
        base = self.base_environ
        if base is None:
            base = self.base_environ = self._base_environ()
        path, _, query = request.url.partition(b"?")
        if b"#" in path or not path.startswith(b"/"):
            # A fragment, or an absolute-form target (http://host/path): keep the path.
            path = b"/" + urllib.parse.urlsplit(path.partition(b"#")[0]).path.lstrip(b"/")
        if b"%" in path:
            path = urllib.parse.unquote_to_bytes(path)
        body = b"".join(request.body)
        environ = base.copy()
        environ["REQUEST_METHOD"] = request.method
        environ["PATH_INFO"] = path.decode("latin-1")
        environ["QUERY_STRING"] = query.partition(b"#")[0].decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/1.0" if request.http10 else "HTTP/1.1"
        environ["CONTENT_LENGTH"] = str(len(body)) if body else ""
        environ["wsgi.input"] = io.BytesIO(body)
        for name, value in request.headers:
            key = _ENVIRON_KEYS.get(name)
            if key is None:
                key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
                if len(_ENVIRON_KEYS) < 512:
                    _ENVIRON_KEYS[name] = key
            if key == "HTTP_CONTENT_TYPE":
                environ["CONTENT_TYPE"] = value.decode("latin-1")
            elif key not in _FRAMING:
                # The body is whole: CONTENT_LENGTH above is its size, however it came.
                text = value.decode("latin-1")
                environ[key] = f"{environ[key]}, {text}" if key in environ else text
        return environ

    def _base_environ(self) -> dict[str, Any]:
        listener = self.listener
        unix = listener.path is not None
        tls = self.front.ssl_context is not None and not unix
        return {
            "SCRIPT_NAME": "",
            "SERVER_NAME": "localhost" if unix else listener.host,
            "SERVER_PORT": "" if unix else str(listener.port),
            "REMOTE_ADDR": self.peer[0],
            "REMOTE_PORT": str(self.peer[1]) if self.peer[0] else "",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if tls else "http",
            "wsgi.input_terminated": True,
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": False,
            "wsgi.run_once": False,
            "setec.transport": "unix" if unix else "tcp",
        }


#: Header name (as sent) -> environ key, filled as names are seen.
_ENVIRON_KEYS: dict[bytes, str] = {}
_FRAMING = frozenset({"HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"})


def _too_large(limit: int) -> str:
    return f"request body too large: the limit is {limit} bytes"
