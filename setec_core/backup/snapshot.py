"""The backup file format: a sealed, self-contained copy of a store.

A backup is the store's :class:`~setec_core.storage.Snapshot` (every live record and
every metadata entry, the wrapped data key included) written as::

    setec-backup v2\\n
    {header as one line of JSON}\\n
    {head MAC: 64 hex digits}\\n    HMAC-SHA256 of the two lines above
    record 1 ... record N          each: u32 key length, key, u32 data length, data
    tag                            32 bytes: HMAC-SHA256 of everything before it

The records are the store's own ciphertext, copied byte for byte: a backup is exactly
as encrypted as the store, and restoring it needs the key-encryption key that wraps its
data key. Two keys are derived from the data key (HKDF, each with its own label):

* the head key, for the head MAC. It authenticates the header on its own, so the
  first few kilobytes of a backup prove when it was taken and which revision it holds
  (:func:`check_head`): retention and ``latest`` judge backups by that, without
  reading them whole;
* the tag key, for the tag over the whole file, so a backup with a record removed,
  added, swapped for an older one, or anything else edited fails :func:`open_backup`
  even though each record is individually authenticated.

The header holds no secret: the creation time, the store revision, the record count,
the URI of the key that wrapped the data key, and the metadata (base64).

Format v1 (``setec-backup v1``, written before v2) has no head MAC: its header is
authenticated only by the tag, with the whole file. :func:`open_backup` still reads it;
:func:`check_head` cannot vouch for it.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import hmac
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from setec_core.crypto import DEK_CONTEXT, DataKey
from setec_core.errors import CorruptStoreError, KeyMismatchError
from setec_core.keys import KeyProvider
from setec_core.model import SecretState
from setec_core.storage import Record, Snapshot

MAGIC = b"setec-backup v2\n"
"""The first line of a backup as :func:`seal_snapshot` writes it (format v2)."""
MAGIC_V1 = b"setec-backup v1\n"
"""The first line of a format v1 backup, which :func:`open_backup` still reads."""
TAG_SIZE = 32
HEAD_MAC_SIZE = 64
_LEN = struct.Struct(">I")
_HEAD_INFO = b"setec backup head v2"
_TAG_INFO = b"setec backup mac v1"  # the whole-file tag, the same in both formats
_MAX_HEADER = 1 << 20
MAX_HEAD_SIZE = len(MAGIC) + _MAX_HEADER + 1 + HEAD_MAC_SIZE + 1
"""The most bytes a v2 head (magic, header and head MAC lines) may take."""
_CREATED = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


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
class BackupHead:
    """What the authenticated header of a backup says about it: when it was taken
    (:attr:`created`, UTC, to the millisecond), the store :attr:`revision` it holds,
    its number of :attr:`records`, and the :attr:`kek` that wrapped its data key."""

    created: dt.datetime
    revision: int
    records: int
    kek: str


@dataclass(frozen=True)
class OpenedBackup:
    """A backup whose head, tag and every record have been checked with its data key."""

    info: BackupInfo
    head: BackupHead
    snapshot: Snapshot
    dek: DataKey


@dataclass(frozen=True)
class _Header:
    """A header as parsed, not yet authenticated."""

    version: int
    head: BackupHead
    meta: dict[str, bytes]
    claimed_kek: object
    signed: bytes  # what the head MAC covers (v2)
    mac: bytes  # the head MAC (v2), b"" in v1
    end: int  # where the records start


def rfc3339(when: dt.datetime) -> str:
    """Return ``when`` as backups record it: UTC, to the millisecond, such as
    ``2026-11-23T10:54:35.123Z``."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _head_mac(dek: DataKey, signed: bytes) -> bytes:
    return hmac.new(dek.derive(_HEAD_INFO), signed, hashlib.sha256).hexdigest().encode("ascii")


def _tag(dek: DataKey, body: bytes) -> bytes:
    return hmac.new(dek.derive(_TAG_INFO), body, hashlib.sha256).digest()


def seal_snapshot(snapshot: Snapshot, dek: DataKey, *, created: dt.datetime) -> bytes:
    """Serialise ``snapshot`` in format v2: its header, the head MAC and the tag under
    keys derived from ``dek``.

    :param dek: the store's data key, the one ``snapshot.meta["dek"]`` wraps.
    :param created: when the backup is taken; kept to the millisecond.
    :raises CorruptStoreError: if the snapshot has no wrapped data key.
    """
    if "dek" not in snapshot.meta:
        raise CorruptStoreError("the store has no data key yet: there is nothing to back up")
    header = {
        "format": "setec-backup",
        "version": 2,
        "created": rfc3339(created),
        "revision": snapshot.revision,
        "records": len(snapshot.records),
        "kek": snapshot.meta.get("kek", b"").decode("utf-8", "replace"),
        "meta": {
            name: base64.b64encode(value).decode("ascii")
            for name, value in sorted(snapshot.meta.items())
        },
    }
    signed = MAGIC + json.dumps(header, separators=(",", ":")).encode("ascii") + b"\n"
    parts = [signed, _head_mac(dek, signed), b"\n"]
    pack = _LEN.pack
    for record in snapshot.records:
        assert record.data is not None  # snapshots hold live records only
        parts += (pack(len(record.key)), record.key, pack(len(record.data)), record.data)
    body = b"".join(parts)
    return body + _tag(dek, body)


def head_needs_more(data: bytes) -> bool:
    """Report whether ``data``, the first bytes of a backup, stop before the end of
    its v2 head, so that more must be read to check it (never past
    :data:`MAX_HEAD_SIZE`)."""
    if not data.startswith(MAGIC) or len(data) >= MAX_HEAD_SIZE:
        return False
    end = data.find(b"\n", len(MAGIC))
    return end < 0 or data.find(b"\n", end + 1) < 0


def _parse_header(data: bytes) -> _Header:
    if data.startswith(MAGIC):
        version = 2
    elif data.startswith(MAGIC_V1):
        version = 1
    else:
        raise CorruptStoreError("this is not a setec backup (it does not start 'setec-backup')")
    end = data.find(b"\n", len(MAGIC), len(MAGIC) + _MAX_HEADER)
    if end < 0:
        raise CorruptStoreError("the backup's header is truncated")
    try:
        header = json.loads(data[len(MAGIC) : end])
        meta = {
            str(name): base64.b64decode(value, validate=True)
            for name, value in header["meta"].items()
        }
        count, revision, created = header["records"], header["revision"], header["created"]
        if type(count) is not int or type(revision) is not int or count < 0:
            raise TypeError("records and revision must be whole numbers")
        if not isinstance(created, str) or not _CREATED.fullmatch(created):
            raise ValueError("created is not a time")
        when = dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
        if header.get("version", 1) != version or "dek" not in meta:
            raise ValueError("not what the magic says")
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
    claimed = header.get("kek")
    head = BackupHead(when, revision, count, str(claimed) if claimed else "")
    signed, mac, start = data[: end + 1], b"", end + 1
    if version == 2:
        line = data[start : start + HEAD_MAC_SIZE + 1]
        if len(line) <= HEAD_MAC_SIZE or not line.endswith(b"\n"):
            raise CorruptStoreError("the backup's head is truncated or damaged")
        mac, start = line[:-1], start + len(line)
    return _Header(version, head, meta, claimed, signed, mac, start)


def check_head(data: bytes, dek: DataKey) -> BackupHead:
    """Authenticate the head of a v2 backup (its first bytes, up to
    :data:`MAX_HEAD_SIZE`, or all of it) with ``dek``, and return what it says.

    This proves the header was written by a holder of ``dek``; it says nothing of the
    records that follow (:func:`open_backup` checks those).

    :raises CorruptStoreError: if the head does not authenticate under ``dek`` (a
        forgery, or a backup sealed under another data key), is damaged or cut short,
        or is in format v1 (whose header only the whole file authenticates).
    """
    header = _parse_header(data)
    _check_head_mac(header, dek)
    return header.head


def _check_head_mac(header: _Header, dek: DataKey) -> None:
    if header.version == 1:
        raise CorruptStoreError(
            "the backup is in format v1, whose header only the whole file authenticates"
        )
    if not hmac.compare_digest(_head_mac(dek, header.signed), header.mac):
        raise CorruptStoreError(
            "the backup's header fails authentication under this data key: it was forged "
            "or altered, or the backup was sealed under another data key"
        )


class BackupKeys:
    """The data keys of backups, unwrapped by one key provider (the admin commands,
    which hold the key-encryption key rather than a data key). Each distinct wrapped
    key is unwrapped once, failures included: usually all the backups of a store share
    one, so checking many backups costs one KMS call.

    :param key: the key provider that wrapped the backups' data keys.
    """

    def __init__(self, key: KeyProvider) -> None:
        self.key = key
        self._known: dict[bytes, DataKey | str] = {}

    def __repr__(self) -> str:
        return f"BackupKeys({self.key.uri!r})"

    def _data_key(self, header: _Header) -> DataKey:
        wrapped = header.meta["dek"]
        known = self._known.get(wrapped)
        if known is None:
            try:
                known = DataKey(self.key.unwrap(wrapped, DEK_CONTEXT))
            except KeyMismatchError as e:
                known = str(e)
            self._known[wrapped] = known
        if isinstance(known, DataKey):
            return known
        # The header is not authenticated yet (that needs the data key): quote it as a
        # claim, with repr, so a forged one cannot pass for our own words.
        claimed = header.claimed_kek
        made_with = (
            f"{claimed!r} (as the backup's unverified header says)" if claimed else "an unknown key"
        )
        raise KeyMismatchError(
            f"key {self.key.uri} cannot unwrap this backup's data key; it was wrapped with "
            f"{made_with} ({known})"
        )

    def check_head(self, data: bytes) -> BackupHead:
        """Authenticate the head of a v2 backup, as :func:`check_head` does, with the
        data key it carries, unwrapped by :attr:`key`.

        :raises CorruptStoreError: as :func:`check_head`.
        :raises KeyMismatchError: if :attr:`key` cannot unwrap the backup's data key.
        :raises KeyProviderError: if the KMS cannot be reached.
        """
        header = _parse_header(data)
        _check_head_mac(header, self._data_key(header))
        return header.head

    def open(self, data: bytes) -> OpenedBackup:
        """Check the whole backup ``data``, as :func:`open_backup` does."""
        header = _parse_header(data)
        dek = self._data_key(header)
        if header.version == 2:
            _check_head_mac(header, dek)
        body, tag = data[:-TAG_SIZE], data[-TAG_SIZE:]
        if len(data) < header.end + TAG_SIZE or not hmac.compare_digest(_tag(dek, body), tag):
            raise CorruptStoreError(
                "the backup fails authentication: it was altered, truncated or had records removed"
            )
        records = _records(data, header)
        versions = 0
        seen = set()
        for record in records:
            assert record.data is not None
            state = SecretState.decode(dek.open(record.key, record.data), 0)
            if dek.storage_key(state.name) != record.key or record.key in seen:
                raise CorruptStoreError("a record of the backup is stored under the wrong key")
            seen.add(record.key)
            versions += len(state.versions)
        head = header.head
        info = BackupInfo(
            created=rfc3339(head.created),
            revision=head.revision,
            secrets=len(records),
            versions=versions,
            size=len(data),
            kek=head.kek,
        )
        snapshot = Snapshot(revision=head.revision, meta=header.meta, records=records)
        return OpenedBackup(info=info, head=head, snapshot=snapshot, dek=dek)


def _records(data: bytes, header: _Header) -> list[Record]:
    records = []
    offset, stop = header.end, len(data) - TAG_SIZE
    try:
        for _ in range(header.head.records):
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
    return records


def open_backup(data: bytes, key: KeyProvider | BackupKeys) -> OpenedBackup:
    """Check a backup made by :func:`seal_snapshot` (or a v1 one) and return what it
    holds.

    The data key is unwrapped with ``key``, the head MAC and the tag are checked, and
    every record is decrypted and parsed, so a backup that opens here restores
    completely. Whether its name fits it is for the caller to check
    (:func:`setec_core.backup.loop.check_backup_name`).

    :param key: the key provider that wrapped the backup's data key, or
        :class:`BackupKeys` around it (to reuse what it already unwrapped).
    :raises CorruptStoreError: if the backup is truncated, altered or not a backup.
    :raises KeyMismatchError: if ``key`` cannot unwrap the backup's data key.
    :raises KeyProviderError: if the KMS cannot be reached.
    """
    keys = key if isinstance(key, BackupKeys) else BackupKeys(key)
    return keys.open(data)


def secrets_of(opened: OpenedBackup) -> Iterator[SecretState]:
    """Yield every secret of a checked backup, decrypted (for tests and tools that
    compare a restore with its source; never log what this yields)."""
    for record in opened.snapshot.records:
        assert record.data is not None
        yield SecretState.decode(opened.dek.open(record.key, record.data), 0)
