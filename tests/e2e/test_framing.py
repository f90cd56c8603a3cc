"""Request framing against the real server (the HTTP front and the app together), over
raw sockets: chunked bodies, malformed chunks, both framings at once, duplicate lengths,
folded headers, oversize and short bodies. Each answer is a 4xx with a one-line reason,
and the secret a broken request carried never shows up in the server's output."""

from __future__ import annotations

import base64
import json
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from serve_process import ServeProcess

LIMIT = 64 * 1024
SECRET = b"ZQX-framing-secret-7731"
HEADERS = (
    b"Host: 127.0.0.1\r\nConnection: close\r\nSec-X-Tailscale-No-Browsers: setec\r\n"
    b"Content-Type: application/json\r\n"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeProcess]:
    cwd = tmp_path_factory.mktemp("framing")
    args = ("--dev", "--listen", "127.0.0.1:0", "--max-request-bytes", str(LIMIT))
    with ServeProcess(*args, cwd=cwd) as proc:
        yield proc


def exchange(server: ServeProcess, request: bytes, *, half_close: bool = False) -> bytes:
    """Send ``request`` on a fresh connection and return everything the server sends."""
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as s:
        s.sendall(request)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def status_and_body(response: bytes) -> tuple[int, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def put_body(name: str, value: bytes) -> bytes:
    return json.dumps({"Name": name, "Value": base64.b64encode(value).decode()}).encode()


def chunked(body: bytes, size: int = 100) -> bytes:
    pieces = [body[i : i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def assert_no_secret_in_output(server: ServeProcess) -> None:
    # The logs go through a queue: make a marked request and wait for its access-log
    # line, so that everything logged before it has been written too.
    marker = requests.get(f"{server.url}/healthz", timeout=10).headers["X-Request-Id"]
    deadline = time.monotonic() + 10
    while marker not in server.output:
        assert time.monotonic() < deadline, "the access log line never appeared"
        time.sleep(0.02)
    assert SECRET.decode() not in server.output
    assert base64.b64encode(SECRET).decode() not in server.output


def test_chunked_body_is_accepted(server: ServeProcess) -> None:
    """A put with a chunked body stores the whole value: it reads back."""
    body = put_body("framing/chunked", b"value-in-chunks")
    request = b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
    code, reply = status_and_body(exchange(server, request + chunked(body, 7)))
    assert (code, reply) == (200, b"1")
    got = requests.post(
        f"{server.url}/api/get",
        json={"Name": "framing/chunked"},
        headers={"Sec-X-Tailscale-No-Browsers": "setec"},
        timeout=10,
    )
    assert base64.b64decode(got.json()["Value"]) == b"value-in-chunks"


@pytest.mark.parametrize(
    "payload",
    [
        # A chunk size line that is not hex: the rest of the body is read as one.
        pytest.param(lambda body: b"1\r\n{\r\n" + body[1:] + b"\r\n0\r\n\r\n", id="bad chunk size"),
        # A chunk not followed by CRLF (a parser's error could quote what it found).
        pytest.param(
            lambda body: b"%x\r\n" % (len(body) - 2) + body + b"\r\n0\r\n\r\n", id="no CRLF"
        ),
    ],
)
def test_malformed_chunks_are_400_and_never_logged(server: ServeProcess, payload: object) -> None:
    """A malformed chunk is 400 with a one-line "malformed request:" reason that quotes
    none of the body, and the secret never reaches the server's output."""
    body = put_body("framing/bad", SECRET)
    request = b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
    code, reply = status_and_body(exchange(server, request + payload(body)))  # type: ignore[operator]
    assert code == 400
    assert reply.startswith(b"malformed request: ")
    assert reply.count(b"\n") == 1
    assert SECRET not in reply
    assert_no_secret_in_output(server)


def test_chunked_body_over_the_limit_is_413(server: ServeProcess) -> None:
    """A chunked body over --max-request-bytes is 413, naming the limit and about how
    large a value fits in it (three quarters: the value travels base64-encoded)."""
    body = put_body("framing/big", b"x" * LIMIT)
    request = b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
    code, reply = status_and_body(exchange(server, request + chunked(body, 1000)))
    assert code == 413
    assert reply == (
        b"request body too large: the limit is 65536 bytes (about 48 KiB of secret value)\n"
    )


def test_both_framings_are_refused(server: ServeProcess) -> None:
    """Transfer-Encoding together with Content-Length is 400 and stores nothing."""
    # RFC 9112, section 6.1: with both, a proxy and the server may split the stream differently.
    body = chunked(put_body("framing/both", SECRET))
    request = (
        b"POST /api/put HTTP/1.1\r\n"
        + HEADERS
        + b"Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    code, _ = status_and_body(exchange(server, request + body))
    assert code == 400
    info = requests.post(
        f"{server.url}/api/info",
        json={"Name": "framing/both"},
        headers={"Sec-X-Tailscale-No-Browsers": "setec"},
        timeout=10,
    )
    assert info.status_code == 404  # nothing was stored
    assert_no_secret_in_output(server)


@pytest.mark.parametrize("length", [b"12abc", b"-5", b"1e3"])
def test_malformed_content_length_is_400(server: ServeProcess, length: bytes) -> None:
    """A Content-Length that is not a decimal number is 400."""
    request = b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Content-Length: " + length + b"\r\n\r\n"
    code, _ = status_and_body(exchange(server, request + b"{}"))
    assert code == 400


def test_short_body_is_400(server: ServeProcess) -> None:
    """A body shorter than its Content-Length (the client then half-closes) is 400 with
    that reason, and the secret it carried is not logged."""
    body = put_body("framing/short", SECRET)
    request = (
        b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Content-Length: %d\r\n\r\n" % (len(body) + 50)
    )
    code, reply = status_and_body(exchange(server, request + body, half_close=True))
    assert (code, reply) == (400, b"request body shorter than its Content-Length\n")
    assert_no_secret_in_output(server)


def test_oversize_body_is_refused_before_it_is_read(server: ServeProcess) -> None:
    """A declared body over the limit is 413 at once, without the body being read, even
    on a wrong method."""
    # A wrong method with a huge declared body: the server must answer without reading
    # (or buffering) the body, and close the connection.
    request = b"GET /api/put HTTP/1.1\r\n" + HEADERS + b"Content-Length: 10000000000\r\n\r\n"
    started = time.monotonic()
    code, _ = status_and_body(exchange(server, request + b"x" * 1000))
    assert code == 413
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("lengths", [(2, 40), (40, 2), (2, 2)])
def test_duplicate_content_lengths_are_400(server: ServeProcess, lengths: tuple[int, int]) -> None:
    """Two Content-Length headers, conflicting or not, are 400: a proxy that reads the
    first and a server that reads the last would split the stream differently (before,
    the last one won)."""
    body = put_body("framing/dup", SECRET)
    request = (
        b"POST /api/put HTTP/1.1\r\n"
        + HEADERS
        + b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % lengths
    )
    code, reply = status_and_body(exchange(server, request + body))
    assert code == 400
    assert reply.startswith(b"malformed request: ")
    assert_no_secret_in_output(server)


def test_folded_header_cannot_complete_the_guard(server: ServeProcess) -> None:
    """An obsolete line fold (a continuation line starting with a space) is 400; before,
    it completed an empty browser-guard header into 'setec'."""
    request = (
        b"POST /api/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nSec-X-Tailscale-No-Browsers:\r\n setec\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    code, reply = status_and_body(exchange(server, request))
    assert code == 400
    assert reply.startswith(b"malformed request: ")


def test_underscore_guard_header_is_not_the_guard(server: ServeProcess) -> None:
    """Sec_X_Tailscale_No_Browsers (which page script may send: only the Sec- prefix
    with hyphens is forbidden to it) is dropped, so the guard still answers 403."""
    request = (
        b"POST /api/list HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        b"Content-Type: application/json\r\nSec_X_Tailscale_No_Browsers: setec\r\n"
        b"Content-Length: 2\r\n\r\n{}"
    )
    code, reply = status_and_body(exchange(server, request))
    assert (code, reply) == (403, b"access denied\n")


@pytest.mark.parametrize("path", ["/api/get", "/api/info", "/api/list", "/api/delete"])
def test_methods_without_a_value_take_only_small_bodies(server: ServeProcess, path: str) -> None:
    """Only put and create-version carry a value: the others refuse a body over 16 KiB
    before reading it (a 1 MiB JSON array cost 0.6 s of CPU to decode even on a get)."""
    body = b'{"Name":"a","Value":[' + b"1," * 20000 + b"1]}"
    request = (
        f"POST {path} HTTP/1.1\r\n".encode() + HEADERS + b"Content-Length: %d\r\n\r\n" % len(body)
    )
    started = time.monotonic()
    code, reply = status_and_body(exchange(server, request + body))
    assert (code, reply) == (413, b"request body too large: the limit is 16384 bytes\n")
    assert time.monotonic() - started < 2
