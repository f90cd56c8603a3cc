"""Guarded writes on the wire (docs/api.md §9.4), through the real front on loopback:
``IfActiveVersion`` and ``IfVersions`` on put, create-version, activate,
delete-version and delete; a failed guard is 409 with ``{"Error", "Current"}`` and
leaves the store as it was; ``Current`` only for a caller who may ``info``; malformed
guards are 400 naming the field; the server lists ``cas``."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from setec_core.testing import SUPERUSER, HeaderAuthorizer, audit_entries, make_caller
from setec_core.testing.server import LocalServer
from setec_core.testing.storage_contract import run_together

JSON_HEADERS = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
VALUE = b"wire-guarded-value-93be"
CALLERS = {
    "su": SUPERUSER,
    "writer": make_caller((["put", "create-version", "activate", "delete"], ["*"]), user="w"),
    "reader": make_caller((["info", "get"], ["*"]), user="r"),
}

#: endpoint -> a body (without guards) that succeeds on secret "s" with versions 1, 2, 3
#: (active 2), and the answer it then gets.
WRITES: dict[str, tuple[dict[str, Any], bytes]] = {
    "put": ({"Name": "s", "Value": "bmV3LXZhbHVl"}, b"4"),
    "create-version": ({"Name": "s", "Version": 9, "Value": "bmV3LXZhbHVl"}, b"{}"),
    "activate": ({"Name": "s", "Version": 3}, b"{}"),
    "delete-version": ({"Name": "s", "Version": 1}, b"{}"),
    "delete": ({"Name": "s"}, b"{}"),
}


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A server whose callers are named by a header, with secret "s" at versions 1, 2
    and 3, version 2 active."""
    with LocalServer(authorizer=HeaderAuthorizer(CALLERS)) as server:
        for n in (1, 2, 3):
            server.db.put(SUPERUSER, "s", VALUE + bytes([48 + n]))
        server.db.activate(SUPERUSER, "s", 2)
        yield server


def post(
    server: LocalServer, endpoint: str, body: dict[str, Any] | bytes, caller: str = "su"
) -> requests.Response:
    """POST ``body`` (a dict is encoded as JSON) to ``/api/ENDPOINT`` as ``caller``."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {**JSON_HEADERS, HeaderAuthorizer.HEADER: caller}
    return requests.post(f"{server.url}/api/{endpoint}", data=data, headers=headers, timeout=10)


def stored(server: LocalServer) -> tuple[int, dict[str, bytes], list[tuple[bytes, Any, int]]]:
    """Everything the store holds."""
    snapshot = server.db.storage.export()
    records = sorted((r.key, r.data, r.revision) for r in snapshot.records)
    return snapshot.revision, dict(snapshot.meta), records


def test_the_server_offers_cas(server: LocalServer) -> None:
    """/api/extensions lists "cas" once the server honours the guard fields."""
    names = post(server, "extensions", {}).json()["Extensions"]
    assert "cas" in names


@pytest.mark.parametrize("endpoint", WRITES)
@pytest.mark.parametrize(
    "guard",
    [
        {"IfActiveVersion": 2},
        {"IfVersions": [3, 2, 1]},
        {"IfActiveVersion": 2, "IfVersions": [1, 2, 3]},
        {"ifactiveversion": 2},
        {"IfActiveVersion": 7, "IfActiveVersion ": 1, "IFACTIVEVERSION": 2},
        {"IfActiveVersion": None, "IfVersions": None},
    ],
    ids=["active", "versions", "both", "folded-key", "last-key-wins", "null-is-absent"],
)
def test_a_guard_that_holds_answers_as_the_unguarded_write(
    server: LocalServer, endpoint: str, guard: dict[str, Any]
) -> None:
    """A guard that matches what info shows lets the write through with the answer it
    always gets; keys fold and the last wins as for every field; null is absent."""
    body, answer = WRITES[endpoint]
    response = post(server, endpoint, {**body, **guard})
    assert response.status_code == 200, response.text
    assert response.content == answer


@pytest.mark.parametrize("endpoint", WRITES)
@pytest.mark.parametrize(
    ("guard", "why"),
    [
        ({"IfActiveVersion": 3}, "its active version is 2 (expected 3)"),
        ({"IfVersions": [1, 2]}, "its versions are 1, 2, 3 (expected 1, 2)"),
        ({"IfActiveVersion": 0}, "it exists (active version 2, versions 1, 2, 3)"),
        ({"IfVersions": []}, "it exists (active version 2, versions 1, 2, 3)"),
        (
            {"IfActiveVersion": 1, "IfVersions": [4]},
            "its active version is 2 (expected 1) and its versions are 1, 2, 3 (expected 4)",
        ),
    ],
    ids=["active", "versions", "absent-by-0", "absent-by-empty", "both"],
)
def test_a_failed_guard_is_409_with_the_current_state_and_changes_nothing(
    server: LocalServer, endpoint: str, guard: dict[str, Any], why: str
) -> None:
    """409, a JSON body of one line: the reason and Current, byte for byte what info
    answers; the store is byte-identical; the attempt is audited under the write's
    action with outcome guard-failed."""
    before = stored(server)
    entries = len(audit_entries(server.db))
    body, _ = WRITES[endpoint]
    response = post(server, endpoint, {**body, **guard})
    assert response.status_code == 409
    assert response.headers["Content-Type"] == "application/json"
    info = post(server, "info", {"Name": "s"}).content
    reason = f"guard failed for secret 's': {why}; nothing was written"
    assert response.content == b'{"Error":"' + reason.encode() + b'","Current":' + info + b"}\n"
    assert stored(server) == before
    entry = audit_entries(server.db)[entries]
    action = "delete" if endpoint == "delete-version" else endpoint
    assert (entry["action"], entry["outcome"], entry["authorized"]) == (
        action,
        "guard-failed",
        True,
    )
    assert VALUE.decode() not in json.dumps(audit_entries(server.db))


def test_a_missing_secret_is_current_null(server: LocalServer) -> None:
    """A guard expecting a secret that does not exist: Current is null, and the reason
    says it does not exist to a caller who may info it."""
    response = post(server, "delete", {"Name": "gone", "IfActiveVersion": 1})
    assert response.status_code == 409
    assert response.content == (
        b'{"Error":"guard failed for secret \'gone\': it does not exist; nothing was '
        b'written","Current":null}\n'
    )


@pytest.mark.parametrize("endpoint", ["put", "create-version"])
def test_must_not_exist_creates_once(server: LocalServer, endpoint: str) -> None:
    """IfActiveVersion 0 (or IfVersions []) creates a new secret; the same request again
    is 409."""
    body = {"Name": "fresh", "Version": 5, "Value": "Zmlyc3Q=", "IfActiveVersion": 0}
    assert post(server, endpoint, body).status_code == 200
    again = post(
        server, endpoint, {**body, "Version": 6, "IfActiveVersion": None, "IfVersions": []}
    )
    assert again.status_code == 409
    assert again.json()["Current"]["Versions"] in ([1], [5])


def test_current_is_null_for_a_caller_who_may_not_info(server: LocalServer) -> None:
    """A caller with write rights but no info learns only that its guard failed,
    whether or not the secret exists: no state, no versions in the reason."""
    for name in ("s", "absent"):
        response = post(server, "put", {"Name": name, "Value": "eA==", "IfVersions": [9]}, "writer")
        assert response.status_code == 409
        assert response.json() == {
            "Error": f"guard failed for secret '{name}'; nothing was written",
            "Current": None,
        }


def test_the_access_check_comes_first(server: LocalServer) -> None:
    """A caller who may not make the write gets 403 as always, whatever its guard."""
    for endpoint, (body, _) in WRITES.items():
        response = post(server, endpoint, {**body, "IfActiveVersion": 7}, "reader")
        assert (response.status_code, response.text) == (403, "access denied\n")


@pytest.mark.parametrize("endpoint", WRITES)
@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'"IfActiveVersion":"3"', '"IfActiveVersion" must be an integer from 0 to 4294967295'),
        (b'"IfActiveVersion":-1', '"IfActiveVersion" must be an integer from 0 to 4294967295'),
        (
            b'"IfActiveVersion":4294967296',
            '"IfActiveVersion" must be an integer from 0 to 4294967295',
        ),
        (b'"IfActiveVersion":1.0', '"IfActiveVersion" must be an integer from 0 to 4294967295'),
        (b'"IfActiveVersion":true', '"IfActiveVersion" must be an integer from 0 to 4294967295'),
        (b'"IfActiveVersion":[2]', '"IfActiveVersion" must be an integer from 0 to 4294967295'),
        (b'"IfVersions":"1,2"', '"IfVersions" must be a list of integers from 1 to 4294967295'),
        (b'"IfVersions":3', '"IfVersions" must be a list of integers from 1 to 4294967295'),
        (b'"IfVersions":[1,"2"]', '"IfVersions" must be a list of integers from 1 to 4294967295'),
        (b'"IfVersions":[1,null]', '"IfVersions" must be a list of integers from 1 to 4294967295'),
        (b'"IfVersions":[0]', '"IfVersions" must be a list of integers from 1 to 4294967295'),
        (b'"IfVersions":[-1]', '"IfVersions" must be a list of integers from 1 to 4294967295'),
        (
            b'"IfVersions":[4294967296]',
            '"IfVersions" must be a list of integers from 1 to 4294967295',
        ),
        (b'"IfVersions":[1,2,1]', '"IfVersions" lists version 1 more than once'),
    ],
)
def test_a_malformed_guard_is_400_naming_the_field(
    server: LocalServer, endpoint: str, raw: bytes, reason: str
) -> None:
    """Wrong types and ranges are refused before anything is done: 400 with one line
    naming the field, not audited, the store unchanged."""
    before, entries = stored(server), len(audit_entries(server.db))
    body, _ = WRITES[endpoint]
    data = json.dumps(body).encode()[:-1] + b"," + raw + b"}"
    response = post(server, endpoint, data)
    assert (response.status_code, response.text) == (400, f"bad request: {reason}\n")
    assert stored(server) == before
    assert len(audit_entries(server.db)) == entries


def test_reads_ignore_guard_named_keys(server: LocalServer) -> None:
    """Info and get take no guard: such keys stay unknown keys, ignored as Go ignores
    them, whatever their value."""
    for endpoint in ("info", "get"):
        response = post(server, endpoint, b'{"Name":"s","IfVersions":"x","IfActiveVersion":-1}')
        assert response.status_code == 200, response.text


def test_concurrent_guarded_requests_exactly_one_wins(server: LocalServer) -> None:
    """Requests racing through the server, each guarded by the same state (version 2
    active) and each moving it: exactly one is 200, every other 409."""
    statuses: list[int] = []
    lock = threading.Lock()

    def activate(n: int) -> None:
        body = {"Name": "s", "Version": 1 if n % 2 else 3, "IfActiveVersion": 2}
        status = post(server, "activate", body).status_code
        with lock:
            statuses.append(status)

    assert run_together(10, activate) == []
    assert sorted(statuses) == [200] + [409] * 9
