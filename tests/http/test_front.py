"""The HTTP front on its own, over raw sockets, with small WSGI apps: keep-alive and
pipelining, whole requests only, the environ it builds, deadlines, caps and eviction,
and a graceful stop."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import threading
import time
import tracemalloc
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from setec_core.http import connection
from setec_core.http.front import Front, Limits, Listener
from setec_core.testing import FailingAuditSink

Environ = dict[str, Any]


class Recorder:
    """A WSGI app that answers with what it saw; ``gate`` holds requests to /slow."""

    def __init__(self) -> None:
        self.seen: list[Environ] = []
        self.bodies: list[bytes] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
        body = environ["wsgi.input"].read()
        self.seen.append(environ)
        self.bodies.append(body)
        if environ["PATH_INFO"] == "/slow":
            self.entered.set()
            self.gate.wait(10)
        if environ["PATH_INFO"] == "/boom":
            raise ValueError(f"a bug whose message quotes the body: {body!r}")
        out = f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']} {len(body)}".encode()
        start_response(
            "200 OK",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))],
        )
        return [out]

    def body_limit(self, method: str, path: str) -> int:
        return 100 if path == "/small" else 10_000


@pytest.fixture
def app() -> Recorder:
    return Recorder()


def serve(app: Any, **limits: Any) -> Front:
    front = Front(app, [Listener("127.0.0.1", 0)], threads=2, limits=Limits(**limits))
    front.start()
    return front


@pytest.fixture
def front(app: Recorder) -> Iterator[Front]:
    f = serve(app)
    yield f
    app.gate.set()
    f.stop()


def port_of(front: Front) -> int:
    return int(front.urls[0].rsplit(":", 1)[1])


def connect(front: Front) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port_of(front)), timeout=10)


def read_answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """Read exactly one HTTP answer with a Content-Length from ``sock`` (byte by byte up
    to the body, so that a pipelined answer after it stays in the socket)."""
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed after {head!r}")
        head += byte
    lines = head.decode("latin-1").rstrip("\r\n").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    body = b""
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(int(headers["content-length"]) - len(body))
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def closed_by_server(sock: socket.socket) -> bool:
    """True if the server closed ``sock`` (an orderly close or an abort)."""
    try:
        return sock.recv(10) == b""
    except ConnectionResetError:
        return True


GET = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"


def test_keep_alive_and_pipelined_requests_answer_in_order(front: Front, app: Recorder) -> None:
    """Three pipelined requests on one connection are answered in order, each once it
    was read whole, and the connection stays open."""
    with connect(front) as sock:
        sock.sendall(
            b"POST /one HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
            b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n"
            b"POST /three HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"2\r\nxy\r\n1\r\nz\r\n0\r\n\r\n"
        )
        answers = [read_answer(sock) for _ in range(3)]
        assert [body for _, _, body in answers] == [b"POST /one 3", b"GET /two 0", b"POST /three 3"]
        sock.sendall(GET)
        assert read_answer(sock)[2] == b"GET /a 0"
    assert app.bodies[:3] == [b"abc", b"", b"xyz"]


def test_the_environ(front: Front, app: Recorder) -> None:
    """WSGI's environ: the peer's address and port, the decoded path, the query, the
    body's size whatever its framing, and no header whose name has an underscore."""
    with connect(front) as sock:
        local_port = sock.getsockname()[1]
        sock.sendall(
            b"POST /p%C3%A4th%2F?q=1&r=%20 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"
            b"Content-Type: application/json\r\nX-Thing: a\r\nX-Thing: b\r\n"
            b"Tailscale_User_Login: mallory\r\nTailscale-User-Login: alice\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
        )
        assert read_answer(sock)[0] == 200
    env = app.seen[-1]
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["REMOTE_PORT"] == str(local_port)
    assert env["PATH_INFO"] == "/päth/".encode().decode("latin-1")
    assert env["QUERY_STRING"] == "q=1&r=%20"
    assert env["CONTENT_TYPE"] == "application/json"
    assert env["CONTENT_LENGTH"] == "3"
    assert "HTTP_TRANSFER_ENCODING" not in env
    assert env["HTTP_X_THING"] == "a, b"
    assert env["HTTP_TAILSCALE_USER_LOGIN"] == "alice"
    assert env["HTTP_HOST"] == "127.0.0.1:1"
    assert env["wsgi.url_scheme"] == "http"


def test_head_has_no_body_and_http10_closes(front: Front) -> None:
    """HEAD answers carry the length but no body; HTTP/1.0 without keep-alive closes."""
    with connect(front) as sock:
        sock.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\n" + GET)
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        assert head.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"Content-Length: 9\r\n" in head  # of "HEAD /h 0", which is not sent
        assert read_answer(sock)[2] == b"GET /a 0"
    with connect(front) as sock:
        sock.sendall(b"GET /old HTTP/1.0\r\n\r\n")
        status, headers, body = read_answer(sock)
        assert (status, headers["connection"], body) == (200, "close", b"GET /old 0")
        assert sock.recv(10) == b""


def test_expect_continue(front: Front) -> None:
    """A client that asks to be told before it sends its body is told."""
    with connect(front) as sock:
        sock.sendall(
            b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        assert read_answer(sock)[2] == b"POST /e 2"


@pytest.mark.parametrize(
    ("request_bytes", "code", "reason"),
    [
        (b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n", 413, b"limit is 100"),
        (
            b"POST /small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"65\r\n" + b"x" * 101 + b"\r\n0\r\n\r\n",
            413,
            b"limit is 100",
        ),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", 431, b"too large"),
        (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400, b"malformed request"),
        (b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, b"malformed request"),
        (b"GET / HTTP/1.1\nHost: x\n\n", 400, b"malformed request"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
            200,
            b"GET / 0",
        ),
    ],
    ids=["declared", "chunked", "header", "fold", "space", "bare-lf", "upgrade-ignored"],
)
def test_refusals(front: Front, request_bytes: bytes, code: int, reason: bytes) -> None:
    """Limits and strict parsing answer with a one-line reason and close; the app never
    sees a refused request (an Upgrade is answered as HTTP/1.1, then closed)."""
    with connect(front) as sock:
        sock.sendall(request_bytes)
        status, headers, body = read_answer(sock)
        assert status == code
        assert reason in body
        assert headers["connection"] == "close"
        assert sock.recv(10) == b""


def test_app_errors_are_500_without_their_message(
    front: Front, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the app: a bare 500, the traceback's frames logged, its message not."""
    with connect(front) as sock:
        sock.sendall(b"POST /boom HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nhunter2")
        status, _, body = read_answer(sock)
        assert (status, body) == (500, b"internal error\n")
    assert "ValueError (message withheld)" in caplog.text
    assert "hunter2" not in caplog.text


def test_whole_request_deadline_and_idle_timeout(app: Recorder) -> None:
    """The read deadline runs from a request's first byte, not per receive: a byte every
    0.2 s still gets 408 after 1 s. An idle connection closes after the idle timeout."""
    front = serve(app, read_timeout=1.0, idle_timeout=0.5)
    try:
        with connect(front) as sock:
            started = time.monotonic()
            for byte in b"GET /slow HTTP/1.1\r\n":
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
                time.sleep(0.2)
                if time.monotonic() - started > 3:
                    break
            assert read_answer(sock)[0] == 408
            assert time.monotonic() - started < 2.5
        with connect(front) as sock:
            sock.sendall(GET)
            assert read_answer(sock)[0] == 200
            started = time.monotonic()
            assert sock.recv(10) == b""
            assert 0.3 < time.monotonic() - started < 2
        assert not any(env["PATH_INFO"] == "/slow" for env in app.seen)
    finally:
        front.stop()


def test_per_source_cap_evicts_idle_before_reading_and_never_busy(app: Recorder) -> None:
    """Over the per-source cap, room is made by closing the longest idle connection,
    then the one reading its request the longest; a connection whose request is with
    the app is never closed, and when all are busy the newcomer is the one refused."""
    front = serve(app, max_connections_per_source=3)
    try:
        busy = connect(front)
        app.gate.clear()
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert app.entered.wait(5)
        reading = connect(front)
        reading.sendall(b"GET /a HTTP/1.1\r\n")  # a request under way
        idle = connect(front)
        time.sleep(0.2)
        newcomer = connect(front)  # over the cap: the idle one makes room
        assert closed_by_server(idle)
        newcomer.sendall(b"GET /b HTTP/1.1\r\n")  # now reading too, younger than `reading`
        time.sleep(0.2)
        newer = connect(front)  # nobody idle: the oldest reader makes room
        assert closed_by_server(reading)
        newcomer.sendall(b"Host: x\r\n\r\n")
        assert read_answer(newcomer)[2] == b"GET /b 0"
        newer.sendall(GET)
        assert read_answer(newer)[2] == b"GET /a 0"
        app.gate.set()
        assert read_answer(busy)[2] == b"GET /slow 0"
        for sock in (busy, reading, idle, newcomer, newer):
            sock.close()
        assert front.stats.closed.get("evicted", 0) >= 2
    finally:
        app.gate.set()
        front.stop()


def test_when_every_connection_is_busy_the_newcomer_is_refused(app: Recorder) -> None:
    """At the per-source cap with no connection idle to close, a newcomer is closed
    unanswered (counted as over-cap) and the busy request still gets its answer."""
    front = serve(app, max_connections_per_source=1)
    try:
        busy = connect(front)
        app.gate.clear()
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert app.entered.wait(5)
        with connect(front) as newcomer:
            assert newcomer.recv(10) == b""
        app.gate.set()
        assert read_answer(busy)[0] == 200
        busy.close()
        assert front.stats.closed.get("over-cap") == 1
    finally:
        app.gate.set()
        front.stop()


def test_stop_lets_requests_with_the_app_finish(app: Recorder) -> None:
    """stop() closes idle connections at once and waits for a request already with the
    app, whose answer says the connection closes."""
    front = serve(app)
    idle = connect(front)
    busy = connect(front)
    app.gate.clear()
    busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
    assert app.entered.wait(5)
    stopper = threading.Thread(target=front.stop)
    stopper.start()
    assert idle.recv(10) == b""
    time.sleep(0.3)
    app.gate.set()
    status, headers, body = read_answer(busy)
    assert (status, headers["connection"], body) == (200, "close", b"GET /slow 0")
    stopper.join(10)
    assert not front.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(front.urls[0], timeout=2)
    idle.close()
    busy.close()


def test_unix_socket_listener(tmp_path: Any, app: Recorder) -> None:
    """A unix socket listener: created 0600, peers have no address, removed at stop."""
    path = tmp_path / "s.sock"
    front = Front(app, [Listener(path=str(path))], threads=1)
    assert front.start() == [f"unix:{path}"]
    try:
        assert path.stat().st_mode & 0o777 == 0o600
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            sock.sendall(GET)
            assert read_answer(sock)[2] == b"GET /a 0"
        assert app.seen[-1]["REMOTE_ADDR"] == ""
        assert app.seen[-1]["setec.transport"] == "unix"
    finally:
        front.stop()
    assert not path.exists()


# --- found by attacking the front ------------------------------------------------------

BIG = 8 << 20  # more than the kernel's socket buffers hold on loopback


def big_answer(environ: Environ, start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", str(BIG))])
    return [b"x" * BIG]


def open_sockets() -> int:
    """Sockets this process holds (the server's ends, and the test's)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # an fd closed while we look
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


@pytest.mark.parametrize(
    "tail",
    [b"\r\n", b"Connection: close\r\n\r\n", b"\r\nGET /next HTTP/1.1\r\n"],
    ids=["keep-alive", "connection-close", "keep-alive-then-half-a-request"],
)
def test_an_unread_answer_is_abandoned_after_the_write_timeout(tail: bytes) -> None:
    """A client that never reads a large answer holds its socket for write_timeout, not
    forever, also when the server closes the connection after that answer (before, a
    closing connection left every tracker and waited for the client with no deadline:
    uncounted sockets, and the caps did not see them)."""
    front = serve(big_answer, read_timeout=1, write_timeout=1, idle_timeout=1)
    try:
        before = open_sockets()
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port_of(front)))
        client.sendall(b"GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n" + tail)
        time.sleep(0.5)
        assert front.stats.open == 1  # still counted while it closes
        time.sleep(3)
        lingering = open_sockets() - before - 1  # less the test's own end
        assert front.stats.open == 0
        client.close()
        assert lingering == 0
        assert front.stats.closed.get("write-timeout") == 1
    finally:
        front.stop(1)


def test_trailers_never_become_headers(app: Recorder, front: Front) -> None:
    """Trailers of a chunked body are dropped: merged into the headers (as they were), a
    proxy that strips identity headers but forwards trailers would let a client set
    them. A trailer section over the header limit is 431 at once."""
    with connect(front) as sock:
        sock.sendall(
            b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            b"Trailer: Tailscale-User-Login\r\n\r\n3\r\nabc\r\n0\r\n"
            b"Tailscale-User-Login: admin@example.com\r\n\r\n"
        )
        assert read_answer(sock)[2] == b"POST /t 3"
    assert not any("TAILSCALE" in key for key in app.seen[-1])
    with connect(front) as sock:
        sock.sendall(b"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ")
        started = time.monotonic()
        with contextlib.suppress(OSError):
            for _ in range(32):
                sock.sendall(b"a" * 65536)
        status, _, body = read_answer(sock)
        assert (status, body) == (431, b"request trailers or chunk headers too large\n")
        assert time.monotonic() - started < 2


def test_trailers_cannot_forge_a_serve_identity() -> None:
    """End to end with the tailscale-serve authorizer: identity in trailers is ignored."""
    from setec_core.http import make_app
    from setec_core.server_info import ServerInfo
    from setec_core.testing import new_database
    from setec_plugins.tailscale_authz import TailscaleServeAuthorizer

    rules = b'{"tailscale.com/cap/secrets": [{"action": ["put"], "secret": ["*"]}]}'
    body = b'{"Name": "prod/db", "Value": "eA=="}'
    with new_database() as db:
        app = make_app(db, TailscaleServeAuthorizer.from_options({}, ServerInfo(port=0)))
        front = serve(app)
        try:
            with connect(front) as sock:
                sock.sendall(
                    b"POST /api/put HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/json\r\nSec-X-Tailscale-No-Browsers: setec\r\n"
                    b"Transfer-Encoding: chunked\r\n\r\n"
                    + b"%x\r\n" % len(body)
                    + body
                    + b"\r\n0\r\nTailscale-User-Login: admin@example.com\r\n"
                    + b"Tailscale-App-Capabilities: "
                    + rules
                    + b"\r\n\r\n"
                )
                assert read_answer(sock)[0] == 403
        finally:
            front.stop(1)
        assert len(db) == 0


SLOW = b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"


@pytest.mark.parametrize(
    ("first", "second", "then"),
    [
        (SLOW.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"), GET, []),
        (SLOW, b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", [413]),
        (SLOW, b"\x00garbage\r\n\r\n", [400]),
    ],
    ids=["data-after-close", "413", "400"],
)
def test_the_front_never_answers_ahead_of_the_app(
    app: Recorder, front: Front, first: bytes, second: bytes, then: list[int]
) -> None:
    """While a request is with the app, a second one that the front refuses (or that
    follows a Connection: close) is answered after it, never in its place: the first
    answer used to be overtaken by the refusal and lost."""
    app.gate.clear()
    with connect(front) as sock:
        sock.sendall(first)
        assert app.entered.wait(5)
        sock.sendall(second)
        time.sleep(0.3)
        app.gate.set()
        assert read_answer(sock)[:1] == (200,)
        assert [read_answer(sock)[0] for _ in then] == then
        assert closed_by_server(sock)


def test_100_continue_waits_for_its_turn(app: Recorder, front: Front) -> None:
    """A pipelined request that asks for 100 Continue is told so only once the answer
    before it has been written."""
    app.gate.clear()
    with connect(front) as sock:
        sock.sendall(SLOW)
        assert app.entered.wait(5)
        sock.sendall(
            b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
        )
        time.sleep(0.3)
        app.gate.set()
        assert read_answer(sock)[2] == b"POST /slow 3"
        assert sock.recv(25) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"ok")
        assert read_answer(sock)[2] == b"POST /b 2"


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"GET http://[::1 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET example.com HTTP/1.1\r\nHost: x\r\n\r\n", 400),
        (b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400),
        (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501),
        (b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ],
    ids=["bad-url", "not-a-path", "two-hosts", "gzip", "te-in-1.0"],
)
def test_targets_hosts_and_codings_the_front_refuses(
    front: Front, request_bytes: bytes, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Targets that are neither a path nor a URL, a second Host header, and a transfer
    coding other than chunked are refused by the front (before, an unparsable URL was a
    500 and a logged traceback per request)."""
    with connect(front) as sock:
        sock.sendall(request_bytes)
        assert read_answer(sock)[0] == code
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_pipelining_is_parsed_only_as_far_as_the_queue_allows(app: Recorder, front: Front) -> None:
    """Thousands of tiny pipelined requests behind a slow one: only a bounded number is
    parsed (the rest waits as bytes, and the connection stops reading), then all are
    answered in order."""
    app.gate.clear()
    with connect(front) as sock:
        sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        assert app.entered.wait(5)
        sock.sendall(b"GET /p HTTP/1.1\r\nHost: x\r\n\r\n" * 5000)
        time.sleep(0.5)
        queued = max(len(conn.queue) for group in front.all.groups for conn in group)
        assert queued <= connection.MAX_QUEUED + connection.FEED_PIECE // 18
        app.gate.set()
        assert read_answer(sock)[2] == b"GET /slow 0"
        for _ in range(5000):
            assert read_answer(sock)[2] == b"GET /p 0"


def test_a_body_in_tiny_chunks_is_held_as_one_buffer(app: Recorder, front: Front) -> None:
    """Each chunk used to be kept as its own bytes object (a 1 MiB body in 2-byte chunks
    held about 20 MiB); the body is one buffer, and framing beyond four times the
    content is refused."""
    payload = b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + (
        b"2\r\naa\r\n" * 4096 + b"0\r\n\r\n"
    )
    tracemalloc.start()
    try:
        with connect(front) as sock:
            sock.sendall(payload)
            assert read_answer(sock)[2] == b"POST /x 8192"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(payload) + (256 << 10)
    framing = b"1\r\na\r\n" * 40_000  # 6 bytes of framing a byte of content
    with connect(front) as sock:
        sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.sendall(framing)
        assert read_answer(sock)[0] == 413


def test_a_closed_connection_is_freed_without_the_cyclic_collector(front: Front) -> None:
    """A connection and its parser refer to each other: the parser is dropped when the
    connection closes, so its buffers go at once, not at the next cyclic collection."""
    before = {id(c) for group in front.all.groups for c in group}
    gc.disable()
    try:
        with connect(front) as sock:
            time.sleep(0.2)  # accepted
            refs = [weakref.ref(c) for g in front.all.groups for c in g if id(c) not in before]
            assert len(refs) == 1
            sock.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n")
            assert read_answer(sock)[0] == 413
        time.sleep(0.3)
        assert refs[0]() is None
    finally:
        gc.enable()


@pytest.fixture
def gated() -> Iterator[tuple[Front, FailingAuditSink]]:
    from setec_core.http import make_app
    from setec_core.testing import SUPERUSER, FixedAuthorizer, new_database

    sink = FailingAuditSink()
    with new_database(audit_sink=sink) as db:
        db.put(SUPERUSER, "app/key", b"gated-secret-value")
        front = serve(make_app(db, FixedAuthorizer(SUPERUSER)))
        yield front, sink
        sink.gate.set()
        front.stop(1)


GET_KEY = (
    b"POST /api/get HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    b"Sec-X-Tailscale-No-Browsers: setec\r\nContent-Length: 18\r\n\r\n"
    b'{"Name":"app/key"}'
)


def test_a_value_leaves_only_once_its_audit_entry_is_durable(
    gated: tuple[Front, FailingAuditSink],
) -> None:
    """The app's threads do not wait for a get's audit fsync, but the front holds the
    answer until the entry is on disk."""
    front, sink = gated
    sink.gate.clear()
    with connect(front) as sock:
        sock.sendall(GET_KEY)
        sock.settimeout(0.5)
        with pytest.raises(TimeoutError):
            sock.recv(10)
        sock.settimeout(10)
        sink.gate.set()
        status, _, body = read_answer(sock)
    assert status == 200
    assert b"Z2F0ZWQtc2VjcmV0LXZhbHVl" in body  # base64 of the value


def test_a_value_whose_audit_entry_cannot_be_synced_never_leaves(
    gated: tuple[Front, FailingAuditSink], caplog: pytest.LogCaptureFixture
) -> None:
    """Fail-closed: the fsync fails, the client gets 500, never the value, and every
    later request is refused."""
    front, sink = gated
    sink.fail_syncs = True
    with connect(front) as sock:
        sock.sendall(GET_KEY)
        status, headers, body = read_answer(sock)
    assert (status, body) == (500, b"internal error\n")
    # Still the app's answer in all but its content: request id and browser headers.
    assert len(headers["x-request-id"]) == 16
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["content-length"] == str(len(body))
    with connect(front) as sock:
        sock.sendall(GET_KEY)
        assert read_answer(sock)[0] == 500
    assert "gated-secret-value" not in caplog.text


def test_a_request_being_read_has_a_repr_without_credentials_or_values() -> None:
    """The front's record of a request being read may be printed while debugging: its
    repr shows the method and path, never a header value (a bearer token) nor the
    body (a value being put)."""
    request = connection.Request(method="POST", url=b"/api/put")
    request.headers.append((b"Authorization", b"Bearer setec_canary-front-token"))
    request.body += b'{"Name":"a","Value":"aHVudGVyMg=="}'
    text = repr(request)
    assert "/api/put" in text
    for forbidden in ("setec_canary-front-token", "aHVudGVyMg==", "Authorization"):
        assert forbidden not in text
