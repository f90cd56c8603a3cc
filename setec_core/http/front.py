"""The HTTP front: an HTTP/1.1 server on one event loop that hands the WSGI app only
whole requests.

Why this shape (docs/architecture.md, "The HTTP front"): a thread-per-connection server
gives every client a worker, so 32 clients that trickle a header byte every two seconds,
or one TLS client that never sends its ClientHello, stall everybody. Here one event-loop
thread owns every socket: it accepts, runs TLS handshakes, parses requests with llhttp
(the ``httptools`` binding, the parser Node.js uses), enforces the deadlines and limits
below, and writes responses. The WSGI app runs on a pool of worker threads and sees a
request only once the request has been read completely, so a slow or silent client
costs a socket and a few kilobytes, never a worker.

The rules, each answered with a one-line plain-text reason where an answer is possible:

* a connection must start its first request within ``read_timeout`` of being accepted
  (for TLS, the handshake too), and every request must be read whole, head and body,
  within ``read_timeout`` of its first byte (408, then the connection is closed);
* a connection with no request in progress is closed after ``idle_timeout``;
* a response the client does not read within ``write_timeout`` is abandoned;
* request heads over ``max_header_bytes`` get 431, bodies over the app's limit 413
  (a declared ``Content-Length`` before any of the body is read);
* llhttp is strict: duplicate ``Content-Length`` headers, ``Transfer-Encoding`` with
  ``Content-Length``, obsolete line folding, a space before a header's colon and bare
  LF line ends are all 400, and so are a second ``Host`` and a target that is neither a
  path nor a URL; a transfer coding other than ``chunked`` is 501. Trailers are dropped
  (and over ``max_header_bytes``, 431);
* answers go out in order: a request the front refuses is answered after those before
  it, and nothing after a ``Connection: close`` request is read. A connection the server
  closes stays counted until its answer is sent, for at most ``write_timeout``;
* header names containing ``_`` are dropped. WSGI spells ``Tailscale-User-Login`` and
  ``Tailscale_User_Login`` the same way (``HTTP_TAILSCALE_USER_LOGIN``), and proxies
  such as ``tailscale serve`` strip only the hyphenated spelling of the headers they
  set, so reading the other would let any caller forge them (nginx drops them too);
* at most ``max_connections_per_source`` connections per peer address and
  ``max_connections`` in all. A new connection over a cap is not refused: the source's
  most useless connection makes room (over the global cap, that of the source holding
  the most connections), an idle one first (the one idle longest), then the one that
  has been reading its request longest. Connections whose
  request is with the app are never closed for room, so a fresh client always gets in
  while a flood of silent or trickling connections churns.
"""

from __future__ import annotations

import asyncio
import asyncio.sslproto as sslproto
import collections
import contextlib
import errno
import logging
import os
import queue
import resource
import socket
import ssl
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from setec_core.http.connection import BUSY, CLOSING, IDLE, READING, Connection, Request
from setec_core.http.status import log_bug, too_large

if TYPE_CHECKING:
    from setec_core.audit import Deferral
    from setec_core.http.pending import ParkedAnswer

log = logging.getLogger("setec.http.front")

#: Seconds between sweeps for expired deadlines (and Date header refreshes).
SWEEP_INTERVAL = 0.25
#: File descriptors kept free for everything else the server opens (store, audit log,
#: KMS clients, tailscaled's socket) when the connection cap comes from the limit.
RESERVED_FDS = 128
#: The default cap on connections, whatever the open-file limit allows: an idle TLS
#: connection holds about 95 KB (OpenSSL's buffers), a plain one about 2 KB.
DEFAULT_MAX_CONNECTIONS = 8192
_REASONS = {s.value: s.phrase for s in HTTPStatus}

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Limits:
    """What a client may take and hold; see the module docs for each rule.

    :param read_timeout: seconds for a TLS handshake, for a new connection's first
        request to begin, and for each request from its first byte to its last.
    :param idle_timeout: seconds a connection may stay open with no request in progress.
    :param write_timeout: seconds a client may leave an answer unread.
    :param max_header_bytes: the longest request line plus headers.
    :param max_body_bytes: the longest body, unless the app's ``body_limit(method,
        path)`` says otherwise for a route.
    :param max_connections: connections open at once (TLS handshakes included); 0 means
        :data:`DEFAULT_MAX_CONNECTIONS`, or the open-file limit less
        :data:`RESERVED_FDS` if that is lower.
    :param max_connections_per_source: connections open at once from one address (all
        unix-socket peers count as one source).
    """

    read_timeout: float = 10.0
    idle_timeout: float = 60.0
    write_timeout: float = 10.0
    max_header_bytes: int = 64 * 1024
    max_body_bytes: int = 1 << 20
    max_connections: int = 0
    max_connections_per_source: int = 2048


@dataclass(frozen=True)
class Listener:
    """Where to listen: ``host`` and ``port`` for TCP, or ``path`` for a unix socket.

    :param fd: a socket already bound and listening at that address, by the process
        that handed it down (``setec-serve --workers`` binds once for all its workers).
        The front serves it instead of binding, and at stop closes it but leaves a unix
        socket's file to its owner, for whom other processes may still serve on it.
    """

    host: str = "127.0.0.1"
    port: int = 0
    path: str | None = None
    fd: int | None = None


@dataclass
class FrontStats:
    """Counters for ``/metrics``: connections open now and accepted, connections closed
    by reason, and requests the front answered itself (never reaching the app) by
    status."""

    open: int = 0
    accepted: int = 0
    closed: dict[str, int] = field(default_factory=dict)
    refused: dict[int, int] = field(default_factory=dict)

    def close(self, reason: str) -> None:
        """Count a connection closed for ``reason``."""
        self.closed[reason] = self.closed.get(reason, 0) + 1

    def refuse(self, code: int) -> None:
        """Count a request the front answered with ``code``."""
        self.refused[code] = self.refused.get(code, 0) + 1


class Tracker:
    """Connections by state (idle, reading, busy, closing), each group oldest first
    (dicts keep insertion order), for one source or for the whole server."""

    __slots__ = ("groups",)

    def __init__(self) -> None:
        self.groups: tuple[dict[Connection, None], ...] = ({}, {}, {}, {})

    def __len__(self) -> int:
        return sum(len(group) for group in self.groups)

    @property
    def busy(self) -> dict[Connection, None]:
        """Connections whose request is with the app."""
        return self.groups[BUSY]

    def victim(self) -> Connection | None:
        """The connection to close to make room: one we are closing anyway, else the
        longest idle, else the one reading its request (or doing its TLS handshake) the
        longest; never a busy one."""
        for state in (CLOSING, IDLE, READING):
            for conn in self.groups[state]:
                return conn
        return None


class Parked:
    """A request whose answer waits on the loop (:mod:`setec_core.http.pending`): the
    app's :class:`~setec_core.http.pending.ParkedAnswer` and the timer that answers it
    at its deadline."""

    __slots__ = ("answer", "conn", "request", "timer")

    def __init__(self, conn: Connection, request: Request, answer: ParkedAnswer) -> None:
        self.conn = conn
        self.request = request
        self.answer = answer
        self.timer: asyncio.TimerHandle | None = None


class Front:
    """Serves a WSGI app over HTTP/1.1 (and TLS) from one event-loop thread and a pool of
    ``threads`` app threads. :meth:`start` it, :meth:`stop` it.

    :param app: the WSGI app. If it has a ``body_limit(method, path)`` method, that gives
        each route's largest body; otherwise :attr:`Limits.max_body_bytes` applies. If it
        has a ``too_large_reason(method, path)`` method, that gives the reason of a 413.
        An answer it leaves to wait (:mod:`setec_core.http.pending`, a watch) is held
        on the loop, without a thread, until it is ready, its deadline, the client
        leaving or the server stopping.
    :param listeners: where to listen.
    :param ssl_context: serve TLS with it (on TCP listeners).
    :param threads: requests the app may run at once.
    :param limits: deadlines and caps.
    """

    def __init__(
        self,
        app: WSGIApp,
        listeners: Iterable[Listener],
        *,
        ssl_context: ssl.SSLContext | None = None,
        threads: int = 16,
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        self.listeners = list(listeners)
        self.ssl_context = ssl_context
        self.limits = limits or Limits()
        self.stats = FrontStats()
        self.body_limit: Callable[[str, str], int] = getattr(
            app, "body_limit", lambda method, path: self.limits.max_body_bytes
        )
        self.too_large_reason: Callable[[str, str], str] = getattr(
            app, "too_large_reason", lambda method, path: too_large(self.body_limit(method, path))
        )
        self.max_connections = self.limits.max_connections or connection_cap()
        self.all = Tracker()
        self.stopping = False
        self.urls: list[str] = []
        self.date = formatdate(usegmt=True)
        self._threads = threads
        self._jobs: queue.SimpleQueue[tuple[Connection, Request] | None] = queue.SimpleQueue()
        self._workers: list[threading.Thread] = []
        self._answers: collections.deque[tuple[Connection, bytes, bool]] = collections.deque()
        self._drain_scheduled = False
        #: Requests whose answers wait, by connection (one each: it is busy until then).
        self.parked: dict[Connection, Parked] = {}
        self._woken: collections.deque[Parked] = collections.deque()
        self._wake_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sockets: list[tuple[socket.socket, Listener]] = []
        self._sources: dict[str, Tracker] = {}
        self._stopped = threading.Event()
        self._drained = threading.Event()
        self._emfile_logged = 0.0

    # --- lifecycle ---------------------------------------------------------------

    def bind(self) -> list[str]:
        """Open the listening sockets and return their URLs (port 0 resolved).

        :raises OSError: if an address cannot be bound.
        """
        try:
            for listener in self.listeners:
                sock = open_listener(listener)
                self._sockets.append((sock, listener))
                self.urls.append(listener_url(sock, listener, tls=self.ssl_context is not None))
        except BaseException:
            self._close_listeners()
            raise
        return self.urls

    def start(self) -> list[str]:
        """Bind (if :meth:`bind` was not called), start serving in background threads,
        and return the URLs."""
        if not self._sockets:
            self.bind()
        for n in range(self._threads):
            worker = threading.Thread(target=self._work, name=f"setec-app-{n}", daemon=True)
            worker.start()
            self._workers.append(worker)
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name="setec-http", daemon=True
        )
        self._thread.start()
        ready.wait()
        return self.urls

    def _run(self, ready: threading.Event) -> None:
        loop = self._loop
        assert loop is not None
        asyncio.set_event_loop(loop)
        try:
            for sock, listener in self._sockets:
                loop.add_reader(sock.fileno(), self._accept, sock, listener)
            loop.call_later(SWEEP_INTERVAL, self._sweep)
            ready.set()
            loop.run_forever()
        finally:
            ready.set()
            with contextlib.suppress(Exception):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._stopped.set()

    def is_alive(self) -> bool:
        """Whether the serving thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop accepting, close idle and half-read connections, give requests already
        with the app up to ``timeout`` seconds to be answered, then close everything.
        Safe to call more than once, from any thread but the loop's."""
        loop = self._loop
        if loop is not None and not self._stopped.is_set():
            with contextlib.suppress(RuntimeError):  # the loop has just stopped
                loop.call_soon_threadsafe(self._begin_stop)
                self._drained.wait(timeout)
                loop.call_soon_threadsafe(self._finish_stop)
            if self._thread is not None:
                self._thread.join(5)
        self._close_listeners()
        for _ in self._workers:
            self._jobs.put(None)
        self._workers = []

    def _begin_stop(self) -> None:
        self.stopping = True
        self._close_listeners()
        for state in (IDLE, READING, CLOSING):
            for conn in list(self.all.groups[state]):
                conn.abort("stopping")
        # A waiting answer is given now, not at its deadline: a stop must not wait a
        # minute for watches that have nothing to report.
        for parked in list(self.parked.values()):
            self._settle(parked)
        self.check_drained()

    def check_drained(self) -> None:
        """Let a stop go on once no request is with the app any more."""
        if self.stopping and not self.all.busy:
            self._drained.set()

    def _finish_stop(self) -> None:
        for group in self.all.groups:  # busy, and closing with an answer unread
            for conn in list(group):
                conn.abort("stopping")
        assert self._loop is not None
        self._loop.stop()

    def _close_listeners(self) -> None:
        for sock, listener in self._sockets:
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(Exception):
                    loop.remove_reader(sock.fileno())
            sock.close()
            if listener.path is not None and listener.fd is None:
                with contextlib.suppress(OSError):
                    os.unlink(listener.path)
        self._sockets = []

    # --- accepting ---------------------------------------------------------------

    def _accept(self, listening: socket.socket, listener: Listener) -> None:
        for _ in range(128):
            try:
                sock, addr = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed: %s", e.strerror or e)
                    return
                # Out of descriptors: make room rather than stop accepting, or a flood
                # of connections would lock everyone out.
                now = time.monotonic()
                if now - self._emfile_logged > 10:
                    self._emfile_logged = now
                    log.warning(
                        "out of file descriptors with %d connections open; closing the "
                        "least useful ones to make room (raise the open-file limit)",
                        len(self.all),
                    )
                victim = self.all.victim()
                if victim is None:
                    return
                victim.abort("evicted")
                continue
            self._admit(sock, addr, listener)

    def _admit(self, sock: socket.socket, addr: Any, listener: Listener) -> None:
        source = "unix" if listener.path is not None else str(addr[0])
        tracker = self._sources.get(source) or Tracker()
        while len(tracker) >= self.limits.max_connections_per_source or (
            len(self.all) >= self.max_connections
        ):
            # Room is made in this source if it is at its cap, else in the source that
            # holds the most connections (one hog cannot push everyone else out), or,
            # if all of that one's are busy, in the next biggest that has room to give.
            if len(tracker) >= self.limits.max_connections_per_source:
                victim = tracker.victim()
            else:
                victim = None
                for other in sorted(self._sources.values(), key=len, reverse=True):
                    victim = other.victim()
                    if victim is not None:
                        break
            if victim is None:
                # Every connection there has a request with the app: this one waits its
                # turn in the client's retry, as at any full server.
                self.stats.close("over-cap")
                sock.close()
                return
            victim.abort("evicted")
        # An eviction may have emptied, and so dropped, the source's tracker.
        self._sources[source] = tracker
        self.stats.accepted += 1
        conn = Connection(self, source, tracker, listener)
        loop = self._loop
        assert loop is not None
        waiter = loop.create_future()
        sock.setblocking(False)
        tls = self.ssl_context if listener.path is None else None
        # The transport is made here, synchronously, rather than by a task running
        # connect_accepted_socket later: from this moment the connection owns its
        # socket, so an eviction in the same batch of accepts can close it. These are
        # the factories loop.create_server uses; every asyncio loop on POSIX has them.
        if tls is None:
            transport = loop._make_socket_transport(sock, conn, waiter)  # type: ignore[attr-defined]
        else:
            protocol = _TLSProtocol(
                loop,
                conn,
                tls,
                waiter,
                server_side=True,
                # typeshed says int; asyncio takes any positive number of seconds.
                ssl_handshake_timeout=self.limits.read_timeout,  # type: ignore[arg-type]
                # A TLS close waits for the peer's close_notify at most this long.
                ssl_shutdown_timeout=self.limits.write_timeout,
            )
            loop._make_socket_transport(sock, protocol)  # type: ignore[attr-defined]
            transport = protocol._app_transport
            # Until its handshake is done it counts as reading: evictable after the idle
            # ones. asyncio enforces the handshake's deadline itself.
            conn.handshaking = True
            conn.enter(READING)
        conn.transport = transport
        waiter.add_done_callback(lambda done: self._connected(conn, done))

    def _connected(self, conn: Connection, waiter: asyncio.Future[None]) -> None:
        if waiter.cancelled() or waiter.exception() is None:
            return
        # A TLS handshake that failed or timed out: asyncio closed the transport without
        # ever telling the connection it was made.
        timed_out = isinstance(waiter.exception(), TimeoutError)
        if conn.state >= 0:
            conn.transport = None
            conn.abort("handshake-timeout" if timed_out else "tls-error")
        log.debug(
            "TLS handshake with %s failed: %s", conn.source, type(waiter.exception()).__name__
        )

    def forget(self, conn: Connection) -> None:
        """Called by a connection once it is out of the trackers (closed)."""
        self.stats.open -= 1
        tracker = conn.tracker
        if not tracker and self._sources.get(conn.source) is tracker:
            del self._sources[conn.source]
        self.check_drained()

    # --- housekeeping ------------------------------------------------------------

    def _sweep(self) -> None:
        assert self._loop is not None
        now = time.monotonic()
        self.date = formatdate(usegmt=True)
        for group in self.all.groups:
            for conn in [c for c in group if c.deadline and now >= c.deadline]:
                conn.expire()
        self._loop.call_later(SWEEP_INTERVAL, self._sweep)

    def plain_answer(self, code: int, reason: str) -> bytes:
        """The bytes of a one-line plain-text answer that closes the connection."""
        body = reason.encode() + b"\n"
        return (
            b"HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"X-Content-Type-Options: nosniff\r\nContent-Length: %d\r\nDate: %s\r\n"
            b"Connection: close\r\n\r\n%s"
            % (code, _REASONS.get(code, "Error").encode(), len(body), self.date.encode(), body)
        )

    # --- running the app ---------------------------------------------------------

    def submit(self, conn: Connection, request: Request) -> None:
        """Queue a whole request for the app threads."""
        self._jobs.put((conn, request))

    def _work(self) -> None:
        # An app thread: run requests until told to stop (a None job).
        while (job := self._jobs.get()) is not None:
            conn, request = job
            data, deferral, headers, waiting = self._answer(conn, request)
            if waiting is not None:
                self._park_soon(conn, request, waiting)
            elif deferral is None:
                self._deliver(conn, data, request.keep_alive)
            else:
                # The answer waits for its audit entries: delivered once they are
                # durable (at once if they already are), a 500 instead if they cannot be.
                deferral.then(self._deliver_when_durable(conn, request, data, headers))

    def _deliver(self, conn: Connection, data: bytes, keep_alive: bool) -> None:
        # From any thread: queue an answer for the loop to write.
        self._answers.append((conn, data, keep_alive))
        if not self._drain_scheduled:
            # One wake-up of the loop carries every answer ready by then.
            self._drain_scheduled = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the server stopped
                    loop.call_soon_threadsafe(self._drain)

    def _deliver_when_durable(
        self, conn: Connection, request: Request, data: bytes, headers: list[tuple[str, str]]
    ) -> Callable[[str], None]:
        def deliver(failure: str) -> None:
            answer = self._audit_failed(request, headers) if failure else data
            self._deliver(conn, answer, request.keep_alive)

        return deliver

    def _audit_failed(self, request: Request, headers: list[tuple[str, str]]) -> bytes:
        # The answer's audit entries could not be made durable: it must not leave. The
        # 500 keeps the app's other headers (the request id, the browser security
        # headers) and gets its own content headers.
        kept = [h for h in headers if h[0].lower() not in ("content-type", "content-length")]
        kept.append(("Content-Type", "text/plain; charset=utf-8"))
        return self._encode(request, 500, kept, b"internal error\n")

    def _drain(self) -> None:
        self._drain_scheduled = False
        answers = self._answers
        while answers:
            conn, data, keep_alive = answers.popleft()
            conn.respond(data, keep_alive)

    def _answer(
        self, conn: Connection, request: Request
    ) -> tuple[bytes, Deferral | None, list[tuple[str, str]], ParkedAnswer | None]:
        deferral = waiting = None
        try:
            code, headers, body, deferral, waiting = self._call_app(conn, request)
        except Exception as e:  # a bug in the app: the client gets a bare 500
            log_bug(log, "the app failed", e)
            code, headers = 500, [("Content-Type", "text/plain; charset=utf-8")]
            body = b"internal error\n"
        if waiting is not None:
            return b"", None, headers, waiting
        return self._encode(request, code, headers, body), deferral, headers, None

    # --- answers that wait -------------------------------------------------------

    def _park_soon(self, conn: Connection, request: Request, waiting: ParkedAnswer) -> None:
        # From an app thread: hand the waiting answer to the loop.
        loop = self._loop
        try:
            if loop is None:
                raise RuntimeError("not started")
            loop.call_soon_threadsafe(self._park, Parked(conn, request, waiting))
        except RuntimeError:  # the server stopped: nobody is left to answer
            waiting.cancel()

    def _park(self, parked: Parked) -> None:
        conn = parked.conn
        if conn.state != BUSY or conn.transport is None:
            parked.answer.cancel()  # the client left while the app ran
            return
        self.parked[conn] = parked
        conn.parked = True
        # Answered from the watch alone: the body it came in (up to the route's limit,
        # 1 MiB for a watch) is not kept for the wait.
        parked.request.body = bytearray()
        if self.stopping:
            self._settle(parked)
            return
        loop = self._loop
        assert loop is not None
        answer = parked.answer
        answer.start(lambda: self._wake(parked))
        parked.timer = loop.call_later(
            max(0.0, answer.deadline - time.monotonic()), self._settle, parked
        )
        self._check(parked)  # a change before start() is seen here

    def _wake(self, parked: Parked) -> None:
        # From a writer's thread, inside its write: queue a look, wake the loop once.
        self._woken.append(parked)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the server stopped
                    loop.call_soon_threadsafe(self._look)

    def _look(self) -> None:
        self._wake_scheduled = False
        woken = self._woken
        while woken:
            parked = woken.popleft()
            if self.parked.get(parked.conn) is parked:
                self._check(parked)

    def _check(self, parked: Parked) -> None:
        try:
            ready = parked.answer.ready()
        except Exception as e:  # the answer says what failed
            log_bug(log, "a waiting answer could not be checked", e)
            ready = True
        if ready:
            self._settle(parked)

    def _settle(self, parked: Parked) -> None:
        """Send a waiting answer now (ready, at its deadline, or stopping)."""
        if not self._unpark(parked):
            return
        request = parked.request
        try:
            code, headers, body = parked.answer.answer()
        except Exception as e:  # a bug in the app: the client gets a bare 500
            log_bug(log, "the app failed to answer", e)
            code, headers = 500, [("Content-Type", "text/plain; charset=utf-8")]
            body = b"internal error\n"
        parked.conn.respond(self._encode(request, code, headers, body), request.keep_alive)

    def unpark(self, conn: Connection) -> None:
        """The client of ``conn`` left while its answer waited: free what it waits on."""
        parked = self.parked.get(conn)
        if parked is not None and self._unpark(parked):
            parked.answer.cancel()

    def _unpark(self, parked: Parked) -> bool:
        # Whether this call took it off the loop (each parked answer is settled or
        # cancelled once).
        if self.parked.get(parked.conn) is not parked:
            return False
        del self.parked[parked.conn]
        parked.conn.parked = False
        if parked.timer is not None:
            parked.timer.cancel()
        return True

    def _call_app(
        self, conn: Connection, request: Request
    ) -> tuple[int, list[tuple[str, str]], bytes, Deferral | None, ParkedAnswer | None]:
        started: list[Any] = []

        def start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            if exc_info and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, headers]
            return _no_write

        environ = conn.environ(request)
        result = self.app(environ, start_response)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        if not started:
            raise RuntimeError("the app returned without calling start_response")
        deferral = environ.get("setec.audit_deferral")
        waiting = environ.get("setec.pending_answer")
        return int(str(started[0]).split(" ", 1)[0]), started[1], body, deferral, waiting

    def _encode(
        self, request: Request, code: int, headers: list[tuple[str, str]], body: bytes
    ) -> bytes:
        text = [f"HTTP/1.1 {code} {_REASONS.get(code, 'Unknown')}"]
        has_length = False
        for name, value in headers:
            lower = name.lower()
            if lower == "connection":
                continue  # ours to decide
            has_length = has_length or lower == "content-length"
            text.append(f"{name}: {value}")
        bodiless = code < 200 or code in (204, 304)
        if not has_length and not bodiless:
            text.append(f"Content-Length: {len(body)}")
        text.append(f"Date: {self.date}")
        if not request.keep_alive or self.stopping:
            text.append("Connection: close")
        elif request.http10:
            text.append("Connection: keep-alive")
        text.append("\r\n")
        head = "\r\n".join(text).encode("latin-1")
        if request.method == "HEAD" or bodiless:
            return head
        return head + body


class _TLSProtocol(sslproto.SSLProtocol):
    """asyncio's TLS layer with a 32 KiB read buffer instead of 256 KiB: the buffer is
    allocated (and zeroed) per connection, so it was most of the 160 KiB an idle TLS
    connection cost; TLS records are at most 16 KiB, so 32 KiB loses nothing."""

    max_size = 32 * 1024


def _no_write(data: bytes) -> None:
    raise RuntimeError("the write() callable of WSGI is not supported: return the body")


def open_listener(listener: Listener, *, reuse_port: bool = False) -> socket.socket:
    """Bind and listen where ``listener`` says (a unix socket's file is created 0600; a
    stale one, that no server answers on, is replaced), or take over its ``fd``; return
    the listening socket, non-blocking.

    :param reuse_port: set ``SO_REUSEPORT`` on a TCP socket, so that several sockets
        (one per ``--workers`` process) listen on one port and the kernel spreads
        connections over them.

    :raises OSError: if the address cannot be bound (in use, not permitted), or a unix
        socket's path holds something else or a live server.
    """
    if listener.fd is not None:
        sock = socket.socket(fileno=listener.fd)
        sock.setblocking(False)
        return sock
    if listener.path is not None:
        return _listen_unix(listener.path)
    infos = socket.getaddrinfo(
        listener.host or None, listener.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    return _bound(sock, address)


def listener_url(sock: socket.socket, listener: Listener, *, tls: bool) -> str:
    """The URL clients reach the listening ``sock`` at: ``unix:PATH``, or
    ``http(s)://HOST:PORT`` with the port it was bound to (port 0 resolved)."""
    if listener.path is not None:
        return f"unix:{listener.path}"
    host, port = sock.getsockname()[:2]
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if tls else 'http'}://{host}:{port}"


def _bound(sock: socket.socket, address: Any) -> socket.socket:
    """Bind ``sock`` to ``address`` and listen, non-blocking; close it on failure."""
    try:
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _listen_unix(path: str) -> socket.socket:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"{path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)  # a stale socket left by a server that is gone
        except OSError as e:
            # Not "refused": someone may be serving there whom we may not reach.
            raise OSError(e.errno, f"{path} exists and cannot be probed: {e.strerror}") from None
        else:
            raise OSError(errno.EADDRINUSE, f"another server answers on {path}")
        finally:
            probe.close()
    old = os.umask(0o177)  # the socket file is born 0600: only our user may connect
    try:
        return _bound(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), path)
    finally:
        os.umask(old)


def connection_cap() -> int:
    """Raise the soft open-file limit to the hard one and return the default connection
    cap: :data:`DEFAULT_MAX_CONNECTIONS`, or what the limit leaves after
    :data:`RESERVED_FDS` if that is lower."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(16, min(soft - RESERVED_FDS, DEFAULT_MAX_CONNECTIONS))


def server_ssl_context(cert: str, key: str) -> ssl.SSLContext:
    """A TLS server context for ``cert`` and ``key`` (PEM files): TLS 1.2 or later,
    HTTP/1.1 by ALPN.

    :raises OSError: if a file cannot be read.
    :raises ssl.SSLError: if they are not a certificate chain and its key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context
