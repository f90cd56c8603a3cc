"""Watching for new versions (docs/api.md §9.2) from the client side, through the real
server: ``Client.watch``, and a Store that learns of a rotation through its watch
instead of at its next poll, falls back to polling where there is no watch, backs off
from a full server, and closes at once with a watch parked."""

from __future__ import annotations

import http.server
import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import requests

from setec_core import InvalidRequestError, Rule, UnsupportedError, make_caller
from setec_core.client import Client, FileClient, Store
from setec_core.client.longpoll import Cancellation
from setec_core.errors import ServerBusyError
from setec_core.testing import SUPERUSER, audit_entries
from setec_core.testing.clock import FakeTicker
from setec_core.testing.server import LocalServer
from setec_core.wire import Change

SECRET = b"watched-value-5d1e"  # grepped for in every log below
ROTATED = b"rotated-value-77a0"
HOUR = 3600.0
# Generous bounds for things that happen within milliseconds; they only keep a broken
# build from hanging the suite.
PATIENCE = 30.0


@pytest.fixture(autouse=True)
def no_values_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert SECRET.decode() not in caplog.text
    assert ROTATED.decode() not in caplog.text


def put_active(client: Client, name: str, value: bytes) -> int:
    version = client.put(name, value)
    client.activate(name, version)
    return version


def wait_for(condition: object, what: str) -> None:
    """Wait until ``condition()`` is true, checking every 10 ms, failing after
    PATIENCE seconds."""
    done = threading.Event()
    for _ in range(int(PATIENCE / 0.01)):
        if condition():  # type: ignore[operator]
            return
        done.wait(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class _GoLikeFront(http.server.BaseHTTPRequestHandler):
    """Passes Go setec's endpoints on to a real server and answers 404 for the rest, as
    a Go setec server does for paths it does not route."""

    target = ""
    go_paths: ClassVar[set[str]] = {
        "/api/list",
        "/api/get",
        "/api/info",
        "/api/put",
        "/api/activate",
        "/api/create-version",
        "/api/delete-version",
        "/api/delete",
    }
    seen: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        type(self).seen.append(self.path)
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path in self.go_paths:
            headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
            answer = requests.post(self.target + self.path, data=body, headers=headers, timeout=10)
            status, content = answer.status_code, answer.content
        else:
            status, content = 404, b"404 page not found\n"
        self.send_response(status)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def go_like(server: LocalServer) -> Iterator[str]:
    """A Go-setec-like server (Go's endpoints only) in front of ``server``."""
    _GoLikeFront.target = server.url
    _GoLikeFront.seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _GoLikeFront)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


# --- Client.watch -----------------------------------------------------------------------


def test_watch_reports_what_differs(client: Client) -> None:
    """A watch answers at once with each secret whose active version differs from the
    one given: a newer version, or 0 for a secret that does not exist."""
    v = put_active(client, "w/a", SECRET)
    assert client.watch({"w/a": 0}, 5) == [Change("w/a", v)]
    changes = client.watch({"w/a": v, "w/missing": 7}, 5)
    assert changes == [Change("w/missing", 0)]


def test_watch_times_out_empty_past_the_clients_read_timeout(server: LocalServer) -> None:
    """Nothing changing, the watch returns [] after its timeout, even when that is
    longer than the Client's own read timeout (the watch's read waits longer)."""
    client = server.client(timeout=(5, 0.5))
    v = put_active(client, "w/quiet", SECRET)
    assert client.watch({"w/quiet": v}, 1) == []


def test_watch_wakes_on_a_rotation(client: Client, server: LocalServer) -> None:
    """A parked watch answers when the secret gets a new active version."""
    v = put_active(client, "w/rot", SECRET)
    got: list[list[Change]] = []
    watcher = threading.Thread(target=lambda: got.append(client.watch({"w/rot": v}, 60)))
    watcher.start()
    wait_for(lambda: server.app.watches.open == 1, "the watch to park")
    new = put_active(server.client(), "w/rot", ROTATED)
    watcher.join(PATIENCE)
    assert got == [[Change("w/rot", new)]]


def test_watch_lists_a_name_the_caller_may_not_read(server: LocalServer) -> None:
    """A secret the caller may not read comes back at once as an error entry, version
    0, whether or not it exists."""
    server.db.put(SUPERUSER, "w/open", SECRET)
    server.db.put(SUPERUSER, "w/closed", SECRET)
    server.authorizer.caller = make_caller(Rule(["get", "info"], ["w/open"]))  # type: ignore[attr-defined]
    changes = server.client().watch({"w/open": 1, "w/closed": 1, "w/nothing": 0}, 60)
    assert changes == [
        Change("w/closed", 0, "access denied"),
        Change("w/nothing", 0, "access denied"),
    ]


def test_watch_refuses_bad_arguments_without_sending(go_like: str, client: Client) -> None:
    """No names, too many, a bad timeout: refused before anything is sent; a server
    without the extension: UnsupportedError, and only /api/extensions was asked."""
    with pytest.raises(InvalidRequestError, match="1 to 1000 secrets"):
        client.watch({}, 5)
    with pytest.raises(InvalidRequestError, match="1 to 1000 secrets"):
        client.watch({f"n{i}": 0 for i in range(1001)}, 5)
    with pytest.raises(InvalidRequestError, match="positive"):
        client.watch({"a": 0}, 0)
    go = Client(go_like)
    with pytest.raises(UnsupportedError, match="watching secrets"):
        go.watch({"a": 1}, 5)
    assert _GoLikeFront.seen == ["/api/extensions"]


def test_a_full_server_is_a_busy_error_with_retry_after() -> None:
    """A server holding its maximum of watches answers 503 with Retry-After, which the
    client raises as ServerBusyError carrying it."""
    with LocalServer(app_options={"max_watches": 1}) as server:
        client = server.client()
        v = put_active(client, "w/busy", SECRET)
        cancel = Cancellation()
        parked = threading.Thread(target=lambda: client.watch({"w/busy": v}, 60, cancel=cancel))
        parked.start()
        wait_for(lambda: server.app.watches.open == 1, "the first watch to park")
        with pytest.raises(ServerBusyError) as raised:
            server.client().watch({"w/busy": v}, 60)
        assert raised.value.status == 503
        assert raised.value.retry_after is not None
        assert raised.value.retry_after >= 1
        cancel.cancel()
        parked.join(PATIENCE)
        assert not parked.is_alive()
        wait_for(lambda: server.app.watches.open == 0, "the server to drop the cut watch")


# --- the Store --------------------------------------------------------------------------


def test_a_store_learns_of_a_rotation_through_its_watch(
    client: Client, server: LocalServer
) -> None:
    """With an hour between polls, a new active version reaches the Store's handle, its
    watchers and Updaters through the watch, fetched with an audited get; no poll ran."""
    put_active(client, "s/rot", SECRET)
    with Store(client, ["s/rot"], poll_interval=HOUR) as store:
        assert store.watching
        watcher = store.watcher("s/rot")
        handle = store.secret("s/rot")
        assert handle is not None
        wait_for(lambda: server.app.watches.open == 1, "the Store's watch to park")
        new = put_active(server.client(), "s/rot", ROTATED)
        assert watcher.wait(PATIENCE)
        assert handle() == ROTATED
        metrics = store.metrics()
        assert metrics["counter_poll_initiated"] == 0
        assert metrics["counter_watch_answers"] >= 1
    gets = [e for e in audit_entries(server.db) if e["action"] == "get"]
    assert (gets[-1]["secret"], gets[-1].get("servedVersion")) == ("s/rot", new)


def test_close_cuts_a_parked_watch(client: Client, server: LocalServer) -> None:
    """Closing a Store with a watch parked ends the watch at once: the server sees the
    client go (its watch count drops) long before the watch's minute is up."""
    put_active(client, "s/close", SECRET)
    store = Store(client, ["s/close"], poll_interval=HOUR)
    wait_for(lambda: server.app.watches.open == 1, "the Store's watch to park")
    store.close()
    wait_for(lambda: server.app.watches.open == 0, "the server to drop the watch")
    wait_for(lambda: not store.watching, "the watch thread to end")


def test_a_go_server_means_polling_only(go_like: str, server: LocalServer) -> None:
    """Against a server that does not offer watch (Go setec), the Store asks once,
    never sends a watch, and keeps polling as before."""
    put_active(server.client(), "s/go", SECRET)
    with Store(Client(go_like), ["s/go"], poll_interval=HOUR) as store:
        wait_for(lambda: not store.watching, "the Store to settle on polling")
        assert store.polling
        put_active(server.client(), "s/go", ROTATED)
        store.refresh()
        assert store.secret("s/go")() == ROTATED  # type: ignore[misc]
    assert "/api/extensions" in _GoLikeFront.seen
    assert "/api/watch" not in _GoLikeFront.seen


def test_no_watch_with_a_file_client_a_ticker_or_when_told(client: Client, tmp_path: Path) -> None:
    """A FileClient cannot watch; a ticker decides alone when values change; watch=False
    turns it off."""
    put_active(client, "s/off", SECRET)
    path = tmp_path / "secrets.json"
    path.write_text('{"s/off": {"secret": {"Version": 1, "TextValue": "x"}}}')
    with Store(FileClient(str(path)), ["s/off"], poll_interval=HOUR) as store:
        assert not store.watching
    with Store(client, ["s/off"], ticker=FakeTicker()) as store:
        assert not store.watching
    with Store(client, ["s/off"], poll_interval=HOUR, watch=False) as store:
        assert not store.watching


def test_a_full_server_is_backed_off_while_polling_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A 503 from a server at its watch limit: the Store waits at least the server's
    Retry-After before watching again, polls meanwhile, and watches once there is room."""
    with LocalServer(app_options={"max_watches": 1}) as server:
        client = server.client()
        v = put_active(client, "s/busy", SECRET)
        cancel = Cancellation()
        blocker = threading.Thread(target=lambda: client.watch({"s/busy": v}, 60, cancel=cancel))
        blocker.start()
        wait_for(lambda: server.app.watches.open == 1, "the blocking watch to park")
        with Store(server.client(), ["s/busy"], poll_interval=HOUR) as store:
            wait_for(lambda: store.metrics()["counter_watch_errors"] >= 1, "a refused watch")
            line = next(r.getMessage() for r in caplog.records if "watch failed" in r.getMessage())
            retry = int(re.search(r"retry after (\d+) seconds", line).group(1))  # type: ignore[union-attr]
            waited = int(re.search(r"again in (\d+) s", line).group(1))  # type: ignore[union-attr]
            assert waited >= retry
            assert server.app.watches.refused == 1
            put_active(server.client(), "s/busy", b"polled-" + SECRET[:4])
            store.refresh()  # polling still works while the watch waits
            assert store.secret("s/busy")() == b"polled-" + SECRET[:4]  # type: ignore[misc]
            cancel.cancel()
            blocker.join(PATIENCE)
            watcher = store.watcher("s/busy")
            wait_for(lambda: server.app.watches.open == 1, "the Store's watch after the wait")
            put_active(server.client(), "s/busy", ROTATED)
            assert watcher.wait(PATIENCE)
            assert store.secret("s/busy")() == ROTATED  # type: ignore[misc]


def test_a_deleted_secret_keeps_its_value_and_its_return_is_seen(
    client: Client, server: LocalServer
) -> None:
    """A watched secret deleted on the server keeps its last value (as a poll keeps
    it), does not make the watch spin, and its re-creation arrives through the watch."""
    put_active(client, "s/gone", SECRET)
    with Store(client, ["s/gone"], poll_interval=HOUR) as store:
        wait_for(lambda: server.app.watches.open == 1, "the Store's watch to park")
        server.client().delete("s/gone")
        wait_for(lambda: store.metrics()["counter_watch_answers"] >= 1, "the deletion")
        wait_for(lambda: server.app.watches.open == 1, "the watch to park again")
        answers = store.metrics()["counter_watch_answers"]
        assert store.secret("s/gone")() == SECRET  # type: ignore[misc]
        watcher = store.watcher("s/gone")
        put_active(server.client(), "s/gone", ROTATED)
        assert watcher.wait(PATIENCE)
        assert store.secret("s/gone")() == ROTATED  # type: ignore[misc]
        assert store.metrics()["counter_watch_answers"] <= answers + 2


def test_every_store_of_a_fleet_gets_the_rotation(client: Client, server: LocalServer) -> None:
    """Twenty Stores sharing one Client all learn of one rotation through their
    watches."""
    put_active(client, "s/fleet", SECRET)
    stores = [Store(client, ["s/fleet"], poll_interval=HOUR) for _ in range(20)]
    try:
        watchers = [s.watcher("s/fleet") for s in stores]
        wait_for(lambda: server.app.watches.open == 20, "every watch to park")
        put_active(server.client(), "s/fleet", ROTATED)
        assert all(w.wait(PATIENCE) for w in watchers)
        assert all(s.secret("s/fleet")() == ROTATED for s in stores)  # type: ignore[misc]
    finally:
        for s in stores:
            s.close()


def test_a_secret_the_caller_may_not_read_is_left_to_polling(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A watched name the caller may no longer read does not make every watch answer
    at once: it is left to polling, and the watch goes on for the others."""
    for name in ("d/a", "d/b"):
        server.db.activate(SUPERUSER, name, server.db.put(SUPERUSER, name, SECRET))
    with Store(server.client(), ["d/a", "d/b"], poll_interval=HOUR) as store:
        watcher = store.watcher("d/b")
        wait_for(lambda: server.app.watches.open == 1, "the Store's watch to park")
        server.authorizer.caller = make_caller(Rule(["get", "info"], ["d/b"]))  # type: ignore[attr-defined]
        server.db.activate(SUPERUSER, "d/b", server.db.put(SUPERUSER, "d/b", b"b-2"))
        assert watcher.wait(PATIENCE)
        wait_for(lambda: "cannot watch" in caplog.text, "the refused name to be dropped")
        wait_for(lambda: server.app.watches.open == 1, "the watch to park without d/a")
        answers = store.metrics()["counter_watch_answers"]
        server.db.activate(SUPERUSER, "d/b", server.db.put(SUPERUSER, "d/b", ROTATED))
        assert watcher.wait(PATIENCE)
        assert store.secret("d/b")() == ROTATED  # type: ignore[misc]
        assert store.secret("d/a")() == SECRET  # type: ignore[misc]
        assert store.metrics()["counter_watch_answers"] == answers + 1
    assert 'cannot watch "d/a": access denied' in caplog.text
