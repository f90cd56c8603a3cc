"""Recoverable delete on the wire (docs/api.md, "Recoverable delete"), through the real
front on loopback: without a window a delete is Go's, byte for byte; with one it puts
the secret aside (invisible to reads, its name reserved), ``/api/undelete`` brings it
back whole, ``/api/list-deleted`` lists what the caller may delete, ``Purge`` ends the
window at once; each is audited, and bad input is 400."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from setec_core.testing import SUPERUSER, HeaderAuthorizer, audit_entries, make_caller
from setec_core.testing.clock import FakeClock
from setec_core.testing.server import LocalServer

JSON_HEADERS = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
VALUE = b"recoverable-value-5c1e"
#: 2023-11-14T22:13:20.25Z
NOW = 1_700_000_000.25
WINDOW = 7 * 86400
CALLERS = {
    "su": SUPERUSER,
    # may write and read everything, but delete nothing
    "putter": make_caller((["put", "create-version", "get", "info"], ["*"]), user="p"),
    # may delete under a/ only
    "deleter": make_caller((["delete", "info"], ["a/*"]), user="d"),
}


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A server with a seven-day recovery window on a fake clock at :data:`NOW`, callers
    named by a header, and secret ``a/s`` at versions 1, 2 and 3 (2 active, 3 deleted
    one by one so that its number is claimed)."""
    with LocalServer(authorizer=HeaderAuthorizer(CALLERS)) as server:
        server.db.recovery_window = WINDOW
        server.db.clock = FakeClock(NOW)
        for n in (1, 2, 3):
            server.db.put(SUPERUSER, "a/s", VALUE + bytes([48 + n]))
        server.db.activate(SUPERUSER, "a/s", 2)
        server.db.delete_version(SUPERUSER, "a/s", 3)
        yield server


def post(
    server: LocalServer, endpoint: str, body: dict[str, Any] | bytes, caller: str = "su"
) -> requests.Response:
    """POST ``body`` (a dict is encoded as JSON) to ``/api/ENDPOINT`` as ``caller``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**JSON_HEADERS, HeaderAuthorizer.HEADER: caller}
    return requests.post(f"{server.url}/api/{endpoint}", data=data, headers=headers, timeout=10)


def test_without_a_window_delete_is_gos_and_nothing_is_pending(server: LocalServer) -> None:
    """Window 0: delete answers ``{}`` and removes the secret at once; a later put starts
    again at version 1; list-deleted answers ``null``; the entry is Go's ``delete``."""
    server.db.recovery_window = 0
    response = post(server, "delete", {"Name": "a/s"})
    assert (response.status_code, response.content) == (200, b"{}")
    assert post(server, "info", {"Name": "a/s"}).status_code == 404
    assert post(server, "list-deleted", {}).content == b"null"
    assert post(server, "put", {"Name": "a/s", "Value": "eA=="}).content == b"1"
    assert post(server, "undelete", {"Name": "a/s"}).status_code == 404
    delete = [e for e in audit_entries(server.db) if e["action"] == "delete"][-1]
    assert (delete["secret"], delete["outcome"]) == ("a/s", "ok")


def test_a_deleted_secret_is_put_aside_invisible_to_reads(server: LocalServer) -> None:
    """With a window, delete answers ``{}`` as Go's does, and from then on get (active,
    explicit, conditional), info, list, activate and delete-version treat the secret as
    missing."""
    response = post(server, "delete", {"Name": "a/s"})
    assert (response.status_code, response.content) == (200, b"{}")
    for endpoint, body in (
        ("get", {"Name": "a/s"}),
        ("get", {"Name": "a/s", "Version": 1}),
        ("get", {"Name": "a/s", "Version": 1, "UpdateIfChanged": True}),
        ("info", {"Name": "a/s"}),
        ("activate", {"Name": "a/s", "Version": 1}),
        ("delete-version", {"Name": "a/s", "Version": 1}),
    ):
        answer = post(server, endpoint, body)
        assert (answer.status_code, answer.text) == (404, "not found\n"), (endpoint, body)
    assert post(server, "list", {}).content == b"null"
    assert VALUE not in b"".join(post(server, "list-deleted", {}).content.splitlines())


def test_the_name_stays_reserved_and_only_a_deleter_learns_why(server: LocalServer) -> None:
    """A put or create-version to a pending name is 409 naming when it goes and how to
    undo it, for a caller who may delete it; a caller who may write but not delete gets
    the 403 any write it may not make gets. Nothing is written either way."""
    post(server, "delete", {"Name": "a/s"})
    revision = server.db.revision
    put = post(server, "put", {"Name": "a/s", "Value": "eA=="})
    assert put.status_code == 409
    assert put.text == (
        "secret 'a/s' is pending deletion until 2023-11-21T22:13:20.25Z; undelete it to "
        "use it again ('setec undelete'), or purge it to free the name now ('setec delete "
        "--purge')\n"
    )
    create = post(server, "create-version", {"Name": "a/s", "Version": 9, "Value": "eA=="})
    assert (create.status_code, create.text) == (409, put.text)
    for endpoint, body in (
        ("put", {"Name": "a/s", "Value": "eA=="}),
        ("create-version", {"Name": "a/s", "Version": 9, "Value": "eA=="}),
    ):
        refused = post(server, endpoint, body, caller="putter")
        assert (refused.status_code, refused.text) == (403, "access denied\n")
    assert server.db.revision == revision
    outcomes = [e["outcome"] for e in audit_entries(server.db)[-4:]]
    assert outcomes == ["pending-deletion"] * 4


def test_undelete_brings_back_every_version_and_the_active_one(server: LocalServer) -> None:
    """Undelete answers ``{}`` and the secret is exactly as before: its versions and
    values, its active version, and its claimed number (create-version of the version
    deleted one by one is still 412)."""
    before = post(server, "info", {"Name": "a/s"}).content
    post(server, "delete", {"Name": "a/s"})
    response = post(server, "undelete", {"Name": "a/s"})
    assert (response.status_code, response.content) == (200, b"{}")
    assert post(server, "info", {"Name": "a/s"}).content == before
    for version in (1, 2):
        got = post(server, "get", {"Name": "a/s", "Version": version}).json()
        assert got["Value"] == _b64(VALUE + bytes([48 + version]))
    assert post(server, "get", {"Name": "a/s"}).json()["Version"] == 2
    claimed = post(server, "create-version", {"Name": "a/s", "Version": 3, "Value": "eA=="})
    assert claimed.status_code == 412
    assert post(server, "put", {"Name": "a/s", "Value": "eA=="}).content == b"4"
    assert post(server, "list-deleted", {}).content == b"null"


def test_list_deleted_shows_when_each_goes_to_callers_who_may_delete_it(
    server: LocalServer,
) -> None:
    """list-deleted answers Go-style JSON with RFC 3339 UTC times, sorted by name, only
    for the secrets the caller may ``delete``: one entry, as list writes."""
    server.db.put(SUPERUSER, "b/t", VALUE)
    post(server, "delete", {"Name": "b/t"})
    assert isinstance(server.db.clock, FakeClock)
    server.db.clock.advance(0.5)
    post(server, "delete", {"Name": "a/s"})
    everything = post(server, "list-deleted", {})
    assert everything.content == (
        b'[{"Name":"a/s","Versions":[1,2],"ActiveVersion":2,'
        b'"DeletedAt":"2023-11-14T22:13:20.75Z","PurgeAt":"2023-11-21T22:13:20.75Z"},'
        b'{"Name":"b/t","Versions":[1],"ActiveVersion":1,'
        b'"DeletedAt":"2023-11-14T22:13:20.25Z","PurgeAt":"2023-11-21T22:13:20.25Z"}]'
    )
    mine = post(server, "list-deleted", {}, caller="deleter").json()
    assert [s["Name"] for s in mine] == ["a/s"]
    assert post(server, "list-deleted", {}, caller="putter").content == b"null"
    entry = audit_entries(server.db)[-1]
    assert (entry["action"], entry["authorized"], "secret" in entry) == (
        "list-deleted",
        True,
        False,
    )


def test_undelete_is_refused_without_delete_and_404_when_nothing_is_pending(
    server: LocalServer,
) -> None:
    """Undelete needs the ``delete`` right (403 otherwise, whether or not anything is
    pending), and is 404 when no secret of that name is pending, a live one included."""
    assert post(server, "undelete", {"Name": "a/s"}).status_code == 404  # live, not pending
    post(server, "delete", {"Name": "a/s"})
    assert post(server, "undelete", {"Name": "a/s"}, caller="putter").status_code == 403
    assert post(server, "undelete", {"Name": "a/none"}, caller="putter").status_code == 403
    assert post(server, "undelete", {"Name": "a/none"}, caller="deleter").status_code == 404
    assert post(server, "undelete", {"Name": "a/s"}, caller="deleter").status_code == 200
    actions = [(e["action"], e["outcome"]) for e in audit_entries(server.db)[-5:]]
    assert actions == [
        ("delete", "recoverable"),
        ("undelete", "denied"),
        ("undelete", "denied"),
        ("undelete", "not-found"),
        ("undelete", "ok"),
    ]


def test_purge_ends_the_window_at_once(server: LocalServer) -> None:
    """``"Purge": true`` removes a live secret for good, and an already pending one too
    (audited as ``purge``); the name is free at once; a second delete of a pending
    secret without Purge changes nothing."""
    server.db.put(SUPERUSER, "a/t", VALUE)
    post(server, "delete", {"Name": "a/s"})
    again = post(server, "delete", {"Name": "a/s"})
    assert (again.status_code, again.content) == (200, b"{}")
    assert audit_entries(server.db)[-1]["outcome"] == "unchanged"
    for name in ("a/s", "a/t"):
        response = post(server, "delete", {"Name": name, "Purge": True})
        assert (response.status_code, response.content) == (200, b"{}")
        assert post(server, "undelete", {"Name": name}).status_code == 404
        assert post(server, "put", {"Name": name, "Value": "eA=="}).content == b"1"
    assert post(server, "list-deleted", {}).content == b"null"
    purges = [e for e in audit_entries(server.db) if e["action"] == "purge"]
    assert [(e["secret"], e["outcome"]) for e in purges] == [("a/s", "ok"), ("a/t", "ok")]
    denied = post(server, "delete", {"Name": "b/x", "Purge": True}, caller="deleter")
    assert denied.status_code == 403


def test_the_purge_job_removes_what_is_due_audited_as_the_server(server: LocalServer) -> None:
    """Nothing is purged before its time; once the clock passes it, purge_due removes
    it, with one ``purge`` entry whose principal is the server (ip ``local``)."""
    post(server, "delete", {"Name": "a/s"})
    clock = server.db.clock
    assert isinstance(clock, FakeClock)
    clock.advance(WINDOW - 1)
    assert server.db.purge_due() == []
    assert post(server, "undelete", {"Name": "a/s"}).status_code == 200
    post(server, "delete", {"Name": "a/s"})
    clock.advance(WINDOW)
    assert server.db.purge_due() == ["a/s"]
    assert post(server, "undelete", {"Name": "a/s"}).status_code == 404
    entry = audit_entries(server.db)[-2]
    assert (entry["action"], entry["secret"], entry["outcome"]) == ("purge", "a/s", "ok")
    assert entry["principal"]["ip"] == "local"


@pytest.mark.parametrize(
    ("endpoint", "body", "reason"),
    [
        ("delete", b'{"Name":"a/s","Purge":"yes"}', '"Purge" must be true or false'),
        ("delete", b'{"Name":"a/s","Purge":1}', '"Purge" must be true or false'),
        ("undelete", b'{"Name":5}', '"Name" must be a string'),
        ("undelete", b"[]", "body must be a JSON object"),
        ("list-deleted", b"1", "body must be a JSON object"),
    ],
)
def test_bad_input_is_400_with_a_reason(
    server: LocalServer, endpoint: str, body: bytes, reason: str
) -> None:
    """A field of the wrong type, or a body that is not an object, is 400 naming it;
    nothing changes."""
    revision = server.db.revision
    response = post(server, endpoint, body)
    assert (response.status_code, response.text) == (400, f"bad request: {reason}\n")
    assert server.db.revision == revision


def test_a_name_over_the_limit_is_400_and_reserved_names_are_refused(
    server: LocalServer,
) -> None:
    """Undelete checks its name as every endpoint does: over 1,024 bytes is 400 (not
    audited), an ``_internal/`` name is 400."""
    long = post(server, "undelete", {"Name": "x" * 1025})
    assert long.status_code == 400
    assert "names are at most 1024 bytes" in long.text
    assert post(server, "undelete", {"Name": "_internal/x"}).status_code == 400


def test_the_extension_is_listed_and_audit_lines_hold_no_value(server: LocalServer) -> None:
    """/api/extensions lists ``recoverable-delete``; no audit entry of the whole cycle
    holds a value."""
    names = post(server, "extensions", {}).json()["Extensions"]
    assert "recoverable-delete" in names
    post(server, "delete", {"Name": "a/s"})
    post(server, "list-deleted", {})
    post(server, "undelete", {"Name": "a/s"})
    post(server, "delete", {"Name": "a/s", "Purge": True})
    text = json.dumps(audit_entries(server.db))
    assert VALUE.decode() not in text
    assert _b64(VALUE + b"1") not in text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
