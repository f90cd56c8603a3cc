"""``/api/watch`` (docs/api.md §9.2) through the real HTTP front: answers at once when a
version differs already, wakes on a change, times out with jitter, refuses bad input
and names it may not read, holds no thread per waiting watch, frees a watch whose client
leaves, and answers every waiting watch when the server stops."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests
from watching import (
    GUARD,
    PATIENCE,
    Background,
    changed,
    metric,
    raw_watch,
    read_answer,
    until,
    watch,
    watching,
)
from werkzeug.test import Client as WsgiClient

from setec_core import make_caller
from setec_core.http import make_app
from setec_core.testing import SUPERUSER, FixedAuthorizer, audit_entries, new_database
from setec_core.testing.server import LocalServer
from setec_core.watch import JITTER, NAME_OVERHEAD_BYTES, RETRY_AFTER, Watch, Watches
from setec_core.wire import WatchedSecret, WatchRequest


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A server whose watches wait at most 30 s (tests end them sooner)."""
    with LocalServer(app_options={"watch_timeout_cap": 30}) as running:
        yield running


# --- answers ------------------------------------------------------------------------


def test_extensions_list_watch(server: LocalServer) -> None:
    """The server offers the ``watch`` extension."""
    assert server.client().offers("watch")


def test_a_version_that_differs_already_is_answered_at_once(server: LocalServer) -> None:
    """A watch whose held version differs (or names a secret held but gone) answers at
    once, listing only what differs, in request order."""
    client = server.client()
    client.put("app/a", b"1")
    client.put("app/b", b"1")
    assert changed(watch(server.url, {"app/a": 0, "app/b": 1, "app/gone": 3})) == [
        {"Name": "app/a", "Version": 1},
        {"Name": "app/gone", "Version": 0},
    ]
    assert metric(server.url, "setec_watches") == 0


def test_a_watch_wakes_when_the_active_version_changes(server: LocalServer) -> None:
    """A put of a new (inactive) version leaves the watch waiting; activating it answers
    the watch with the new version."""
    client = server.client()
    client.put("app/a", b"1")
    waiting = Background(server.url, {"app/a": 1, "app/other": 0})
    watching(server.url, 1)
    assert client.put("app/a", b"2") == 2
    client.put("app/other-secret", b"x")  # not watched
    # The put woke the watch, which found the active version unchanged.
    assert not waiting.done.is_set()
    assert metric(server.url, "setec_watches") == 1
    client.activate("app/a", 2)
    assert waiting.result() == [{"Name": "app/a", "Version": 2}]
    watching(server.url, 0)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda c: c.delete("app/a"), 0),
        (lambda c: c.create_version("app/a", 7, b"7"), 7),
    ],
    ids=["delete", "create-version"],
)
def test_writes_wake_watches(
    server: LocalServer, change: Callable[[Any], None], expected: int
) -> None:
    """Deleting a watched secret answers version 0; create-version its new version."""
    client = server.client()
    client.put("app/a", b"1")
    waiting = Background(server.url, {"app/a": 1})
    watching(server.url, 1)
    change(client)
    assert waiting.result() == [{"Name": "app/a", "Version": expected}]


def test_a_secret_pending_deletion_is_gone_and_undeleting_it_is_a_change() -> None:
    """With a recovery window, a delete puts the secret aside: watches see version 0;
    undeleting it brings its active version back, which wakes them again."""
    with new_database() as db, LocalServer(db, app_options={"watch_timeout_cap": 30}) as srv:
        db.recovery_window = 3600
        db.put(SUPERUSER, "app/a", b"1")
        waiting = Background(srv.url, {"app/a": 1})
        watching(srv.url, 1)
        db.delete(SUPERUSER, "app/a")
        assert waiting.result() == [{"Name": "app/a", "Version": 0}]
        waiting = Background(srv.url, {"app/a": 0})
        watching(srv.url, 1)
        db.undelete(SUPERUSER, "app/a")
        assert waiting.result() == [{"Name": "app/a", "Version": 1}]


def test_a_secret_created_while_watched_with_version_0_wakes_it(server: LocalServer) -> None:
    """Version 0 means "I hold none": the first put answers the watch."""
    waiting = Background(server.url, {"app/new": 0})
    watching(server.url, 1)
    server.client().put("app/new", b"v")
    assert waiting.result() == [{"Name": "app/new", "Version": 1}]


def test_a_timeout_answers_null_within_the_jittered_cap() -> None:
    """Nothing changed: ``{"Changed": null}`` after the cap times a factor of 0.9 to
    1.0; a longer Timeout is clamped to the cap, not refused."""
    with LocalServer(app_options={"watch_timeout_cap": 1}) as small:
        small.client().put("app/a", b"1")
        for asked in (None, 0, 1, 3600):
            started = time.monotonic()
            response = watch(small.url, {"app/a": 1}, asked)
            took = time.monotonic() - started
            assert response.status_code == 200
            assert response.content == b'{"Changed":null}'
            assert JITTER[0] - 0.05 <= took < PATIENCE, (asked, took)


def test_timeouts_are_spread_over_the_jitter_range() -> None:
    """Each watch's deadline is its timeout (clamped to the cap) times a factor drawn
    from 0.9 to 1.0, not the same for every watch."""
    with new_database() as db:
        watches = Watches(db, timeout_cap=10)
        deadlines = []
        for asked in (0, 5, 10, 99):
            for _ in range(50):
                before = time.monotonic()
                started = watches.start(
                    make_caller((["get"], ["*"])), WatchRequest((WatchedSecret("x", 0),), asked)
                )
                assert isinstance(started, Watch)
                seconds = min(asked or 10, 10)
                assert JITTER[0] * seconds <= started.deadline - before
                assert started.deadline - time.monotonic() <= JITTER[1] * seconds
                deadlines.append(round(started.deadline - before, 6))
                started.close()
        assert len(set(deadlines)) > 100
        assert watches.open == 0


# --- what a caller may learn ----------------------------------------------------------


def test_names_the_caller_may_not_read_are_refused_at_once_alike() -> None:
    """A name the caller may neither get nor info is listed at once with version 0 and
    "access denied", whether it exists or not; info alone is enough to watch."""
    authz = FixedAuthorizer(make_caller((["get"], ["app/*"]), (["info"], ["info/*"])))
    with new_database() as db, LocalServer(db, authorizer=authz) as srv:
        authz.caller = SUPERUSER
        srv.client().put("other/exists", b"x")
        srv.client().put("info/a", b"x")
        authz.caller = make_caller((["get"], ["app/*"]), (["info"], ["info/*"]))
        answer = changed(
            watch(srv.url, {"app/a": 0, "other/exists": 1, "other/missing": 1, "info/a": 0})
        )
        assert answer == [
            {"Name": "other/exists", "Version": 0, "Error": "access denied"},
            {"Name": "other/missing", "Version": 0, "Error": "access denied"},
            {"Name": "info/a", "Version": 1},
        ]


def test_watches_are_not_audited() -> None:
    """Neither an answer at once nor a timeout writes an audit entry."""
    with new_database() as db, LocalServer(db, app_options={"watch_timeout_cap": 1}) as srv:
        srv.client().put("app/a", b"1")
        before = len(audit_entries(db))
        assert changed(watch(srv.url, {"app/a": 0})) == [{"Name": "app/a", "Version": 1}]
        assert changed(watch(srv.url, {"app/a": 1})) is None
        assert len(audit_entries(db)) == before


# --- bad input ----------------------------------------------------------------------------

_NAMES_1001 = [{"Name": f"n{i}", "Version": 0} for i in range(1001)]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({}, "a watch names 1 to 1000 secrets; this one names 0"),
        ({"Secrets": None}, "a watch names 1 to 1000 secrets; this one names 0"),
        ({"Secrets": _NAMES_1001}, "a watch names 1 to 1000 secrets; this one names 1001"),
        (
            {"Secrets": [{"Name": "a"}, {"name": "a", "Version": 2}]},
            "secret 'a' is named twice in the watch",
        ),
        ({"Secrets": [{"Name": ""}]}, "secret name must not be empty"),
        ({"Secrets": [None]}, "secret name must not be empty"),
        ({"Secrets": 5}, 'bad request: "Secrets" must be a list of {"Name", "Version"} objects'),
        ({"Secrets": [5]}, 'bad request: "Secrets" must be a list of {"Name", "Version"} objects'),
        ({"Secrets": [{"Name": 5}]}, 'bad request: "Name" must be a string'),
        (
            {"Secrets": [{"Name": "a", "Version": -1}]},
            'bad request: "Version" must be an integer from 0 to 4294967295',
        ),
        (
            {"Secrets": [{"Name": "a"}], "Timeout": -1},
            'bad request: "Timeout" must be a whole number of seconds, 0 or more',
        ),
        (
            {"Secrets": [{"Name": "a"}], "Timeout": 1.5},
            'bad request: "Timeout" must be a whole number of seconds, 0 or more',
        ),
        (
            {"Secrets": [{"Name": "a"}], "Timeout": "5"},
            'bad request: "Timeout" must be a whole number of seconds, 0 or more',
        ),
        ({"Secrets": [{"Name": "a" * 1025}]}, "names are at most 1024 bytes"),
    ],
    ids=lambda v: None if isinstance(v, str) else str(v)[:40],
)
def test_bad_requests_are_400_with_a_reason(
    server: LocalServer, body: dict[str, Any], reason: str
) -> None:
    """Each malformed watch is 400 with a one-line reason naming the problem."""
    response = requests.post(f"{server.url}/api/watch", json=body, headers=GUARD, timeout=10)
    assert response.status_code == 400
    assert reason in response.text
    assert response.text.count("\n") == 1
    assert metric(server.url, "setec_watches") == 0


def test_a_thousand_long_names_fit_the_body_limit(server: LocalServer) -> None:
    """1,000 names of 1,000 bytes each fit in a watch body (the default 1 MiB limit)."""
    names = {f"{i:04d}" + "x" * 996: 0 for i in range(1000)}
    response = requests.post(
        f"{server.url}/api/watch",
        json={"Secrets": [{"Name": n, "Version": 1} for n in names]},
        headers=GUARD,
        timeout=PATIENCE,
    )
    assert len(changed(response)) == 1000


# --- holding watches ------------------------------------------------------------------------


def test_beyond_max_watches_is_503_with_retry_after() -> None:
    """The watch one past ``max_watches`` is refused with 503, a one-line reason and
    Retry-After; the refusal is counted; the held ones are unaffected."""
    with LocalServer(app_options={"max_watches": 2, "watch_timeout_cap": 30}) as srv:
        held = [Background(srv.url, {f"app/{i}": 0}) for i in range(2)]
        watching(srv.url, 2)
        response = watch(srv.url, {"app/x": 0})
        assert response.status_code == 503
        assert response.text == "too many watches on this server (2); retry after " + (
            f"{response.headers['Retry-After']} seconds\n"
        )
        assert RETRY_AFTER[0] <= int(response.headers["Retry-After"]) <= RETRY_AFTER[1]
        assert metric(srv.url, "setec_watches_refused_total") == 1
        # An answer at once takes no place: it is served even now.
        srv.client().put("app/y", b"1")
        assert changed(watch(srv.url, {"app/y": 0})) == [{"Name": "app/y", "Version": 1}]
        for i in range(2):
            srv.client().put(f"app/{i}", b"v")
        assert [w.result() for w in held] == [[{"Name": f"app/{i}", "Version": 1}] for i in (0, 1)]
        watching(srv.url, 0)


def test_the_names_waiting_watches_hold_are_budgeted() -> None:
    """Beyond the memory budget for watched names a watch that would wait is refused
    with 503 and Retry-After, as beyond the cap on watches, while a smaller one still
    waits; what a watch held is given back when it is answered."""
    with LocalServer(app_options={"watch_timeout_cap": 30}) as srv:
        watches = srv.app.watches
        watches.max_held_bytes = 1000
        small = Background(srv.url, {"app/0": 0})
        watching(srv.url, 1)
        assert watches.held_bytes == len("app/0") + NAME_OVERHEAD_BYTES
        long_names = {f"app/{'n' * 96}{i:03d}": 0 for i in range(4)}
        response = watch(srv.url, long_names)
        assert response.status_code == 503
        assert response.text == (
            "the watches on this server hold as many names as it allows; retry after "
            f"{response.headers['Retry-After']} seconds\n"
        )
        assert metric(srv.url, "setec_watches_refused_total") == 1
        srv.client().put("app/0", b"v")
        assert small.result() == [{"Name": "app/0", "Version": 1}]
        watching(srv.url, 0)
        assert watches.held_bytes == 0


def test_a_client_that_leaves_frees_its_watch(server: LocalServer) -> None:
    """Closing the connection of a waiting watch frees it at once (the gauge drops),
    whether the client closes cleanly or resets."""
    for reset in (False, True):
        sock = raw_watch(server.url, {"app/a": 0})
        watching(server.url, 1)
        if reset:
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
        sock.close()
        watching(server.url, 0)
    # The freed watches are gone from the change feed too.
    server.client().put("app/a", b"1")
    assert len(server.db.changes) == 0


def test_waiting_watches_hold_no_app_thread() -> None:
    """200 watches wait on a server with 8 app threads while gets are served; one
    change answers all of them."""
    with LocalServer(threads=8, app_options={"watch_timeout_cap": 60}) as srv:
        client = srv.client()
        client.put("app/a", b"1")
        socks = [raw_watch(srv.url, {"app/a": 1}) for _ in range(200)]
        try:
            watching(srv.url, 200)
            for _ in range(20):
                assert client.get("app/a").value == b"1"
            client.put("app/a", b"2")
            client.activate("app/a", 2)
            for sock in socks:
                assert read_answer(sock) == (200, {"Changed": [{"Name": "app/a", "Version": 2}]})
        finally:
            for sock in socks:
                sock.close()
        watching(srv.url, 0)


def test_stopping_answers_waiting_watches_at_once() -> None:
    """A server that stops answers its waiting watches with ``{"Changed": null}`` now,
    not at their timeout, and its stop does not wait for them."""
    srv = LocalServer(app_options={"watch_timeout_cap": 3600})
    socks = [raw_watch(srv.url, {f"app/{i}": 0}) for i in range(3)]
    try:
        watching(srv.url, 3)
        started = time.monotonic()
        srv.close()
        assert time.monotonic() - started < PATIENCE
        for sock in socks:
            assert read_answer(sock) == (200, {"Changed": None})
    finally:
        for sock in socks:
            sock.close()
    assert srv.app.watches.open == 0


def test_pipelined_requests_after_a_watch_are_answered_in_order(server: LocalServer) -> None:
    """A request pipelined behind a waiting watch waits its turn, then is answered."""
    server.client().put("app/a", b"1")
    sock = raw_watch(server.url, {"app/a": 1})
    try:
        sock.sendall(b"GET /livez HTTP/1.1\r\nHost: localhost\r\n\r\n")
        watching(server.url, 1)
        server.client().put("app/a", b"2")
        server.client().activate("app/a", 2)
        data = b""
        while not data.endswith(b"ok\n"):
            chunk = sock.recv(4096)
            assert chunk, data
            data += chunk
        first, second = data.split(b"HTTP/1.1 ")[1:]
        assert first.startswith(b"200 ")
        assert first.endswith(b'{"Changed":[{"Name":"app/a","Version":2}]}')
        assert second.startswith(b"200 ")
    finally:
        sock.close()


# --- under another WSGI server --------------------------------------------------------------


def test_under_plain_wsgi_a_watch_blocks_its_thread_until_a_change() -> None:
    """Without the front (werkzeug's test client), a watch waits on its own thread: at
    once if changed, woken by a change, or answered at the timeout."""
    with new_database() as db:
        app = make_app(db, FixedAuthorizer(SUPERUSER), watch_timeout_cap=1)
        wsgi = WsgiClient(app)
        db.put(SUPERUSER, "app/a", b"1")

        def post(secrets: dict[str, int]) -> Any:
            body = {"Secrets": [{"Name": n, "Version": v} for n, v in secrets.items()]}
            response = wsgi.post("/api/watch", json=body, headers=GUARD)
            assert response.status_code == 200
            return response.get_json()["Changed"]

        assert post({"app/a": 0}) == [{"Name": "app/a", "Version": 1}]
        assert post({"app/a": 1}) is None
        done: list[Any] = []
        thread = threading.Thread(target=lambda: done.append(post({"app/b": 0})))
        app.watches.timeout_cap = 30
        thread.start()
        until(lambda: app.watches.open == 1, "the watch waits")
        db.put(SUPERUSER, "app/b", b"1")
        thread.join(PATIENCE)
        assert done == [[{"Name": "app/b", "Version": 1}]]
        assert app.watches.open == 0
