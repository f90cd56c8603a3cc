"""Restore and key rotation in the library: every secret and version
survives, the right keys open the result, and a failed step changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from setec_core import KeyMismatchError, StorageError
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.backup.snapshot import open_backup, seal_snapshot
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.data_key import unwrap_data_key
from setec_core.database import Database
from setec_core.errors import IntegrityCheckError
from setec_core.maintenance import (
    AdminAudit,
    OfflineStore,
    restore_backup,
    rotate_dek,
    rotate_kek,
)
from setec_core.storage import Snapshot, StorageBackend
from setec_core.store_check import check_store
from setec_core.testing import SUPERUSER, FaultyStorage, new_database

KEY = DevKeyProvider("maintenance")


def fill(db: Database) -> None:
    for i in range(30):
        db.put(SUPERUSER, f"svc/key-{i}", f"maintenance-value-{i}".encode())
    db.put(SUPERUSER, "svc/key-1", b"maintenance-value-1-v2")
    db.put(SUPERUSER, "svc/key-2", b"maintenance-value-2-v2")
    db.activate(SUPERUSER, "svc/key-2", 2)
    db.activate(SUPERUSER, "svc/key-1", 2)
    db.delete_version(SUPERUSER, "svc/key-1", 1)
    db.delete(SUPERUSER, "svc/key-29")


def contents(db: Database) -> dict[str, tuple[tuple[int, ...], int, dict[int, bytes]]]:
    """Every secret's versions, active version and values."""
    out = {}
    for info in db.list(SUPERUSER):
        values = {v: db.get(SUPERUSER, info.name, v).value for v in info.versions}
        out[info.name] = (info.versions, info.active_version, values)
    return out


def open_db(storage: StorageBackend, key: DevKeyProvider = KEY) -> Database:
    return Database(storage, key, AuditLog(MemoryAuditSink()))


@pytest.fixture
def source() -> Iterator[Database]:
    with new_database(key="dev://maintenance") as db:
        fill(db)
        yield db


def test_restore_round_trip(source: Database) -> None:
    """backup, restore into a new store: every secret, version and active pointer is
    identical, and the restored store takes writes."""
    data, _ = source.backup()
    target = MemoryStorage()
    info = restore_backup(data, target, key=KEY)
    assert info.secrets == 29
    restored = open_db(target)
    assert contents(restored) == contents(source)
    restored.put(SUPERUSER, "svc/after", b"maintenance-after")
    assert restored.get(SUPERUSER, "svc/after").value == b"maintenance-after"


def test_restore_refuses_a_non_empty_store(source: Database) -> None:
    """Restoring over a store that holds anything is refused; it is left as it was."""
    data, _ = source.backup()
    with new_database(key="dev://maintenance") as other:
        other.put(SUPERUSER, "keep/me", b"maintenance-keep")
        before = other.storage.export()
        with pytest.raises(StorageError, match="not empty"):
            restore_backup(data, other.storage, key=KEY)
        after = other.storage.export()
        assert after.revision == before.revision
        assert after.meta == before.meta


def test_restore_of_a_damaged_backup_writes_nothing(source: Database) -> None:
    """A backup that fails its checks leaves the target store empty."""
    data = bytearray(source.backup()[0])
    data[-1] ^= 1
    target = MemoryStorage()
    with pytest.raises(StorageError):
        restore_backup(bytes(data), target, key=KEY)
    assert target.revision() == 0
    assert target.get_meta("dek") is None


def test_restore_under_a_new_key(source: Database) -> None:
    """A backup from before rotate-kek restores with backup_key=old, and the restored
    store opens with the new key only."""
    data, _ = source.backup()
    new = DevKeyProvider("maintenance-new")
    target = MemoryStorage()
    restore_backup(data, target, key=new, backup_key=KEY)
    assert contents(open_db(target, new)) == contents(source)
    with pytest.raises(KeyMismatchError):
        open_db(target, KEY)
    assert target.get_meta("kek") == new.uri.encode()


def test_rotate_kek(source: Database) -> None:
    """rotate-kek rewraps the data key: the new key opens the store, the old one no
    longer does, and no record was rewritten."""
    storage = source.storage
    before = {r.key: r.data for r in storage.read_all()}
    new = DevKeyProvider("maintenance-new")
    rotate_kek(storage, old=KEY, new=new)
    assert {r.key: r.data for r in storage.read_all()} == before
    assert storage.get_meta("kek") == new.uri.encode()
    assert contents(open_db(storage, new)) == contents(source)
    with pytest.raises(KeyMismatchError):
        open_db(storage, KEY)


def test_rotate_kek_with_the_wrong_old_key_changes_nothing(source: Database) -> None:
    """Naming the wrong current key fails before anything is written."""
    storage = source.storage
    revision, wrapped = storage.revision(), storage.get_meta("dek")
    with pytest.raises(KeyMismatchError, match="cannot unlock"):
        rotate_kek(storage, old=DevKeyProvider("wrong"), new=DevKeyProvider("x"))
    assert storage.revision() == revision
    assert storage.get_meta("dek") == wrapped


def test_rotate_dek(source: Database) -> None:
    """rotate-dek re-encrypts every record under a new data key: every record moves,
    all data survives, and old backups still restore (they carry their own key)."""
    old_backup, _ = source.backup()
    storage = source.storage
    before = {r.key: r.data for r in storage.read_all()}
    wrapped = storage.get_meta("dek")
    result = rotate_dek(storage, key=KEY)
    assert result.secrets == 29
    after = {r.key: r.data for r in storage.read_all()}
    assert len(after) == 29
    assert not set(after) & set(before)
    assert storage.get_meta("dek") != wrapped
    assert contents(open_db(storage)) == contents(source)
    target = MemoryStorage()
    restore_backup(old_backup, target, key=KEY)
    assert contents(open_db(target)) == contents(source)


def test_rotate_dek_failure_changes_nothing(source: Database) -> None:
    """If the one commit of rotate-dek fails, the store is exactly as before."""
    faulty = FaultyStorage(source.storage, fail_commits=1)
    before = source.storage.export()
    with pytest.raises(StorageError, match="injected"):
        rotate_dek(faulty, key=KEY)
    after = source.storage.export()
    assert after.revision == before.revision
    assert after.meta == before.meta
    assert {r.key: r.data for r in after.records} == {r.key: r.data for r in before.records}


def test_offline_store_backs_up_without_a_database(source: Database) -> None:
    """The admin path (no index, no audit log) seals a backup that opens like the
    server's."""
    store = OfflineStore(source.storage, KEY)
    data, revision = store.backup()
    assert revision == store.revision
    assert open_backup(data, KEY).info.secrets == 29


def test_rotate_dek_leaves_no_old_ciphertext_in_the_sqlite_file(tmp_path: Path) -> None:
    """After rotate-dek, the SQLite file holds none of the old records' ciphertext (the
    backend zeroes freed space), so a leaked old data key reads nothing from it."""
    with Database.open(tmp_path, key="dev://maintenance") as db:
        db.put_many(
            SUPERUSER, {f"svc/residue-{i}": b"maintenance-residue" * 10 for i in range(3000)}
        )
    uri = f"sqlite://{tmp_path / 'secrets.db'}"
    storage = SqliteStorage.from_uri(uri)
    old = [r.data for r in storage.read_all()]
    rotate_dek(storage, key=KEY)
    storage.close()
    files = b"".join(p.read_bytes() for p in tmp_path.glob("secrets.db*"))
    assert not [data for data in old if data is not None and data[:24] in files]
    with Database.open(tmp_path, key="dev://maintenance") as db:
        assert len(db) == 3000


def test_rotate_kek_on_an_empty_running_database_still_backs_up() -> None:
    """The data-key check value tells a running database that rotate-kek kept its data
    key, even with no record to try it on."""
    with new_database(key="dev://maintenance") as db:
        new = DevKeyProvider("maintenance-new")
        rotate_kek(db.storage, old=KEY, new=new)
        data, _ = db.backup()
        assert open_backup(data, new).info.secrets == 0


def test_a_store_without_dek_check_gets_one(tmp_path: Path) -> None:
    """A store made before the dek-check entry existed gains it when opened, so that a
    later rotate-kek on an empty running server does not stop its backups."""
    storage = SqliteStorage.from_uri(f"sqlite://{tmp_path / 'legacy.db'}")
    with Database(storage, KEY, AuditLog(MemoryAuditSink())):
        pass
    conn = sqlite3.connect(tmp_path / "legacy.db")
    with conn:
        conn.execute("DELETE FROM meta WHERE name = 'dek-check'")
    conn.close()
    storage = SqliteStorage.from_uri(f"sqlite://{tmp_path / 'legacy.db'}")
    with Database(storage, KEY, AuditLog(MemoryAuditSink())) as db:
        assert storage.get_meta("dek-check") is not None
        new = DevKeyProvider("maintenance-new")
        rotate_kek(storage, old=KEY, new=new)
        assert open_backup(db.backup()[0], new).info.secrets == 0


# --- integrity and the audit log across maintenance --------------------------------------


def state_with_store(tmp_path: Path) -> Path:
    """A state directory whose store holds fill()'s secrets, closed."""
    state = tmp_path / "state"
    with Database.open(state, key=KEY) as db:
        fill(db)
    return state


def sqlite_of(state: Path) -> SqliteStorage:
    return SqliteStorage.from_uri(f"sqlite://{state / 'secrets.db'}")


def test_rotate_dek_keeps_the_audit_key(tmp_path: Path) -> None:
    """Lines written before rotate-dek still verify after it: the audit key is the same,
    re-sealed under the new data key; the admin entry is keyed and its head recorded."""
    state = state_with_store(tmp_path)
    storage = sqlite_of(state)
    audit = AdminAudit(state / "audit.log")
    audit.check(storage, KEY)
    rotate_dek(storage, key=KEY)
    audit.record(storage, KEY, "rotate-dek")
    audit.close()
    report = check_store(storage, KEY, audit_path=state / "audit.log")
    storage.close()
    assert report.ok, report.problems
    assert report.audit is not None
    assert report.audit.checked
    assert report.audit.recorded_line == report.audit.entries
    last = json.loads((state / "audit.log").read_bytes().splitlines()[-1])
    assert (last["action"], last["outcome"], last["prev"][:12]) == (
        "rotate-dek",
        "ok",
        "hmac-sha256:",
    )
    with Database.open(state, key=KEY) as db:
        assert len(db) == 29


def test_admin_commands_refuse_a_cut_log(tmp_path: Path) -> None:
    """An admin command checks the log against the store before changing anything, so
    it never records a new head over lines that were cut."""
    state = state_with_store(tmp_path)
    lines = (state / "audit.log").read_bytes().splitlines(keepends=True)
    (state / "audit.log").write_bytes(b"".join(lines[:-3]))
    storage = sqlite_of(state)
    audit = AdminAudit(state / "audit.log")
    with pytest.raises(IntegrityCheckError, match="ends before the entry the store recorded"):
        audit.check(storage, KEY)
    audit.close()
    storage.close()


def test_restore_of_a_backup_from_before_integrity(source: Database) -> None:
    """A backup from an earlier version (no integrity entry, no audit key) restores into
    a store that has both, right."""
    snapshot = source.storage.export()
    meta = {k: v for k, v in snapshot.meta.items() if k not in ("integrity", "audit-key")}
    wrapped = meta["dek"]
    dek = unwrap_data_key(source.storage, KEY, wrapped)
    data = seal_snapshot(
        Snapshot(snapshot.revision, meta, snapshot.records), dek, created=dt.datetime.now(dt.UTC)
    )
    target = MemoryStorage()
    restore_backup(data, target, key=KEY)
    assert target.get_meta("integrity") is not None
    assert target.get_meta("audit-key") is not None
    assert check_store(target, KEY).ok
    assert contents(open_db(target)) == contents(source)


def test_restore_sets_aside_a_log_of_another_store(tmp_path: Path) -> None:
    """Restoring another store's backup into a state directory: the old log, keyed
    under another audit key, is kept aside and a new one is started."""
    state = state_with_store(tmp_path)
    with Database.open(tmp_path / "other", key=KEY) as other:
        other.put(SUPERUSER, "other/x", b"maintenance-other")
        data, _ = other.backup()
    target = tmp_path / "restored.db"
    storage = SqliteStorage.from_uri(f"sqlite://{target}")
    restore_backup(data, storage, key=KEY)
    audit = AdminAudit(state / "audit.log")
    audit.record(storage, KEY, "restore")
    audit.close()
    storage.close()
    assert any("kept as" in note for note in audit.notes)
    assert len(list(state.glob("audit.log.replaced-*"))) == 1
    assert [json.loads(x)["action"] for x in (state / "audit.log").read_bytes().splitlines()] == [
        "restore"
    ]
    (state / "secrets.db").unlink()
    target.rename(state / "secrets.db")
    with Database.open(state, key=KEY) as db:
        assert db.get(SUPERUSER, "other/x").value == b"maintenance-other"
