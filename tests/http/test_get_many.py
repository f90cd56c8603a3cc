"""``/api/get-many`` (docs/api.md §9.3) through the real HTTP front: the wire format,
its limits and refusals, each secret answered and audited as its own get would be, and
an audit log that cannot write failing the whole request."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import hypothesis.strategies as st
import pytest
import requests
from hypothesis import given

from setec_core import AccessDenied, NotFound, Rule, SecretValue, make_caller
from setec_core.errors import SetecError
from setec_core.model import MAX_GET_MANY, MAX_NAME_BYTES, MAX_VERSION
from setec_core.testing import SUPERUSER, FailingAuditSink, audit_entries, new_database
from setec_core.testing.server import LocalServer
from setec_core.wire import AskedSecret, GetManyRequest, ManyValues, decode, encode_request
from setec_core.wire.endpoint import GET_MANY_BODY_BYTES
from setec_core.wire.reply import GET_MANY

HEADERS = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
SECRET = b"get-many-secret-value-4e1d"  # grepped for in audit lines and answers

# May get secrets under ok/ and hidden-from-info/, may info everything, nothing else.
READER = make_caller(
    Rule(["get"], ["ok/*"]),
    Rule(["info"], ["*"]),
    user="reader@example.com",
)


def post(server: LocalServer, path: str, body: bytes) -> requests.Response:
    """POST ``body`` to ``path`` as Go's client would."""
    return requests.post(server.url + path, data=body, headers=HEADERS, timeout=30)


def get_many(server: LocalServer, doc: Any) -> requests.Response:
    """POST ``doc`` as JSON to /api/get-many."""
    return post(server, "/api/get-many", json.dumps(doc).encode())


def asked(*pairs: tuple[str, int]) -> dict[str, Any]:
    """A request body asking for ``pairs``."""
    return {"Secrets": [{"Name": n, "Version": v} for n, v in pairs]}


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A server whose callers are READER; ok/a has versions 1 and 2 (2 active),
    ok/b and secret/x have one each."""
    with LocalServer(caller=READER) as s:
        db = s.db
        db.put(SUPERUSER, "ok/a", b"a-one")
        db.put(SUPERUSER, "ok/a", SECRET)
        db.activate(SUPERUSER, "ok/a", 2)
        db.put(SUPERUSER, "ok/b", b"b-one")
        db.put(SUPERUSER, "secret/x", b"x-one")
        yield s


# --- answers --------------------------------------------------------------------------


def test_answers_come_in_request_order_as_go_writes_json(server: LocalServer) -> None:
    """Each secret asked gets its value and the version served, or a status and the
    reason a get would give, in the order asked; compact JSON, keys in this order."""
    resp = get_many(
        server,
        asked(("ok/b", 0), ("ok/a", 1), ("ok/missing", 0), ("secret/x", 0), ("ok/a", 0)),
    )
    assert resp.status_code == 200
    assert resp.headers["Content-Type"] == "application/json"
    assert resp.content == (
        b'{"Secrets":['
        b'{"Name":"ok/b","Version":1,"Value":"' + b64(b"b-one").encode() + b'"},'
        b'{"Name":"ok/a","Version":1,"Value":"' + b64(b"a-one").encode() + b'"},'
        b'{"Name":"ok/missing","Version":0,"Status":404,"Error":"not found"},'
        b'{"Name":"secret/x","Version":0,"Status":403,"Error":"access denied"},'
        b'{"Name":"ok/a","Version":2,"Value":"' + b64(SECRET).encode() + b'"}'
        b"]}"
    )


def test_each_secret_is_answered_as_its_get_would_be(server: LocalServer) -> None:
    """Status by status, the batch agrees with a get of each secret: values, a missing
    secret or version (404), and a secret the caller may not get (403), which says
    nothing of whether it exists."""
    pairs = [
        ("ok/a", 0),
        ("ok/a", 2),
        ("ok/a", 3),
        ("ok/none", 0),
        ("secret/x", 0),
        ("secret/none", 0),
        ("secret/x", 7),
        ("_internal/meta", 0),
        ("", 0),
    ]
    items = get_many(server, asked(*pairs)).json()["Secrets"]
    for (name, version), item in zip(pairs, items, strict=True):
        single = post(server, "/api/get", json.dumps({"Name": name, "Version": version}).encode())
        assert item["Name"] == name
        if single.status_code == 200:
            assert "Status" not in item
            assert (item["Value"], item["Version"]) == (
                single.json()["Value"],
                single.json()["Version"],
            )
        else:
            assert item["Status"] == single.status_code, name
            assert item["Error"] == single.text.strip()
            assert item["Version"] == version
            assert "Value" not in item
    denied = [i for i in items if i["Name"].startswith("secret/")]
    assert [i["Status"] for i in denied] == [403, 403, 403]  # existing or not


def test_one_audit_entry_per_secret_exactly_as_gets_write(server: LocalServer) -> None:
    """One entry per secret asked, in order, each the entry a get of it writes (action
    get, authorized, version asked, outcome, version served), all with the batch's
    request id, and no value in any of them."""
    pairs = [("ok/a", 0), ("ok/a", 1), ("ok/none", 0), ("secret/x", 0), ("ok/a", 9)]
    before = len(audit_entries(server.db))
    resp = get_many(server, asked(*pairs))
    assert resp.status_code == 200
    batch = audit_entries(server.db)[before:]
    for name, version in pairs:
        post(server, "/api/get", json.dumps({"Name": name, "Version": version}).encode())
    singles = audit_entries(server.db)[before + len(batch) :]
    varying = ("id", "time", "request", "commits", "prev")

    def same(entry: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in entry.items() if k not in varying}

    assert [same(e) for e in batch] == [same(e) for e in singles]
    assert [e["secret"] for e in batch] == [n for n, _ in pairs]
    assert {e["request"] for e in batch} == {resp.headers["X-Request-Id"]}
    text = json.dumps(audit_entries(server.db))
    assert SECRET.decode() not in text
    assert b64(SECRET) not in text


def test_the_extension_is_listed_and_the_usual_checks_apply(server: LocalServer) -> None:
    """get-many is listed by /api/extensions; like every API call it takes only a POST
    of JSON with the browser guard header."""
    names = post(server, "/api/extensions", b"{}").json()["Extensions"]
    assert "get-many" in names
    url = server.url + "/api/get-many"
    body = json.dumps(asked(("ok/a", 0))).encode()
    assert requests.get(url, headers=HEADERS, timeout=10).status_code == 400
    no_guard = {"Content-Type": "application/json"}
    assert requests.post(url, data=body, headers=no_guard, timeout=10).status_code == 403
    text = {**HEADERS, "Content-Type": "text/plain"}
    assert requests.post(url, data=body, headers=text, timeout=10).status_code == 400


# --- decoding, as Go reads a body -----------------------------------------------------

LENIENT = [
    pytest.param(b'{"secrets":[{"name":"ok/b","version":0}]}', ["ok/b"], id="folded-keys"),
    pytest.param(
        '{"\u017fecrets":[{"NAME":"ok/b"}]}'.encode(), ["ok/b"], id="long-s-and-upper-case"
    ),
    pytest.param(
        b'{"Secrets":[{"Name":"ok/a"}],"Secrets":[{"Name":"ok/b"}]}', ["ok/b"], id="last-wins"
    ),
    pytest.param(
        b'{"Secrets":[{"Name":"ok/a","Name":"ok/b","Colour":"red"}],"Timeout":5}',
        ["ok/b"],
        id="unknown-keys-ignored",
    ),
    pytest.param(b'{"Secrets":[{"Name":"ok/b","Version":null}]}', ["ok/b"], id="null-version"),
    pytest.param(b'{"Secrets":[{"Name":"ok/b"}]} trailing junk', ["ok/b"], id="junk-after"),
    pytest.param(b'{"Secrets":[null,{"Name":"ok/b"}]}', ["", "ok/b"], id="null-element"),
]


@pytest.mark.parametrize(("body", "names"), LENIENT)
def test_bodies_are_read_as_go_reads_them(
    server: LocalServer, body: bytes, names: list[str]
) -> None:
    """docs/api.md §3.1: keys folded, the last one wins, unknown keys ignored, null
    leaves a field at its zero value (a null element is the empty name)."""
    resp = post(server, "/api/get-many", body)
    assert resp.status_code == 200, resp.text
    assert [i["Name"] for i in resp.json()["Secrets"]] == names


def _long(n: int) -> str:
    return "x" * n


REFUSED = [
    pytest.param(b'{"Secrets":[]}', "a batch get must name at least one secret", id="empty"),
    pytest.param(b"{}", "a batch get must name at least one secret", id="missing"),
    pytest.param(b'{"Secrets":null}', "a batch get must name at least one secret", id="null"),
    pytest.param(
        json.dumps(asked(*((f"ok/{i}", 0) for i in range(MAX_GET_MANY + 1)))).encode(),
        "a batch get names at most 100 secrets, not 101; split it into several",
        id="101-names",
    ),
    pytest.param(
        json.dumps(asked(("ok/a", 0), ("ok/b", 0), ("ok/a", 0))).encode(),
        "secret 'ok/a' (the active version) is asked for twice in the batch",
        id="duplicate-active",
    ),
    pytest.param(
        json.dumps(asked(("ok/a", 2), ("ok/a", 2))).encode(),
        "secret 'ok/a' (version 2) is asked for twice in the batch",
        id="duplicate-version",
    ),
    pytest.param(
        json.dumps(asked(("ok/a", 0), (_long(MAX_NAME_BYTES + 1), 0))).encode(),
        f"secret name '{_long(60)}'... is 1025 bytes long; names are at most 1024 bytes (UTF-8)",
        id="name-too-long",
    ),
    pytest.param(
        b'{"Secrets":{"Name":"ok/a"}}',
        'bad request: "Secrets" must be a list of {"Name", "Version"} objects',
        id="not-a-list",
    ),
    pytest.param(
        b'{"Secrets":["ok/a"]}',
        'bad request: "Secrets" must be a list of {"Name", "Version"} objects',
        id="element-not-an-object",
    ),
    pytest.param(
        b'{"Secrets":[{"Name":5}]}', 'bad request: "Name" must be a string', id="name-number"
    ),
    *(
        pytest.param(
            b'{"Secrets":[{"Name":"ok/a","Version":%s}]}' % raw,
            'bad request: "Version" must be an integer from 0 to 4294967295',
            id=f"version-{raw.decode()}",
        )
        for raw in (b'"1"', b"-1", b"1.5", b"1e2", b"4294967296", b"true")
    ),
    pytest.param(b"[]", "bad request: body must be a JSON object", id="array-body"),
]


@pytest.mark.parametrize(("body", "reason"), REFUSED)
def test_refusals_are_400_with_one_line_and_not_audited(
    server: LocalServer, body: bytes, reason: str
) -> None:
    """A batch that names no secret or more than 100, one secret twice, a name a get
    refuses, or a field of the wrong type is 400 with a one-line reason, before any
    audit entry is written."""
    before = len(audit_entries(server.db))
    resp = post(server, "/api/get-many", body)
    assert (resp.status_code, resp.text) == (400, reason + "\n")
    assert len(audit_entries(server.db)) == before


def test_the_same_name_at_two_versions_is_not_a_duplicate(server: LocalServer) -> None:
    """A duplicate is the same name and version; ok/a active and ok/a version 2 are
    two questions (with the same answer)."""
    items = get_many(server, asked(("ok/a", 0), ("ok/a", 2))).json()["Secrets"]
    assert [(i["Version"], i["Value"]) for i in items] == [(2, b64(SECRET))] * 2


# --- the body limit -------------------------------------------------------------------


def _maximal(count: int) -> bytes:
    # Names of 1,024 control characters, which JSON writes six bytes each (\u0001),
    # at the largest version: the longest entries a batch can hold.
    names = (
        chr(1 + i // 31) + chr(1 + i % 31) + "\x01" * (MAX_NAME_BYTES - 2) for i in range(count)
    )
    return json.dumps(asked(*((name, 4294967295) for name in names)))


def test_the_body_limit_fits_100_longest_names_and_no_more(server: LocalServer) -> None:
    """100 names of 1,024 bytes that JSON escapes to six bytes each fit the body limit,
    far over the 16 KiB of a single get; 101 do not (413, before the body is read)."""
    body = _maximal(MAX_GET_MANY).encode()
    assert 16 * 1024 < len(body) <= GET_MANY_BODY_BYTES
    resp = post(server, "/api/get-many", body)
    assert resp.status_code == 200, resp.text[:200]
    assert {i["Status"] for i in resp.json()["Secrets"]} == {403}  # READER may not get them
    over = _maximal(MAX_GET_MANY + 1).encode()
    assert len(over) > GET_MANY_BODY_BYTES
    resp = post(server, "/api/get-many", over)
    assert (resp.status_code, resp.text) == (
        413,
        f"request body too large: the limit is {GET_MANY_BODY_BYTES} bytes\n",
    )


# --- the audit log failing ------------------------------------------------------------


@pytest.mark.parametrize("failure", ["fail_writes", "fail_syncs"])
def test_an_audit_log_that_cannot_take_the_entries_is_500_and_no_value(failure: str) -> None:
    """Fail-closed for the whole batch: if the entries cannot be written or made
    durable, the answer is 500 with no value in it, never a partial answer."""
    sink = FailingAuditSink()
    with new_database(audit_sink=sink) as db, LocalServer(db) as server:
        db.put(SUPERUSER, "ok/a", SECRET)
        setattr(sink, failure, True)
        resp = get_many(server, asked(("ok/a", 0), ("ok/none", 0)))
    assert (resp.status_code, resp.content) == (500, b"internal error\n")


def test_the_limit_stays_within_max_request_bytes() -> None:
    """The batch's own limit is never more than the operator's --max-request-bytes,
    nor less than a single get's 16 KiB."""
    from setec_core.http import make_app
    from setec_core.testing import FixedAuthorizer

    with new_database() as db:
        authz = FixedAuthorizer(SUPERUSER)
        assert make_app(db, authz).body_limit("POST", "/api/get-many") == GET_MANY_BODY_BYTES
        small = make_app(db, authz, max_request_bytes=100_000)
        assert small.body_limit("POST", "/api/get-many") == 100_000
        assert make_app(db, authz).body_limit("POST", "/api/get") == 16 * 1024


# --- both ends of the wire ------------------------------------------------------------


@given(
    pairs=st.lists(
        st.tuples(st.text(), st.integers(min_value=0, max_value=MAX_VERSION)), max_size=5
    )
)
def test_the_server_reads_the_requests_the_client_writes(pairs: list[tuple[str, int]]) -> None:
    """Every batch the client encodes decodes, on the server, to the same batch."""
    request = GetManyRequest(tuple(AskedSecret(n, v) for n, v in pairs))
    try:
        body = encode_request(request)
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, nothing to send
        return
    assert decode(body, GetManyRequest) == request


@given(
    items=st.lists(
        st.tuples(
            st.text(st.characters(exclude_categories=["Cs"])),  # names a store can hold
            st.integers(min_value=0, max_value=MAX_VERSION),
            st.one_of(
                st.builds(
                    SecretValue, st.binary(), st.integers(min_value=1, max_value=MAX_VERSION)
                ),
                st.sampled_from([NotFound(), AccessDenied()]),
            ),
        ),
        max_size=5,
    )
)
def test_the_client_reads_the_answers_the_server_writes(
    items: list[tuple[str, int, SecretValue | SetecError]],
) -> None:
    """Every answer the server encodes decodes, on the client, to the same names,
    values and errors (an answer with a value carries the version served)."""
    body = GET_MANY.encode(ManyValues(tuple(items)))
    decoded = GET_MANY.decode(body).items
    assert len(decoded) == len(items)
    for (name, version, result), (got_name, got_version, got) in zip(items, decoded, strict=True):
        assert got_name == name
        if isinstance(result, SecretValue):
            assert got == result
            assert got_version == result.version
        else:
            assert type(got) is type(result)
            assert got_version == version
