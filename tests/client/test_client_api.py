"""The Client, exact to the wire, as Go's ``setec.Client`` (docs/api.md §2, §4).

Two kinds of peer: a loopback recorder that keeps each request byte for byte and answers
what the test set, for the wire rules; and a real server (``new_server``), for the round
trip of every method, restricted callers and bearer tokens.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from setec_core import SecretInfo, SecretValue
from setec_core.client import Client
from setec_core.errors import (
    AccessDenied,
    InvalidRequestError,
    NotFound,
    RequestError,
    ResponseError,
    SetecError,
    UnavailableError,
    ValueNotChanged,
    VersionClaimed,
)
from setec_core.testing import SUPERUSER, audit_entries, make_caller, new_database
from setec_core.testing.server import new_server
from setec_plugins.policy_authz import PolicyAuthorizer, new_token, policy_entry

TOKEN = "setec_client-test-token-4b1e9d"  # grepped for in every message and log
VALUE = b"client-test-value-77a3"  # grepped for in every error message
VALUE_B64 = base64.b64encode(VALUE).decode()


# --- The recorder ----------------------------------------------------------------------


@dataclass
class Recorded:
    """One request exactly as it arrived."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Recorder:
    """A loopback HTTP server (stdlib, HTTP/1.0: one connection per request) that records
    every request and answers each with the current :meth:`reply`."""

    def __init__(self) -> None:
        self.requests: list[Recorded] = []
        self.reply(200, b"{}")
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {name.lower(): value for name, value in self.headers.items()}
                recorder.requests.append(Recorded(self.command, self.path, headers, body))
                status, reply, content_type = recorder._reply
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def do_POST(self) -> None:
                self._record()

            def do_GET(self) -> None:
                self._record()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        # shutdown() waits for the loop's next poll: keep it short, tests make many.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()

    def reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        """Answer every request from now on with ``status`` and ``body``."""
        self._reply = (status, body, content_type)

    @property
    def last(self) -> Recorded:
        assert self.requests, "the recorder saw no request"
        return self.requests[-1]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    peer = Recorder()
    yield peer
    peer.close()


def client_of(peer: Recorder, **options: Any) -> Client:
    return Client(peer.url, timeout=5, **options)


def full_text(error: BaseException) -> str:
    """The message, repr and formatted traceback (with any chained exceptions) of
    ``error``: everything a program could print or log about it."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


# --- Requests, byte for byte ----------------------------------------------------------

CALLS: list[Any] = [
    pytest.param(lambda c: c.list(), "/api/list", b"{}", b"[]", id="list"),
    pytest.param(
        lambda c: c.get("x"),
        "/api/get",
        b'{"Name":"x","Version":0,"UpdateIfChanged":false}',
        b'{"Value":"aGk=","Version":1}',
        id="get",
    ),
    pytest.param(
        lambda c: c.get_version("x", 3),
        "/api/get",
        b'{"Name":"x","Version":3,"UpdateIfChanged":false}',
        b'{"Value":"aGk=","Version":3}',
        id="get_version",
    ),
    pytest.param(
        lambda c: c.get_if_changed("x", 0),
        "/api/get",
        b'{"Name":"x","Version":0,"UpdateIfChanged":false}',
        b'{"Value":"aGk=","Version":1}',
        id="get_if_changed-0-is-a-plain-get",
    ),
    pytest.param(
        lambda c: c.get_if_changed("x", 4),
        "/api/get",
        b'{"Name":"x","Version":4,"UpdateIfChanged":true}',
        b'{"Value":"aGk=","Version":5}',
        id="get_if_changed",
    ),
    pytest.param(
        lambda c: c.info("x"),
        "/api/info",
        b'{"Name":"x"}',
        b'{"Name":"x","Versions":[1],"ActiveVersion":1}',
        id="info",
    ),
    pytest.param(
        lambda c: c.put("x", b"hi"), "/api/put", b'{"Name":"x","Value":"aGk="}', b"1", id="put"
    ),
    pytest.param(
        lambda c: c.put("x", b""), "/api/put", b'{"Name":"x","Value":""}', b"2", id="put-empty"
    ),
    pytest.param(
        lambda c: c.create_version("x", 2, b"hi"),
        "/api/create-version",
        b'{"Name":"x","Version":2,"Value":"aGk="}',
        b"{}",
        id="create_version",
    ),
    pytest.param(
        lambda c: c.activate("x", 2),
        "/api/activate",
        b'{"Name":"x","Version":2}',
        b"{}",
        id="activate",
    ),
    pytest.param(
        lambda c: c.delete_version("x", 1),
        "/api/delete-version",
        b'{"Name":"x","Version":1}',
        b"{}",
        id="delete_version",
    ),
    pytest.param(lambda c: c.delete("x"), "/api/delete", b'{"Name":"x"}', b"{}", id="delete"),
    pytest.param(
        lambda c: c.put("naïve/ключ", b"\x00\xff"),
        "/api/put",
        '{"Name":"naïve/ключ","Value":"AP8="}'.encode(),
        b"1",
        id="put-unicode-name",
    ),
]


@pytest.mark.parametrize(("call", "path", "body", "reply"), CALLS)
def test_request_on_the_wire(
    recorder: Recorder, call: Callable[[Client], Any], path: str, body: bytes, reply: bytes
) -> None:
    """Every method POSTs compact JSON with all fields present to /api/<method>,
    with the JSON content type and the browser guard, and no Authorization header
    when no token is given."""
    recorder.reply(200, reply)
    call(client_of(recorder))
    seen = recorder.last
    assert (seen.method, seen.path, seen.body) == ("POST", path, body)
    assert seen.headers["content-type"] == "application/json"
    assert seen.headers["sec-x-tailscale-no-browsers"] == "setec"
    assert seen.headers["content-length"] == str(len(body))
    assert "authorization" not in seen.headers
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    ("suffix", "path"),
    [
        ("", "/api/get"),
        ("/", "/api/get"),
        ("/prefix", "/prefix/api/get"),
        ("/prefix/", "/prefix/api/get"),
    ],
)
def test_url_joining(recorder: Recorder, suffix: str, path: str) -> None:
    """The URL is the server address less one trailing slash, "/", the path."""
    recorder.reply(200, b'{"Value":"","Version":1}')
    Client(recorder.url + suffix, timeout=5).get("x")
    assert recorder.last.path == path


def test_bearer_token_header(recorder: Recorder) -> None:
    """A token travels as ``Authorization: Bearer <token>`` on every request."""
    recorder.reply(200, b"[]")
    client = client_of(recorder, token=TOKEN)
    client.list()
    client.delete("x")
    assert [r.headers["authorization"] for r in recorder.requests] == [f"Bearer {TOKEN}"] * 2


def test_custom_session_is_used(recorder: Recorder) -> None:
    """A requests.Session you pass sends the requests: its headers reach the server,
    and the API's own headers still win."""
    recorder.reply(200, b"[]")
    with requests.Session() as session:
        session.headers["X-Deployment"] = "blue"
        session.headers["Content-Type"] = "text/plain"
        client_of(recorder, session=session).list()
    assert recorder.last.headers["x-deployment"] == "blue"
    assert recorder.last.headers["content-type"] == "application/json"
    assert recorder.last.headers["sec-x-tailscale-no-browsers"] == "setec"


def test_no_server_address() -> None:
    """A Client needs a server address."""
    with pytest.raises(InvalidRequestError, match="no server address"):
        Client("")


@pytest.mark.parametrize("token", [f"{TOKEN}\n", f"{TOKEN} x", f"{TOKEN}€", f"\t{TOKEN}"])
def test_unsendable_token_is_refused_without_quoting_it(token: str) -> None:
    """A token no HTTP header can carry is refused when the Client is made, with a
    message that does not quote it (requests' own message would)."""
    with pytest.raises(InvalidRequestError, match="printable ASCII") as caught:
        Client("http://127.0.0.1:9", token=token)
    assert TOKEN not in full_text(caught.value)


@pytest.mark.parametrize(
    ("method", "version"),
    [("get_version", -1), ("get_version", 2**32), ("activate", True), ("delete_version", "1")],
)
def test_bad_version_is_refused_before_sending(
    recorder: Recorder, method: str, version: Any
) -> None:
    """A version that is not a uint32 is refused locally; nothing is sent."""
    with pytest.raises(InvalidRequestError):
        getattr(client_of(recorder), method)("x", version)
    assert recorder.requests == []


def test_value_must_be_bytes(recorder: Recorder) -> None:
    """A str value is refused (and not quoted): encode text first."""
    with pytest.raises(InvalidRequestError, match="must be bytes") as caught:
        client_of(recorder).put("x", VALUE.decode())  # type: ignore[arg-type]
    assert VALUE.decode() not in str(caught.value)
    assert recorder.requests == []


# --- Responses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error", "body", "message"),
    [
        (404, NotFound, b"not found\n", "not found"),
        (403, AccessDenied, b"access denied\n", "access denied"),
        (304, ValueNotChanged, b"", "value not changed"),
        (412, VersionClaimed, b"some text\n", "version is already claimed"),
        # A 404 or 403 that says more carries the server's reason, on one line.
        (404, NotFound, b"404 page not found\n", "not found: 404 page not found"),
        (
            403,
            AccessDenied,
            b"access denied: missing or unknown bearer token\n",
            "access denied: missing or unknown bearer token",
        ),
        (403, AccessDenied, b"whois\n  access denied\n", "access denied: whois access denied"),
        # A proxy's HTML page is not a reason.
        (404, NotFound, b"<html><body>Not Found</body></html>\n", "not found"),
        # Characters that are not printable are escapes, never sent to a terminal as
        # they are: ESC sequences that retitle the window and clear the screen, C1's
        # CSI, DEL, a right-to-left override, a zero-width joiner, private use.
        (
            403,
            AccessDenied,
            b"access denied: \x1b]0;pwned\x07\x1b[2J\n",
            "access denied: \\x1b]0;pwned\\a\\x1b[2J",
        ),
        (
            404,
            NotFound,
            "gone \u009b2J \x7f \u202eevil \u200d \ue000".encode(),
            "not found: gone \\u009b2J \\x7f \\u202eevil \\u200d \\ue000",
        ),
    ],
)
def test_sentinel_statuses(
    recorder: Recorder, status: int, error: type[SetecError], body: bytes, message: str
) -> None:
    """404, 403, 304 and 412 are the wire sentinels, with Go's messages; a 404 or 403
    whose body says more than Go's text carries it (the class is the same)."""
    recorder.reply(status, body, "text/plain")
    with pytest.raises(error) as caught:
        client_of(recorder).get_if_changed("x", 1)
    assert type(caught.value) is error
    assert str(caught.value) == message
    assert message.isprintable()


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, b"bad request\n", 'request returned status 400: "bad request"'),
        (500, b"internal error\n", 'request returned status 500: "internal error"'),
        (
            400,
            b"invalid version, please specify a version > 0\n",
            'request returned status 400: "invalid version, please specify a version > 0"',
        ),
        (201, b'{"Value":"aGk=","Version":1}', "request returned status 201: "),
        (204, b"", 'request returned status 204: ""'),
        (503, b'say "hi"\n', 'request returned status 503: "say \\"hi\\""'),
        # Quoted as Go's %q quotes: every character that is not printable an escape.
        (
            500,
            "boom \x1b]0;pwned\x07\x1b[2J \u009b \x7f \u202e \ue000".encode(),
            'request returned status 500: "boom \\x1b]0;pwned\\a\\x1b[2J \\u009b \\x7f '
            '\\u202e \\ue000"',
        ),
    ],
)
def test_other_statuses_are_request_errors(
    recorder: Recorder, status: int, body: bytes, message: str
) -> None:
    """Any other status, other 2xx included, is a RequestError carrying the
    status and the trimmed body, quoted Go-style."""
    recorder.reply(status, body, "text/plain")
    with pytest.raises(RequestError) as caught:
        client_of(recorder).get("x")
    assert caught.value.status == status
    assert caught.value.reason == body.decode().strip()
    assert str(caught.value).startswith(message)
    assert str(caught.value).isprintable()


BAD_200_BODIES = [
    pytest.param("get", b"", id="get-empty"),
    pytest.param("get", b"  \n", id="get-blank"),
    pytest.param("get", b"<html>" + VALUE + b"</html>", id="get-html"),
    pytest.param("get", b'{"Value":"' + VALUE + b'"', id="get-truncated"),
    pytest.param("get", b'"' + VALUE_B64.encode() + b'"', id="get-not-an-object"),
    pytest.param("get", b'{"Value":"' + VALUE + b'!","Version":1}', id="get-bad-base64"),
    pytest.param("get", b'{"Value":7,"Version":1}', id="get-value-not-a-string"),
    pytest.param("get", b'{"Value":"","Version":-1}', id="get-negative-version"),
    pytest.param("get", b'{"Value":"","Version":4294967296}', id="get-version-overflow"),
    pytest.param("get", b'{"Value":"","Version":1.5}', id="get-fractional-version"),
    pytest.param("get", b'{"Value":"","Version":"1"}', id="get-string-version"),
    pytest.param("list", b"", id="list-empty"),
    pytest.param("list", b"{}", id="list-object"),
    pytest.param("list", b'[{"Name":1}]', id="list-bad-name"),
    pytest.param("info", b'{"Name":"x","Versions":"1"}', id="info-bad-versions"),
    pytest.param("put", b"", id="put-empty"),
    pytest.param("put", b'"1"', id="put-string"),
    pytest.param("put", b"0", id="put-zero"),
    pytest.param("delete", b"", id="void-empty"),
    pytest.param("delete", b"nope", id="void-not-json"),
]


@pytest.mark.parametrize(("method", "body"), BAD_200_BODIES)
def test_undecodable_200_is_a_response_error(recorder: Recorder, method: str, body: bytes) -> None:
    """A 200 whose body does not decode (an empty one too) is a ResponseError
    ("unmarshaling response"), and its message does not quote the body."""
    recorder.reply(200, body)
    args: dict[str, tuple[Any, ...]] = {
        "get": ("x",),
        "list": (),
        "info": ("x",),
        "put": ("x", b"v"),
        "delete": ("x",),
    }
    with pytest.raises(ResponseError, match=r"^unmarshaling response") as caught:
        getattr(client_of(recorder), method)(*args[method])
    text = full_text(caught.value)
    assert VALUE.decode() not in text
    assert VALUE_B64 not in text


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"Value":"aGk=","Version":2}', SecretValue(b"hi", 2)),
        (b'{"value":"aGk=","version":2}', SecretValue(b"hi", 2)),
        (b'{"VALUE":"aGk=","VERSION":2}', SecretValue(b"hi", 2)),
        ('{"Value":"aGk=","Ver\u017fion":2}'.encode(), SecretValue(b"hi", 2)),
        (b'{"Version":2}', SecretValue(b"", 2)),
        (b'{"Value":null,"Version":2}', SecretValue(b"", 2)),
        (b'{"Value":"aGk=","Version":2,"version":null}', SecretValue(b"hi", 2)),
        (b'{"Value":"aGk=","value":null,"Version":2}', SecretValue(b"", 2)),
        (b'{"Value":"aG\\nk=","Version":2}', SecretValue(b"hi", 2)),
        (b'{"Value":"aGk=","Version":2,"Extra":[1,2]}', SecretValue(b"hi", 2)),
        (b'{"Value":"aGk=","Version":2}   \n', SecretValue(b"hi", 2)),
        (b'{"Value":"eA==","value":"eQ==","Value":"aGk=","Version":2}', SecretValue(b"hi", 2)),
    ],
)
def test_value_decoding(recorder: Recorder, body: bytes, expected: SecretValue) -> None:
    """Response keys match case-insensitively (Go's folding), the last one wins, a null
    leaves a number alone and empties a value, unknown keys are ignored."""
    recorder.reply(200, body)
    got = client_of(recorder).get("x")
    assert (got.value, got.version) == (expected.value, expected.version)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"null", []),
        (b"[]", []),
        (
            b'[{"name":"b","versions":[3,1],"activeversion":3},{"Name":"c"}]',
            [SecretInfo("b", (1, 3), 3), SecretInfo("c", (), 0)],
        ),
        (b'[{"Name":"a","Versions":null,"ActiveVersion":null}]', [SecretInfo("a", (), 0)]),
    ],
)
def test_list_decoding(recorder: Recorder, body: bytes, expected: list[SecretInfo]) -> None:
    """A ``null`` list is an empty list; SecretInfo keys are case-insensitive and
    its versions come back sorted."""
    recorder.reply(200, body)
    assert client_of(recorder).list() == expected


def test_info_decoding(recorder: Recorder) -> None:
    """info decodes SecretInfo with case-insensitive keys."""
    recorder.reply(200, b'{"NAME":"x","VERSIONS":[2,1],"ACTIVEVERSION":2}')
    assert client_of(recorder).info("x") == SecretInfo("x", (1, 2), 2)


def test_put_returns_the_version(recorder: Recorder) -> None:
    """put returns the version number the server answered."""
    recorder.reply(200, b"4294967295")
    assert client_of(recorder).put("x", b"v") == 2**32 - 1


def test_void_calls_ignore_the_object(recorder: Recorder) -> None:
    """The void calls accept any JSON object answer."""
    recorder.reply(200, b'{"Ignored":true}')
    assert client_of(recorder).activate("x", 1) is None


# --- Transport failures -----------------------------------------------------------------


@pytest.fixture
def closed_port_url() -> str:
    """The URL of a loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture
def silent_url() -> Iterator[str]:
    """The URL of a loopback port that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)  # the kernel completes the handshake; nobody ever reads
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_closed_port_is_unavailable(closed_port_url: str) -> None:
    """A port nobody listens on is UnavailableError, one line naming the URL."""
    with pytest.raises(UnavailableError) as caught:
        Client(closed_port_url, timeout=5).get("x")
    assert str(caught.value) == f"cannot connect to {closed_port_url}: connection refused"


def test_silent_server_times_out(silent_url: str) -> None:
    """A server that accepts but never answers fails the call within the read timeout."""
    client = Client(silent_url, timeout=(5, 0.3))
    start = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        client.list()
    assert str(caught.value) == f"no answer from {silent_url} within 0.3 s"
    assert time.monotonic() - start < 3


def test_one_number_timeout(silent_url: str) -> None:
    """One number is both the connect and the read timeout."""
    start = time.monotonic()
    with pytest.raises(UnavailableError, match=r"within 0\.2 s$"):
        Client(silent_url, timeout=0.2).get("x")
    assert time.monotonic() - start < 3


# --- Nothing leaks ----------------------------------------------------------------------


def test_token_never_leaks(
    recorder: Recorder,
    closed_port_url: str,
    silent_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The token appears in no repr, no error message or traceback, and no log line (at
    DEBUG, requests and urllib3 included), whatever goes wrong."""
    caplog.set_level(logging.DEBUG)
    texts = [repr(Client(url, token=TOKEN)) for url in (recorder.url, closed_port_url)]
    errors: list[BaseException] = []
    for status, body in [(400, b"bad"), (500, b"oops"), (403, b""), (200, b""), (200, b"<x")]:
        recorder.reply(status, body)
        with pytest.raises(SetecError) as caught:
            client_of(recorder, token=TOKEN).get("x")
        errors.append(caught.value)
    for url, timeout in [(closed_port_url, 5.0), (silent_url, 0.2)]:
        with pytest.raises(UnavailableError) as unavailable:
            Client(url, token=TOKEN, timeout=timeout).put("x", VALUE)
        errors.append(unavailable.value)
    texts += [full_text(e) for e in errors]
    texts.append(caplog.text)
    assert recorder.requests[0].headers["authorization"] == f"Bearer {TOKEN}"  # it was sent
    for text in texts:
        assert TOKEN not in text


def test_values_never_appear_in_errors(
    recorder: Recorder, closed_port_url: str, silent_url: str
) -> None:
    """A value sent (put, create-version) is in no error message, whatever the
    answer; neither is a value received in an answer that fails to decode."""
    failures: list[BaseException] = []
    for status, body in [(400, b"bad request"), (500, b"internal error"), (201, b"{}")]:
        recorder.reply(status, body)
        for call in (
            lambda c: c.put("x", VALUE),
            lambda c: c.create_version("x", 7, VALUE),
        ):
            with pytest.raises(RequestError) as caught:
                call(client_of(recorder))
            failures.append(caught.value)
    recorder.reply(200, b'{"Value":"' + VALUE_B64.encode() + b'","Version":"1"}')
    with pytest.raises(ResponseError) as response_error:
        client_of(recorder).get("x")
    failures.append(response_error.value)
    for url, timeout in [(closed_port_url, 5.0), (silent_url, 0.2)]:
        with pytest.raises(UnavailableError) as unavailable:
            Client(url, timeout=timeout).put("x", VALUE)
        failures.append(unavailable.value)
    assert json.loads(recorder.requests[0].body)["Value"] == VALUE_B64  # it was sent
    for error in failures:
        text = full_text(error)
        assert VALUE.decode() not in text
        assert VALUE_B64 not in text


# --- Against a real server ----------------------------------------------------------------


@pytest.fixture
def client() -> Iterator[Client]:
    with new_server() as server:
        yield server.client(timeout=5)


def test_round_trip_of_every_method(client: Client) -> None:
    """Each method against a real server, in the order a program meets
    them."""
    assert client.list() == []
    assert client.put("app/key", b"one") == 1
    assert client.put("app/key", b"one") == 1  # the same value: the latest version again
    assert client.put("app/key", b"two") == 2
    assert client.get("app/key") == SecretValue(b"one", 1)  # put does not activate
    assert client.get_version("app/key", 2) == SecretValue(b"two", 2)
    assert client.info("app/key") == SecretInfo("app/key", (1, 2), 1)
    client.activate("app/key", 2)
    assert client.get("app/key") == SecretValue(b"two", 2)
    with pytest.raises(ValueNotChanged):
        client.get_if_changed("app/key", 2)
    assert client.get_if_changed("app/key", 1) == SecretValue(b"two", 2)
    assert client.get_if_changed("app/key", 0) == SecretValue(b"two", 2)
    client.create_version("app/key", 5, b"five")  # made active
    assert client.get("app/key") == SecretValue(b"five", 5)
    with pytest.raises(VersionClaimed):
        client.create_version("app/key", 5, b"again")
    client.delete_version("app/key", 1)
    with pytest.raises(VersionClaimed):
        client.create_version("app/key", 1, b"deleted versions stay claimed")
    with pytest.raises(NotFound):
        client.get_version("app/key", 1)
    assert client.put("other", b"") == 1
    assert client.get("other") == SecretValue(b"", 1)
    assert client.list() == [
        SecretInfo("app/key", (2, 5), 5),
        SecretInfo("other", (1,), 1),
    ]
    client.delete("app/key")
    client.delete("app/key")  # deleting what does not exist is not an error
    with pytest.raises(NotFound):
        client.get("app/key")
    with pytest.raises(NotFound):
        client.info("app/key")
    assert client.put("app/key", b"again") == 1  # numbering restarts after a delete
    assert [info.name for info in client.list()] == ["app/key", "other"]


def test_server_refusals(client: Client) -> None:
    """What the server refuses surfaces as a RequestError with its reason, or a
    sentinel."""
    client.put("app/key", b"one")
    with pytest.raises(RequestError, match="invalid version") as zero:
        client.create_version("app/key", 0, b"x")
    assert zero.value.status == 400
    with pytest.raises(RequestError) as active:
        client.delete_version("app/key", 1)
    assert active.value.status in (400, 500)
    with pytest.raises(NotFound):
        client.activate("app/key", 9)
    with pytest.raises(NotFound):
        client.get_if_changed("missing", 1)


def test_restricted_caller_is_denied() -> None:
    """A caller allowed get and info on ``app/*`` only is denied elsewhere (403 →
    AccessDenied) and lists only what it may see."""
    with new_database() as db:
        db.put(SUPERUSER, "app/key", b"app")
        db.put(SUPERUSER, "ops/key", b"ops")
        reader = make_caller((["get", "info"], ["app/*"]), user="reader@example.com")
        with new_server(db, caller=reader) as server:
            client = server.client(timeout=5)
            assert client.get("app/key") == SecretValue(b"app", 1)
            assert [info.name for info in client.list()] == ["app/key"]
            with pytest.raises(AccessDenied):
                client.get("ops/key")
            with pytest.raises(AccessDenied):
                client.info("ops/key")
            with pytest.raises(AccessDenied):
                client.put("app/key", b"new")
            with pytest.raises(AccessDenied):
                client.delete("app/key")
        assert db.get(SUPERUSER, "app/key") == SecretValue(b"app", 1)


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    """A policy granting TOKEN get, info and put on ``team/*`` as alice."""
    entry = policy_entry(
        TOKEN,
        user="alice@example.com",
        rules=[{"action": ["get", "info", "put"], "secret": ["team/*"]}],
    )
    path = tmp_path / "policy.json"
    path.write_text(json.dumps({"tokens": [entry]}))
    return path


def test_policy_authorizer_with_bearer_token(
    policy_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With the policy authorizer, the token decides who the caller is: its rules
    apply, no token or another token is AccessDenied, and the token is logged
    nowhere, by the client or the server."""
    caplog.set_level(logging.DEBUG)
    with new_database() as db, new_server(db, authorizer=PolicyAuthorizer(str(policy_file))) as s:
        client = s.client(token=TOKEN, timeout=5)
        assert client.put("team/key", VALUE) == 1
        assert client.get("team/key") == SecretValue(VALUE, 1)
        with pytest.raises(AccessDenied):
            client.put("ops/key", b"x")
        with pytest.raises(AccessDenied):
            client.activate("team/key", 1)
        for other in (s.client(timeout=5), s.client(token=new_token(), timeout=5)):
            with pytest.raises(AccessDenied):
                other.get("team/key")
        users = {entry["principal"].get("user") for entry in audit_entries(db)}
    assert users == {"alice@example.com"}
    assert TOKEN not in caplog.text
    assert VALUE.decode() not in caplog.text
