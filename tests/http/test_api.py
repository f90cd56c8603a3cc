"""The HTTP API through the WSGI app: the request pipeline (docs/api.md §2) as a
table of cases, the endpoints (docs/api.md §4), the status table, and what
the server sends besides the body (headers, request ids, logs without values)."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client, TestResponse

from setec_core import AccessDenied, Database, Peer, UnavailableError, make_caller, wire
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.http import make_app
from setec_core.http.app import DEFAULT_MAX_REQUEST_BYTES, SMALL_BODY_BYTES
from setec_core.http.route import Answer, RequestContext
from setec_core.testing import (
    SUPERUSER,
    TEST_KEY,
    FailingAuditSink,
    FixedAuthorizer,
    audit_entries,
    new_database,
)
from setec_core.wire import reply as replies
from setec_core.wire.endpoint import GET_MANY_BODY_BYTES

GUARD = {"Sec-X-Tailscale-No-Browsers": "setec"}
JSON = "application/json"
SECRET = b"hunter2-do-not-leak"


@pytest.fixture
def db() -> Iterator[Database]:
    """A new in-memory database."""
    with new_database() as db:
        yield db


@pytest.fixture
def authz() -> FixedAuthorizer:
    """An authorizer that identifies every request as SUPERUSER, until told otherwise."""
    return FixedAuthorizer(SUPERUSER)


@pytest.fixture
def client(db: Database, authz: FixedAuthorizer) -> Client:
    """A werkzeug test client of the app, with a 4096-byte body limit."""
    return Client(make_app(db, authz, max_request_bytes=4096))


def api(
    client: Client,
    method: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
    content_type: str | None = JSON,
    http_method: str = "POST",
    environ_overrides: dict[str, str] | None = None,
) -> TestResponse:
    """Call ``/api/<method>`` the way a Go client does, unless told otherwise
    (``environ_overrides`` sets WSGI environ keys as a server other than setec's
    might)."""
    data = raw if raw is not None else json.dumps(body).encode()
    hdrs = dict(GUARD if headers is None else headers)
    if content_type is not None:
        hdrs["Content-Type"] = content_type
    return client.open(
        f"/api/{method}",
        method=http_method,
        data=data,
        headers=hdrs,
        environ_overrides=environ_overrides,
    )


def b64(value: bytes) -> str:
    """``value`` as standard base64 text."""
    return base64.b64encode(value).decode()


# --- the pipeline, in order (docs/api.md §2) --------------------------------------

PIPELINE = [
    # (id, kwargs for api(), status, body)
    ("GET is not allowed", {"http_method": "GET"}, 400, "only POST requests allowed\n"),
    ("PUT is not allowed", {"http_method": "PUT"}, 400, "only POST requests allowed\n"),
    (
        "method before content type",
        {"http_method": "GET", "content_type": None},
        400,
        "only POST requests allowed\n",
    ),
    ("no content type", {"content_type": None}, 400, "request body must be json\n"),
    ("text/plain", {"content_type": "text/plain"}, 400, "request body must be json\n"),
    (
        "content type before guard",
        {"content_type": "text/plain", "headers": {}},
        400,
        "request body must be json\n",
    ),
    ("no browser guard", {"headers": {}}, 403, "access denied\n"),
    (
        "wrong guard value",
        {"headers": {"Sec-X-Tailscale-No-Browsers": "Setec"}},
        403,
        "access denied\n",
    ),
    ("guard before body", {"headers": {}, "raw": b"{"}, 403, "access denied\n"),
    ("empty body", {"raw": b""}, 400, None),
    ("syntax error", {"raw": b'{"Name":'}, 400, None),
    ("top level array", {"raw": b"[]"}, 400, None),
    ("deep nesting", {"raw": b"[" * 4000}, 400, None),
    ("huge number", {"raw": b'{"Name":"a","Version":' + b"9" * 4000 + b"}"}, 400, None),
    ("version out of range", {"body": {"Name": "a", "Version": 4294967296}}, 400, None),
    ("negative version", {"body": {"Name": "a", "Version": -1}}, 400, None),
    ("fractional version", {"body": {"Name": "a", "Version": 1.5}}, 400, None),
    ("string version", {"body": {"Name": "a", "Version": "1"}}, 400, None),
    ("name not a string", {"body": {"Name": 5}}, 400, None),
    (
        "body too large",
        {"raw": b'{"Name":"' + b"a" * 5000 + b'"}'},
        413,
        "request body too large: the limit is 4096 bytes\n",
    ),
]


@pytest.mark.parametrize(
    ("kwargs", "status", "body"),
    [pytest.param(k, s, b, id=i) for i, k, s, b in PIPELINE],
)
def test_pipeline(client: Client, kwargs: dict[str, Any], status: int, body: str | None) -> None:
    """Each step of the pipeline refuses with its own status, in Go's order."""
    kwargs = {"body": {"Name": "x"}, **kwargs}
    resp = api(client, "get", **kwargs)
    assert resp.status_code == status
    assert resp.headers["Content-Type"] == "text/plain; charset=utf-8"
    text = resp.get_data(as_text=True)
    assert text.endswith("\n")
    assert "\n" not in text[:-1], "a reason must be one line"
    if body is not None:
        assert text == body


@pytest.mark.parametrize("length", ["\u00b2", "\u0663", "1\u00b2"])
def test_non_ascii_digits_in_content_length_are_400(client: Client, length: str) -> None:
    """A Content-Length of digits other than ASCII ones ("²", "٣") is a client mistake:
    400 "invalid Content-Length", as the reason table says (docs/api.md §5.1), never a
    500 nor a length read as 3. setec's front refuses it before the app; another WSGI
    server may not."""
    resp = api(
        client, "put", {"Name": "a", "Value": "eA=="}, environ_overrides={"CONTENT_LENGTH": length}
    )
    assert (resp.status_code, resp.get_data(as_text=True)) == (400, "invalid Content-Length\n")


@pytest.mark.parametrize(
    ("path", "method", "status", "body"),
    [
        ("/healthz", "get", 200, b"ok\n"),
        ("/healthz", "Get", 200, b"ok\n"),
        ("/healthz", "head", 200, b""),
        ("/api/list", "post", 200, b"null"),
        ("/api/list", "get", 400, b"only POST requests allowed\n"),
    ],
)
def test_the_method_is_read_in_upper_case(
    client: Client, path: str, method: str, status: int, body: bytes
) -> None:
    """A WSGI server that passes the method as the client sent it ("get") gets the
    answer werkzeug gave, which upper-cased it: a lower-case GET of /healthz is 200, a
    lower-case HEAD has no body."""
    resp = client.open(
        path,
        method="POST" if path.startswith("/api/") else "GET",
        data=b"{}",
        headers={**GUARD, "Content-Type": JSON},
        environ_overrides={"REQUEST_METHOD": method},
    )
    assert (resp.status_code, resp.get_data()) == (status, body)


def test_bad_base64_is_400(client: Client) -> None:
    """A Value that is not padded standard base64 is 400, naming the field
    (docs/api.md §3.1)."""
    resp = api(client, "put", {"Name": "a", "Value": "not base64!"})
    assert resp.status_code == 400
    assert "Value" in resp.get_data(as_text=True)


def test_content_type_with_charset_is_accepted(client: Client, db: Database) -> None:
    """Our deliberate difference: parameters on the JSON content type are fine."""
    db.put(SUPERUSER, "a", b"v")
    resp = api(client, "get", {"Name": "a"}, content_type="application/json; charset=utf-8")
    assert resp.status_code == 200


def test_guard_header_name_is_case_insensitive(client: Client, db: Database) -> None:
    """The browser guard header's name matches in any case (docs/api.md §2, step 4)."""
    db.put(SUPERUSER, "a", b"v")
    resp = api(client, "get", {"Name": "a"}, headers={"sec-x-tailscale-no-browsers": "setec"})
    assert resp.status_code == 200


@pytest.mark.parametrize(
    ("error", "status", "body"),
    [
        (
            AccessDenied("access denied: 127.0.0.9 is not a known tailnet peer"),
            403,
            "access denied: 127.0.0.9 is not a known tailnet peer\n",
        ),
        (UnavailableError("tailscaled is not answering"), 503, "tailscaled is not answering\n"),
        (RuntimeError("bug"), 500, "unable to identify caller\n"),
        (AccessDenied(""), 403, "access denied\n"),
    ],
    ids=["unknown peer", "identity service down", "authorizer bug", "refusal without a reason"],
)
def test_identity_failures(
    client: Client, authz: FixedAuthorizer, error: Exception, status: int, body: str
) -> None:
    """An unknown peer is 403 with the authorizer's reason, an identity service that is
    down is 503, and an authorizer bug is 500 without its message (docs/api.md §2,
    step 5)."""
    authz.error = error
    resp = api(client, "get", {"Name": "a"})
    assert (resp.status_code, resp.get_data(as_text=True)) == (status, body)


def test_identity_comes_before_the_body(client: Client, authz: FixedAuthorizer) -> None:
    """An unidentified caller is refused before its body is read: 403, not 400
    (docs/api.md §2)."""
    authz.error = AccessDenied()
    assert api(client, "get", raw=b"{").status_code == 403


def test_guard_comes_before_identity(client: Client, authz: FixedAuthorizer) -> None:
    """Without the browser guard the authorizer is never asked (docs/api.md §2)."""
    authz.error = UnavailableError("down")
    assert api(client, "get", {"Name": "a"}, headers={}).status_code == 403
    assert authz.identified == 0


@pytest.mark.parametrize(
    ("environ", "address", "port", "tls", "unix"),
    [
        ({"REMOTE_ADDR": "100.64.0.7", "REMOTE_PORT": "51234"}, "100.64.0.7", 51234, False, False),
        ({"REMOTE_ADDR": "::1"}, "::1", None, True, False),
        ({"REMOTE_ADDR": "", "REMOTE_PORT": "", "setec.transport": "unix"}, "", None, False, True),
    ],
    ids=["tcp", "tls-without-port", "unix-socket"],
)
def test_the_authorizer_is_given_a_peer(
    client: Client,
    authz: FixedAuthorizer,
    environ: dict[str, str],
    address: str,
    port: int | None,
    tls: bool,
    unix: bool,
) -> None:
    """The authorizer gets a Peer (docs/api.md §2, step 5): the connection's address and
    port, TLS, unix socket, and the request's headers by name in any case; not the
    WSGI environ."""
    headers = {**GUARD, "Content-Type": JSON, "Authorization": "Bearer t0ken"}
    base_url = "https://localhost" if tls else "http://localhost"
    resp = client.post(
        "/api/list", data=b"{}", headers=headers, environ_base=environ, base_url=base_url
    )
    assert resp.status_code == 200
    peer = authz.peer
    assert isinstance(peer, Peer)
    assert (peer.address, peer.port, peer.tls, peer.unix) == (address, port, tls, unix)
    assert peer.headers.get("authorization") == "Bearer t0ken"
    assert peer.headers["Content-Type"] == JSON
    assert peer.headers.get("Remote-Addr") is None
    assert not hasattr(peer, "environ")


def test_middleware_wraps_wsgi_app(db: Database) -> None:
    """As in Flask, middleware wraps app.wsgi_app; the app, called as before, goes
    through it."""
    app = make_app(db, FixedAuthorizer(SUPERUSER))
    seen: list[str] = []
    inner = app.wsgi_app

    def middleware(environ: dict[str, Any], start_response: Any) -> Any:
        seen.append(environ["PATH_INFO"])
        return inner(environ, start_response)

    app.wsgi_app = middleware  # type: ignore[method-assign]
    assert Client(app).get("/healthz").status_code == 200
    assert seen == ["/healthz"]


@pytest.mark.parametrize("endpoint", wire.ENDPOINTS, ids=lambda e: e.name)
def test_every_endpoint_is_routed_with_its_body_limit(db: Database, endpoint: Any) -> None:
    """Every endpoint of the wire table, which the client speaks too, is served: a POST
    reaches the decoder (an empty body is 400 "body is empty", not 404), and the front
    is told its body limit (docs/api.md §2, step 6)."""
    app = make_app(db, FixedAuthorizer(SUPERUSER))
    resp = api(Client(app), endpoint.name, raw=b"")
    assert (resp.status_code, resp.text) == (400, "bad request: body is empty\n")
    # A value, or a watch's 1,000 names, may take what --max-request-bytes allows.
    big = endpoint.name in ("put", "create-version", "watch")
    limit = DEFAULT_MAX_REQUEST_BYTES if big else SMALL_BODY_BYTES
    if endpoint.name == "get-many":  # what 100 names take (docs/api.md §9.3)
        limit = GET_MANY_BODY_BYTES
    assert app.body_limit("POST", endpoint.path) == limit
    assert app.body_limit("POST", "/elsewhere") == SMALL_BODY_BYTES


def test_every_endpoint_needs_a_handler(db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """An endpoint added to the wire table without its ``on_<name>`` operation stops
    the app at start-up, naming the missing handler, rather than answering 404."""
    extra = wire.Endpoint("frobnicate", wire.NameRequest, replies.EMPTY)
    monkeypatch.setattr(wire, "ENDPOINTS", (*wire.ENDPOINTS, extra))
    with pytest.raises(AttributeError, match="on_frobnicate"):
        make_app(db, FixedAuthorizer(SUPERUSER))


@pytest.mark.parametrize("path", ["/api/unknown", "/api/get/", "/foo", "/static/x.css"])
def test_unknown_paths_are_404(client: Client, path: str) -> None:
    """Any path the app does not serve is 404, trailing slashes included
    (docs/api.md §1.2)."""
    resp = client.post(path, data=b"{}", headers={**GUARD, "Content-Type": JSON})
    assert (resp.status_code, resp.get_data(as_text=True)) == (404, "not found\n")


# --- the endpoints (docs/api.md §4) ----------------------------------------------


def test_put_get_round_trip_exact_bytes(client: Client) -> None:
    """Put answers the bare version and get the value, byte for byte
    (docs/api.md §4.4 and §4.2)."""
    resp = api(client, "put", {"Name": "prod/db", "Value": b64(SECRET)})
    assert (resp.status_code, resp.data) == (200, b"1")
    assert resp.headers["Content-Type"] == JSON
    resp = api(client, "get", {"name": "prod/db"})  # lower-case keys, as the seed's curl
    assert resp.data == b'{"Value":"' + b64(SECRET).encode() + b'","Version":1}'


def test_conditional_get_304_then_new_version(client: Client, db: Database) -> None:
    """A conditional get of the active version is 304, empty; after activate, the new one."""
    db.put(SUPERUSER, "a", b"one")
    db.put(SUPERUSER, "a", b"two")
    resp = api(client, "get", {"Name": "a", "Version": 1, "UpdateIfChanged": True})
    assert (resp.status_code, resp.data) == (304, b"")
    assert (api(client, "activate", {"Name": "a", "Version": 2}).data) == b"{}"
    resp = api(client, "get", {"Name": "a", "Version": 1, "UpdateIfChanged": True})
    assert json.loads(resp.data) == {"Value": b64(b"two"), "Version": 2}


def test_get_version_zero_with_update_if_changed_is_a_plain_get(
    client: Client, db: Database
) -> None:
    """Version 0 with UpdateIfChanged is the active value (docs/api.md §4.2)."""
    db.put(SUPERUSER, "a", b"one")
    resp = api(client, "get", {"Name": "a", "Version": 0, "UpdateIfChanged": True})
    assert json.loads(resp.data) == {"Value": b64(b"one"), "Version": 1}


def test_acl_and_not_found(client: Client, db: Database, authz: FixedAuthorizer) -> None:
    """Go's server test: a caller allowed get, info and delete on ok/* only."""
    db.put(SUPERUSER, "ok/test", b"v1")
    db.put(SUPERUSER, "ok/test", b"v2")
    db.put(SUPERUSER, "no/test", b"v1")
    authz.caller = make_caller((["get", "info", "delete"], ["ok/*"]), user="test@example.com")
    assert api(client, "get", {"Name": "no/test", "Version": 1}).status_code == 403
    assert api(client, "get", {"Name": "ok/test", "Version": 9}).status_code == 404
    assert api(client, "put", {"Name": "ok/test", "Value": "eA=="}).status_code == 403
    resp = api(client, "delete-version", {"Name": "ok/test", "Version": 1})
    assert resp.status_code == 400  # deleting the active version: 500 in Go, 400 here
    assert "active" in resp.get_data(as_text=True)
    assert api(client, "delete-version", {"Name": "ok/test", "Version": 2}).data == b"{}"


def test_list_empty_is_null_and_sorted(client: Client, db: Database) -> None:
    """An empty list is null; names are sorted (docs/api.md §4.1)."""
    assert api(client, "list", {}).data == b"null"
    db.put(SUPERUSER, "b", b"1")
    db.put(SUPERUSER, "a", b"1")
    db.put(SUPERUSER, "a", b"2")
    listed = json.loads(api(client, "list", None).data)
    # A put is an access: each carries its time last (docs/api.md §9.5).
    assert [info.pop("LastAccess")[-1] for info in listed] == ["Z", "Z"]
    assert listed == [
        {"Name": "a", "Versions": [1, 2], "ActiveVersion": 1},
        {"Name": "b", "Versions": [1], "ActiveVersion": 1},
    ]


def test_create_version_rules(client: Client, db: Database, authz: FixedAuthorizer) -> None:
    """Version 0 is 400 even for a caller who may not create; a claimed version is 412."""
    authz.caller = make_caller(user="nobody@example.com")
    resp = api(client, "create-version", {"Name": "a", "Version": 0, "Value": "eA=="})
    assert resp.status_code == 400
    assert resp.get_data(as_text=True).startswith("invalid version, please specify a version > 0")
    authz.caller = SUPERUSER
    assert api(client, "create-version", {"Name": "a", "Version": 5, "Value": "eA=="}).data == b"{}"
    resp = api(client, "create-version", {"Name": "a", "Version": 5, "Value": "eQ=="})
    assert (resp.status_code, resp.data) == (412, b"version already set\n")


@pytest.mark.parametrize(
    ("method", "body"),
    [
        ("put", {"Name": "", "Value": "eA=="}),
        ("put", {"Name": "_internal/x", "Value": "eA=="}),
        ("create-version", {"Name": "_internal/x", "Version": 1, "Value": "eA=="}),
        ("activate", {"Name": "a", "Version": 0}),
        ("delete-version", {"Name": "a", "Version": 0}),
        ("delete", {"Name": "_internal/x"}),
    ],
)
def test_client_mistakes_go_answers_with_500_are_400(
    client: Client, db: Database, method: str, body: dict[str, Any]
) -> None:
    """Empty names, version 0 and reserved names are the client's mistake: 400 with a
    reason, where Go answers 500."""
    db.put(SUPERUSER, "a", b"v")
    resp = api(client, method, body)
    assert resp.status_code == 400
    assert resp.get_data(as_text=True).strip()


def test_delete_missing_is_ok_and_void_bodies(client: Client, db: Database) -> None:
    """Deleting a missing secret succeeds; void answers are {} (docs/api.md §4.8)."""
    assert api(client, "delete", {"Name": "nothing"}).data == b"{}"
    db.put(SUPERUSER, "a", b"v")
    assert api(client, "delete", {"Name": "a"}).data == b"{}"
    assert api(client, "get", {"Name": "a"}).status_code == 404


def test_audit_failure_is_500_and_no_value() -> None:
    """Fail-closed at the HTTP edge: the value never leaves if its audit line cannot."""
    sink = FailingAuditSink()
    with new_database(audit_sink=sink) as db:
        db.put(SUPERUSER, "a", SECRET)
        sink.fail_writes = True
        resp = api(Client(make_app(db, FixedAuthorizer(SUPERUSER))), "get", {"Name": "a"})
    assert (resp.status_code, resp.data) == (500, b"internal error\n")


# --- what comes with every response ---------------------------------------------------


def test_security_headers_and_request_id(client: Client, db: Database) -> None:
    """Every answer carries the browser security headers (HSTS only over TLS) and an
    X-Request-Id that matches the request's audit entry."""
    db.put(SUPERUSER, "a", b"v")
    resp = api(client, "get", {"Name": "a"})
    assert "frame-ancestors 'none'" in resp.headers["Content-Security-Policy"]
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.headers["X-Frame-Options"] == "DENY"
    assert "Strict-Transport-Security" not in resp.headers  # plain HTTP
    rid = resp.headers["X-Request-Id"]
    assert audit_entries(db)[-1]["request"] == rid
    tls_client = Client(make_app(db, FixedAuthorizer(SUPERUSER), tls=True))
    assert "max-age" in api(tls_client, "get", {"Name": "a"}).headers["Strict-Transport-Security"]


def test_reprs_never_show_credentials_or_values(db: Database, authz: FixedAuthorizer) -> None:
    """A request's context and its answer may be printed while debugging: their reprs
    show neither the bearer token the request carried nor a value it put or got."""
    app = make_app(db, authz)
    seen: list[object] = []
    dispatch = app.dispatch_request

    def recording(ctx: RequestContext) -> Answer:
        answer = dispatch(ctx)
        seen.extend((ctx, answer))
        return answer

    app.dispatch_request = recording  # type: ignore[method-assign]
    client = Client(app)
    token = "setec_canary-bearer-token-7e1d"
    headers = {**GUARD, "Authorization": f"Bearer {token}"}
    assert (
        api(client, "put", {"Name": "a", "Value": b64(SECRET)}, headers=headers).status_code == 200
    )
    get = api(client, "get", {"Name": "a"}, headers=headers)
    assert (get.status_code, get.json) == (200, {"Value": b64(SECRET), "Version": 1})
    assert len(seen) == 4
    for record in seen:
        for forbidden in (token, b64(SECRET), SECRET.decode(), repr(SECRET)):
            assert forbidden not in repr(record)


def test_logs_never_contain_values(
    client: Client, db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """One access-log line per request names the secret; no log line holds a value,
    raw or base64, whatever the request."""
    caplog.set_level(logging.DEBUG)
    api(client, "put", {"Name": "a", "Value": b64(SECRET)})
    api(client, "get", {"Name": "a"})
    api(client, "put", {"Name": "", "Value": b64(SECRET)})
    api(client, "create-version", {"Name": "a", "Version": 0, "Value": b64(SECRET)})
    api(client, "put", raw=b'{"Name":"a","Value":"' + b64(SECRET).encode() + b'"')
    access = [r for r in caplog.records if r.name == "setec.http.access"]
    assert len(access) == 5
    assert json.loads(access[1].getMessage())["secret"] == "a"
    for secret in (SECRET.decode(), b64(SECRET)):
        assert secret not in caplog.text


def test_long_names_are_cut_in_the_access_log(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """A secret name in the access log is cut to 256 characters."""
    caplog.set_level(logging.INFO)
    name = "n" * 1024
    assert api(client, "info", {"Name": name}).status_code == 404
    (record,) = [r for r in caplog.records if r.name == "setec.http.access"]
    assert json.loads(record.getMessage())["secret"] == "n" * 256 + "…"


@pytest.mark.parametrize("method", ["get", "info", "put", "delete", "activate"])
def test_names_over_1024_bytes_are_400_and_never_audited(
    client: Client, db: Database, method: str
) -> None:
    """An unbounded name went whole into every audit entry, even for a caller with no
    grants (50 denied gets of 1 MB names added 50 MB to the log): names are limited to
    1,024 UTF-8 bytes, checked before anything is audited."""
    sink = db.audit_log.sink
    assert isinstance(sink, MemoryAuditSink)
    before = len(sink.getvalue())
    name = "é" * 513  # 1,026 bytes in 513 characters: bytes are what count
    resp = api(client, method, {"Name": name, "Version": 1, "Value": b64(b"v")})
    assert resp.status_code == 400
    assert "names are at most 1024 bytes" in resp.get_data(as_text=True)
    assert len(resp.get_data()) < 200
    assert len(sink.getvalue()) == before
    ok = api(client, "put", {"Name": "é" * 512, "Value": b64(b"v")})
    assert ok.status_code == 200


class BuggyDatabase(Database):
    """A Database with a bug in put whose message quotes the value, chained to another
    exception that quotes it too: the worst a bug can do to a log."""

    def put(self, caller: Any, name: str, value: bytes, **guards: Any) -> int:
        try:
            raise KeyError(value)
        except KeyError as e:
            raise RuntimeError(f"cannot store {value!r}") from e


def test_bugs_are_500_and_their_messages_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected exception is a 500 "internal error"; the log names its type and the
    frames, never its message (which may quote a value) nor the exceptions chained to it."""
    caplog.set_level(logging.DEBUG)
    db = BuggyDatabase.open(key=TEST_KEY, storage="memory://", audit=AuditLog(MemoryAuditSink()))
    with db:
        authz = FixedAuthorizer(SUPERUSER)
        client = Client(make_app(db, authz))
        put = api(client, "put", {"Name": "a", "Value": b64(SECRET)})
        assert (put.status_code, put.text) == (500, "internal error\n")
        authz.error = ValueError(f"token {SECRET.decode()} is odd")
        got = api(client, "get", {"Name": "a"})
        assert (got.status_code, got.text) == (500, "unable to identify caller\n")
    bugs = [r.getMessage() for r in caplog.records if r.name == "setec.http"]
    assert any("RuntimeError (message withheld)" in m for m in bugs)
    assert any("ValueError (message withheld)" in m for m in bugs)
    assert any("test_api.py" in m for m in bugs), "the frames are missing"
    for secret in (SECRET.decode(), b64(SECRET), repr(SECRET)):
        assert secret not in caplog.text


# --- dashboard, health and metrics ----------------------------------------------------


def test_dashboard_rows_escaped_and_no_values(
    client: Client, db: Database, authz: FixedAuthorizer
) -> None:
    """The dashboard (docs/api.md §1.4), for two callers with different rules."""
    db.put(SUPERUSER, "team/<script>alert(1)</script>", SECRET)
    db.put(SUPERUSER, "team/app", b"1")
    db.put(SUPERUSER, "team/app", b"2")
    db.activate(SUPERUSER, "team/app", 2)
    db.put(SUPERUSER, "other/x", b"1")
    authz.caller = make_caller((["info"], ["team/*"]), user="alice@example.com")
    resp = client.get("/")
    page = resp.get_data(as_text=True)
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script>" not in page
    assert "1, <b>2</b>" in page
    assert "other/x" not in page
    assert SECRET.decode() not in page
    authz.caller = make_caller((["info"], ["other/*"]), user="bob@example.com")
    page = client.get("/").get_data(as_text=True)
    assert "other/x" in page
    assert "team/app" not in page
    assert client.post("/").status_code == 400
    head = client.head("/")  # HEAD is GET without the body (RFC 9110, section 9.3.2)
    get = client.get("/")
    assert (head.status_code, head.get_data()) == (200, b"")
    assert head.headers["Content-Length"] == get.headers["Content-Length"] != "0"
    css = client.get("/static/style.css")
    assert (css.status_code, css.headers["Content-Type"]) == (200, "text/css; charset=utf-8")


def test_healthz(client: Client, db: Database) -> None:
    """/healthz is "ok" until the audit log fails, then 503 saying why."""
    assert (client.get("/healthz").status_code, client.get("/healthz").data) == (200, b"ok\n")
    db.audit_log.close()
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert "closed" in resp.get_data(as_text=True)


def test_metrics(client: Client, db: Database) -> None:
    """/metrics counts API calls before any check, and requests by method and status;
    unknown paths are counted as "other"."""
    db.put(SUPERUSER, "a", b"v")
    api(client, "get", {"Name": "a"})
    api(client, "get", {"Name": "missing"})
    api(client, "get", {"Name": "a"}, headers={})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'setec_api_calls_total{method="/api/get"} 3.0' in text
    assert 'setec_http_requests_total{class="2xx",code="200",method="/api/get"} 1.0' in text
    assert 'setec_http_requests_total{class="4xx",code="404",method="/api/get"} 1.0' in text
    assert 'setec_http_requests_total{class="4xx",code="403",method="/api/get"} 1.0' in text
    assert 'setec_http_request_duration_seconds_count{method="/api/get"} 3.0' in text
    assert "setec_audit_sync_seconds_count" in text
    assert "setec_audit_healthy 1.0" in text
    client.get("/nope")
    assert 'method="other"' in client.get("/metrics").get_data(as_text=True)


def test_metrics_count_every_request_from_every_thread(db: Database) -> None:
    """Counts are kept per thread without locks and summed at scrape time: none is lost
    when many threads answer at once, and the histogram's buckets add up."""
    app = make_app(db, FixedAuthorizer(SUPERUSER))
    db.put(SUPERUSER, "a", b"v")

    def worker() -> None:
        client = Client(app)
        for _ in range(50):
            api(client, "get", {"Name": "a"})

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    text = Client(app).get("/metrics").get_data(as_text=True)
    assert 'setec_api_calls_total{method="/api/get"} 400.0' in text
    assert 'setec_http_requests_total{class="2xx",code="200",method="/api/get"} 400.0' in text
    assert 'setec_http_request_duration_seconds_count{method="/api/get"} 400.0' in text
    assert 'setec_http_request_duration_seconds_bucket{le="+Inf",method="/api/get"} 400.0' in text
    buckets = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("setec_http_request_duration_seconds_bucket{") and "/api/get" in line
    ]
    assert buckets == sorted(buckets)  # cumulative
    assert "setec_http_requests_in_flight 1.0" in text  # the scrape itself


# --- fuzz: no body is a server error ---------------------------------------------------

ENDPOINTS = [
    "list",
    "get",
    "info",
    "put",
    "create-version",
    "activate",
    "delete-version",
    "delete",
]
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "Name": st.sampled_from(["a", "", "_internal/x", "b/c"]) | st.text(max_size=5),
        "Version": st.integers(-2, 2**32 + 1) | JSONISH,
        "UpdateIfChanged": st.booleans() | JSONISH,
        "Value": st.sampled_from(["eA==", "", "!!", "eA"]) | JSONISH,
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=st.binary(max_size=200) | FIELDS.map(lambda d: json.dumps(d).encode()),
)
def test_fuzz_bodies_never_cause_a_server_error(endpoint: str, body: bytes) -> None:
    """Random bytes and random field values to every endpoint get a 2xx, 304 or a 4xx
    with a one-line reason, never a 5xx (client mistakes are 4xx)."""
    with new_database() as db:
        db.put(SUPERUSER, "a", b"1")
        db.put(SUPERUSER, "a", b"2")
        resp = api(Client(make_app(db, FixedAuthorizer(SUPERUSER))), endpoint, raw=body)
    assert resp.status_code in {200, 304, 400, 403, 404, 412, 413}, resp.data
    if resp.status_code >= 400:
        text = resp.get_data(as_text=True)
        assert text.endswith("\n")
        assert "\n" not in text[:-1]
