"""The Store over a real server on loopback, against Go's Store's behaviour: startup,
handles, polling, the cache, lookups, watchers, updaters, versioned secrets, expiry, and
the faults a program must survive (server down, 500s, corrupt caches, deleted secrets)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from setec_core import AccessDenied, ConfigError, NotFound, Rule, UnavailableError, make_caller
from setec_core.client import (
    Client,
    FileCache,
    FileClient,
    MemCache,
    StaticUpdater,
    Store,
    Updater,
)
from setec_core.errors import (
    InvalidVersionError,
    PollError,
    RequestError,
    SetecError,
    VersionClaimed,
)
from setec_core.testing import SUPERUSER
from setec_core.testing.clock import FakeClock, FakeTicker
from setec_core.testing.server import LocalServer, new_server

SU = SUPERUSER
SECRET = b"store-secret-value-91c2"  # grepped for in every log below


@pytest.fixture(autouse=True)
def no_values_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert SECRET.decode() not in caplog.text


def put_active(server: LocalServer, name: str, value: bytes) -> int:
    version = server.db.put(SU, name, value)
    server.db.activate(SU, name, version)
    return version


def open_store(client: Client, names: list[str], **kw: object) -> tuple[Store, FakeTicker]:
    ticker = FakeTicker()
    return Store(client, names, ticker=ticker, **kw), ticker  # type: ignore[arg-type]


# --- construction ----------------------------------------------------------------------


def test_configuration_errors(client: Client) -> None:
    """A Store without a client, with no secrets, with an empty name, or given a bare
    string for the list of names is a ConfigError saying which."""
    with pytest.raises(ConfigError, match="no service client"):
        Store(None, ["a"])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="no secrets are listed"):
        Store(client, [])
    with pytest.raises(ConfigError, match="empty secret name"):
        Store(client, ["a", ""], allow_lookup=True)
    with pytest.raises(ConfigError, match="list of names"):
        Store(client, "alpha")


def test_missing_secret_times_out_naming_it(client: Client) -> None:
    """A declared secret the server lacks makes the Store's start time out with
    UnavailableError naming it and the server's answer."""
    # 0.5 s: long enough for the first request to be answered on a loaded machine (the
    # message then carries the server's answer), short enough to keep the test quick.
    started = time.monotonic()
    with pytest.raises(UnavailableError) as caught:
        Store(client, ["nope"], timeout=0.5, poll_interval=None)
    assert str(caught.value) == (
        f'gave up after 0.5 s waiting for 1 secrets from {client.server} ("nope": not found); '
        "pass timeout=None to wait as long as it takes"
    )
    assert time.monotonic() - started < 5


def test_existing_secrets_are_served_duplicates_allowed(
    server: LocalServer, client: Client
) -> None:
    """Declared secrets are served (a name listed twice included), with one handle per
    name, and no repr shows a value."""
    server.db.put(SU, "alpha", SECRET)
    server.db.put(SU, "beta", b"b")
    with Store(client, ["alpha", "beta", "alpha"], poll_interval=None) as store:
        handle = store.secret("alpha")
        assert handle is not None
        assert handle() == SECRET
        assert handle.get() == SECRET
        assert handle.get_string() == SECRET.decode()
        assert store.secret("alpha") is handle  # one handle per name
        assert SECRET.decode() not in repr(handle) + repr(store)


def test_startup_blocks_until_every_secret_exists(server: LocalServer, client: Client) -> None:
    """Puts of one secret or of unrelated ones do not unblock it; the last does."""
    built: list[Store] = []
    thread = threading.Thread(
        target=lambda: built.append(Store(client, ["a", "b"], poll_interval=None))
    )
    thread.start()
    server.db.put(SU, "a", b"1")
    server.db.put(SU, "unrelated", b"x")
    thread.join(0.5)
    assert thread.is_alive(), "the Store started without secret b"
    server.db.put(SU, "b", b"2")
    thread.join(10)
    assert not thread.is_alive()
    assert built[0].secret("b")() == b"2"  # type: ignore[misc]
    built[0].close()


def test_allow_lookup_without_secrets(server: LocalServer, client: Client) -> None:
    """With allow_lookup and no declared secrets, lookups fetch on demand; a missing one
    is NotFound."""
    server.db.put(SU, "known", b"k")
    with Store(client, allow_lookup=True, poll_interval=None) as store:
        assert store.secret("known") is None  # not held yet: None, not an error
        handle = store.lookup_secret("known")
        assert handle() == b"k"
        assert store.secret("known") is handle
        with pytest.raises(NotFound, match='lookup "missing": not found'):
            store.lookup_secret("missing")


def test_undeclared_without_lookup(server: LocalServer, client: Client) -> None:
    """Without allow_lookup, an undeclared name is not found, and cannot be looked up or
    watched."""
    server.db.put(SU, "a", b"1")
    server.db.put(SU, "other", b"2")
    with Store(client, ["a"], poll_interval=None) as store:
        with pytest.raises(NotFound, match='secret "other" not found in the Store'):
            store.secret("other")
        with pytest.raises(ConfigError, match="lookup is not enabled"):
            store.lookup_secret("other")
        with pytest.raises(ConfigError, match="lookup is not enabled"):
            store.watcher("other")


# --- polling and the cache ------------------------------------------------------------


def test_stale_cache_first_then_poll_updates_and_writes_exact_cache(
    server: LocalServer, client: Client
) -> None:
    """A cached value starts the Store without a fetch, and polls update it, with the
    exact cache bytes of Go's test."""
    server.db.put(SU, "alpha", b"foobar")
    cache = MemCache()
    clock = FakeClock(1)
    store, _ = open_store(client, ["alpha"], cache=cache, time_now=clock)
    store.close()
    put_active(server, "alpha", b"bazquux")
    store, ticker = open_store(client, ["alpha"], cache=cache, time_now=clock)
    try:
        handle = store.secret("alpha")
        assert handle is not None
        assert handle() == b"foobar"  # the stale cached value, without a fetch
        ticker.poll()
        assert handle() == b"bazquux"
        assert handle.get_string() == "bazquux"
        assert cache.read() == (
            b'{"alpha":{"secret":{"Value":"YmF6cXV1eA==","Version":2},"lastAccess":"1"}}'
        )
        metrics = store.metrics()
        assert metrics["counter_poll_initiated"] == 1
        assert metrics["counter_poll_errors"] == 0
        assert metrics["counter_secret_fetch"] == 3
    finally:
        store.close()


def test_cached_values_start_the_store_with_the_server_down(tmp_path: Path) -> None:
    """The cache file is written 0600 (its directories created), and a later Store
    starts from it with the server down, keeping the cached value when a refresh
    fails."""
    cache = FileCache(tmp_path / "nested" / "dir" / "secrets.cache")
    with new_server() as server:
        server.db.put(SU, "alpha", SECRET)
        Store(server.client(), ["alpha"], cache=cache, poll_interval=None).close()
        url = server.url
    assert (tmp_path / "nested" / "dir" / "secrets.cache").stat().st_mode & 0o777 == 0o600
    down = Client(url, timeout=1)
    with Store(down, ["alpha"], cache=cache, poll_interval=None) as store:
        assert store.secret("alpha")() == SECRET  # type: ignore[misc]
        with pytest.raises(
            PollError, match=rf'^update poll failed: "alpha": cannot connect to {url}: connection'
        ):
            store.refresh()
        assert store.secret("alpha")() == SECRET  # type: ignore[misc]


def test_server_down_at_start_without_cache_is_a_clear_error() -> None:
    """With the server down and no cache, the Store's start fails with UnavailableError
    naming the secret and the connection failure."""
    with new_server() as server:
        url = server.url
    with pytest.raises(UnavailableError, match=rf'"alpha": cannot connect to {url}: connection'):
        Store(Client(url, timeout=1), ["alpha"], timeout=0.2, poll_interval=None)


@pytest.mark.parametrize(
    "blob",
    [
        b"not json at all",
        b'{"alpha":{"Value":"blah","Version":100}}',  # Go's structurally invalid cache
        b"null",  # Go panics on this one
        b'{"alpha":{"secret":{"Value":"!!!","Version":1},"lastAccess":"1"}}',
        b'{"alpha":{"secret":{"Value":"eA==","Version":0},"lastAccess":"1"}}',
        b"[1, 2]",
        '{"alpha":{"secret":{"Value":"eA==","Version":1},"lastAccess":"\u00b2"}}'.encode(),
        '{"alpha":{"secret":null,"versions":{"\u00b2":"eA=="},"lastAccess":"1"}}'.encode(),
    ],
)
def test_a_bad_cache_is_discarded_and_the_server_used(
    server: LocalServer, client: Client, blob: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """An invalid cache is discarded with a warning, caches Go would crash on included."""
    server.db.put(SU, "alpha", b"from-server")
    with Store(client, ["alpha"], cache=MemCache(blob), poll_interval=None) as store:
        assert store.secret("alpha")() == b"from-server"  # type: ignore[misc]
    assert "cache is not valid" in caplog.text


def test_unreadable_cache_file_is_a_warning(server: LocalServer, tmp_path: Path) -> None:
    """A cache file that cannot be read does not stop the Store: it starts from the
    server."""
    path = tmp_path / "secrets.cache"
    path.write_bytes(b"{}")
    path.chmod(0)
    server.db.put(SU, "alpha", b"v")
    try:
        store = Store(server.client(), ["alpha"], cache=FileCache(path), poll_interval=None)
    finally:
        path.chmod(0o600)
    assert store.secret("alpha")() == b"v"  # type: ignore[misc]
    store.close()


def test_missing_cache_file_is_an_empty_cache(server: LocalServer, tmp_path: Path) -> None:
    """A cache file that does not exist is an empty cache, and the Store writes it with
    what it fetched."""
    server.db.put(SU, "alpha", b"v")
    path = tmp_path / "absent.cache"
    with Store(server.client(), ["alpha"], cache=FileCache(path), poll_interval=None):
        pass
    assert json.loads(path.read_bytes())["alpha"]["secret"]["Version"] == 1


def test_file_cache_refuses_symlinks_and_non_directories(tmp_path: Path) -> None:
    """A cache file must be a regular file (not a symlink) in a directory it can create."""
    (tmp_path / "real").write_bytes(b"")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(ConfigError, match="not a regular file"):
        FileCache(tmp_path / "link")
    (tmp_path / "afile").write_bytes(b"")
    with pytest.raises(ConfigError, match="cache directory"):
        FileCache(tmp_path / "afile" / "x" / "cache")
    cache = FileCache(tmp_path / "a" / "b" / "cache")
    cache.write(b"blob")
    assert cache.read() == b"blob"


def test_unchanged_values_never_travel(server: LocalServer, client: Client) -> None:
    """A poll of unchanged secrets is only conditional gets answered 304."""
    for i in range(5):
        server.db.put(SU, f"s/{i}", b"v")
    store, ticker = open_store(client, [f"s/{i}" for i in range(5)])
    with store:
        before = len(server.db.audit_log.sink.entries())  # type: ignore[attr-defined]
        ticker.poll()
        # 304s are not audited; a get that sent a value would be.
        assert len(server.db.audit_log.sink.entries()) == before  # type: ignore[attr-defined]


def test_a_deleted_secret_keeps_its_last_value_and_others_update(
    server: LocalServer, client: Client
) -> None:
    """The poll reports the failure and still applies the other update."""
    server.db.put(SU, "gone", SECRET)
    server.db.put(SU, "stays", b"1")
    store, _ = open_store(client, ["gone", "stays"])
    with store:
        server.db.delete(SU, "gone")
        put_active(server, "stays", b"2")
        with pytest.raises(PollError, match='update poll partially failed: "gone": not found') as e:
            store.refresh()
        assert set(e.value.errors) == {"gone"}
        assert e.value.updated == 1
        assert store.secret("gone")() == SECRET  # type: ignore[misc]
        assert store.secret("stays")() == b"2"  # type: ignore[misc]
        assert store.metrics()["counter_poll_errors"] == 1


def test_server_errors_during_polling_keep_the_last_good_value(
    server: LocalServer, client: Client
) -> None:
    """A server error while polling (a 500) is reported by refresh as a RequestError,
    the last good value is kept, and the next good poll updates it."""
    server.db.put(SU, "alpha", SECRET)
    store, ticker = open_store(client, ["alpha"])
    with store:
        server.authorizer.error = RuntimeError("identity service broke")  # type: ignore[attr-defined]
        ticker.poll()  # the poller logs and continues
        with pytest.raises(PollError) as e:
            store.refresh()
        assert isinstance(e.value.errors["alpha"], RequestError)
        assert e.value.errors["alpha"].status == 500  # type: ignore[attr-defined]
        assert store.secret("alpha")() == SECRET  # type: ignore[misc]
        server.authorizer.error = None  # type: ignore[attr-defined]
        put_active(server, "alpha", b"new")
        ticker.poll()
        assert store.secret("alpha")() == b"new"  # type: ignore[misc]


def test_access_revoked_keeps_the_value(server: LocalServer) -> None:
    """When the caller loses get access, refresh reports AccessDenied for the secret and
    the Store keeps serving its last value."""
    server.db.put(SU, "alpha", SECRET)
    store, _ = open_store(server.client(), ["alpha"])
    with store:
        server.authorizer.caller = make_caller(Rule(["info"], ["*"]))  # type: ignore[attr-defined]
        with pytest.raises(PollError) as e:
            store.refresh()
        assert isinstance(e.value.errors["alpha"], AccessDenied)
        assert store.secret("alpha")() == SECRET  # type: ignore[misc]


def test_negative_or_none_interval_disables_polling(server: LocalServer, client: Client) -> None:
    """A negative or None interval disables polling, and the fix: a ticker polls even
    when the interval is None."""
    server.db.put(SU, "a", b"1")
    for interval in (None, -1):
        with Store(client, ["a"], poll_interval=interval) as store:
            assert not store.polling
    with Store(client, ["a"], poll_interval=0) as store:  # Go: 0 is the default hour
        assert store.polling
    ticker = FakeTicker()
    with Store(client, ["a"], poll_interval=None, ticker=ticker) as store:
        assert store.polling
        put_active(server, "a", b"2")
        ticker.poll()
        assert store.secret("a")() == b"2"  # type: ignore[misc]
    assert not store.polling


def test_real_interval_polls_with_jitter(server: LocalServer, client: Client) -> None:
    """With a real (short) poll interval the background poller picks up a new active
    version by itself."""
    server.db.put(SU, "a", b"1")
    with Store(client, ["a"], poll_interval=0.05) as store:
        put_active(server, "a", b"2")
        deadline = time.monotonic() + 10
        while store.secret("a")() != b"2":  # type: ignore[misc]
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_concurrent_refreshes_coalesce(server: LocalServer, client: Client) -> None:
    """Eight refreshes started at once share polls: at least one poll starts, and fewer
    than eight."""
    server.db.put(SU, "a", b"1")
    store, _ = open_store(client, ["a"])
    with store:
        barrier = threading.Barrier(8)

        def refresh() -> None:
            barrier.wait()
            store.refresh()

        threads = [threading.Thread(target=refresh) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert 1 <= store.metrics()["counter_poll_initiated"] < 8


def test_close_is_idempotent_and_flushes(server: LocalServer, client: Client) -> None:
    """close() may be called twice, and writes the cache."""
    server.db.put(SU, "a", b"1")
    cache = MemCache()
    store, _ = open_store(client, ["a"], cache=cache)
    store.close()
    store.close()
    assert b'"a"' in cache.read()


# --- expiry ------------------------------------------------------------------------


def test_unused_undeclared_secrets_expire(server: LocalServer, client: Client) -> None:
    """A looked-up secret unused for longer than expiry_age leaves the cache at the next
    poll; declared secrets and secrets with a handle stay."""
    for name in ("apple", "pear", "plum", "cherry"):
        server.db.put(SU, name, name.encode())
    clock = FakeClock(1000)
    store, ticker = open_store(client, ["apple"], allow_lookup=True, expiry_age=30, time_now=clock)
    with store:
        store.versioned_secret("plum").get_version(1)
        cache = MemCache()
        store._cache = cache  # watch what the expiry writes
        # pear is looked up then its handle dropped: simulate by a cached undeclared entry
        store.lookup_secret("cherry")
        clock.advance(10)
        store.lookup_secret("cherry")()
        clock.advance(25)  # plum: 35 s unused; cherry: 25 s; apple declared
        ticker.poll()
        names = set(json.loads(cache.read()))
        assert names == {"apple", "cherry"}  # plum expired; cherry has a handle anyway


def test_expiry_removes_undeclared_cached_entries(server: LocalServer, client: Client) -> None:
    """Expiry in Go's shape: entries loaded from a cache, last used long ago."""
    for name in ("apple", "pear", "plum", "cherry"):
        server.db.put(SU, name, name.encode())
    blob = json.dumps(
        {
            name: {"secret": {"Value": "eA==", "Version": 1}, "lastAccess": str(at)}
            for name, at in (("apple", 0), ("pear", 0), ("plum", 5), ("cherry", 80))
        }
    ).encode()
    cache = MemCache(blob)
    clock = FakeClock(100)
    store, ticker = open_store(
        client, ["apple"], allow_lookup=True, expiry_age=30, time_now=clock, cache=cache
    )
    with store:
        ticker.poll()
        assert set(json.loads(cache.read())) == {"apple", "cherry"}
        assert store.secret("pear") is None


# --- watchers and updaters --------------------------------------------------------------


class Closable:
    def __init__(self, value: bytes) -> None:
        self.value = value
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_updater_rebuilds_and_closes_the_old_value(server: LocalServer, client: Client) -> None:
    """An Updater rebuilds its value only when the secret changes, and closes the value
    it replaces; a StaticUpdater returns its value."""
    server.db.put(SU, "key", b"one")
    store, ticker = open_store(client, ["key"])
    with store:
        updater = Updater(store, "key", Closable)
        first = updater.get()
        assert first.value == b"one"
        ticker.poll()  # no change
        assert updater.get() is first
        assert not first.closed
        put_active(server, "key", b"two")
        ticker.poll()
        second = updater.get()
        assert second.value == b"two"
        assert first.closed
        assert StaticUpdater(5).get() == 5


def test_updater_keeps_the_old_value_when_rebuilding_fails(
    server: LocalServer, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """When rebuilding fails, the Updater keeps its old value, records the error and
    logs its type, and takes the next good value."""
    server.db.put(SU, "conf", b'{"port": 1}')
    store, ticker = open_store(client, ["conf"])
    with store:
        updater = Updater(store, "conf", json.loads)
        put_active(server, "conf", b"{" + SECRET)  # not JSON: the error quotes it
        ticker.poll()
        assert updater.get() == {"port": 1}
        assert isinstance(updater.error, ValueError)
        assert 'error updating value for "conf": JSONDecodeError' in caplog.text
        put_active(server, "conf", b'{"port": 2}')
        ticker.poll()
        assert updater.get() == {"port": 2}
        assert updater.error is None


def test_watcher_signals_once_per_change(server: LocalServer, client: Client) -> None:
    """A watcher is not signalled until the secret changes, then once, with the new
    value."""
    server.db.put(SU, "w", b"1")
    store, ticker = open_store(client, ["w"])
    with store:
        watcher = store.watcher("w")
        assert watcher.get() == b"1"
        assert not watcher.changed()
        put_active(server, "w", b"2")
        ticker.poll()
        assert watcher.wait(5)
        assert watcher.get() == b"2"
        assert not watcher.wait(0.1)


# --- versioned secrets ---------------------------------------------------------------


def test_versioned_secret_lifecycle(server: LocalServer, client: Client) -> None:
    """A VersionedSecret creates versions (0 is refused, a claimed one is
    VersionClaimed), reads any version, follows activations and deletions through polls,
    and signals watchers on create_version (Go does not)."""
    store, ticker = open_store(client, [], allow_lookup=True)
    with store:
        vs = store.versioned_secret("color")
        with pytest.raises(SetecError, match="400"):
            vs.create_version(0, b"x")
        vs.create_version(1, b"red")
        assert vs.get_version(1) == b"red"
        assert store.secret("color")() == b"red"  # type: ignore[misc]
        watcher = store.watcher("color")
        vs.create_version(2, b"green")
        assert watcher.changed()  # Go does not notify here; we do
        with pytest.raises(VersionClaimed):
            vs.create_version(2, b"blue")
        assert vs.get_version(2) == b"green"
        assert store.secret("color")() == b"green"  # type: ignore[misc]
        assert vs.get_version(1) == b"red"
        server.db.activate(SU, "color", 1)
        ticker.poll()
        assert store.secret("color")() == b"red"  # type: ignore[misc]
        server.db.delete_version(SU, "color", 2)
        ticker.poll()
        with pytest.raises(NotFound):
            vs.get_version(2)
        server.db.create_version(SU, "color", 3, b"lime")
        ticker.poll()
        assert vs.get_version(3) == b"lime"
        assert store.secret("color")() == b"lime"  # type: ignore[misc]
        with pytest.raises(InvalidVersionError):
            vs.get_version(0)


def test_versioned_secret_requirements(server: LocalServer, tmp_path: Path) -> None:
    """A versioned secret needs allow_lookup and a client that reads versions."""
    server.db.put(SU, "a", b"1")
    with (
        Store(server.client(), ["a"], poll_interval=None) as store,
        pytest.raises(ConfigError, match="allow_lookup"),
    ):
        store.versioned_secret("a")
    path = tmp_path / "secrets.json"
    path.write_text(json.dumps({"a": {"secret": {"Value": "eA==", "Version": 1}}}))
    with (
        Store(FileClient(path), ["a"], allow_lookup=True, poll_interval=None) as store,
        pytest.raises(ConfigError, match="reads versions"),
    ):
        store.versioned_secret("a")


def test_versions_only_cache_entries_survive_restart(server: LocalServer, client: Client) -> None:
    """Go discards the whole cache when an entry holds only versions; we keep it."""
    server.db.put(SU, "a", b"1")
    server.db.put(SU, "v", b"x1")
    cache = MemCache()
    store, _ = open_store(client, ["a"], allow_lookup=True, cache=cache)
    with store:
        store.versioned_secret("v").get_version(1)
    assert json.loads(cache.read())["v"]["secret"] is None
    down = Client("http://127.0.0.1:9", timeout=1)
    with Store(down, ["a"], allow_lookup=True, cache=cache, poll_interval=None) as store:
        assert store.secret("a")() == b"1"  # type: ignore[misc]
        assert store.versioned_secret("v").get_version(1) == b"x1"  # from the cache


# --- FileClient under a Store ---------------------------------------------------------


def test_store_over_a_file_client(tmp_path: Path) -> None:
    """A Store can be served by a FileClient (base64 and text values); names the file
    lacks fail its start, counted in the message."""
    path = tmp_path / "secrets.json"
    path.write_text(
        json.dumps(
            {
                "apple": {"secret": {"Value": "YTE=", "Version": 1}},
                "pear": {"secret": {"TextValue": "p1", "Version": 7}},
            }
        )
    )
    with Store(FileClient(path), ["apple", "pear"], poll_interval=-1) as store:
        assert store.secret("apple")() == b"a1"  # type: ignore[misc]
        assert store.secret("pear")() == b"p1"  # type: ignore[misc]
    with pytest.raises(UnavailableError, match="2 unavailable secrets"):
        Store(FileClient(path), ["apple", "x", "y"], poll_interval=-1)


def test_a_store_cache_is_file_client_input(
    server: LocalServer, client: Client, tmp_path: Path
) -> None:
    """With a versions-only entry present, the active values are served."""
    put_active(server, "apple", b"a1")
    put_active(server, "pear", b"p1")
    server.db.put(SU, "cherry", b"c1")
    put_active(server, "cherry", b"c2")
    cache = FileCache(tmp_path / "cache.json")
    store, _ = open_store(client, ["apple", "pear", "cherry"], allow_lookup=True, cache=cache)
    with store:
        server.db.put(SU, "kiwi", b"k1")
        store.versioned_secret("kiwi").get_version(1)
    file_client = FileClient(tmp_path / "cache.json")
    with Store(file_client, ["apple", "pear", "cherry"], poll_interval=-1) as offline:
        values = {n: offline.secret(n)() for n in ("apple", "pear", "cherry")}  # type: ignore[misc]
    assert values == {"apple": b"a1", "pear": b"p1", "cherry": b"c2"}


@pytest.mark.parametrize("concurrency", [1, 4])
def test_poll_concurrency_gives_the_same_outcome(
    server: LocalServer, client: Client, concurrency: int
) -> None:
    """One conditional get at a time (Go) or several: the same updates and errors."""
    names = [f"c/{i}" for i in range(12)]
    for name in names:
        server.db.put(SU, name, b"1")
    store = Store(client, names, poll_interval=None, poll_concurrency=concurrency)
    with store:
        for name in names[:5]:
            put_active(server, name, b"2")
        server.db.delete(SU, names[-1])
        with pytest.raises(PollError, match="partially failed") as e:
            store.refresh()
        assert set(e.value.errors) == {names[-1]}
        assert e.value.updated == 5
        assert [store.secret(n)() for n in names] == [b"2"] * 5 + [b"1"] * 7  # type: ignore[misc]
    with pytest.raises(ConfigError, match="poll_concurrency"):
        Store(client, names, poll_concurrency=0)


# --- review findings: hangs, races, leaks ---------------------------------------------


class SilentServer:
    """A TCP server that accepts connections and never answers: a hung setec server."""

    def __init__(self) -> None:
        import socket

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.conns: list[object] = []
        self.closed = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.05)  # closing a socket does not wake a blocked accept()
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.conns.append(conn)

    def close(self) -> None:
        self.closed = True
        self.thread.join(5)
        self.sock.close()
        for conn in self.conns:
            conn.close()  # type: ignore[attr-defined]
        # The requests left waiting on us now fail; let their threads end here, so that
        # whatever they leave behind is collected in this test, not a later one.
        for t in threading.enumerate():
            if t.name.startswith("setec-store-"):
                t.join(10)
        import gc

        gc.collect()


def test_startup_timeout_holds_against_a_server_that_never_answers() -> None:
    """The start-up timeout holds against a server that accepts connections and never
    answers."""
    silent = SilentServer()
    try:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match=r"^gave up after 0\.5 s waiting for 3 secrets"):
            Store(Client(silent.url, timeout=(1, 30)), ["a", "b", "c"], timeout=0.5)
        assert time.monotonic() - started < 3
    finally:
        silent.close()


def test_close_does_not_wait_for_a_hung_poll(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """close() returns within CLOSE_TIMEOUT even while a poll waits on a server that
    stopped answering (the Client's read timeout here is 30 s per secret)."""
    from setec_core.client import store as store_module

    monkeypatch.setattr(store_module, "CLOSE_TIMEOUT", 0.5)
    silent = SilentServer()
    names = [f"h/{i}" for i in range(6)]
    for name in names:
        server.db.put(SU, name, b"v")
    cache = MemCache()
    store = Store(server.client(), names, cache=cache, ticker=(ticker := FakeTicker()))
    try:
        store._client = Client(silent.url, timeout=(1, 30))  # the server hangs from now on
        threading.Thread(target=lambda: ticker.poll(60), daemon=True).start()
        time.sleep(0.3)
        started = time.monotonic()
        store.close()
        assert time.monotonic() - started < store_module.CLOSE_TIMEOUT + 2
        assert b'"h/0"' in cache.read()  # flushed even so
    finally:
        silent.close()


class PausingClient(Client):
    """A Client whose conditional gets wait at a gate: to interleave a poll with other
    Store calls deterministically."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.arrived = threading.Event()
        self.gate = threading.Event()

    def get_if_changed(self, name: str, old_version: int):  # type: ignore[no-untyped-def]
        got = super().get_if_changed(name, old_version)
        self.arrived.set()
        assert self.gate.wait(10)
        return got


def test_a_poll_never_overwrites_a_newer_local_value(server: LocalServer) -> None:
    """A poll that fetched v2 must not replace the v3 that create_version set while the
    poll was in flight (the review's stale-apply race)."""
    server.db.create_version(SU, "k", 1, b"v1")
    client = PausingClient(server.url)
    client.gate.set()
    store = Store(client, ["k"], allow_lookup=True, poll_interval=None, poll_concurrency=1)
    with store:
        server.db.create_version(SU, "k", 2, b"v2")
        client.gate.clear()
        poll = threading.Thread(target=store.refresh)
        poll.start()
        assert client.arrived.wait(10)  # the poll holds v2, not yet applied
        store.versioned_secret("k").create_version(3, b"v3")
        client.gate.set()
        poll.join(10)
        assert store.secret("k")() == b"v3"  # type: ignore[misc]


class SlowFirstWriteCache(MemCache):
    """A cache whose first write is slow, as a disk under load can be."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0
        self.first_started = threading.Event()

    def write(self, data: bytes) -> None:
        self.writes += 1
        if self.writes == 1:
            self.first_started.set()
            time.sleep(0.3)
        super().write(data)


def test_cache_writes_land_newest_last(server: LocalServer, client: Client) -> None:
    """Two flushes at once (a lookup's and a poll's) must leave the newest values on disk,
    not an old password (the review's flush race)."""
    server.db.put(SU, "pw", b"old-password")
    server.db.put(SU, "other", b"o")
    store, _ = open_store(client, ["pw"], allow_lookup=True)
    cache = SlowFirstWriteCache()
    store._cache = cache
    with store:
        lookup = threading.Thread(target=store.lookup_secret, args=("other",))
        lookup.start()
        assert cache.first_started.wait(10)
        put_active(server, "pw", b"new-password")
        store.refresh()
        lookup.join(10)
        blob = json.loads(cache.read())
        assert blob["pw"]["secret"]["Version"] == 2


def test_undeclared_cached_names_are_dropped_without_lookups(
    server: LocalServer, client: Client
) -> None:
    """A retired secret left in the cache is neither polled (no error every poll) nor
    kept on disk when lookups are off."""
    server.db.put(SU, "app/pw", b"p")
    blob = json.dumps(
        {
            "app/pw": {"secret": {"Value": "cA==", "Version": 1}, "lastAccess": "1"},
            "old/retired": {"secret": {"Value": "eA==", "Version": 1}, "lastAccess": "1"},
        }
    ).encode()
    cache = MemCache(blob)
    store, _ = open_store(client, ["app/pw"], cache=cache)
    with store:
        store.refresh()  # no error about old/retired: it is not polled
        assert store.metrics()["counter_poll_errors"] == 0
    assert set(json.loads(cache.read())) == {"app/pw"}


def test_reprs_show_no_values(server: LocalServer, client: Client) -> None:
    """The reprs of a Store, of its entries and of decoded cache entries show no
    value."""
    from setec_core.client import cacheblob

    server.db.put(SU, "k", SECRET)
    store, _ = open_store(client, [], allow_lookup=True)
    with store:
        store.versioned_secret("k").get_version(1)
        entry = store._entries["k"]
        decoded = cacheblob.decode(
            cacheblob.encode({"k": cacheblob.CachedEntry(None, {1: SECRET})})
        )
        for text in (repr(entry), repr(decoded), repr(store)):
            assert SECRET.decode() not in text
            assert repr(SECRET) not in text


def test_dropped_watchers_are_released(server: LocalServer, client: Client) -> None:
    """Updaters that are dropped release their watchers (weak references); a kept one
    still works."""
    import gc

    server.db.put(SU, "w", b"1")
    store, _ = open_store(client, ["w"])
    with store:
        for _ in range(50):
            Updater(store, "w", bytes)
        gc.collect()
        assert len(store._entries["w"].watchers) == 0
        kept = Updater(store, "w", bytes)
        assert len(store._entries["w"].watchers) == 1
        assert kept.get() == b"1"


def test_refresh_after_close_is_an_error(server: LocalServer, client: Client) -> None:
    """refresh() after close() raises SetecError "the Store is closed"."""
    server.db.put(SU, "a", b"1")
    store, _ = open_store(client, ["a"])
    store.close()
    with pytest.raises(SetecError, match="the Store is closed"):
        store.refresh()


def test_cache_blob_bytes_are_gos() -> None:
    """Go sorts map keys as strings ("10" before "2") and escapes <, > and & in strings."""
    from setec_core.client import cacheblob
    from setec_core.model import SecretValue

    blob = cacheblob.encode(
        {
            "a<b&c": cacheblob.CachedEntry(
                secret=SecretValue(b"x", 10), versions={2: b"y", 10: b"x"}, last_access=7
            )
        }
    )
    assert blob == (
        b'{"a\\u003cb\\u0026c":{"secret":{"Value":"eA==","Version":10},'
        b'"versions":{"10":"eA==","2":"eQ=="},"lastAccess":"7"}}'
    )
    assert set(cacheblob.decode(blob)) == {"a<b&c"}
