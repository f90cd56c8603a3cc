"""The sqlite storage backend: the storage contract, file safety and crash safety."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from setec_core import Plugins
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.errors import ConfigError, ConflictError, CorruptStoreError, StorageError
from setec_core.storage import MetaWrite, RecordWrite, StorageBackend
from setec_core.testing.storage_contract import (
    Pair,
    PersistentStorageContract,
    Reopen,
    SharedStorageContract,
    key,
)


def uri_for(path: Path) -> str:
    return f"sqlite://{path}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestSqliteStorageContract(PersistentStorageContract):
    """SqliteStorage passes the storage contract, persistence tests included."""

    @pytest.fixture
    def storage(self, tmp_path: Path) -> StorageBackend:
        return SqliteStorage.from_uri(uri_for(tmp_path / "store.db"))

    @pytest.fixture
    def reopen(self) -> Reopen:
        def reopen(old: StorageBackend) -> StorageBackend:
            old.close()
            return SqliteStorage.from_uri(old.uri)

        return reopen


class TestSqliteSharedStorage(SharedStorageContract):
    """Two SqliteStorage handles on one file (as two processes would open it) see each
    other's commits and serialise their writes."""

    @pytest.fixture
    def two_handles(self, tmp_path: Path) -> Pair:
        uri = uri_for(tmp_path / "store.db")
        return SqliteStorage.from_uri(uri), SqliteStorage.from_uri(uri)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db: Path) -> Iterator[SqliteStorage]:
    s = SqliteStorage.from_uri(uri_for(db))
    yield s
    s.close()


def fill(store: SqliteStorage, n: int) -> None:
    store.commit([RecordWrite(key(i), os.urandom(200), 0) for i in range(n)])


# --- files and permissions ----------------------------------------------------------


def test_new_file_and_directories_are_private(tmp_path: Path) -> None:
    """Even under umask 0, created directories are 0700 and the db, -wal and -shm are 0600."""
    db = tmp_path / "a" / "b" / "store.db"
    old = os.umask(0)
    try:
        store = SqliteStorage.from_uri(uri_for(db))
        store.commit([RecordWrite(b"k", b"v", 0)])
    finally:
        os.umask(old)
    try:
        assert (mode(tmp_path / "a"), mode(db.parent), mode(db)) == (0o700, 0o700, 0o600)
        sidecars = [Path(f"{db}-wal"), Path(f"{db}-shm")]
        assert all(p.exists() for p in sidecars)
        assert [mode(p) for p in sidecars] == [0o600, 0o600]
    finally:
        store.close()


def test_relative_uri_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """sqlite://sub/x.db opens sub/x.db under the working directory."""
    monkeypatch.chdir(tmp_path)
    with SqliteStorage.from_uri("sqlite://sub/x.db") as store:
        assert store.uri == "sqlite://sub/x.db"
    assert (tmp_path / "sub" / "x.db").stat().st_size > 0


def test_repr_shows_the_path_only(db: Path, store: SqliteStorage) -> None:
    """repr() is the class and the absolute path."""
    assert repr(store) == f"SqliteStorage({str(db)!r})"


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:",
        "sqlite:/abs/x.db",
        "sqlite://",
        "sqlite:///",
        "sqlite:///tmp/dir/",
        "sqlite:///tmp/x.db?mode=ro",
        "sqlite://~/x.db",
        "memory:///tmp/x.db",
    ],
)
def test_malformed_uri_is_a_config_error(uri: str) -> None:
    """A malformed sqlite URI raises ConfigError showing the expected form."""
    with pytest.raises(ConfigError, match="expected sqlite:///ABSOLUTE/PATH"):
        SqliteStorage.from_uri(uri)


def test_parent_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    """A parent path that is a regular file raises ConfigError naming it."""
    blocker = tmp_path / "file"
    blocker.write_bytes(b"x")
    with pytest.raises(ConfigError, match=f"{blocker} is not a directory.*writable location"):
        SqliteStorage.from_uri(uri_for(blocker / "sub" / "store.db"))


def test_directory_as_store_is_a_config_error(tmp_path: Path) -> None:
    """A store path that is an existing directory raises ConfigError."""
    with pytest.raises(ConfigError, match="not a regular file"):
        SqliteStorage.from_uri(uri_for(tmp_path))


# --- refusing what is not a good store --------------------------------------------


def test_empty_file_is_refused_and_untouched(db: Path) -> None:
    """An existing 0-byte file raises CorruptStoreError and stays 0 bytes, without sidecars."""
    db.touch()
    with pytest.raises(CorruptStoreError, match=r"is empty \(0 bytes\).*delete the file"):
        SqliteStorage.from_uri(uri_for(db))
    assert db.stat().st_size == 0
    assert sorted(p.name for p in db.parent.iterdir()) == ["store.db"]


def test_random_bytes_are_refused(db: Path) -> None:
    """A file of random bytes raises CorruptStoreError naming the path; it is unchanged."""
    junk = os.urandom(8192)
    db.write_bytes(junk)
    with pytest.raises(CorruptStoreError, match=f"{db} is not an SQLite database.*backup"):
        SqliteStorage.from_uri(uri_for(db))
    assert db.read_bytes() == junk


def test_truncated_store_is_refused_at_open(db: Path) -> None:
    """A store cut to half its size raises CorruptStoreError at open (from_uri), naming it."""
    with SqliteStorage.from_uri(uri_for(db)) as store:
        for i in range(10):
            store.commit([RecordWrite(key(1000 * i + j), os.urandom(200), 0) for j in range(100)])
    size = db.stat().st_size
    assert size > 100_000
    os.truncate(db, size // 2)
    with pytest.raises(CorruptStoreError, match=f"sqlite store {db} is corrupt.*backup"):
        SqliteStorage.from_uri(uri_for(db))


def test_foreign_sqlite_database_is_refused_and_unchanged(db: Path) -> None:
    """An SQLite file without our tables raises CorruptStoreError and is not modified."""
    conn = sqlite3.connect(db)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()
    before = db.read_bytes()
    with pytest.raises(CorruptStoreError, match=f"{db} is .* not a setec store"):
        SqliteStorage.from_uri(uri_for(db))
    assert db.read_bytes() == before


def test_unknown_schema_version_is_refused(db: Path) -> None:
    """A store whose sqlite_schema is not 1 raises CorruptStoreError naming the version."""
    SqliteStorage.from_uri(uri_for(db)).close()
    conn = sqlite3.connect(db)
    conn.execute("UPDATE meta SET value = ? WHERE name = 'sqlite_schema'", (b"2",))
    conn.commit()
    conn.close()
    with pytest.raises(CorruptStoreError, match="schema version b'2'"):
        SqliteStorage.from_uri(uri_for(db))


# --- behaviour specific to this backend -----------------------------------------------


def test_selected_through_plugins(db: Path) -> None:
    """Plugins.load().storage("sqlite:///...") opens a SqliteStorage (the built-in plugin)."""
    store = Plugins.load().storage(uri_for(db))
    try:
        assert isinstance(store, SqliteStorage)
        assert db.exists()
    finally:
        store.close()


def test_failed_commit_changes_nothing_on_disk(db: Path, store: SqliteStorage) -> None:
    """A conflicting commit leaves the revision and the exported store on disk as they were."""
    store.commit([RecordWrite(b"a", b"1", 0)], [MetaWrite("dek", b"k", None)])
    before = (store.revision(), store.export())
    with pytest.raises(ConflictError):
        store.commit([RecordWrite(b"b", b"2", 0), RecordWrite(b"a", b"3", 0)])
    with pytest.raises(StorageError, match="reserved"):
        store.commit([RecordWrite(b"b", b"2", 0)], [MetaWrite("sqlite_schema", b"9", b"1")])
    store.close()
    with SqliteStorage.from_uri(uri_for(db)) as again:
        assert (again.revision(), again.export()) == before


def test_a_store_from_before_leases_gets_the_table(db: Path) -> None:
    """A version 1 file without the leases table (made before leases existed) opens,
    gains the table, keeps its data and passes quick_check; leases then work."""
    with SqliteStorage.from_uri(uri_for(db)) as store:
        store.commit([RecordWrite(b"k", b"v", 0)])
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE leases")
    conn.commit()
    conn.close()
    with SqliteStorage.from_uri(uri_for(db)) as store:
        assert store.revision() == 1
        assert store.acquire_lease("backup", "a", 30.0) is not None
        assert [lease.holder for lease in store.leases()] == ["a"]
        assert store.revision() == 1
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    finally:
        conn.close()


def test_reserved_meta_name_is_hidden(store: SqliteStorage) -> None:
    """The backend's own sqlite_schema entry shows in neither get_meta() nor export()."""
    assert store.get_meta("sqlite_schema") is None
    assert dict(store.export().meta) == {}


def test_duplicate_key_in_one_commit_is_refused(store: SqliteStorage) -> None:
    """A commit that writes one key or meta name twice raises StorageError and changes nothing."""
    with pytest.raises(StorageError, match="twice"):
        store.commit([RecordWrite(b"k", b"a", 0), RecordWrite(b"k", b"b", 0)])
    with pytest.raises(StorageError, match="twice"):
        store.commit(meta=[MetaWrite("m", b"a", None), MetaWrite("m", b"b", None)])
    assert store.revision() == 0


def test_two_instances_on_one_file_share_cas(db: Path, store: SqliteStorage) -> None:
    """A second instance on the same file (as another process would) sees and respects CAS."""
    with SqliteStorage.from_uri(uri_for(db)) as other:
        store.commit([RecordWrite(b"k", b"a", 0)])
        with pytest.raises(ConflictError):
            other.commit([RecordWrite(b"k", b"b", 0)])
        assert other.commit([RecordWrite(b"k", b"b", 1)]) == 2
    assert store.read(b"k") is not None
    assert store.revision() == 2


def test_closed_store_raises_storage_error(store: SqliteStorage) -> None:
    """After close(), calls raise StorageError (not a raw sqlite3 error); close() is idempotent."""
    store.close()
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.read_all()
    with pytest.raises(StorageError, match="closed"):
        store.commit([RecordWrite(b"k", b"v", 0)])


def test_read_all_of_100k_records_is_one_statement(store: SqliteStorage) -> None:
    """read_all() returns 100,000 records of 200 bytes, each exactly as written, with
    one SQL statement: a whole-store read never costs a query per record. (Its speed
    is measured by bench/open.py, not asserted here.)"""
    written = {key(i): os.urandom(200) for i in range(100_000)}
    store.commit([RecordWrite(k, v, 0) for k, v in written.items()])
    statements: list[str] = []
    store._live().set_trace_callback(statements.append)
    try:
        records = list(store.read_all())
    finally:
        store._live().set_trace_callback(None)
    assert len(records) == 100_000
    assert {r.key: r.data for r in records} == written
    assert len(statements) == 1, statements[:5]


# --- crash safety ---------------------------------------------------------------------

CHILD = """
import sys
from setec_core.storage import RecordWrite
from setec_core.builtin.sqlite_storage import SqliteStorage

store = SqliteStorage.from_uri(sys.argv[1])
n = 0
while True:
    counter = store.read(b"counter")
    expect = counter.revision if counter else 0
    writes = [RecordWrite(b"counter", str(n).encode(), expect)]
    writes.append(RecordWrite(b"%08d" % n, b"x" * 200, 0))
    print(store.commit(writes), flush=True)
    n += 1
"""


def test_sigkill_during_commits_loses_no_committed_revision(db: Path) -> None:
    """After SIGKILL mid-stream, the store opens, passes quick_check and keeps every
    revision the child saw committed."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, uri_for(db)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, child.kill)
    watchdog.start()
    last = 0
    try:
        assert child.stdout is not None
        for line in child.stdout:
            last = int(line)
            if last >= 60:
                os.kill(child.pid, signal.SIGKILL)
                break
    finally:
        watchdog.cancel()
        child.kill()
        _, err = child.communicate()
    assert last >= 60, f"child stopped early: {err}"
    assert child.returncode == -signal.SIGKILL

    with SqliteStorage.from_uri(uri_for(db)) as store:
        revision = store.revision()
        counter = store.read(b"counter")
        assert revision >= last
        assert counter is not None
        assert counter.data == str(revision - 1).encode()
        assert sum(1 for _ in store.read_all()) == revision + 1
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA quick_check").fetchall() == [("ok",)]
    finally:
        conn.close()
