"""The sealed backup format: a v2 backup opens whole with its key, its head
authenticates on its own, any change is detected, and v1 backups still open."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import struct
from collections.abc import Iterator

import pytest

from setec_core import CorruptStoreError, KeyMismatchError, StorageError
from setec_core.backup.snapshot import (
    MAGIC,
    MAGIC_V1,
    MAX_HEAD_SIZE,
    TAG_SIZE,
    BackupKeys,
    check_head,
    head_needs_more,
    open_backup,
    secrets_of,
)
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.crypto import DataKey
from setec_core.database import Database
from setec_core.maintenance import rotate_dek, rotate_kek
from setec_core.storage import MetaWrite, Snapshot
from setec_core.testing import SUPERUSER, new_database

VALUES = {f"app/secret-{i}": f"backup-value-{i}-f00d".encode() for i in range(20)}
WHEN = dt.datetime(2026, 11, 23, 10, 54, 35, 123456, tzinfo=dt.UTC)


@pytest.fixture
def db() -> Iterator[Database]:
    with new_database() as db:
        for name, value in VALUES.items():
            db.put(SUPERUSER, name, value)
        db.put(SUPERUSER, "app/secret-3", b"backup-value-3-second")
        yield db


def head_end(data: bytes) -> int:
    """Where the records of a v2 backup start (after the head MAC line)."""
    return data.index(b"\n", data.index(b"\n", len(MAGIC)) + 1) + 1


def seal_v1(snapshot: Snapshot, dek: DataKey, created: str) -> bytes:
    """A backup in format v1, as setec wrote them before v2: no head MAC, the header
    authenticated only by the tag over the whole file."""
    header = {
        "format": "setec-backup",
        "version": 1,
        "created": created,
        "revision": snapshot.revision,
        "records": len(snapshot.records),
        "kek": snapshot.meta["kek"].decode(),
        "meta": {k: base64.b64encode(v).decode() for k, v in sorted(snapshot.meta.items())},
    }
    parts = [MAGIC_V1, json.dumps(header, separators=(",", ":")).encode(), b"\n"]
    for record in snapshot.records:
        assert record.data is not None
        parts += [struct.pack(">I", len(record.key)), record.key]
        parts += [struct.pack(">I", len(record.data)), record.data]
    body = b"".join(parts)
    return body + hmac.new(dek.derive(b"setec backup mac v1"), body, hashlib.sha256).digest()


def test_backup_round_trip(db: Database) -> None:
    """A backup opens with the store's key and holds every secret, version and value."""
    data, revision = db.backup()
    assert data.startswith(MAGIC)
    opened = open_backup(data, db.key)
    assert opened.info.secrets == len(VALUES)
    assert opened.info.versions == len(VALUES) + 1
    assert opened.info.revision == opened.head.revision == revision == db.revision
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


# --- the head ---------------------------------------------------------------------------


def test_the_head_authenticates_on_its_own(db: Database) -> None:
    """The first bytes of a backup, up to its head MAC, prove when it was taken (to the
    millisecond) and which revision it holds, with the data key alone or with the key
    that wraps it."""
    data, revision = db.backup(created=WHEN)
    head = data[: head_end(data)]
    dek = open_backup(data, db.key).dek
    for checked in (
        check_head(head, dek),
        db.check_backup_head(head),
        BackupKeys(db.key).check_head(head),
    ):
        assert checked.created == WHEN.replace(microsecond=123000)
        assert checked.revision == revision
        assert checked.records == len(VALUES)
        assert checked.kek == db.key.uri
    assert not head_needs_more(head)
    assert head_needs_more(head[:-1])
    assert not head_needs_more(b"not a backup")


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b'"created":"2026-11-23T10:54:35.123Z"', b'"created":"2026-11-23T11:54:35.123Z"'),
        (b'"revision":', b'"revision":1'),
        (b'"kek":"dev://setec-testing"', b'"kek":"dev://setec-testinG"'),
    ],
)
def test_an_edited_header_fails_the_head_check(db: Database, old: bytes, new: bytes) -> None:
    """Changing the time, the revision or anything else in the header makes the head
    fail to authenticate, whole or alone."""
    data = db.backup(created=WHEN)[0]
    assert old in data
    forged = data.replace(old, new, 1)
    with pytest.raises(CorruptStoreError, match="header fails authentication"):
        db.check_backup_head(forged)
    with pytest.raises(CorruptStoreError, match="header fails authentication"):
        open_backup(forged, db.key)


def test_another_data_key_does_not_authenticate_the_head(db: Database) -> None:
    """A head sealed under another data key (another store's, or this store's before
    a rotate-dek) does not authenticate under this one."""
    with new_database() as other:
        data = other.backup()[0]
    with pytest.raises(CorruptStoreError, match="another data key"):
        db.check_backup_head(data)


def test_bytes_after_the_head_do_not_matter_to_it(db: Database) -> None:
    """check_head reads only the head: what follows (records, tag) is for open_backup."""
    data = db.backup()[0]
    end = head_end(data)
    assert db.check_backup_head(data[:end] + b"garbage").revision == db.revision
    with pytest.raises(CorruptStoreError):
        open_backup(data[:end] + b"garbage", db.key)


def test_a_cut_head_is_refused(db: Database) -> None:
    """A head cut anywhere before its end fails to check."""
    data = db.backup()[0]
    for cut in (0, 10, len(MAGIC) + 5, head_end(data) - 30, head_end(data) - 1):
        with pytest.raises(CorruptStoreError):
            db.check_backup_head(data[:cut])


def test_a_long_header_is_read_past_the_first_kilobytes(db: Database) -> None:
    """A header longer than the first read (large metadata) still checks, within
    MAX_HEAD_SIZE."""
    db.storage.commit(meta=[MetaWrite("note", b"n" * 10_000, None)])
    data = db.backup()[0]
    assert head_end(data) > 10_000
    assert head_end(data) < MAX_HEAD_SIZE
    assert head_needs_more(data[:4096])
    assert db.check_backup_head(data[: head_end(data)]).revision == db.revision


class CountingKey(DevKeyProvider):
    """A dev key counting its unwraps (KMS calls, for a real key)."""

    def __init__(self, label: str = "setec-testing") -> None:
        super().__init__(label)
        self.unwraps = 0

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        self.unwraps += 1
        return super().unwrap(blob, context)


def test_backup_keys_unwrap_each_wrapped_key_once(db: Database) -> None:
    """BackupKeys unwraps a wrapped data key once, however many backups share it, and
    remembers a key it cannot unwrap too."""
    first, second = db.backup()[0], db.backup()[0]
    key = CountingKey()
    keys = BackupKeys(key)
    keys.check_head(first)
    keys.check_head(second)
    keys.open(second)
    assert key.unwraps == 1
    wrong = CountingKey("another")
    keys = BackupKeys(wrong)
    for _ in range(3):
        with pytest.raises(KeyMismatchError, match="dev://setec-testing"):
            keys.check_head(first)
    assert wrong.unwraps == 1


# --- the whole file --------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["magic", "header", "head-mac", "record", "tag", "last-record-byte"]
)
def test_any_altered_byte_is_detected(db: Database, where: str) -> None:
    """Flipping a byte anywhere in a backup makes it fail to open."""
    data = bytearray(db.backup()[0])
    end = head_end(bytes(data))
    index = {
        "magic": 2,
        "header": data.index(b"\n", len(MAGIC)) - 5,
        "head-mac": end - 10,
        "record": end + 40,
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
    """Dropping a whole record is caught: by the head MAC if the count is fixed, by
    the tag if it is not."""
    data = db.backup()[0]
    start = head_end(data)
    (klen,) = struct.unpack_from(">I", data, start)
    (dlen,) = struct.unpack_from(">I", data, start + 4 + klen)
    end = start + 8 + klen + dlen
    recounted = data[:start].replace(
        f'"records":{len(VALUES)}'.encode(), f'"records":{len(VALUES) - 1}'.encode()
    )
    with pytest.raises(CorruptStoreError, match="fails authentication"):
        open_backup(recounted + data[end:], db.key)
    with pytest.raises(CorruptStoreError):
        open_backup(data[:start] + data[end:], db.key)


def test_older_record_swapped_in_is_detected(db: Database) -> None:
    """A record replaced by its own older ciphertext (a rollback) is caught by the tag."""
    old = db.backup()[0]
    db.put(SUPERUSER, "app/secret-0", b"backup-value-0-newer")
    new = db.backup()[0]
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


@pytest.mark.parametrize("value", ["1e400", "Infinity", "-1", '"3"', "[" * 5000 + "]" * 5000])
def test_damaged_header_numbers_are_refused(db: Database, value: str) -> None:
    """A header whose record count is not a whole number is CorruptStoreError, not a
    crash."""
    data = db.backup()[0]
    forged = data.replace(f'"records":{len(VALUES)}'.encode(), f'"records":{value}'.encode())
    with pytest.raises(CorruptStoreError, match="header is damaged"):
        open_backup(forged, db.key)
    with pytest.raises(CorruptStoreError, match="header is damaged"):
        db.check_backup_head(forged)


def test_unverified_kek_is_quoted(db: Database) -> None:
    """With the wrong key, the header's claim about its key is shown quoted and marked
    unverified: a forged header cannot inject a line."""
    data = db.backup()[0]
    forged = data.replace(b'"kek":"dev://setec-testing"', b'"kek":"x\\nok: fake line"')
    with pytest.raises(KeyMismatchError) as info:
        open_backup(forged, DevKeyProvider("another"))
    assert "\n" not in str(info.value)
    assert "'x\\nok: fake line' (as the backup's unverified header says)" in str(info.value)


# --- format v1 -------------------------------------------------------------------------


def test_a_v1_backup_still_opens_but_its_head_alone_proves_nothing(db: Database) -> None:
    """A backup in format v1 opens whole (its tag authenticates its header); its head
    alone cannot be checked, so retention and latest leave it alone."""
    opened = open_backup(db.backup()[0], db.key)
    v1 = seal_v1(opened.snapshot, opened.dek, "2026-11-23T10:54:35.123Z")
    old = open_backup(v1, db.key)
    assert old.info.secrets == len(VALUES)
    assert old.head.created == dt.datetime(2026, 11, 23, 10, 54, 35, 123000, tzinfo=dt.UTC)
    with pytest.raises(CorruptStoreError, match="format v1"):
        db.check_backup_head(v1)
    edited = v1.replace(b"10:54:35.123Z", b"11:54:35.123Z")
    with pytest.raises(CorruptStoreError, match="fails authentication"):
        open_backup(edited, db.key)


# --- keys changed by another process ---------------------------------------------------


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
