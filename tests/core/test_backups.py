"""Backups in the library: the sealed snapshot format, names and retention, and the
server's backup loop (issue 5 §2)."""

from __future__ import annotations

import datetime as dt
import struct
import time
from collections.abc import Iterator

import pytest

from setec_core import CorruptStoreError, KeyMismatchError, NotFound, StorageError
from setec_core.backups import (
    BackupLoop,
    backup_name,
    is_backup_name,
    latest_backup,
    list_backups,
    prune,
    take_backup,
)
from setec_core.database import Database
from setec_core.maintenance import rotate_dek, rotate_kek
from setec_core.snapshot import MAGIC, TAG_SIZE, open_backup, secrets_of
from setec_core.testing import SUPERUSER, MemoryBackupSink, new_database
from setec_plugins.dev_key import DevKeyProvider

VALUES = {f"app/secret-{i}": f"backup-value-{i}-f00d".encode() for i in range(20)}


@pytest.fixture
def db() -> Iterator[Database]:
    with new_database() as db:
        for name, value in VALUES.items():
            db.put(SUPERUSER, name, value)
        db.put(SUPERUSER, "app/secret-3", b"backup-value-3-second")
        yield db


def test_backup_round_trip(db: Database) -> None:
    """A backup opens with the store's key and holds every secret, version and value."""
    data, revision = db.backup()
    opened = open_backup(data, db.key)
    assert opened.info.secrets == len(VALUES)
    assert opened.info.versions == len(VALUES) + 1
    assert opened.info.revision == revision == db.revision
    assert opened.info.kek == db.key.uri
    states = {s.name: s for s in secrets_of(opened)}
    assert set(states) == set(VALUES)
    assert states["app/secret-3"].versions == {
        1: b"backup-value-3-f00d",
        2: b"backup-value-3-second",
    }
    assert states["app/secret-3"].active == 1


def test_backup_is_encrypted(db: Database) -> None:
    """No secret name or value appears in a backup, in clear or in base64."""
    import base64

    data, _ = db.backup()
    for name, value in VALUES.items():
        assert name.encode() not in data
        assert value not in data
        assert base64.b64encode(value) not in data


def test_empty_store_backs_up(db: Database) -> None:
    """A store with no secrets still makes a backup that opens."""
    with new_database() as empty:
        data, _ = empty.backup()
        assert open_backup(data, empty.key).info.secrets == 0


@pytest.mark.parametrize("where", ["magic", "header", "record", "tag", "last-record-byte"])
def test_any_altered_byte_is_detected(db: Database, where: str) -> None:
    """Flipping a byte anywhere in a backup makes it fail to open."""
    data = bytearray(db.backup()[0])
    header_end = data.index(b"\n", len(MAGIC))
    index = {
        "magic": 2,
        "header": header_end - 5,
        "record": header_end + 40,
        "tag": len(data) - 1,
        "last-record-byte": len(data) - TAG_SIZE - 1,
    }[where]
    data[index] ^= 0x01
    with pytest.raises((CorruptStoreError, KeyMismatchError)):
        open_backup(bytes(data), db.key)


@pytest.mark.parametrize("cut", [0, 5, 40, 200, -TAG_SIZE, -1])
def test_truncated_backup_is_detected(db: Database, cut: int) -> None:
    """A backup cut short anywhere fails to open with CorruptStoreError."""
    data = db.backup()[0]
    with pytest.raises(CorruptStoreError):
        open_backup(data[:cut], db.key)


def test_removed_record_is_detected(db: Database) -> None:
    """Dropping a whole record (and fixing the count) is caught by the tag."""
    data = db.backup()[0]
    header_end = data.index(b"\n", len(MAGIC))
    start = header_end + 1
    (klen,) = struct.unpack_from(">I", data, start)
    (dlen,) = struct.unpack_from(">I", data, start + 4 + klen)
    end = start + 8 + klen + dlen
    header = data[len(MAGIC) : header_end].replace(
        f'"records":{len(VALUES)}'.encode(), f'"records":{len(VALUES) - 1}'.encode()
    )
    forged = MAGIC + header + b"\n" + data[end:]
    with pytest.raises(CorruptStoreError, match="fails authentication"):
        open_backup(forged, db.key)


def test_older_record_swapped_in_is_detected(db: Database) -> None:
    """A record replaced by its own older ciphertext (a rollback) is caught by the tag."""
    old = db.backup()[0]
    db.put(SUPERUSER, "app/secret-0", b"backup-value-0-newer")
    new = db.backup()[0]
    # Records are in storage order in both; splice each old record over the new one
    # of the same key until one differs.
    old_opened = open_backup(old, db.key).snapshot.records
    new_opened = open_backup(new, db.key).snapshot.records
    by_key = {r.key: r.data for r in old_opened}
    changed = next(r for r in new_opened if by_key[r.key] != r.data)
    assert changed.data is not None
    forged = new.replace(changed.data, by_key[changed.key] or b"")
    with pytest.raises(CorruptStoreError):
        open_backup(forged, db.key)


def test_wrong_key_names_the_backups_key(db: Database) -> None:
    """A backup opened with another key fails, naming the key that wrapped it."""
    data = db.backup()[0]
    with pytest.raises(KeyMismatchError, match="dev://setec-testing"):
        open_backup(data, DevKeyProvider("another"))


def test_not_a_backup() -> None:
    """Something that is not a backup is refused with a clear message."""
    with pytest.raises(CorruptStoreError, match="not a setec backup"):
        open_backup(b"SQLite format 3\x00", DevKeyProvider("x"))


def test_backup_after_rotate_kek_by_another_process(db: Database) -> None:
    """After another process rewraps the data key, the running database still backs
    up (same data key), and the backup carries the new wrapped key."""
    new = DevKeyProvider("rotated")
    rotate_kek(db.storage, old=db.key, new=new)
    data, _ = db.backup()
    assert open_backup(data, new).info.secrets == len(VALUES)
    with pytest.raises(KeyMismatchError):
        open_backup(data, db.key)


def test_backup_after_rotate_dek_by_another_process_refuses(db: Database) -> None:
    """After another process re-encrypts under a new data key, a backup from the old
    server is refused (it would be sealed with the wrong key) with advice."""
    rotate_dek(db.storage, key=db.key)
    with pytest.raises(StorageError, match="restart"):
        db.backup()


# --- names and retention ---------------------------------------------------------------


def test_backup_names_sort_oldest_first() -> None:
    """Names are zero-padded UTC, so sorting them sorts by time across days, months
    and time zones."""
    times = [
        dt.datetime(2024, 5, 7, 9, 3, 4, 5000, tzinfo=dt.UTC),
        dt.datetime(2024, 10, 1, 0, 0, 0, tzinfo=dt.UTC),
        dt.datetime(2024, 10, 1, 2, 0, 0, tzinfo=dt.timezone(dt.timedelta(hours=5))),
        dt.datetime(2025, 1, 1, 0, 0, 0, 999999, tzinfo=dt.UTC),
    ]
    names = [backup_name(t) for t in times]
    assert names[0] == "2024/05/07/db-2024-05-07T09:03:04.005Z.json"
    assert names[2] == "2024/09/30/db-2024-09-30T21:00:00.000Z.json"
    assert sorted(names) == [names[0], names[2], names[1], names[3]]
    assert all(is_backup_name(n) for n in names)
    assert not is_backup_name("2024/05/07/notes.txt")


def test_prune_keeps_newest_and_ignores_other_files() -> None:
    """Retention deletes the oldest backups only, never other objects in the sink."""
    sink = MemoryBackupSink()
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    names = [backup_name(start + dt.timedelta(days=i)) for i in range(5)]
    for name in names:
        sink.put(name, b"x")
    sink.put("README.txt", b"not a backup")
    assert prune(sink, 2) == names[:3]
    assert sink.list() == sorted([*names[3:], "README.txt"])
    with pytest.raises(ValueError, match="at least 1"):
        prune(sink, 0)


def test_take_backup_stores_under_its_name(db: Database) -> None:
    """take_backup puts the sealed snapshot under the time-stamped name."""
    sink = MemoryBackupSink()
    when = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
    result = take_backup(db, sink, now=lambda: when)
    assert result.name == backup_name(when)
    assert list_backups(sink) == [result.name]
    assert open_backup(sink.get(result.name), db.key).info.revision == result.revision


# --- the loop ---------------------------------------------------------------------------


def test_loop_backs_up_at_start_then_only_on_change(db: Database) -> None:
    """§5: a backup at once, none while nothing changes, a new one after a write."""
    sink = MemoryBackupSink()
    loop = BackupLoop(db, sink, interval=60)
    first = loop.run_once()
    assert first is not None
    assert loop.taken == 1
    assert loop.run_once() is None
    assert sink.puts == 1
    time.sleep(0.002)  # names have millisecond resolution
    db.put(SUPERUSER, "app/new", b"backup-value-new")
    second = loop.run_once()
    assert second is not None
    assert second.revision > first.revision
    assert len(list_backups(sink)) == 2
    assert loop.last_size == second.size
    assert loop.last_success > 0


def test_loop_failure_is_counted_and_retried(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed backup is logged and counted, serving is untouched, and the next round
    tries again even though the store did not change."""
    sink = MemoryBackupSink(fail_puts=1)
    loop = BackupLoop(db, sink, interval=60)
    assert loop.run_once() is None
    assert loop.failures == 1
    assert loop.taken == 0
    assert "injected backup failure" in loop.last_error
    assert "backup failed: injected backup failure" in caplog.text
    assert db.get(SUPERUSER, "app/secret-1").value == VALUES["app/secret-1"]
    assert loop.run_once() is not None
    assert loop.taken == 1
    assert loop.last_error == ""


def test_loop_retention(db: Database) -> None:
    """With keep=2, the loop leaves the two newest backups."""
    sink = MemoryBackupSink()
    loop = BackupLoop(db, sink, interval=60, keep=2)
    made = []
    for i in range(4):
        db.put(SUPERUSER, f"app/retention-{i}", b"backup-value-r")
        result = loop.run_once()
        assert result is not None
        made.append(result.name)
        time.sleep(0.002)
    assert list_backups(sink) == made[-2:]


def test_loop_thread_runs_and_stops(db: Database) -> None:
    """start() takes the first backup in the background; stop() ends the thread."""
    sink = MemoryBackupSink()
    loop = BackupLoop(db, sink, interval=0.05)
    loop.start()
    try:
        deadline = time.monotonic() + 5
        while loop.taken == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert loop.taken == 1
    finally:
        loop.stop()
    assert not loop._thread.is_alive()


def test_loop_rejects_bad_interval(db: Database) -> None:
    """A zero interval would spin; it is refused."""
    with pytest.raises(ValueError, match="positive"):
        BackupLoop(db, MemoryBackupSink(), interval=0)


def test_prune_never_deletes_the_backup_just_taken(caplog: pytest.LogCaptureFixture) -> None:
    """The backup just taken survives retention even when a newer one sorts after it
    (a clock that went back), and the oddity is logged."""
    sink = MemoryBackupSink()
    now = dt.datetime.now(dt.UTC)
    newest = backup_name(now - dt.timedelta(minutes=10))
    later = backup_name(now)
    for name in (newest, later):
        sink.put(name, b"x")
    assert prune(sink, 1, newest=newest) == []
    assert sink.list() == [newest, later]
    assert "sorts before" in caplog.text


def test_future_names_neither_count_nor_go(caplog: pytest.LogCaptureFixture) -> None:
    """Names dated past the clock (planted by someone who may only add objects) are not
    counted by retention, so real backups are not pushed out, and are not deleted;
    latest skips them, and strict latest (restore) refuses."""
    sink = MemoryBackupSink()
    now = dt.datetime.now(dt.UTC)
    real = [backup_name(now - dt.timedelta(days=d)) for d in (3, 2, 1)]
    strays = [
        backup_name(dt.datetime(2099, 1, 1, tzinfo=dt.UTC)),
        backup_name(now + dt.timedelta(hours=2)),
    ]
    for name in real + strays:
        sink.put(name, b"x")
    assert prune(sink, 2, newest=real[-1]) == real[:1]
    assert set(sink.list()) == set(real[1:] + strays)
    assert "dated in the future" in caplog.text
    assert latest_backup(sink) == real[-1]
    with pytest.raises(StorageError, match="dated after this machine's clock"):
        latest_backup(sink, strict=True)


@pytest.mark.parametrize(
    "name",
    [
        "9999/12/31/db-2000-01-01T00:00:00.000Z.json",  # folder and time disagree
        "2026/13/45/db-2026-13-45T00:00:00.000Z.json",  # no such date
        "2026/01/01/db-2026-01-01T25:00:00.000Z.json",  # no such time
    ],
)
def test_inconsistent_names_are_not_backups(name: str) -> None:
    """Only names backup_name could have made count as backups."""
    assert not is_backup_name(name)
    sink = MemoryBackupSink()
    sink.put(name, b"x")
    assert list_backups(sink) == []


def test_latest_backup_of_an_empty_sink() -> None:
    """latest with no backups is NotFound naming the sink."""
    with pytest.raises(NotFound, match="no backups in memory-backup://"):
        latest_backup(MemoryBackupSink())


class DeleteFailingSink(MemoryBackupSink):
    """A sink whose deletes fail with an error no sink is supposed to raise."""

    def delete(self, name: str) -> None:
        raise ConnectionResetError("peer reset")


def test_loop_survives_a_retention_bug(db: Database, caplog: pytest.LogCaptureFixture) -> None:
    """An unexpected error from retention is logged and the loop carries on backing up."""
    sink = DeleteFailingSink()
    loop = BackupLoop(db, sink, interval=60, keep=1)
    for i in range(3):
        db.put(SUPERUSER, f"app/loop-{i}", b"backup-value-loop")
        assert loop.run_once() is not None
        time.sleep(0.002)
    assert loop.taken == 3
    assert "backup retention failed: ConnectionResetError" in caplog.text


@pytest.mark.parametrize("value", ["1e400", "Infinity", "-1", '"3"', "[" * 5000 + "]" * 5000])
def test_damaged_header_numbers_are_refused(db: Database, value: str) -> None:
    """A header whose record count is not a whole number is CorruptStoreError, not a
    crash."""
    data = db.backup()[0]
    forged = data.replace(f'"records":{len(VALUES)}'.encode(), f'"records":{value}'.encode())
    with pytest.raises(CorruptStoreError, match="header is damaged"):
        open_backup(forged, db.key)


def test_unverified_kek_is_quoted(db: Database) -> None:
    """With the wrong key, the header's claim about its key is shown quoted and marked
    unverified: a forged header cannot inject a line."""
    data = db.backup()[0]
    forged = data.replace(b'"kek":"dev://setec-testing"', b'"kek":"x\\nok: fake line"')
    with pytest.raises(KeyMismatchError) as info:
        open_backup(forged, DevKeyProvider("another"))
    assert "\n" not in str(info.value)
    assert "'x\\nok: fake line' (as the backup's unverified header says)" in str(info.value)
