"""A Store's start-up fetch: 100 secrets a request from a server that offers batch gets
(docs/api.md §9.3), one get each from a Go setec server (tests/go_like_server.py) or a
client without batches (a FileClient), with the same values, errors and messages."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pytest
from go_like_server import GoLikeServer

from setec_core import Rule, UnavailableError, make_caller
from setec_core.client import Client, Store
from setec_core.model import MAX_NAME_BYTES
from setec_core.testing import SUPERUSER, FixedAuthorizer, audit_entries
from setec_core.testing.server import LocalServer

SECRET = b"store-startup-value-3c9e"  # grepped for in every log below
NAMES = [f"app/s{i:03d}" for i in range(250)]

# May get app/*, nothing else.
APP_READER = make_caller(Rule(["get"], ["app/*"]), user="reader@example.com")


@pytest.fixture(autouse=True)
def no_values_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert SECRET.decode() not in caplog.text


@pytest.fixture
def counted() -> Iterator[tuple[LocalServer, FixedAuthorizer]]:
    """A server holding NAMES (app/s000 holding SECRET) whose authorizer counts the
    API requests (every one is identified); callers may get app/* only."""
    authz = FixedAuthorizer(APP_READER)
    with LocalServer(authorizer=authz) as server:
        server.db.put_many(SUPERUSER, {n: n.encode() for n in NAMES})
        server.db.put(SUPERUSER, NAMES[0], SECRET)
        server.db.activate(SUPERUSER, NAMES[0], 2)
        server.db.put(SUPERUSER, "other/x", b"x")
        yield server, authz


def values(store: Store, names: list[str]) -> dict[str, bytes]:
    out = {}
    for name in names:
        handle = store.secret(name)
        assert handle is not None
        out[name] = handle()
    return out


EXPECTED = {n: n.encode() for n in NAMES} | {NAMES[0]: SECRET}


def test_a_store_of_250_secrets_starts_in_four_requests(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """One request asks what the server offers, three fetch the 250 secrets; each is
    audited as a get of it."""
    server, authz = counted
    before, entries = authz.identified, len(audit_entries(server.db))
    store = Store(server.client(), NAMES, poll_interval=None)
    try:
        assert authz.identified - before == 4
        assert values(store, NAMES) == EXPECTED
        gets = [e["secret"] for e in audit_entries(server.db)[entries:] if e["action"] == "get"]
        assert sorted(gets) == sorted(NAMES)
    finally:
        store.close()


def test_against_a_go_server_each_secret_is_fetched_alone(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """A server without get-many (Go setec): one get per secret, the same values."""
    server, _ = counted
    with GoLikeServer(server.url) as go:
        store = Store(Client(go.url), NAMES, poll_interval=None)
        try:
            assert values(store, NAMES) == EXPECTED
            assert go.seen == ["/api/extensions"] + ["/api/get"] * len(NAMES)
        finally:
            store.close()


def _message(url: str, names: list[str]) -> str:
    with pytest.raises(UnavailableError) as raised:
        # Long enough for every secret to be asked at least once, one by one through
        # the stand-in, on a loaded machine.
        Store(Client(url), names, poll_interval=None, timeout=2.0)
    # The duration and the server's address differ from run to run.
    text = str(raised.value).replace(url, "SERVER")
    return re.sub(r"gave up after \S+ \S+", "gave up after T", text)


def test_secrets_that_cannot_be_had_are_named_as_without_batches(
    counted: tuple[LocalServer, FixedAuthorizer], caplog: pytest.LogCaptureFixture
) -> None:
    """A missing secret and one the caller may not get make the Store give up with the
    same message, naming each with its error, whether it fetched in batches or not;
    and each failed fetch is logged with the secret's name."""
    server, _ = counted
    names = [*NAMES[:30], "app/missing", "other/x"]
    batched = _message(server.url, names)
    with GoLikeServer(server.url) as go:
        alone = _message(go.url, names)
    assert batched == alone
    assert '"app/missing"' in batched
    assert '"other/x"' in batched
    assert "not found" in batched
    assert "access denied" in batched
    assert 'error fetching "app/missing": not found (retrying)' in caplog.text


def test_a_batch_the_server_refuses_whole_is_fetched_one_by_one(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """A declared name over 1,024 bytes makes the server refuse its batch (400): the
    Store fetches that batch's secrets one by one, so the message names only the
    secret at fault, as it would without batches."""
    server, _ = counted
    long_name = "app/" + "x" * MAX_NAME_BYTES
    names = [*NAMES[:30], long_name]
    batched = _message(server.url, names)
    with GoLikeServer(server.url) as go:
        # Go setec has no name limit: the stand-in passes the get to our server, which
        # refuses it the same way, one name at a time.
        alone = _message(go.url, names)
    assert batched == alone
    assert "waiting for 1 secrets" in batched
    assert "status 400" in batched


def test_a_server_that_cannot_be_reached_is_named(
    counted: tuple[LocalServer, FixedAuthorizer],
) -> None:
    """Nothing listening: the Store gives up naming the server and why, as before."""
    server, _ = counted
    url = server.url
    server.close()
    text = _message(url, NAMES[:3])
    assert "cannot connect to SERVER: connection refused" in text
    assert "3 secrets" in text
