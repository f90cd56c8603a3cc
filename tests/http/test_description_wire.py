"""Descriptions and last access on the wire (docs/api.md §9.5), through the real HTTP
front and the real client: the bytes of info and list with and without the new fields,
Go's RFC 3339 time format both ways, ``/api/set-info`` and its refusals, a Go server's
answers read by our client, and the dashboard."""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Iterator

import pytest
import requests

from setec_core import (
    AccessDenied,
    InvalidRequestError,
    NotFound,
    SecretInfo,
    make_caller,
    wire,
)
from setec_core.audit import format_time as audit_time
from setec_core.errors import ResponseError
from setec_core.testing import SUPERUSER, FixedAuthorizer, audit_entries
from setec_core.testing.server import LocalServer
from setec_core.wire.extensions import offered
from setec_core.wire.gotime import format_time, parse_time
from setec_core.wire.reply import INFO, INFO_LIST

HEADERS = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
UTC = datetime.UTC
WHEN = datetime.datetime(2026, 12, 2, 12, 0, 0, 123456, tzinfo=UTC)
DESCRIPTION = "Stripe key for <billing> & invoices"


def post(server: LocalServer, path: str, doc: object) -> requests.Response:
    """POST ``doc`` as JSON to ``/api/<path>`` as Go's client would."""
    body = json.dumps(doc).encode()
    return requests.post(f"{server.url}/api/{path}", data=body, headers=HEADERS, timeout=30)


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A server over an in-memory database, every request from the superuser."""
    with LocalServer() as s:
        yield s


# --- the bytes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "body"),
    [
        (SecretInfo("a", (1, 2), 2), b'{"Name":"a","Versions":[1,2],"ActiveVersion":2}'),
        (
            SecretInfo("a", (1,), 1, DESCRIPTION),
            b'{"Name":"a","Versions":[1],"ActiveVersion":1,'
            b'"Description":"Stripe key for \\u003cbilling\\u003e \\u0026 invoices"}',
        ),
        (
            SecretInfo("a", (1,), 1, last_access=WHEN),
            b'{"Name":"a","Versions":[1],"ActiveVersion":1,'
            b'"LastAccess":"2026-12-02T12:00:00.123456Z"}',
        ),
        (
            SecretInfo("a", (1,), 1, "caf\u00e9", WHEN.replace(microsecond=0)),
            b'{"Name":"a","Versions":[1],"ActiveVersion":1,'
            b'"Description":"caf\xc3\xa9","LastAccess":"2026-12-02T12:00:00Z"}',
        ),
    ],
    ids=["go", "description", "last-access", "both"],
)
def test_info_bytes(info: SecretInfo, body: bytes) -> None:
    """Go's fields in Go's order, then Description and LastAccess, each omitted when
    empty: a secret with neither is byte for byte Go's answer."""
    assert INFO.encode(info) == body
    assert INFO_LIST.encode([info]) == b"[" + body + b"]"
    decoded = INFO.decode(body)
    assert (decoded, decoded.last_access) == (info, info.last_access)


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (datetime.datetime(2026, 12, 2, 12, 0, 0, tzinfo=UTC), "2026-12-02T12:00:00Z"),
        (datetime.datetime(2026, 12, 2, 12, 0, 0, 100000, tzinfo=UTC), "2026-12-02T12:00:00.1Z"),
        (datetime.datetime(2026, 12, 2, 12, 0, 0, 120, tzinfo=UTC), "2026-12-02T12:00:00.00012Z"),
        (datetime.datetime(2026, 1, 5, 3, 4, 5, 999999, tzinfo=UTC), "2026-01-05T03:04:05.999999Z"),
        (
            datetime.datetime(
                2026, 12, 2, 14, 0, 0, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
            ),
            "2026-12-02T12:00:00.000005Z",
        ),
        (datetime.datetime(999, 1, 1, tzinfo=UTC), "0999-01-01T00:00:00Z"),
    ],
)
def test_times_are_written_as_go_writes_rfc3339nano(when: datetime.datetime, text: str) -> None:
    """Go's RFC3339Nano in UTC: trailing zeros of the fraction dropped, the dot too when
    nothing is left, four-digit years; the same text the audit log's time has."""
    assert format_time(when) == text
    ns = (when - datetime.datetime(1970, 1, 1, tzinfo=UTC)) // datetime.timedelta(microseconds=1)
    if when.year >= 1970:
        assert audit_time(ns * 1000) == text
    assert parse_time(text) == when


def test_a_naive_time_is_refused() -> None:
    """A datetime without a zone names no instant, so it has no wire form."""
    with pytest.raises(ValueError, match="naive"):
        format_time(datetime.datetime(2026, 12, 2))


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2026-12-02T12:00:00.123456789Z", WHEN),
        ("2026-12-02T13:30:00.123456+01:30", WHEN.replace(minute=0)),
        ("2026-12-02t12:00:00.123456z", WHEN),
        ("2026-12-02T07:00:00.123456-05:00", WHEN),
        ("0001-01-01T00:00:00Z", None),
    ],
)
def test_times_are_read_as_go_reads_them(text: str, when: datetime.datetime | None) -> None:
    """Any offset, any number of fraction digits (kept to the microsecond); Go's zero
    time, which a Go encoder writes for a time never set, is "never"."""
    assert parse_time(text) == when


@pytest.mark.parametrize(
    "text",
    ["2026-12-02", "2026-12-02 12:00:00Z", "2026-12-02T12:00:00", "2026-13-02T12:00:00Z", ""],
)
def test_what_is_not_rfc3339_is_refused(text: str) -> None:
    """A date alone, a space for the T, no zone, a month 13: not a time."""
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time(text)


def test_go_servers_answers_decode_without_the_fields() -> None:
    """Our client reads a Go server's info and list (no Description, no LastAccess) as
    empty and None; null, Go's zero time and unknown fields change nothing; a LastAccess
    that is not a time is a response error that does not quote it."""
    go = INFO.decode(b'{"Name":"a","Versions":[1],"ActiveVersion":1,"Future":7}')
    assert (go.description, go.last_access) == ("", None)
    nulls = INFO.decode(b'{"Name":"a","Versions":[1],"ActiveVersion":1,"LastAccess":null}')
    assert nulls.last_access is None
    zero = INFO_LIST.decode(b'[{"Name":"a","LastAccess":"0001-01-01T00:00:00Z"}]')
    assert zero[0].last_access is None
    folded = INFO.decode(b'{"name":"a","description":"d","lastaccess":"2026-12-02T12:00:00Z"}')
    assert (folded.description, folded.last_access) == ("d", WHEN.replace(microsecond=0))
    with pytest.raises(ResponseError, match="LastAccess is not an RFC 3339 time") as bad:
        INFO.decode(b'{"Name":"a","LastAccess":"yesterday-ish"}')
    assert "yesterday" not in str(bad.value)
    with pytest.raises(ResponseError):
        INFO.decode(b'{"Name":"a","Description":5}')


def test_info_and_list_over_http(server: LocalServer) -> None:
    """A secret never accessed answers Go's bytes; a get then adds LastAccess (a time
    in the request's span), set-info adds Description before it; list shows the same."""
    db = server.db
    db.put(SUPERUSER, "app/db", b"v")
    db._accessed.clear()  # as a secret put before last access was recorded
    plain = post(server, "info", {"Name": "app/db"})
    assert plain.content == b'{"Name":"app/db","Versions":[1],"ActiveVersion":1}'
    assert post(server, "list", {}).content == b"[" + plain.content + b"]"
    start = datetime.datetime.now(UTC).replace(microsecond=0)
    assert post(server, "get", {"Name": "app/db"}).status_code == 200
    assert post(server, "set-info", {"Name": "app/db", "Description": DESCRIPTION}).content == b"{}"
    info = post(server, "info", {"Name": "app/db"})
    doc = json.loads(info.content)
    assert list(doc) == ["Name", "Versions", "ActiveVersion", "Description", "LastAccess"]
    assert doc["Description"] == DESCRIPTION
    assert b"\\u003cbilling\\u003e \\u0026" in info.content
    when = parse_time(doc["LastAccess"])
    assert when is not None
    assert start <= when <= datetime.datetime.now(UTC)
    assert json.loads(post(server, "list", {}).content) == [doc]
    # info did not count as an access
    assert json.loads(post(server, "info", {"Name": "app/db"}).content) == doc


# --- /api/set-info ------------------------------------------------------------------------


def test_set_info_is_an_extension(server: LocalServer) -> None:
    """``set-info`` is listed by /api/extensions."""
    resp = requests.post(f"{server.url}/api/extensions", data=b"{}", headers=HEADERS, timeout=10)
    assert "set-info" in resp.json()["Extensions"]
    assert "set-info" in offered(wire.ENDPOINTS)


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"Name": "a", "Description": "x" * 1001}, "the description is 1001 bytes long"),
        ({"Name": "a", "Description": "one\ntwo"}, "the description holds U+000A"),
        ({"Name": "a", "Description": "\u001b[31mred"}, "the description holds U+001B"),
        ({"Name": "a", "Description": 5}, 'bad request: "Description" must be a string'),
        ({"Name": "a", "Description": "\ud800"}, '"Description" contains an unpaired surrogate'),
        ({"Name": "", "Description": "d"}, "secret name must not be empty"),
        ({"Name": "_internal/x", "Description": "d"}, "is reserved"),
    ],
)
def test_set_info_refusals_are_400_with_a_reason(
    server: LocalServer, doc: dict[str, object], reason: str
) -> None:
    """A description the rules refuse, a body field of the wrong type and a name no
    write takes: 400 with one line saying why, never quoting the description."""
    server.db.put(SUPERUSER, "a", b"v")
    resp = post(server, "set-info", doc)
    assert resp.status_code == 400
    assert reason in resp.text
    assert resp.text.count("\n") == 1
    assert "xxxxxxxxxx" not in resp.text
    assert "[31m" not in resp.text


def test_set_info_statuses(server: LocalServer) -> None:
    """200 ``{}`` (set, unchanged, cleared), 404 for a missing secret, 403 without the
    right; a caller with only set-info may describe but not read."""
    server.db.put(SUPERUSER, "team/a", b"v")
    ok = post(server, "set-info", {"Name": "team/a", "Description": "d"})
    assert (ok.status_code, ok.content, ok.headers["Content-Type"]) == (
        200,
        b"{}",
        "application/json",
    )
    assert post(server, "set-info", {"Name": "team/a", "Description": "d"}).content == b"{}"
    assert post(server, "set-info", {"name": "team/a", "description": ""}).content == b"{}"
    missing = post(server, "set-info", {"Name": "team/none", "Description": "d"})
    assert (missing.status_code, missing.text) == (404, "not found\n")
    assert isinstance(server.authorizer, FixedAuthorizer)
    server.authorizer.caller = make_caller((["get", "info", "put"], ["*"]))
    denied = post(server, "set-info", {"Name": "team/a", "Description": "d"})
    assert (denied.status_code, denied.text) == (403, "access denied\n")
    server.authorizer.caller = make_caller((["set-info"], ["team/*"]))
    assert post(server, "set-info", {"Name": "team/a", "Description": "e"}).status_code == 200
    assert post(server, "info", {"Name": "team/a"}).status_code == 403
    assert server.db.info(SUPERUSER, "team/a").description == "e"


def test_no_description_in_logs_or_audit(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The description reaches neither the access log, the server log nor the audit
    log (which has its length), refused or not."""
    caplog.set_level(logging.DEBUG)
    server.db.put(SUPERUSER, "a", b"v")
    post(server, "set-info", {"Name": "a", "Description": DESCRIPTION})
    post(server, "set-info", {"Name": "a", "Description": DESCRIPTION + "\n"})
    post(server, "set-info", {"Name": "missing", "Description": DESCRIPTION})
    assert "Stripe" not in caplog.text
    entries = [e for e in audit_entries(server.db) if e["action"] == "set-info"]
    assert [(e["outcome"], e["descriptionBytes"]) for e in entries] == [
        ("ok", len(DESCRIPTION)),
        ("not-found", len(DESCRIPTION)),
    ]
    assert "Stripe" not in json.dumps(audit_entries(server.db))


# --- the client ---------------------------------------------------------------------------


def test_client_set_info_and_info(server: LocalServer) -> None:
    """Client.set_info sets it; info and list decode Description and LastAccess (an
    aware UTC datetime)."""
    client = server.client()
    client.put("a", b"v")
    client.set_info("a", DESCRIPTION)
    info = client.info("a")
    assert info.description == DESCRIPTION
    assert info.last_access is not None
    assert info.last_access.tzinfo == UTC
    assert client.list() == [info]
    with pytest.raises(NotFound):
        client.set_info("missing", "d")


def test_client_checks_the_description_before_sending(server: LocalServer) -> None:
    """A description the server would refuse is refused by the client; nothing sent."""
    client = server.client()
    client.put("a", b"v")
    before = len(audit_entries(server.db))
    with pytest.raises(InvalidRequestError, match="one line"):
        client.set_info("a", "a\nb")
    assert len(audit_entries(server.db)) == before


def test_client_set_info_without_the_right(server: LocalServer) -> None:
    """The server's 403 is AccessDenied."""
    server.db.put(SUPERUSER, "a", b"v")
    assert isinstance(server.authorizer, FixedAuthorizer)
    server.authorizer.caller = make_caller((["info", "put"], ["*"]))
    with pytest.raises(AccessDenied):
        server.client().set_info("a", "d")


# --- the dashboard ------------------------------------------------------------------------


def test_dashboard_shows_description_escaped_and_last_access(server: LocalServer) -> None:
    """Each row has the description, HTML-escaped, and the last access to the second
    in a <time> element carrying the full time; a secret never accessed has an empty
    cell."""
    db = server.db
    db.put(SUPERUSER, "a", b"v")
    db.set_info(SUPERUSER, "a", "<script>alert(1)</script> & co")
    db.put(SUPERUSER, "b", b"v")
    db._accessed.pop("b")
    page = requests.get(server.url + "/", timeout=10).text
    assert "<script>alert" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    when = db.info(SUPERUSER, "a").last_access
    assert when is not None
    full, shown = format_time(when), format_time(when.replace(microsecond=0))
    assert f'<td class="last-access"><time datetime="{full}">{shown}</time></td>' in page
    assert '<td class="description"></td><td class="last-access"></td></tr>' in page
    assert "<th>Description</th><th>Last access</th>" in page
