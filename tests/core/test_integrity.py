"""Store integrity: a keyed digest of the live records, kept in the store's metadata and
checked at open, so that a record rolled back, put back or removed behind setec's back
is refused instead of served."""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from refusals import refused_to_open
from store_tampering import key_of, tamper

from setec_core import Database, SecretValue
from setec_core.audit import AuditEntry, AuditLog, MemoryAuditSink
from setec_core.authz import Principal
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.data_key import unwrap_data_key
from setec_core.errors import IntegrityCheckError
from setec_core.maintenance import restore_backup, rotate_dek
from setec_core.storage import RecordWrite
from setec_core.store_check import check_store
from setec_core.testing import SUPERUSER

SU = SUPERUSER
KEY = "dev://"
OLD = b"integrity-old-password"
NEW = b"integrity-new-password"


def records(state: Path) -> dict[bytes, bytes | None]:
    """Every row of the store's records table (tombstones included): key -> data."""
    with sqlite3.connect(state / "secrets.db") as conn:
        rows = conn.execute("SELECT key, data FROM records").fetchall()
    conn.close()
    return {bytes(k): None if d is None else bytes(d) for k, d in rows}


def meta(state: Path, name: str) -> bytes | None:
    with sqlite3.connect(state / "secrets.db") as conn:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
    conn.close()
    return None if row is None else bytes(row[0])


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


def refused(state: Path, *needles: str) -> str:
    """Open ``state`` and expect a one-line refusal holding every needle."""
    return refused_to_open(state, KEY, *needles)


# --- records rolled back, put back or removed behind setec's back ---------------------


def test_an_older_ciphertext_copied_back_is_refused(state: Path) -> None:
    """An old password's record, copied back over the current one, fails the open
    (each record alone still authenticates: only the store-wide digest catches it)."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "prod/db", OLD)
    old_rows = records(state)
    with Database.open(state, key=KEY) as db:
        db.put(SU, "prod/db", NEW)
        db.activate(SU, "prod/db", 2)
        db.delete_version(SU, "prod/db", 1)
    ((key, data),) = old_rows.items()
    tamper(state, ("UPDATE records SET data = ? WHERE key = ?", (data, key)))
    message = refused(state, "integrity", "setec-serve check", "backup")
    assert OLD.decode() not in message
    assert NEW.decode() not in message


def test_a_deleted_version_put_back_is_refused(state: Path) -> None:
    """The record from before a delete-version, copied back, would resurrect the
    deleted value: refused."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "prod/db", OLD)
        db.put(SU, "prod/db", NEW)
        db.activate(SU, "prod/db", 2)
    before = records(state)
    with Database.open(state, key=KEY) as db:
        db.delete_version(SU, "prod/db", 1)
    ((key, data),) = before.items()
    tamper(state, ("UPDATE records SET data = ? WHERE key = ?", (data, key)))
    refused(state, "integrity")


def test_a_deleted_secrets_row_put_back_is_refused(state: Path) -> None:
    """A deleted secret's record, put back over its tombstone, is refused."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "keep", b"integrity-keep")
        db.put(SU, "gone", OLD)
    key = key_of(state, "gone")
    data = records(state)[key]
    with Database.open(state, key=KEY) as db:
        db.delete(SU, "gone")
    assert records(state)[key] is None
    tamper(state, ("UPDATE records SET data = ? WHERE key = ?", (data, key)))
    refused(state, "integrity")


def test_a_deleted_row_is_refused(state: Path) -> None:
    """A record removed from the table (row deleted, or turned into a tombstone) is
    refused, not served as a missing secret."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "keep", b"integrity-keep")
        db.put(SU, "victim", OLD)
    key = key_of(state, "victim")
    tamper(state, ("DELETE FROM records WHERE key = ?", (key,)))
    refused(state, "integrity", "1 record", "setec-serve check")


def test_a_tombstoned_row_is_refused(state: Path) -> None:
    """Setting a live record's data to NULL (a forged deletion) is refused."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "victim", OLD)
    key = key_of(state, "victim")
    tamper(state, ("UPDATE records SET data = NULL WHERE key = ?", (key,)))
    refused(state, "integrity")


def test_an_altered_integrity_entry_is_refused(state: Path) -> None:
    """The integrity entry is authenticated under the data key: a flipped bit fails."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "s", OLD)
    entry = bytearray(meta(state, "integrity") or b"")
    assert entry
    entry[5] ^= 1
    tamper(state, ("UPDATE meta SET value = ? WHERE name = 'integrity'", (bytes(entry),)))
    refused(state, "integrity entry", "authentic")


# --- the attacker's next step: replaying the integrity entry too -----------------------


def snapshot_store(state: Path) -> tuple[dict[bytes, bytes | None], bytes | None]:
    return records(state), meta(state, "integrity")


def roll_back(state: Path, saved: tuple[dict[bytes, bytes | None], bytes | None]) -> None:
    """Put back every record and the integrity entry as they were when ``saved``."""
    rows, entry = saved
    statements: list[tuple[str, tuple[object, ...]]] = [("DELETE FROM records", ())]
    statements += [
        ("INSERT INTO records (key, data, revision) VALUES (?, ?, 1)", (k, d))
        for k, d in rows.items()
    ]
    statements.append(("UPDATE meta SET value = ? WHERE name = 'integrity'", (entry,)))
    tamper(state, *statements)


def test_replayed_integrity_entry_after_several_writes_is_refused(state: Path) -> None:
    """Rolling records *and* the integrity entry back together is caught by the audit
    log: its lines say the store had made more commits than the replayed entry."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "prod/db", OLD)
    saved = snapshot_store(state)
    with Database.open(state, key=KEY) as db:
        db.put(SU, "prod/db", NEW)
        db.activate(SU, "prod/db", 2)
        db.get(SU, "prod/db")
    roll_back(state, saved)
    refused(state, "rolled back", "audit.log")


def test_replayed_integrity_entry_of_the_last_write_is_refused(state: Path) -> None:
    """Even the last write before a clean stop, with nothing logged after it, cannot be
    rolled back: the close leaves a line witnessing the store's last commit."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "prod/db", OLD)
    saved = snapshot_store(state)
    with Database.open(state, key=KEY) as db:
        db.put(SU, "prod/db", NEW)
    roll_back(state, saved)
    refused(state, "rolled back")


def test_removed_integrity_entry_is_refused_when_the_log_is_keyed(state: Path) -> None:
    """Deleting the integrity entry (to pass for a store of an earlier version) is
    refused: the store still has its audit key, and the log is keyed."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "s", OLD)
    tamper(state, ("DELETE FROM meta WHERE name = 'integrity'", ()))
    refused(state, "integrity entry")
    tamper(state, ("DELETE FROM meta WHERE name = 'audit-key'", ()))
    refused(state, "audit")


# --- stores of earlier versions, other writers, maintenance ---------------------------


def test_a_store_of_an_earlier_version_gets_an_entry_at_open(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store made before the integrity entry existed (and its unkeyed audit log)
    opens, gains the entry and an audit key, and is protected from then on."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "s", OLD)
    tamper(
        state,
        ("DELETE FROM meta WHERE name IN ('integrity', 'audit-key')", ()),
    )
    (state / "audit.log").unlink()
    legacy = AuditLog.open(state / "audit.log")  # an earlier version's log: unkeyed
    legacy.write(*[_legacy_entry() for _ in range(3)])
    legacy.close()
    with (
        caplog.at_level(logging.WARNING, logger="setec.database"),
        Database.open(state, key=KEY) as db,
    ):
        assert db.get(SU, "s") == SecretValue(OLD, 1)
    assert any("no integrity entry" in r.getMessage() for r in caplog.records)
    assert meta(state, "integrity") is not None
    assert meta(state, "audit-key") is not None
    key = key_of(state, "s")
    tamper(state, ("DELETE FROM records WHERE key = ?", (key,)))
    refused(state, "integrity")


def _legacy_entry() -> AuditEntry:
    return AuditEntry(Principal(hostname="old", ip="1.2.3.4", user="u"), "get", True, "s")


def test_a_second_writer_on_the_store_makes_us_catch_up(tmp_path: Path) -> None:
    """Two databases writing one store: each commit compare-and-swaps the integrity
    entry, so the other's next commit conflicts, catches up and goes through (a write
    of a secret the other changed is tried again on its new state), and the store still
    opens whole."""
    state = tmp_path / "state"
    with Database.open(state, key=KEY) as first:
        first.put(SU, "a", b"integrity-a")
        second = Database(
            SqliteStorage(state / "secrets.db"), DevKeyProvider(""), AuditLog(MemoryAuditSink())
        )
        with second:
            second.put(SU, "b", b"integrity-b")
            first.put(SU, "c", b"integrity-c")  # conflicts on the entry, catches up
            assert first.get(SU, "b") == SecretValue(b"integrity-b", 1)
            second.delete(SU, "a")
            first.put(SU, "d", b"integrity-d")  # catches up on the deletion too
            assert first.put(SU, "a", b"integrity-a2") == 1  # so "a" starts over
            second.put(SU, "b", b"integrity-b2")
            # A record conflict: the write is worked out again on the state the other
            # writer left, so it becomes version 3 instead of failing.
            assert first.put(SU, "b", b"integrity-b3") == 3
    with Database.open(state, key=KEY) as db:
        assert sorted(i.name for i in db.list(SU)) == ["a", "b", "c", "d"]
        assert db.get(SU, "b", 3).value == b"integrity-b3"


def test_concurrent_writers_in_two_databases_keep_the_store_whole(tmp_path: Path) -> None:
    """Many threads in two databases on one store, all writing: every write lands once,
    none is lost, and the store opens with its integrity entry right."""
    state = tmp_path / "state"
    first = Database.open(state, key=KEY)
    second = Database(
        SqliteStorage(state / "secrets.db"), DevKeyProvider(""), AuditLog(MemoryAuditSink())
    )
    failures: list[BaseException] = []

    def worker(db: Database, n: int) -> None:
        try:
            for i in range(15):
                db.put(SU, f"w{n}/{i}", f"integrity-{n}-{i}".encode())
        except BaseException as e:  # collected and asserted below
            failures.append(e)

    threads = [
        threading.Thread(target=worker, args=(db, n))
        for n, db in enumerate([first, second, first, second])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    second.close()
    first.close()
    assert failures == []
    with Database.open(state, key=KEY) as db:
        assert len(db) == 60


@pytest.fixture
def memory_db() -> Iterator[Database]:
    storage = MemoryStorage()
    with Database(storage, DevKeyProvider("i"), AuditLog(MemoryAuditSink())) as db:
        for i in range(5):
            db.put(SU, f"svc/{i}", f"integrity-value-{i}".encode())
        db.delete(SU, "svc/4")
        yield db


def test_rotate_dek_leaves_a_right_entry(memory_db: Database) -> None:
    """After rotate-dek every record moved, and the new entry vouches for them."""
    storage = memory_db.storage
    rotate_dek(storage, key=DevKeyProvider("i"))
    report = check_store(storage, DevKeyProvider("i"))
    assert report.ok, report.problems
    with Database(storage, DevKeyProvider("i"), AuditLog(MemoryAuditSink())) as db:
        assert len(db) == 4


def test_rotate_dek_refuses_a_tampered_store(memory_db: Database) -> None:
    """rotate-dek checks the entry before re-encrypting, so it never launders a
    tampered store into a fresh, valid one."""
    storage = memory_db.storage
    assert isinstance(storage, MemoryStorage)
    wrapped = storage.get_meta("dek")
    assert wrapped is not None
    victim = unwrap_data_key(storage, DevKeyProvider("i"), wrapped).storage_key("svc/0")
    storage.commit([_delete(storage, victim)])
    with pytest.raises(IntegrityCheckError, match="integrity"):
        rotate_dek(storage, key=DevKeyProvider("i"))


def _delete(storage: MemoryStorage, key: bytes) -> RecordWrite:
    record = storage.read(key)
    assert record is not None
    return RecordWrite(key, None, record.revision)


def test_backup_and_restore_carry_a_right_entry(memory_db: Database) -> None:
    """A backup holds the entry; a restore leaves a store whose entry is right."""
    data, _ = memory_db.backup()
    target = MemoryStorage()
    restore_backup(data, target, key=DevKeyProvider("i"))
    assert target.get_meta("integrity") is not None
    report = check_store(target, DevKeyProvider("i"))
    assert report.ok, report.problems
    with Database(target, DevKeyProvider("i"), AuditLog(MemoryAuditSink())) as db:
        assert db.get(SU, "svc/0").value == b"integrity-value-0"


# --- the checkpoint at close, and what never leaks --------------------------------------


def _last(state: Path) -> dict[str, object]:
    line = (state / "audit.log").read_bytes().splitlines()[-1]
    doc: dict[str, object] = json.loads(line)
    return doc


def test_a_checkpoint_witnesses_the_last_commit_only_when_needed(state: Path) -> None:
    """After a write, close leaves a checkpoint line claiming the store's commits; after
    a read (which already claims them) it adds nothing, and the store file is left
    alone."""
    with Database.open(state, key=KEY) as db:
        db.put(SU, "s", OLD)
    last = _last(state)
    assert (last["action"], last["commits"], last["principal"]["ip"]) == (  # type: ignore[index]
        "checkpoint",
        1,
        "local",
    )
    with Database.open(state, key=KEY) as db:
        db.get(SU, "s")
    assert _last(state)["action"] == "get"
    before = (state / "secrets.db").read_bytes()
    lines = len((state / "audit.log").read_bytes().splitlines())
    with Database.open(state, key=KEY):
        pass
    assert (state / "secrets.db").read_bytes() == before
    assert len((state / "audit.log").read_bytes().splitlines()) == lines


def test_no_value_reaches_a_message_a_log_or_a_repr(
    state: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Refusals, the check report and its repr, and the logs name secrets at most,
    never values."""
    with caplog.at_level(logging.DEBUG):
        with Database.open(state, key=KEY) as db:
            db.put(SU, "prod/db", OLD)
        saved = snapshot_store(state)
        with Database.open(state, key=KEY) as db:
            db.put(SU, "prod/db", NEW)
        roll_back(state, saved)
        message = refused(state)
        storage = SqliteStorage(state / "secrets.db")
        report = check_store(storage, DevKeyProvider(""), audit_path=state / "audit.log")
        storage.close()
    assert not report.ok
    texts = [message, repr(report), *report.problems, *report.notes, caplog.text]
    texts += [repr(s) for s in report.secrets.values()]
    for text in texts:
        for value in (OLD, NEW):
            assert value.decode() not in text
            assert base64.b64encode(value).decode() not in text
