"""Last access at the Database layer (docs/api.md §9.5): which operations count, that
info and list do not, and how the times are kept: in memory on every access, in the
store's sealed ``last-access`` entry at each flush (merged by the later time across
processes), never a write per get."""

from __future__ import annotations

import datetime
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from setec_core import AccessDenied, Database, NotFound, ValueNotChanged, make_caller
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.data_key import unwrap_data_key
from setec_core.last_access import LAST_ACCESS_META, as_datetime
from setec_core.plugins import Plugins
from setec_core.storage import MetaWrite, StorageBackend
from setec_core.testing import SUPERUSER, FaultyStorage

SU = SUPERUSER
KEY = "dev://"


def now() -> datetime.datetime:
    """The time as the Database records it (nanoseconds, cut to microseconds), so
    that a recorded time lies between two readings of it."""
    return as_datetime(time.time_ns())


def last(db: Database, name: str) -> datetime.datetime | None:
    """The last access of ``name`` as info shows it."""
    return db.info(SU, name).last_access


@pytest.fixture
def two(db: Database) -> Database:
    """A database with secret ``s`` at versions 1 (active) and 2, last accessed by
    those puts."""
    db.put(SU, "s", b"1")
    db.put(SU, "s", b"2")
    return db


COUNTED: dict[str, Callable[[Database], object]] = {
    "get": lambda db: db.get(SU, "s"),
    "get of a version": lambda db: db.get(SU, "s", 2),
    "conditional get with news": lambda db: db.get_if_changed(SU, "s", 2),
    "get-many": lambda db: db.get_many(SU, [("s", 0), ("missing", 0)]),
    "put": lambda db: db.put(SU, "s", b"3"),
    "put of the latest value": lambda db: db.put(SU, "s", b"2"),
    "create-version": lambda db: db.create_version(SU, "s", 9, b"9"),
    "activate": lambda db: db.activate(SU, "s", 2),
    "activate of the active version": lambda db: db.activate(SU, "s", 1),
    "delete-version": lambda db: db.delete_version(SU, "s", 2),
}


@pytest.mark.parametrize("operation", COUNTED, ids=str)
def test_accesses_that_count(two: Database, operation: str) -> None:
    """Each of these, allowed and successful, sets last access to its time."""
    before_op = last(two, "s")
    start = now()
    COUNTED[operation](two)
    end = now()
    got = last(two, "s")
    assert got is not None
    assert before_op is not None
    assert start <= got <= end
    assert got >= before_op


def test_a_poll_that_finds_nothing_new_counts(two: Database) -> None:
    """A conditional get answered "not changed" shows the secret in use: it counts,
    though it writes no audit entry."""
    start = now()
    with pytest.raises(ValueNotChanged):
        two.get_if_changed(SU, "s", 1)
    got = last(two, "s")
    assert got is not None
    assert got >= start


def test_info_list_set_info_and_refusals_do_not_count(two: Database) -> None:
    """info, list and set-info leave last access alone, and so do a denied get and a
    get of a version that does not exist."""
    recorded = last(two, "s")
    two.info(SU, "s")
    two.list(SU)
    two.set_info(SU, "s", "what it is for")
    with pytest.raises(AccessDenied):
        two.get(make_caller((["info"], ["*"])), "s")
    with pytest.raises(NotFound):
        two.get(SU, "s", 5)
    (denied,) = two.get_many(make_caller(), [("s", 0)])
    assert isinstance(denied, AccessDenied)
    assert last(two, "s") == recorded
    assert [i.last_access for i in two.list(SU)] == [recorded]


def test_never_accessed_is_none(tmp_path: Path) -> None:
    """A secret whose accesses predate last access (a store from an earlier version)
    has none: its info is Go's."""
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "old", b"v")
        db._accessed.clear()  # as if put by a version of setec that did not record it
    with Database.open(tmp_path, key=KEY) as db:
        assert last(db, "old") is None


def test_flushed_at_close_and_read_after_restart(tmp_path: Path) -> None:
    """Last access outlives a restart exactly (flushed at close); the store holds it in
    a sealed entry, so neither the secret's name nor a time shows in the file."""
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "app/db-pass", b"v")
        revision = db.revision
        db.get(SU, "app/db-pass")
        assert db.revision == revision, "a get wrote to the store"
        seen = last(db, "app/db-pass")
    with Database.open(tmp_path, key=KEY) as db:
        assert last(db, "app/db-pass") == seen
    data = (tmp_path / "secrets.db").read_bytes()
    assert b"app/db-pass" not in data
    assert seen is not None
    assert str(seen.year).encode() + b"-" not in data


def test_a_flush_writes_only_what_is_new(tmp_path: Path) -> None:
    """A flush commits once when something was accessed since the last, and not at
    all otherwise; gets between flushes cost no commit."""
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "a", b"v")
        assert db.flush_access() is True
        revision = db.revision
        assert db.flush_access() is False
        assert db.revision == revision
        for _ in range(100):
            db.get(SU, "a")
        assert db.revision == revision
        assert db.flush_access() is True
        assert db.revision == revision + 1


def stored_times(tmp_path: Path) -> dict[str, int]:
    """The ``last-access`` entry of the SQLite store in ``tmp_path``, opened with the
    store's data key."""
    storage = SqliteStorage(tmp_path / "secrets.db")
    try:
        dek = unwrap_data_key(storage, DevKeyProvider(""), storage.get_meta("dek") or b"")
        blob = storage.get_meta(LAST_ACCESS_META)
        assert blob is not None
        doc: dict[str, int] = json.loads(dek.open_meta(LAST_ACCESS_META, blob))
        return doc
    finally:
        storage.close()


def test_deleted_secrets_leave_the_entry(tmp_path: Path) -> None:
    """A flush drops the times of secrets that no longer exist."""
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "keep", b"v")
        db.put(SU, "gone", b"v")
        db.flush_access()
        assert set(stored_times(tmp_path)) == {"keep", "gone"}
        db.delete(SU, "gone")
    assert set(stored_times(tmp_path)) == {"keep"}


def test_an_unreadable_entry_starts_afresh(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An entry that does not open under the data key (tampered with, or sealed under
    another key) is logged and replaced at the next flush; the store still opens."""
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "a", b"v")
        db._accessed.clear()
    storage = SqliteStorage(tmp_path / "secrets.db")
    try:
        storage.commit(meta=[MetaWrite(LAST_ACCESS_META, b"\x00" * 40, None)])
    finally:
        storage.close()
    caplog.set_level(logging.WARNING)
    with Database.open(tmp_path, key=KEY) as db:
        assert last(db, "a") is None
        db.get(SU, "a")
    assert "'last-access' entry" in caplog.text
    assert "unreadable" in caplog.text
    assert set(stored_times(tmp_path)) == {"a"}


def test_the_background_flush_runs_while_following(tmp_path: Path) -> None:
    """A server's Database (one that follows its store) flushes on its own."""
    with Database.open(tmp_path, key=KEY) as db:
        db.put(SU, "a", b"v")
        db.access_flush_interval = 0.05
        db.follow(interval=0.05)
        deadline = time.monotonic() + 30
        while db.storage.get_meta(LAST_ACCESS_META) is None:
            assert time.monotonic() < deadline, "no flush within 30 s"
            time.sleep(0.02)
        assert set(stored_times(tmp_path)) == {"a"}


# --- several processes over one store -------------------------------------------------


def test_other_processes_see_an_access_once_flushed(tmp_path: Path) -> None:
    """Another process over the store shows an access once the process that served it
    has flushed (at its next flush, or its close), never before: what a crash loses is
    what was not flushed yet."""
    store = f"sqlite://{tmp_path / 'secrets.db'}"
    a = Database.open(tmp_path / "a", key=KEY, storage=store)
    b = Database.open(tmp_path / "b", key=KEY, storage=store)
    try:
        a.put(SU, "s", b"v")
        b.refresh()
        assert last(b, "s") is None
        a.flush_access()
        first = last(a, "s")
        a.get(SU, "s")
        second = last(a, "s")
        b.flush_access()  # reads what the others flushed
        assert last(b, "s") == first != second
        a.close()
        b.flush_access()
        assert last(b, "s") == second
    finally:
        a.close()
        b.close()


class RacingStorage(FaultyStorage):
    """A store whose next read of the last-access entry lets ``race`` run right after
    it: another process's flush lands between this one's read and its commit."""

    def __init__(self, inner: StorageBackend) -> None:
        super().__init__(inner)
        self.race: Callable[[], object] | None = None

    def get_meta(self, name: str) -> bytes | None:
        value = self.inner.get_meta(name)
        race, self.race = self.race, None
        if name == LAST_ACCESS_META and race is not None:
            race()
        return value


@pytest.fixture
def replicas(postgres_uri: str) -> Iterator[tuple[Database, Database, RacingStorage]]:
    """Two Databases over one PostgreSQL store, as two server replicas; the first's
    store can be made to race."""
    plugins = Plugins.load()
    racing = RacingStorage(plugins.storage(postgres_uri))
    a = Database(racing, plugins.key_provider(KEY), AuditLog(MemoryAuditSink()))
    b = Database(
        plugins.storage(postgres_uri), plugins.key_provider(KEY), AuditLog(MemoryAuditSink())
    )
    try:
        yield a, b, racing
    finally:
        a.close()
        b.close()


def test_replicas_merge_by_the_later_time(
    replicas: tuple[Database, Database, RacingStorage],
) -> None:
    """Over PostgreSQL, each replica flushes what it saw; the entry keeps the later time
    of each secret whichever flushes last, and each replica reads the others' times at
    its own flush."""
    a, b, _ = replicas
    a.put(SU, "x", b"1")
    a.put(SU, "y", b"1")
    b.refresh()
    b.get(SU, "x")  # later than a's put of x
    b_x = last(b, "x")
    b.flush_access()
    a.flush_access()  # a's older time of x loses; a learns b's
    assert last(a, "x") == b_x
    a_y = last(a, "y")
    b.flush_access()
    assert last(b, "y") == a_y
    a.get(SU, "x")
    a.flush_access()
    b.flush_access()
    newest = last(b, "x")
    assert newest == last(a, "x")
    assert b_x is not None
    assert newest is not None
    assert newest > b_x


def test_a_flush_that_loses_the_race_merges_and_retries(
    replicas: tuple[Database, Database, RacingStorage],
) -> None:
    """When another replica's flush lands between this one's read and its commit, the
    compare-and-swap fails, and this flush reads again and keeps both replicas' times."""
    a, b, racing = replicas
    a.put(SU, "x", b"1")
    a.put(SU, "y", b"1")
    b.refresh()
    b.get(SU, "y")
    racing.race = b.flush_access
    assert a.flush_access() is True
    a_x, b_y = last(a, "x"), last(b, "y")
    a.close()
    b.flush_access()
    assert (last(b, "x"), last(b, "y")) == (a_x, b_y)
