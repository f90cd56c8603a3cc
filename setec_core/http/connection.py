"""One client connection of the HTTP front (:mod:`setec_core.http.front`).

A connection reads requests with llhttp (``httptools``), holds each until it is whole,
hands it to the front's app threads, and writes the answers in order. Its state says
what it is doing, and the front's trackers keep connections by state, oldest first:
``IDLE`` (between requests), ``READING`` (a request, or a TLS handshake, under way),
``BUSY`` (a request is with the app) and ``CLOSING`` (closed by us, its last answer
still being sent). Each state but ``BUSY`` has a deadline, which the front's sweep
enforces; a ``BUSY`` one has one too while the client leaves answers unread.

What one connection may hold is bounded: at most :data:`MAX_QUEUED` whole requests
waiting behind the one with the app (bytes that would make more wait unparsed, and the
connection stops reading), a request's raw bytes (head, body and chunk framing) to a
small multiple of its limits, and its answers to the socket's buffer plus
``write_timeout``.
"""

from __future__ import annotations

import asyncio
import collections
import io
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from setec_core.http.front import Front, Listener, Tracker

IDLE, READING, BUSY, CLOSING = 0, 1, 2, 3
#: Whole requests a client may pipeline ahead of the one being answered before the
#: connection stops reading from it.
MAX_QUEUED = 8
#: Bytes handed to llhttp at a time outside a body, so that a read full of tiny
#: pipelined requests turns into at most a few dozen parsed ones before the queue is
#: checked (llhttp cannot be paused mid-read); inside a body, :data:`BODY_PIECE`.
FEED_PIECE = 1024
BODY_PIECE = 65536


@dataclass(slots=True)
class Request:
    """One request as it is read: head fields, then its body. Its ``repr`` leaves out
    the headers and the body, which hold credentials and secret values."""

    method: str = ""
    url: bytes = b""
    head: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list, repr=False)
    body: bytearray = field(default_factory=bytearray, repr=False)
    limit: int = 0
    keep_alive: bool = True
    http10: bool = False
    has_host: bool = False
    # Asked for "100 Continue" while another request was being answered: sent when
    # this one's turn comes.
    continue_pending: bool = False


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
        self.parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        self.current: Request | None = None
        self.in_head = True
        # Raw bytes fed to llhttp since the current request began (and as of its last
        # body bytes): what bounds memory while llhttp buffers a header or trailer
        # line, or chunk framing multiplies a body.
        self.raw = 0
        self.raw_at_body = 0
        self.queue: collections.deque[Request] = collections.deque()
        self.unfed = b""  # bytes read but not parsed yet, while the queue is full
        self.refusal: tuple[int, str] | None = None  # to answer once the queue is done
        self.reading_done = False  # nothing more will be parsed from this client
        self.eof = False
        self.write_paused = False
        self.read_paused = False
        self.base_environ: dict[str, Any] | None = None
        # Whether its answer waits on the loop (a watch; the front's ``parked``).
        self.parked = False
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
        """Drop this connection from the trackers (its socket is gone), and the parser,
        which refers back to it, so that nothing waits for the cyclic collector."""
        if self.parked:
            self.front.unpark(self)  # the client left: free the watch now
        if self.state >= 0:
            self.tracker.groups[self.state].pop(self, None)
            self.front.all.groups[self.state].pop(self, None)
            self.state = -1
            self.front.forget(self)
        self._drop_requests()

    def _drop_requests(self) -> None:
        self.parser = None
        self.current = None
        self.queue.clear()
        self.unfed = b""

    def abort(self, reason: str) -> None:
        """Close at once, without an answer, for ``reason`` (counted)."""
        self.front.stats.close(reason)
        if self.transport is not None:
            self.transport.abort()
            self.transport = None
        self.forget()

    def expire(self) -> None:
        """The deadline passed: 408 if a request was under way, else just close."""
        if self.state == READING and self.transport is not None and not self.handshaking:
            self.refuse(408, "the request was not received in time")
            return
        if self.write_paused or self.state in (BUSY, CLOSING):
            self.abort("write-timeout")  # an answer left unread
        else:
            self.abort("idle" if self.state == IDLE else "read-timeout")

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
        elif self.state == BUSY:
            self.deadline = 0.0
        self._maybe_resume_reading()

    def eof_received(self) -> bool:
        # The client will send nothing more (it may still read): answer what it sent
        # whole, say so if it stopped halfway through a request, then close.
        self.eof = True
        self.reading_done = True
        if self.parked:
            # A client that stops sending while its watch waits has gone, as Go's
            # server takes it: the watch is freed now rather than at its timeout.
            self.abort("left-while-waiting")
            return False
        if self.state == BUSY or self.queue:
            return True  # answered, then closed, by respond()
        if self.current is not None:
            if self.in_head:
                self.refuse(400, "the request ended before its headers did")
            else:
                self.refuse(400, "request body shorter than its Content-Length")
        else:
            self.close("eof")
        return True

    def data_received(self, data: bytes) -> None:
        if self.reading_done or self.state == CLOSING:
            return
        if self.state == IDLE:
            # A request's first byte: it now has read_timeout to arrive whole.
            self.enter(READING, self.front.limits.read_timeout)
        self.unfed = self.unfed + data if self.unfed else data
        self._feed()

    def _feed(self) -> None:
        # Parse what was read, a piece at a time, until the queue is full; keep the rest
        # for when it drains (and read nothing more meanwhile).
        data = memoryview(self.unfed)
        limits = self.front.limits
        at = 0
        while at < len(data) and len(self.queue) < MAX_QUEUED:
            if self.reading_done or self.refusal is not None or self.parser is None:
                at = len(data)  # nothing after this is read
                break
            size = BODY_PIECE if not self.in_head and self.current is not None else FEED_PIECE
            piece = data[at : at + size]
            at += len(piece)
            self.raw += len(piece)
            try:
                self.parser.feed_data(piece)
                self._check_raw(limits.max_header_bytes)
            except Refusal as r:
                self._refuse_after_queue(r.code, r.reason)
            except httptools.HttpParserCallbackError as e:
                if not isinstance(e.__context__, Refusal):
                    raise
                self._refuse_after_queue(e.__context__.code, e.__context__.reason)
            except httptools.HttpParserUpgrade:
                # Upgrades (websocket, h2c) are not offered: answer what was read whole,
                # then close.
                if not self.queue:
                    self._refuse_after_queue(400, "protocol upgrades are not supported")
                for request in self.queue:
                    request.keep_alive = False
                self.reading_done = True
            except httptools.HttpParserError as e:
                if not self.reading_done:
                    # llhttp's reason names the rule, never the bytes that broke it.
                    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                    self._refuse_after_queue(400, f"malformed request: {reason}")
                # else: bytes after a request that closes the connection: ignored.
        self.unfed = bytes(data[at:]) if at < len(data) else b""
        if self.unfed:
            self._pause_reading()
        self.next()

    def _check_raw(self, max_header_bytes: int) -> None:
        # What llhttp may be buffering, or what framing costs beyond the content, is
        # bounded by the bytes fed: a head, chunk headers and trailers at most
        # max_header_bytes each, and a body's chunk framing at most four times its size.
        request = self.current
        if self.in_head:
            if self.raw > max_header_bytes:
                raise Refusal(431, "request headers too large")
        elif request is not None:
            if self.raw - self.raw_at_body > max_header_bytes + FEED_PIECE:
                raise Refusal(431, "request trailers or chunk headers too large")
            if self.raw > 2 * max_header_bytes + 4 * len(request.body) + BODY_PIECE:
                raise Refusal(413, "request body framing too large for its content")

    # --- llhttp callbacks --------------------------------------------------------

    def on_message_begin(self) -> None:
        self.current = Request()

    def on_url(self, url: bytes) -> None:
        request = self.current
        assert request is not None
        request.url += url
        self._count_head(request, len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        request = self.current
        assert request is not None
        self._count_head(request, len(name) + len(value) + 4)
        if not self.in_head:
            # A trailer (after a chunked body): never merged into the headers, where a
            # proxy that forwards trailers would let a client set any header it strips.
            return
        # A name with "_" would reach WSGI as its hyphenated twin: drop it (module docs
        # of setec_core.http.front).
        if b"_" in name:
            return
        if name.lower() == b"host":
            if request.has_host:
                raise Refusal(400, "malformed request: more than one Host header")
            request.has_host = True
        request.headers.append((name, value))

    def _count_head(self, request: Request, size: int) -> None:
        request.head += size
        if request.head > self.front.limits.max_header_bytes:
            raise Refusal(431, "request headers too large")

    def on_headers_complete(self) -> None:
        request = self.current
        assert request is not None
        parser = self.parser
        assert parser is not None
        self.in_head = False
        request.method = parser.get_method().decode("ascii", "replace")
        request.http10 = parser.get_http_version() == "1.0"
        request.keep_alive = parser.should_keep_alive()
        request.head = 0  # from here on it counts the trailers
        self.raw_at_body = self.raw
        _check_target(request)
        request.limit = self.front.body_limit(request.method, _path(request.url))
        expect = b""
        for name, value in request.headers:
            lower = name.lower()
            if lower == b"content-length":
                # llhttp has checked it is digits, and is the only one.
                if int(value) > request.limit:
                    raise Refusal(413, self._too_large(request))
            elif lower == b"transfer-encoding":
                if request.http10:
                    raise Refusal(400, "malformed request: Transfer-Encoding in HTTP/1.0")
                if value.strip().lower() != b"chunked":
                    raise Refusal(501, "only the chunked transfer coding is supported")
            elif lower == b"expect":
                expect = value.strip().lower()
        if expect == b"100-continue":
            if self.state != BUSY and not self.queue and self.transport is not None:
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            else:
                request.continue_pending = True

    def _too_large(self, request: Request) -> str:
        return self.front.too_large_reason(request.method, _path(request.url))

    def on_body(self, body: bytes) -> None:
        request = self.current
        assert request is not None
        if len(request.body) + len(body) > request.limit:
            raise Refusal(413, self._too_large(request))
        request.body += body
        self.raw_at_body = self.raw

    def on_message_complete(self) -> None:
        request = self.current
        assert request is not None
        self.queue.append(request)
        self.current = None
        self.in_head = True
        self.raw = self.raw_at_body = 0
        if not request.keep_alive:
            self.reading_done = True  # whatever follows is not read

    # --- answering ---------------------------------------------------------------

    def next(self) -> None:
        """Hand the next whole request to the app, unless one is there already; or
        give a refusal waiting for the queue to drain."""
        if self.state in (BUSY, CLOSING) or self.transport is None:
            return
        if self.queue:
            self.enter(BUSY)
            self.front.submit(self, self.queue.popleft())
        elif self.refusal is not None:
            self.refuse(*self.refusal)

    def respond(self, data: bytes, keep_alive: bool) -> None:
        """Write an answer from the app (on the loop thread), then go on or close."""
        transport = self.transport
        if transport is None or transport.is_closing() or self.state != BUSY:
            return
        transport.write(data)
        if not keep_alive or self.front.stopping:
            self.close("done")
            return
        if self.queue:
            self.front.submit(self, self.queue.popleft())  # still BUSY
            if self.write_paused:
                self.deadline = time.monotonic() + self.front.limits.write_timeout
            return
        if self.refusal is not None:
            self.refuse(*self.refusal)
            return
        if self.eof:
            self.close("eof")
            return
        current = self.current
        if current is not None:
            self.enter(READING, self.front.limits.read_timeout)
            if current.continue_pending:
                current.continue_pending = False
                transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        else:
            self.enter(IDLE, self.front.limits.idle_timeout)
        if self.write_paused:
            self.deadline = time.monotonic() + self.front.limits.write_timeout
        if self.unfed:
            self._feed()
        self._maybe_resume_reading()

    def _refuse_after_queue(self, code: int, reason: str) -> None:
        # A request that cannot be read: nothing after it is read, and its answer comes
        # after those of the requests before it (now, if there are none).
        self.refusal = (code, reason)
        self.reading_done = True
        self.current = None

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
        """Close once what is written has been sent: until then the connection stays
        counted, as ``CLOSING``, for at most ``write_timeout``."""
        self.front.stats.close(reason)
        self._drop_requests()
        self.reading_done = True
        transport = self.transport
        if transport is None:
            self.forget()
            return
        transport.close()
        self.enter(CLOSING, self.front.limits.write_timeout)
        self.front.check_drained()  # no longer busy: a stop may go on

    def _pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def _maybe_resume_reading(self) -> None:
        if (
            self.read_paused
            and not self.write_paused
            and not self.unfed
            and len(self.queue) < MAX_QUEUED
            and self.transport is not None
            and not self.transport.is_closing()
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
        path = _path(request.url).encode("latin-1") if not path.startswith(b"/") else path
        path = path.partition(b"#")[0]
        if b"%" in path:
            path = urllib.parse.unquote_to_bytes(path)
        body = bytes(request.body)
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
            # This front holds an answer back until its audit entries are durable.
            "setec.defer_audit": True,
            # ... and holds an answer that waits (a watch) without a thread.
            "setec.park_answers": True,
        }


#: Header name (as sent) -> environ key, filled as names are seen.
_ENVIRON_KEYS: dict[bytes, str] = {}
_FRAMING = frozenset({"HTTP_CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING"})


def _check_target(request: Request) -> None:
    """Refuse a request target that is not a path (origin form), an absolute URL whose
    path can be taken, or ``*`` for OPTIONS."""
    url = request.url
    if url.startswith(b"/") or (url == b"*" and request.method == "OPTIONS"):
        return
    if url[:7].lower() == b"http://" or url[:8].lower() == b"https://":
        try:
            urllib.parse.urlsplit(url)
        except ValueError:
            pass
        else:
            return
    raise Refusal(400, "malformed request: the request target is not a path or a URL")


def _path(url: bytes) -> str:
    """The path of a request target (origin or absolute form), undecoded."""
    if url.startswith(b"/"):
        return url.partition(b"?")[0].decode("latin-1")
    if url == b"*":
        return "*"
    path = urllib.parse.urlsplit(url).path.decode("latin-1")
    return path if path.startswith("/") else "/" + path
