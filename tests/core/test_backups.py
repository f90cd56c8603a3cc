"""Backups in the library: names, which backups are genuine, retention and "latest"
(including against files planted, copied or renamed where the backups are), and the
server's backup loop."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import pytest
from backup_helpers import NOW, VALUES, back_up, catalog, minutes, stocked_database

from setec_core import CorruptStoreError, NotFound, StorageError
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.backup.loop import (
    FUTURE_SLACK,
    BackupCatalog,
    BackupLoop,
    backup_name,
    check_backup_name,
    is_backup_name,
    list_backups,
    read_head,
    take_backup,
)
from setec_core.backup.snapshot import BackupKeys, open_backup
from setec_core.database import Database
from setec_core.maintenance import rotate_dek
from setec_core.testing import SUPERUSER, MemoryBackupSink, new_database


@pytest.fixture
def db() -> Iterator[Database]:
    with stocked_database() as db:
        yield db


# --- names -----------------------------------------------------------------------------


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


def test_take_backup_stores_under_its_name(db: Database) -> None:
    """take_backup puts the sealed snapshot under the name of its own time."""
    sink = MemoryBackupSink()
    when = dt.datetime(2026, 11, 23, 10, 0, 0, tzinfo=dt.UTC)
    result = take_backup(db, sink, now=lambda: when)
    assert result.name == backup_name(when)
    assert list_backups(sink) == [result.name]
    head = db.check_backup_head(read_head(sink, result.name))
    assert (head.created, head.revision) == (when, result.revision)
    check_backup_name(result.name, head)


def test_a_misnamed_backup_is_refused_naming_both_times(db: Database) -> None:
    """check_backup_name refuses a backup under another time's name (or no time's) in
    one line naming the time in its name, the time it was taken, and its own name."""
    sink = MemoryBackupSink()
    (name,) = back_up(db, sink, dt.timedelta(minutes=5))
    head = db.check_backup_head(read_head(sink, name))
    other = backup_name(NOW)
    with pytest.raises(CorruptStoreError) as info:
        check_backup_name(other, head)
    message = str(info.value)
    assert "\n" not in message
    for part in (other, name, f"named for {NOW:%Y-%m-%dT%H:%M:%S}", f"{head.created:%H:%M:%S}"):
        assert part in message
    with pytest.raises(CorruptStoreError, match="not named for any time"):
        check_backup_name("keep/pre-migration.json", head)


# --- retention -------------------------------------------------------------------------


def test_prune_keeps_the_newest_genuine_and_ignores_other_files(db: Database) -> None:
    """Retention deletes the oldest genuine backups only, never other objects."""
    sink = MemoryBackupSink()
    names = back_up(db, sink, *minutes(50, 40, 30, 20, 10))
    sink.put("README.txt", b"not a backup")
    assert catalog(db, sink).prune(2) == names[:3]
    assert sink.list() == sorted([*names[3:], "README.txt"])
    with pytest.raises(ValueError, match="at least 1"):
        catalog(db, sink).prune(0)


def test_files_planted_within_the_hour_push_nothing_out(db: Database) -> None:
    """Files planted with names dated up to an hour ahead (junk, a forged header, an
    old genuine backup copied under a newer name) are neither counted nor deleted: the
    newest genuine backups stay, and each planted file is reported once."""
    sink = MemoryBackupSink()
    genuine = back_up(db, sink, *minutes(3, 2, 1))
    old = sink.get(genuine[0])
    planted = {
        backup_name(NOW + dt.timedelta(minutes=10)): b"junk",
        backup_name(NOW + dt.timedelta(minutes=20)): old.replace(
            f"{NOW - dt.timedelta(minutes=3):%H:%M}".encode(),
            f"{NOW + dt.timedelta(minutes=20):%H:%M}".encode(),
        ),
        backup_name(NOW + dt.timedelta(minutes=30)): old,
        backup_name(NOW - dt.timedelta(seconds=30)): old,
    }
    for name, data in planted.items():
        sink.put(name, data)
    said: list[str] = []
    deleted = catalog(db, sink, said).prune(2, newest=genuine[-1], now=NOW)
    assert deleted == genuine[:1]
    assert sorted(sink.list()) == sorted([*genuine[1:], *planted])
    assert len(said) == len(planted)
    assert all(any(name in line for line in said) for name in planted)


def test_prune_never_deletes_the_backup_just_taken(db: Database) -> None:
    """The backup just taken survives retention even when a genuine backup is dated
    after it (a clock that went back), and the oddity is reported."""
    sink = MemoryBackupSink()
    newest, later = back_up(db, sink, *minutes(10, 0))
    said: list[str] = []
    assert catalog(db, sink, said).prune(1, newest=newest) == []
    assert sink.list() == [newest, later]
    assert any("did the clock go back" in line for line in said)


def test_genuine_backups_dated_ahead_neither_count_nor_go(db: Database) -> None:
    """A genuine backup dated more than FUTURE_SLACK ahead means a clock moved: it is
    neither counted nor deleted by retention, latest skips it, and strict latest
    (restore) refuses."""
    sink = MemoryBackupSink()
    real = back_up(db, sink, *minutes(3, 2, 1))
    (ahead,) = back_up(db, sink, -(FUTURE_SLACK + dt.timedelta(hours=1)))
    said: list[str] = []
    found = catalog(db, sink, said)
    assert found.prune(2, newest=real[-1], now=NOW) == real[:1]
    assert ahead in sink.list()
    assert found.latest(now=NOW) == real[-1]
    with pytest.raises(StorageError, match="after this machine's clock") as info:
        found.latest(strict=True, now=NOW)
    assert ahead in str(info.value)


def test_a_junk_file_dated_far_ahead_does_not_block_restore_latest(db: Database) -> None:
    """A file planted with a name dated far in the future (not genuine) does not make
    strict latest refuse: latest is the newest genuine backup."""
    sink = MemoryBackupSink()
    (real,) = back_up(db, sink, dt.timedelta(minutes=1))
    sink.put(backup_name(dt.datetime(2099, 1, 1, tzinfo=dt.UTC)), b"junk")
    assert catalog(db, sink).latest(strict=True, now=NOW) == real


def test_latest_skips_an_old_backup_copied_under_a_newer_name(db: Database) -> None:
    """An old genuine backup copied under a name newer than the newest genuine backup
    is not latest, even dated within the hour ahead."""
    sink = MemoryBackupSink()
    old, new = back_up(db, sink, *minutes(5, 1))
    for delta in (dt.timedelta(0), dt.timedelta(minutes=30)):
        sink.put(backup_name(NOW + delta), sink.get(old))
    assert catalog(db, sink).latest(strict=True, now=NOW) == new


def test_latest_when_nothing_is_genuine_says_why() -> None:
    """latest with no backups is NotFound naming the sink; with only files that do not
    authenticate, NotFound says the commonest reason."""
    sink = MemoryBackupSink()
    with new_database() as db:
        with pytest.raises(NotFound, match="no backups in memory-backup://"):
            catalog(db, sink).latest()
        with new_database(key="dev://another") as other:
            back_up(other, sink, *minutes(3, 2))
        sink.put(backup_name(NOW), b"junk")
        why = r"3 file\(s\) skipped, 2 of them because .*another data key"
        with pytest.raises(NotFound, match=why):
            catalog(db, sink).latest(now=NOW)


def test_another_stores_backups_are_left_alone(db: Database) -> None:
    """Genuine backups of another store (another data key), correctly named, are not
    this server's to count or delete."""
    sink = MemoryBackupSink()
    with new_database() as other:
        foreign = back_up(other, sink, *minutes(30, 20, 10))
    own = back_up(db, sink, *minutes(3, 2, 1))
    assert catalog(db, sink).prune(1, newest=own[-1], now=NOW) == own[:2]
    assert sink.list() == sorted([*foreign, own[-1]])


def test_after_rotate_dek_the_server_leaves_older_backups_alone(db: Database) -> None:
    """Backups sealed before a rotate-dek cannot be told from forgeries with the new
    data key: the server's retention neither counts nor deletes them. With the key
    that wraps the data keys (backup now --backup-keep), they authenticate and go."""
    sink = MemoryBackupSink()
    before = back_up(db, sink, *minutes(30, 20))
    rotate_dek(db.storage, key=db.key)
    rotated = Database(db.storage, db.key, AuditLog(MemoryAuditSink()))
    after = back_up(rotated, sink, *minutes(3, 2, 1))
    said: list[str] = []
    assert catalog(rotated, sink, said).prune(1, newest=after[-1], now=NOW) == after[:2]
    assert sink.list() == [*before, after[-1]]
    assert len(said) == len(before)
    offline = BackupCatalog(sink, BackupKeys(db.key).check_head, report=said.append)
    assert offline.prune(1, newest=after[-1], now=NOW) == before


def test_backups_dated_ahead_are_not_read_by_retention(db: Database) -> None:
    """Retention does not even read files whose names are dated beyond FUTURE_SLACK:
    whatever they hold, they would be left alone."""
    sink = CountingSink()
    (real,) = back_up(db, sink, dt.timedelta(minutes=1))
    for year in range(2090, 2099):
        sink.put(backup_name(dt.datetime(year, 1, 1, tzinfo=dt.UTC)), b"junk")
    catalog(db, sink).prune(1, newest=real, now=NOW)
    assert sink.heads == [real]


class CountingSink(MemoryBackupSink):
    """An in-memory sink recording which heads are read."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[str] = []

    def get_head(self, name: str, size: int) -> bytes:
        self.heads.append(name)
        return super().get_head(name, size)


# --- the loop ---------------------------------------------------------------------------


def test_loop_backs_up_at_start_then_only_on_change(db: Database) -> None:
    """A backup at once, none while nothing changes, a new one after a write."""
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


def test_loop_retention_reports_each_planted_file_once(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The loop's retention logs a file it cannot authenticate once, not every round,
    and never deletes it."""
    sink = MemoryBackupSink()
    planted = backup_name(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10))
    sink.put(planted, b"junk")
    loop = BackupLoop(db, sink, interval=60, keep=1)
    for i in range(3):
        db.put(SUPERUSER, f"app/loop-{i}", b"backup-value-loop")
        assert loop.run_once() is not None
        time.sleep(0.002)
    assert caplog.text.count(f"leaving {planted}") == 1
    assert planted in sink.list()
    assert len(list_backups(sink)) == 2


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


def test_restored_backup_is_the_genuine_one(db: Database) -> None:
    """What latest names opens whole, and its name is its own."""
    sink = MemoryBackupSink()
    back_up(db, sink, *minutes(2, 1))
    name = catalog(db, sink).latest(now=NOW)
    opened = open_backup(sink.get(name), db.key)
    check_backup_name(name, opened.head)
