"""The backup file format: a sealed, self-contained copy of a store.

A backup is the store's :class:`~setec_core.storage.Snapshot` (every live record and
every metadata entry, the wrapped data key included) written as::

    setec-backup v1\\n
    {header as one line of JSON}\\n
    record 1 ... record N          each: u32 key length, key, u32 data length, data
    tag                            32 bytes: HMAC-SHA256 of everything before it

The records are the store's own ciphertext, copied byte for byte: a backup is exactly
as encrypted as the store, and restoring it needs the key-encryption key that wraps its
data key. The tag is keyed with a key derived from the data key (HKDF, its own label),
so a backup with a record removed, added, swapped for an older one, or a header edited
fails :func:`open_backup` even though each record is individually authenticated.

The header holds no secret: the creation time, the store revision, the record count,
the URI of the key that wrapped the data key, and the metadata (base64).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from setec_core.crypto import DEK_CONTEXT, DataKey
from setec_core.errors import CorruptStoreError, KeyMismatchError
from setec_core.keys import KeyProvider
from setec_core.model import SecretState
from setec_core.storage import Record, Snapshot

MAGIC = b"setec-backup v1\n"
TAG_SIZE = 32
_LEN = struct.Struct(">I")
_MAC_INFO = b"setec backup mac v1"
_MAX_HEADER = 1 << 20


@dataclass(frozen=True)
class BackupInfo:
    """What a checked backup holds (no names, no values)."""

    created: str
    revision: int
    secrets: int
    versions: int
    size: int
    kek: str


@dataclass(frozen=True)
class OpenedBackup:
    """A backup whose tag and every record have been checked with its data key."""

    info: BackupInfo
    snapshot: Snapshot
    dek: DataKey


def _mac_key(dek: DataKey) -> bytes:
    return dek.derive(_MAC_INFO)


def _rfc3339(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seal_snapshot(snapshot: Snapshot, dek: DataKey, *, created: dt.datetime) -> bytes:
    """Serialise ``snapshot`` and append its tag under ``dek``.

    :param dek: the store's data key, the one ``snapshot.meta["dek"]`` wraps.
    :raises CorruptStoreError: if the snapshot has no wrapped data key.
    """
    if "dek" not in snapshot.meta:
        raise CorruptStoreError("the store has no data key yet: there is nothing to back up")
    header = {
        "format": "setec-backup",
        "version": 1,
        "created": _rfc3339(created),
        "revision": snapshot.revision,
        "records": len(snapshot.records),
        "kek": snapshot.meta.get("kek", b"").decode("utf-8", "replace"),
        "meta": {
            name: base64.b64encode(value).decode("ascii")
            for name, value in sorted(snapshot.meta.items())
        },
    }
    parts = [MAGIC, json.dumps(header, separators=(",", ":")).encode("ascii"), b"\n"]
    pack = _LEN.pack
    for record in snapshot.records:
        assert record.data is not None  # snapshots hold live records only
        parts += (pack(len(record.key)), record.key, pack(len(record.data)), record.data)
    body = b"".join(parts)
    return body + hmac.new(_mac_key(dek), body, hashlib.sha256).digest()


def _parse(data: bytes) -> tuple[dict[str, object], dict[str, bytes], list[Record], int]:
    if not data.startswith(MAGIC):
        raise CorruptStoreError("this is not a setec backup (it does not start 'setec-backup v1')")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CorruptStoreError("the backup's header is truncated")
    try:
        header = json.loads(data[len(MAGIC) : end])
        meta = {
            str(name): base64.b64decode(value, validate=True)
            for name, value in header["meta"].items()
        }
        count, revision = header["records"], header["revision"]
        if type(count) is not int or type(revision) is not int or count < 0:
            raise TypeError("records and revision must be whole numbers")
    except (
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        binascii.Error,
        RecursionError,
        OverflowError,
    ):
        raise CorruptStoreError("the backup's header is damaged") from None
    records = []
    offset, stop = end + 1, len(data) - TAG_SIZE
    try:
        for _ in range(count):
            (klen,) = _LEN.unpack_from(data, offset)
            key = data[offset + 4 : offset + 4 + klen]
            offset += 4 + klen
            (dlen,) = _LEN.unpack_from(data, offset)
            value = data[offset + 4 : offset + 4 + dlen]
            offset += 4 + dlen
            if offset > stop:
                raise struct.error("past the end")
            records.append(Record(key, value, 0))
    except struct.error:
        raise CorruptStoreError("the backup is truncated") from None
    if offset != stop:
        raise CorruptStoreError("the backup is truncated or has trailing bytes")
    return header, meta, records, revision


def open_backup(data: bytes, key: KeyProvider) -> OpenedBackup:
    """Check a backup made by :func:`seal_snapshot` and return what it holds.

    The data key is unwrapped with ``key``, the tag is checked, and every record is
    decrypted and parsed, so a backup that opens here restores completely.

    :raises CorruptStoreError: if the backup is truncated, altered or not a backup.
    :raises KeyMismatchError: if ``key`` cannot unwrap the backup's data key.
    :raises KeyProviderError: if the KMS cannot be reached.
    """
    header, meta, records, revision = _parse(data)
    wrapped = meta.get("dek")
    if wrapped is None:
        raise CorruptStoreError("the backup has no wrapped data key")
    try:
        dek = DataKey(key.unwrap(wrapped, DEK_CONTEXT))
    except KeyMismatchError as e:
        # The header is not authenticated yet (that needs the data key): quote it as
        # a claim, with repr, so a forged one cannot pass for our own words.
        claimed = header.get("kek")
        made_with = (
            f"{claimed!r} (as the backup's unverified header says)"
            if claimed
            else ("an unknown key")
        )
        raise KeyMismatchError(
            f"key {key.uri} cannot unwrap this backup's data key; it was wrapped with "
            f"{made_with} ({e})"
        ) from None
    body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
    if not hmac.compare_digest(hmac.new(_mac_key(dek), body, hashlib.sha256).digest(), tag):
        raise CorruptStoreError(
            "the backup fails authentication: it was altered, truncated or had records removed"
        )
    versions = 0
    seen = set()
    for record in records:
        assert record.data is not None
        state = SecretState.decode(dek.open(record.key, record.data), 0)
        if dek.storage_key(state.name) != record.key or record.key in seen:
            raise CorruptStoreError("a record of the backup is stored under the wrong key")
        seen.add(record.key)
        versions += len(state.versions)
    info = BackupInfo(
        created=str(header.get("created", "")),
        revision=revision,
        secrets=len(records),
        versions=versions,
        size=len(data),
        kek=str(header.get("kek", "")),
    )
    snapshot = Snapshot(revision=info.revision, meta=meta, records=records)
    return OpenedBackup(info=info, snapshot=snapshot, dek=dek)


def secrets_of(opened: OpenedBackup) -> Iterator[SecretState]:
    """Yield every secret of a checked backup, decrypted (for tests and tools that
    compare a restore with its source; never log what this yields)."""
    for record in opened.snapshot.records:
        assert record.data is not None
        yield SecretState.decode(opened.dek.open(record.key, record.data), 0)
