"""The postgresql storage backend against a real PostgreSQL server (tests/peers/
postgres_server.py): the storage contracts, two handles on one database, how it opens
a new or existing database, and a password that never shows."""

from __future__ import annotations

import logging
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from peers.postgres_server import USER, PostgresServer

from setec_core import Database, Plugins
from setec_core.errors import (
    ConfigError,
    ConflictError,
    CorruptStoreError,
    StorageError,
    StorageUnavailable,
)
from setec_core.http.status import STORE_UNREACHABLE, status_for
from setec_core.storage import MetaWrite, Record, RecordWrite, StorageBackend
from setec_core.testing import SUPERUSER
from setec_core.testing.storage_contract import (
    Pair,
    PersistentStorageContract,
    Reopen,
    SharedStorageContract,
    key,
    run_together,
    waiter,
)
from setec_core.uris import redact
from setec_plugins.postgres_storage import PostgresStorage


class TestPostgresStorageContract(PersistentStorageContract):
    """PostgresStorage passes the storage contract, persistence tests included."""

    @pytest.fixture
    def storage(self, postgres_uri: str) -> StorageBackend:
        return PostgresStorage.from_uri(postgres_uri)

    @pytest.fixture
    def reopen(self, postgres_uri: str) -> Reopen:
        # The uri property hides the password: reopen from the URI that carries it.
        def reopen(old: StorageBackend) -> StorageBackend:
            old.close()
            return PostgresStorage.from_uri(postgres_uri)

        return reopen


class TestPostgresSharedStorage(SharedStorageContract):
    """Two PostgresStorage handles on one database (as two setec-serve processes would
    open it) see each other's commits and serialise their writes."""

    @pytest.fixture
    def two_handles(self, postgres_uri: str) -> Pair:
        return PostgresStorage.from_uri(postgres_uri), PostgresStorage.from_uri(postgres_uri)


@pytest.fixture
def store(postgres_uri: str) -> Iterator[PostgresStorage]:
    s = PostgresStorage.from_uri(postgres_uri)
    yield s
    s.close()


def _sql(
    uri: str, statement: str, params: tuple[object, ...] | None = None
) -> list[tuple[object, ...]]:
    """Run one statement on the database at ``uri`` behind the backend's back."""
    with psycopg.connect(uri, autocommit=True) as conn:
        cursor = conn.execute(statement, params)
        return cursor.fetchall() if cursor.description else []


def _one_line_error(uri: str) -> StorageError:
    """Open ``uri``, which must fail with a StorageError of one line; return it."""
    with pytest.raises(StorageError) as caught:
        PostgresStorage.from_uri(uri)
    assert "\n" not in str(caught.value)
    return caught.value


# --- selecting and opening ------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_selected_through_plugins_by_both_schemes(postgres_uri: str, scheme: str) -> None:
    """The installed plugins open postgresql:// and postgres:// URIs with this backend."""
    uri = scheme + "://" + postgres_uri.partition("://")[2]
    storage = Plugins.load().storage(uri)
    try:
        assert isinstance(storage, PostgresStorage)
        assert storage.commit([RecordWrite(key(1), b"x", 0)]) == 1
    finally:
        storage.close()


@pytest.mark.parametrize(
    "uri",
    [
        "mysql://app:hunter2@db/setec",
        "postgresql:/db",
        "postgresql://app:hunter2@db/setec?no_such_parameter=1",
        "postgresql://app:hun%zzter2@db/setec",
    ],
)
def test_malformed_uri_is_a_config_error_without_the_password(uri: str) -> None:
    """A URI that is not a libpq URI is a ConfigError saying the expected form, and
    shows no part of the password (libpq quotes what it could not parse)."""
    with pytest.raises(ConfigError, match=r"expected postgresql://") as caught:
        PostgresStorage.from_uri(uri)
    assert "hun" not in str(caught.value)


def test_unreachable_server_is_one_line_storage_error(postgres: PostgresServer) -> None:
    """Nothing listening at the host and port: one StorageError line naming them and
    the database, saying what to check."""
    with psycopg.connect(postgres.uri()) as conn:
        # A port just closed by the server side of a connection is free.
        port = int(conn.execute("SELECT inet_server_port()").fetchone()[0])  # type: ignore[index]
    closed = postgres.uri("setec").replace(f":{port}/", ":1/")
    error = _one_line_error(closed)
    message = str(error)
    assert "cannot connect to PostgreSQL store postgresql://***@127.0.0.1:1/setec" in message
    assert "Connection refused" in message
    assert "check that the server is running" in message
    assert isinstance(error, StorageUnavailable)


def test_missing_database_is_one_line_storage_error(postgres: PostgresServer) -> None:
    """A database that does not exist is not created: one StorageError line says so and
    how to create it."""
    error = _one_line_error(postgres.uri("no_such_db"))
    assert 'database "no_such_db" does not exist' in str(error)
    assert "create the database first" in str(error)
    with psycopg.connect(postgres.uri()) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = 'no_such_db'").fetchall()
    assert found == []


def test_wrong_password_is_one_line_storage_error(postgres: PostgresServer) -> None:
    """A refused password is one StorageError line that says to check the credentials
    and shows neither the wrong password nor the right one."""
    wrong = postgres.uri().replace(postgres.password, "not-the-password-42")
    error = _one_line_error(wrong)
    assert "password authentication failed" in str(error)
    assert "not-the-password-42" not in str(error)
    assert postgres.password not in str(error)
    assert not isinstance(error, StorageUnavailable)


def test_password_never_shows(
    postgres: PostgresServer, postgres_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The password, in the userinfo or as ?password=, is in no repr, uri, error,
    traceback or log record (every logger at DEBUG), whatever happens."""
    caplog.set_level(logging.DEBUG)
    password = postgres.password
    in_query = postgres_uri.replace(f":{password}@", "@") + f"?password={password}"
    shown: list[str] = []
    for n, uri in enumerate((postgres_uri, in_query)):
        with PostgresStorage.from_uri(uri) as s:
            shown += [repr(s), s.uri, str(s)]
            s.commit([RecordWrite(key(n), b"x", 0)], [MetaWrite(f"m{n}", b"v", None)])
            with pytest.raises(ConflictError) as conflict:
                s.commit([RecordWrite(key(n), b"y", 0)])
            shown.append("".join(traceback.format_exception(conflict.value)))
            s.export()
        with pytest.raises(StorageError) as closed:
            s.read(key(1))
        shown.append("".join(traceback.format_exception(closed.value)))
    closed_port = f":{postgres.port}/"
    for bad in (
        postgres.uri("no_such_db"),
        postgres.uri().replace(closed_port, ":1/"),
        in_query.replace(closed_port, ":1/"),
        postgres.uri() + "?sslmode=nonsense",
    ):
        with pytest.raises(StorageError) as failed:
            PostgresStorage.from_uri(bad)
        shown.append("".join(traceback.format_exception(failed.value)))
    assert shown[0] == f"PostgresStorage('{redact(postgres_uri)}')"
    assert redact(postgres_uri).startswith("postgresql://***@127.0.0.1:")
    assert redact(in_query).endswith("?password=***")
    assert redact(in_query) in shown
    leaks = [text for text in [*shown, caplog.text] if password in text]
    assert leaks == []


def test_missing_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg the backend says to install the postgres extra."""
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(ConfigError, match=r"pip install 'pysetec\[postgres\]'"):
        PostgresStorage.from_uri("postgresql://app@127.0.0.1:1/setec")


# --- the schema -----------------------------------------------------------------------


def test_tables_are_created_once_by_racing_handles(postgres_uri: str) -> None:
    """Handles opening a new database at the same instant create the tables once; all
    of them open, and their commits share one revision counter."""
    count = 6
    opened: list[PostgresStorage] = []
    errors = run_together(count, lambda _: opened.append(PostgresStorage.from_uri(postgres_uri)))
    try:
        assert errors == []
        assert len(opened) == count
        revisions = {s.commit([RecordWrite(key(n), b"x", 0)]) for n, s in enumerate(opened)}
        assert revisions == set(range(1, count + 1))
    finally:
        for s in opened:
            s.close()
    assert _sql(postgres_uri, "SELECT id, version FROM setec_schema") == [(0, 1)]
    assert _sql(postgres_uri, "SELECT id, revision FROM setec_revision") == [(0, count)]


def test_a_user_who_cannot_create_the_tables_is_told_why(
    postgres: PostgresServer, postgres_uri: str
) -> None:
    """A user without the CREATE privilege on the schema (PostgreSQL 15 grants it on
    public to the database owner only) gets one StorageError line saying what to grant."""
    role = postgres_uri.rpartition("/")[2] + "_user"  # t_<hex>_user: needs no quoting
    _sql(postgres_uri, f"CREATE ROLE {role} LOGIN PASSWORD 'role-pw-77'")
    uri = postgres_uri.replace(f"{USER}:{postgres.password}@", f"{role}:role-pw-77@")
    try:
        error = _one_line_error(uri)
    finally:
        _sql(postgres_uri, f"DROP OWNED BY {role}")
        _sql(postgres_uri, f"DROP ROLE {role}")
    assert "permission denied for schema public" in str(error)
    assert "needs the CREATE privilege on the schema" in str(error)
    assert "role-pw-77" not in str(error)


def test_reopening_keeps_the_tables(postgres_uri: str) -> None:
    """Opening a database that has the tables creates nothing and keeps the data."""
    with PostgresStorage.from_uri(postgres_uri) as s:
        s.commit([RecordWrite(key(1), b"x", 0)])
    oids = _sql(postgres_uri, "SELECT oid FROM pg_class WHERE relname LIKE 'setec_%' ORDER BY 1")
    with PostgresStorage.from_uri(postgres_uri) as s:
        assert s.read(key(1)) == Record(key(1), b"x", 1)
    assert (
        _sql(postgres_uri, "SELECT oid FROM pg_class WHERE relname LIKE 'setec_%' ORDER BY 1")
        == oids
    )
    assert len(oids) >= 5


def test_unknown_schema_version_is_refused(postgres_uri: str) -> None:
    """Tables of another schema version are a CorruptStoreError naming the version."""
    PostgresStorage.from_uri(postgres_uri).close()
    _sql(postgres_uri, "UPDATE setec_schema SET version = 7")
    with pytest.raises(CorruptStoreError, match="schema version 7, but this setec reads version 1"):
        PostgresStorage.from_uri(postgres_uri)


def test_emptied_revision_table_is_refused(postgres_uri: str) -> None:
    """A store whose revision row was deleted is a CorruptStoreError at open."""
    PostgresStorage.from_uri(postgres_uri).close()
    _sql(postgres_uri, "DELETE FROM setec_revision")
    with pytest.raises(CorruptStoreError, match="has no revision"):
        PostgresStorage.from_uri(postgres_uri)


def test_only_ciphertext_reaches_the_server(postgres_uri: str, tmp_path: Path) -> None:
    """A Database on PostgreSQL stores no secret name or value in its tables, and opens
    again with what it wrote."""
    state = tmp_path / "state"
    with Database.open(state, key="dev://", storage=postgres_uri) as db:
        db.put(SUPERUSER, "prod/app/db-pass", b"hunter2-value")
    dump = _sql(postgres_uri, "SELECT key, data FROM setec_records") + _sql(
        postgres_uri, "SELECT name, value FROM setec_meta"
    )
    flat = b"".join(
        bytes(v) if isinstance(v, bytes) else str(v).encode() for row in dump for v in row
    )
    assert b"hunter2-value" not in flat
    assert b"prod/app/db-pass" not in flat
    with Database.open(state, key="dev://", storage=postgres_uri) as db:
        assert db.get(SUPERUSER, "prod/app/db-pass").value == b"hunter2-value"


# --- failures while open ------------------------------------------------------------------


def _drop_connections(postgres: PostgresServer, uri: str) -> None:
    """Make the server close every connection to the database ``uri`` names, and wait
    until their processes have ended (so the sockets are closed when this returns)."""
    _sql(
        postgres.uri(),
        "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = %s",
        (uri.rpartition("/")[2],),
    )


def test_lost_connections_are_replaced(
    postgres: PostgresServer, postgres_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """When the server drops every pooled connection (a restart), reads and a commit
    run again on new connections: no call fails, and the commit is applied once."""
    caplog.set_level(logging.INFO, logger="setec_plugins.postgres_storage")
    with PostgresStorage.from_uri(postgres_uri) as store:
        store.commit([RecordWrite(key(1), b"x", 0)])
        _drop_connections(postgres, postgres_uri)
        assert store.read(key(1)) == Record(key(1), b"x", 1)
        _drop_connections(postgres, postgres_uri)
        assert store.commit([RecordWrite(key(1), b"y", 1)]) == 2
        _drop_connections(postgres, postgres_uri)
        assert [r.revision for r in store.changes_since(0)] == [2]
        assert store.revision() == 2
    # The pool may hold more than one dead connection: each call runs again at least once.
    again = {
        r.getMessage().rpartition(" running ")[2]
        for r in caplog.records
        if "a pooled connection was lost" in r.getMessage()
    }
    assert again == {f"{what} again on another" for what in ("read", "commit", "changes_since")}


def test_a_failing_statement_is_one_line_storage_error(postgres_uri: str) -> None:
    """A statement the server refuses (here: its table was dropped behind the store's
    back) is one StorageError line naming the store, the call and the server's reason."""
    with PostgresStorage.from_uri(postgres_uri) as store:
        _sql(postgres_uri, "DROP TABLE setec_records")
        for call, what in ((lambda: store.read(key(1)), "read"), (store.read_all, "read_all")):
            with pytest.raises(StorageError) as caught:
                call()
            message = str(caught.value)
            assert message.startswith(f"PostgreSQL store {store.uri}: {what} failed: ")
            assert 'relation "setec_records" does not exist' in message
            assert "\n" not in message


def test_closed_store_refuses_calls(store: PostgresStorage) -> None:
    """After close() every call is a StorageError saying the store is closed; a second
    close() is harmless."""
    store.close()
    store.close()
    for call in (
        store.revision,
        store.read_all,
        store.export,
        lambda: store.commit([RecordWrite(key(1), b"x", 0)]),
    ):
        with pytest.raises(StorageError, match="is closed"):
            call()


# --- replicas: notifications, leases and outages ------------------------------------------


def test_a_commit_notifies_in_its_transaction(postgres_uri: str) -> None:
    """A commit sends one notification with its revision, on the store's channel, and
    a commit that conflicts sends none."""
    with (
        PostgresStorage.from_uri(postgres_uri) as store,
        psycopg.connect(postgres_uri, autocommit=True) as listener,
    ):
        channel = store.channel
        listener.execute(f'LISTEN "{channel}"')
        store.commit([RecordWrite(key(1), b"x", 0)])
        with pytest.raises(ConflictError):
            store.commit([RecordWrite(key(1), b"y", 0)])
        store.commit([RecordWrite(key(1), b"y", 1)])
        got = [(n.channel, n.payload) for n in listener.notifies(timeout=1.0, stop_after=2)]
        assert got == [(channel, "1"), (channel, "2")]
        assert list(listener.notifies(timeout=0.3)) == []


def test_a_lost_listening_connection_is_replaced(
    postgres: PostgresServer, postgres_uri: str
) -> None:
    """When the server drops the listening connection while a thread waits, the
    waiter returns (a notification may have been lost); when it drops it between two
    waits, the next one finds out before it waits. Either way the next call listens on a new
    connection, which a commit through another handle wakes."""
    with (
        PostgresStorage.from_uri(postgres_uri) as store,
        PostgresStorage.from_uri(postgres_uri) as other,
    ):
        woke = waiter(store, 0, 10.0)
        time.sleep(0.3)
        _drop_connections(postgres, postgres_uri)
        assert woke.result(2.0) is True
        assert store.revision() == 0
        for revision in (0, 1):
            woke = waiter(store, revision, 10.0)
            time.sleep(0.3)
            assert woke.outcome(0) is None, "woke before the commit"
            other.commit([RecordWrite(key(revision), b"x", 0)])
            assert woke.result(1.0) is True
            assert store.wait_for_change(revision + 1, 0.1) is False
            _drop_connections(postgres, postgres_uri)


def test_leases_use_the_servers_clock(postgres_uri: str) -> None:
    """A lease's expiry is kept in the database as the server's time plus the ttl."""
    with PostgresStorage.from_uri(postgres_uri) as store:
        store.acquire_lease("backup", "a", 60.0)
        [(left,)] = _sql(
            postgres_uri,
            "SELECT extract(epoch FROM expires - clock_timestamp())::float8"
            " FROM setec_leases WHERE name = 'backup'",
        )
    assert 55.0 < float(left) <= 60.0  # type: ignore[arg-type]


def test_an_older_store_gets_the_leases_table(postgres_uri: str) -> None:
    """A database set up before leases existed (no setec_leases table) opens, gets the
    table, keeps its data, and takes leases."""
    with PostgresStorage.from_uri(postgres_uri) as store:
        store.commit([RecordWrite(key(1), b"x", 0)])
    _sql(postgres_uri, "DROP TABLE setec_leases")
    with PostgresStorage.from_uri(postgres_uri) as store:
        assert store.read(key(1)) == Record(key(1), b"x", 1)
        assert store.acquire_lease("backup", "a", 30.0) is not None
        assert store.revision() == 1


@pytest.fixture
def own_server() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of the test's own, which it may stop and start again."""
    with PostgresServer.start() as server:
        yield server


def test_an_outage_is_storage_unavailable_until_the_server_is_back(
    own_server: PostgresServer,
) -> None:
    """While the server is down, every call (revision, commit, wait_for_change,
    leases) raises StorageUnavailable within seconds, one line naming the store
    without its password (503 on the wire), and a waiter blocked at the time returns;
    once the server is back the same handle reads, commits and wakes again."""
    uri = own_server.new_database()
    store = PostgresStorage.from_uri(uri)
    try:
        assert store.commit([RecordWrite(key(1), b"x", 0)]) == 1
        woke = waiter(store, 1, 30.0)
        time.sleep(0.3)
        own_server.pause()
        outcome = woke.outcome(2.0)
        assert outcome is True or isinstance(outcome, StorageUnavailable), outcome
        calls = {
            "revision": store.revision,
            "commit": lambda: store.commit([RecordWrite(key(2), b"y", 0)]),
            "wait_for_change": lambda: store.wait_for_change(1, 10.0),
            "acquire_lease": lambda: store.acquire_lease("backup", "a", 30.0),
            "read": lambda: store.read(key(1)),
        }
        for what, call in calls.items():
            start = time.monotonic()
            with pytest.raises(StorageUnavailable) as caught:
                call()
            assert time.monotonic() - start < 5.0, what
            message = str(caught.value)
            assert message.startswith(f"PostgreSQL store {store.uri}: {what} failed: "), message
            assert "\n" not in message
            assert own_server.password not in message
            assert status_for(caught.value) == (503, STORE_UNREACHABLE, True)
        own_server.resume()
        assert store.revision() == 1
        assert store.commit([RecordWrite(key(2), b"y", 0)]) == 2
        with PostgresStorage.from_uri(uri) as other:
            woke = waiter(store, 2, 10.0)
            time.sleep(0.3)
            other.commit([RecordWrite(key(3), b"z", 0)])
            assert woke.result(1.0) is True
        assert store.acquire_lease("backup", "a", 30.0) is not None
    finally:
        store.close()
