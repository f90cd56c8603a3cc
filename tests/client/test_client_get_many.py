"""``Client.get_many``: many secrets in few round trips from a server that offers
``get-many`` (docs/api.md §9.3), and the same answers, one get each, from one that does
not (a Go setec server, stood in for by tests/go_like_server.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from go_like_server import GoLikeServer

from setec_core import AccessDenied, NotFound, Rule, SecretValue, make_caller
from setec_core.client import Client
from setec_core.errors import InvalidRequestError, RequestError
from setec_core.model import MAX_NAME_BYTES
from setec_core.testing import SUPERUSER, FixedAuthorizer, audit_entries
from setec_core.testing.server import LocalServer

SECRET = b"client-get-many-value-77aa"

# May get app/*, nothing else.
APP_READER = make_caller(Rule(["get"], ["app/*"]), user="reader@example.com")


@pytest.fixture
def counted() -> Iterator[tuple[LocalServer, FixedAuthorizer]]:
    """A server whose authorizer counts the API requests it identifies (every one);
    app/a has versions 1 and 2 (1 active), app/b one, other/x one."""
    authz = FixedAuthorizer(APP_READER)
    with LocalServer(authorizer=authz) as server:
        db = server.db
        db.put(SUPERUSER, "app/a", SECRET)
        db.put(SUPERUSER, "app/a", b"a-two")
        db.put(SUPERUSER, "app/b", b"b-one")
        db.put(SUPERUSER, "other/x", b"x-one")
        yield server, authz


def shown(results: dict[Any, Any]) -> dict[Any, Any]:
    """Results with errors as their class names, for comparing."""
    return {k: v if isinstance(v, SecretValue) else type(v).__name__ for k, v in results.items()}


ASKED: list[Any] = [
    "app/a",
    ("app/a", 2),
    ("app/a", 0),  # the same question as "app/a"
    "app/none",
    ("app/b", 9),
    "other/x",
    "other/none",
    "app/a",  # given twice, asked once
]

EXPECTED = {
    "app/a": SecretValue(SECRET, 1),
    ("app/a", 2): SecretValue(b"a-two", 2),
    ("app/a", 0): SecretValue(SECRET, 1),
    "app/none": "NotFound",
    ("app/b", 9): "NotFound",
    "other/x": "AccessDenied",
    "other/none": "AccessDenied",
}


def test_one_request_answers_names_and_pairs(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """Names and (name, version) pairs map to their values or to the NotFound or
    AccessDenied a get would raise, in the order given, each asked once; after the
    extensions are known, one request."""
    server, authz = counted
    client = server.client()
    client.extensions()
    before, entries = authz.identified, len(audit_entries(server.db))
    results = client.get_many(ASKED)
    assert authz.identified == before + 1
    assert list(results) == list(EXPECTED)
    assert shown(results) == EXPECTED
    gets = [e for e in audit_entries(server.db)[entries:] if e["action"] == "get"]
    assert [(e["secret"], e.get("secretVersion", 0)) for e in gets] == [
        ("app/a", 0),
        ("app/a", 2),
        ("app/none", 0),
        ("app/b", 9),
        ("other/x", 0),
        ("other/none", 0),
    ]
    assert isinstance(results["other/x"], AccessDenied)
    assert isinstance(results["app/none"], NotFound)


def test_many_secrets_go_100_a_request(counted: tuple[LocalServer, FixedAuthorizer]) -> None:
    """250 names take three requests (and one to learn what the server offers)."""
    server, authz = counted
    names = [f"app/n{i:03d}" for i in range(250)]
    server.db.put_many(SUPERUSER, {n: n.encode() for n in names})
    before = authz.identified
    results = server.client().get_many(names)
    assert authz.identified == before + 1 + 3
    assert {n: r.value for n, r in results.items() if isinstance(r, SecretValue)} == {
        n: n.encode() for n in names
    }


def test_a_server_without_get_many_answers_the_same_one_get_each(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """Against a Go setec server (404 for /api/get-many and /api/extensions), the
    client asks once what the server offers, then gets each secret once: the same
    results, in the same shape."""
    server, _ = counted
    with GoLikeServer(server.url) as go:
        results = Client(go.url).get_many(ASKED)
        assert shown(results) == EXPECTED
        assert list(results) == list(EXPECTED)
        assert go.seen == ["/api/extensions"] + ["/api/get"] * 6


def test_nothing_asked_sends_nothing(counted: tuple[LocalServer, FixedAuthorizer]) -> None:
    """No secrets: an empty result and no request, not even for the extensions."""
    server, authz = counted
    before = authz.identified
    assert server.client().get_many([]) == {}
    assert authz.identified == before


@pytest.mark.parametrize(
    "item", [b"app/a", ("app/a",), ("app/a", -1), ("app/a", "1"), (1, 1), ["app/a", 0]]
)
def test_an_item_that_is_no_name_nor_pair_is_refused_before_sending(
    counted: tuple[LocalServer, FixedAuthorizer], item: Any
) -> None:
    """An item must be a name or a (name, version) pair with a uint32 version."""
    server, authz = counted
    before = authz.identified
    with pytest.raises(InvalidRequestError, match=r"names or \(name, version\) pairs|version"):
        server.client().get_many(["app/a", item])
    assert authz.identified == before


def test_a_batch_the_server_refuses_whole_is_a_request_error(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """A name over 1,024 bytes makes the server refuse the batch (400), as it refuses
    the get of that name: the call raises what the get would have."""
    server, _ = counted
    client = server.client()
    long_name = "app/" + "x" * MAX_NAME_BYTES
    with pytest.raises(RequestError) as batch:
        client.get_many(["app/a", long_name])
    with pytest.raises(RequestError) as single:
        client.get(long_name)
    assert batch.value.status == single.value.status == 400
    assert str(batch.value) == str(single.value)
