"""Request framing against the real server (cheroot and the app together), over raw
sockets: chunked bodies, malformed chunks, both framings at once, oversize and short
bodies. Each answer is a 4xx with a one-line reason, and the secret a broken request
carried never shows up in the server's output."""

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

LIMIT = 4096
SECRET = b"ZQX-framing-secret-7731"
HEADERS = (
    b"Host: x\r\nConnection: close\r\nSec-X-Tailscale-No-Browsers: setec\r\n"
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
        # A chunk not followed by CRLF: cheroot's error quotes the bytes it found.
        pytest.param(
            lambda body: b"%x\r\n" % (len(body) - 2) + body + b"\r\n0\r\n\r\n", id="no CRLF"
        ),
    ],
)
def test_malformed_chunks_are_400_and_never_logged(server: ServeProcess, payload: object) -> None:
    body = put_body("framing/bad", SECRET)
    request = b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
    code, reply = status_and_body(exchange(server, request + payload(body)))  # type: ignore[operator]
    assert code == 400
    assert reply == b"could not read the request body\n"
    assert SECRET not in reply
    assert_no_secret_in_output(server)


def test_chunked_body_over_the_limit_is_413(server: ServeProcess) -> None:
    body = put_body("framing/big", b"x" * LIMIT)
    request = b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Transfer-Encoding: chunked\r\n\r\n"
    code, reply = status_and_body(exchange(server, request + chunked(body, 1000)))
    assert code == 413
    assert reply == f"request body too large: the limit is {LIMIT} bytes\n".encode()


def test_both_framings_are_refused(server: ServeProcess) -> None:
    # RFC 9112 §6.1: with both, a proxy and the server may split the stream differently.
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
    request = b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Content-Length: " + length + b"\r\n\r\n"
    code, _ = status_and_body(exchange(server, request + b"{}"))
    assert code == 400


def test_short_body_is_400(server: ServeProcess) -> None:
    body = put_body("framing/short", SECRET)
    request = (
        b"POST /api/put HTTP/1.1\r\n" + HEADERS + b"Content-Length: %d\r\n\r\n" % (len(body) + 50)
    )
    code, reply = status_and_body(exchange(server, request + body, half_close=True))
    assert (code, reply) == (400, b"request body shorter than its Content-Length\n")
    assert_no_secret_in_output(server)


def test_oversize_body_is_refused_before_it_is_read(server: ServeProcess) -> None:
    # A wrong method with a huge declared body: the server must answer without reading
    # (or buffering) the body, and close the connection.
    request = b"GET /api/put HTTP/1.1\r\n" + HEADERS + b"Content-Length: 10000000000\r\n\r\n"
    started = time.monotonic()
    code, _ = status_and_body(exchange(server, request + b"x" * 1000))
    assert code == 413
    assert time.monotonic() - started < 5
