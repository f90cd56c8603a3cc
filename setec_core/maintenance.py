"""Offline maintenance of a store: restore from a backup, and key rotation.

Each operation is one storage commit, and a :class:`~setec_core.storage.StorageBackend`
applies a commit entirely or not at all, so a crash (or a kill) at any instant leaves
the store as it was before or as it is after, never a mix:

* :func:`restore_backup` writes a checked backup into an empty store;
* :func:`rotate_kek` rewraps the data key under another key-encryption key (the records
  are untouched, so this is cheap and safe while a server runs);
* :func:`rotate_dek` re-encrypts every record under a new data key. Storage keys are
  derived from the data key, so every record moves: the new records and the
  tombstones of the old ones are written in the same commit as the new wrapped key,
  then the store is compacted (:meth:`~setec_core.storage.StorageBackend.compact`) so
  that no old record survives in it. The whole store is held in memory meanwhile. Run
  it with the server stopped: a running server still holds the old data key.

Nothing here logs or returns a secret value.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from setec_core.crypto import DEK_CONTEXT, DataKey
from setec_core.database import SCHEMA_VERSION, unwrap_data_key
from setec_core.errors import KeyMismatchError, StorageError
from setec_core.keys import KeyProvider
from setec_core.model import SecretState
from setec_core.snapshot import BackupInfo, OpenedBackup, open_backup, seal_snapshot
from setec_core.storage import MetaWrite, RecordWrite, StorageBackend

log = logging.getLogger("setec.maintenance")


def _rewrap(material: bytes, to: KeyProvider) -> bytes:
    # Check the new key can unwrap what it wrapped before anything depends on it.
    wrapped = to.wrap(material, DEK_CONTEXT)
    if to.unwrap(wrapped, DEK_CONTEXT) != material:
        raise KeyMismatchError(f"key {to.uri} did not unwrap what it wrapped; nothing changed")
    return wrapped


def _unlock(storage: StorageBackend, key: KeyProvider) -> tuple[bytes, DataKey]:
    wrapped = storage.get_meta("dek")
    if wrapped is None:
        raise StorageError(f"store {storage.uri} has no data key: it is empty or not a setec store")
    return wrapped, unwrap_data_key(storage, key, wrapped)


class OfflineStore:
    """A store opened for maintenance only: no index, no audit log, so it can be read
    while a server runs on it (``setec-serve backup now``).

    :param storage: the store; closed by :meth:`close`.
    :param key: the key that unwraps its data key; closed by :meth:`close`.
    """

    def __init__(self, storage: StorageBackend, key: KeyProvider) -> None:
        self.storage = storage
        self.key = key

    @property
    def revision(self) -> int:
        """The store's revision."""
        return self.storage.revision()

    def backup(self, *, created: dt.datetime | None = None) -> tuple[bytes, int]:
        """Return a sealed backup of the store and the revision it holds.

        :raises KeyMismatchError: if the key cannot unwrap the store's data key.
        :raises StorageError: if the store is empty or cannot be read.
        """
        snapshot = self.storage.export()
        wrapped, dek = _unlock(self.storage, self.key)
        if snapshot.meta.get("dek") != wrapped:
            raise StorageError("the data key changed while reading the store; try again")
        when = created or dt.datetime.now(dt.UTC)
        return seal_snapshot(snapshot, dek, created=when), snapshot.revision

    def close(self) -> None:
        """Close the storage and the key provider."""
        try:
            self.storage.close()
        finally:
            self.key.close()


def restore_backup(
    data: bytes,
    storage: StorageBackend,
    *,
    key: KeyProvider,
    backup_key: KeyProvider | None = None,
) -> BackupInfo:
    """Check the backup ``data`` and write it into the empty store ``storage``.

    :param key: the key the restored store is to be opened with.
    :param backup_key: the key that wrapped the backup's data key, if it is not
        ``key`` (a backup taken before a ``rotate-kek``); the data key is then rewrapped
        under ``key``.
    :raises StorageError: if ``storage`` is not empty; nothing is written.
    :raises CorruptStoreError: if the backup is damaged; nothing is written.
    :raises KeyMismatchError: if the backup's data key does not unwrap.
    """
    return restore_opened(open_backup(data, backup_key or key), storage, key=key)


def restore_opened(
    opened: OpenedBackup, storage: StorageBackend, *, key: KeyProvider
) -> BackupInfo:
    """Write a backup already checked by :func:`~setec_core.snapshot.open_backup` into
    the empty store ``storage``, in one commit, its data key wrapped by ``key``.

    :raises StorageError: if ``storage`` is not empty; nothing is written.
    """
    if storage.revision() != 0 or storage.get_meta("dek") is not None:
        raise StorageError(
            f"store {storage.uri} is not empty; restore into a new store (nothing was written)"
        )
    meta = dict(opened.snapshot.meta)
    # Always wrap afresh under ``key`` (and check it unwraps): the backup may be wrapped
    # by another key (one from before a rotate-kek), and one KMS round trip is cheap.
    meta["dek"] = _rewrap(opened.dek.material, key)
    meta["kek"] = key.uri.encode()
    meta.setdefault("schema", SCHEMA_VERSION)
    meta.setdefault("dek-check", opened.dek.check_value)
    storage.commit(
        [RecordWrite(r.key, r.data, 0) for r in opened.snapshot.records],
        [MetaWrite(name, value, None) for name, value in sorted(meta.items())],
    )
    return opened.info


def rotate_kek(storage: StorageBackend, *, old: KeyProvider, new: KeyProvider) -> None:
    """Rewrap the store's data key under ``new``, atomically; ``old`` is needed only
    for this, and no longer afterwards (except for backups taken before).

    :raises KeyMismatchError: if ``old`` cannot unwrap the data key; nothing changed.
    :raises ConflictError: if another process rotated the key meanwhile; nothing changed.
    """
    wrapped, dek = _unlock(storage, old)
    rewrapped = _rewrap(dek.material, new)
    meta = [
        MetaWrite("dek", rewrapped, wrapped),
        MetaWrite("kek", new.uri.encode(), storage.get_meta("kek")),
    ]
    if storage.get_meta("dek-check") is None:  # a store made before it existed
        meta.append(MetaWrite("dek-check", dek.check_value, None))
    storage.commit(meta=meta)


@dataclass(frozen=True)
class DekRotation:
    """What :func:`rotate_dek` did: how many secrets it re-encrypted, and the store
    revision after it."""

    secrets: int
    revision: int


def rotate_dek(storage: StorageBackend, *, key: KeyProvider) -> DekRotation:
    """Re-encrypt every record under a fresh data key, wrapped by ``key``, in one
    commit (all or nothing).

    :raises KeyMismatchError: if ``key`` cannot unwrap the current data key.
    :raises CorruptStoreError: if a record does not open; nothing changed.
    :raises ConflictError: if the store changed meanwhile; nothing changed.
    """
    snapshot = storage.export()
    wrapped, old = _unlock(storage, key)
    if snapshot.meta.get("dek") != wrapped:
        raise StorageError("the data key changed while reading the store; run rotate-dek again")
    new = DataKey.generate()
    writes = []
    for record in snapshot.records:
        assert record.data is not None
        plain = old.open(record.key, record.data)
        name = SecretState.decode(plain, 0).name
        target = new.storage_key(name)
        writes.append(RecordWrite(target, new.seal(target, plain), 0))
        writes.append(RecordWrite(record.key, None, record.revision))
    revision = storage.commit(
        writes,
        [
            MetaWrite("dek", _rewrap(new.material, key), wrapped),
            MetaWrite("dek-check", new.check_value, snapshot.meta.get("dek-check")),
        ],
    )
    try:
        storage.compact()
    except StorageError as e:
        # The rotation is done and whole; only the scrubbing of old records failed.
        log.warning(
            "rotate-dek: the rotation is done, but compacting %s failed (%s): old records "
            "may linger in the file's free space; free disk space (about twice the "
            "file's size) and run rotate-dek again",
            storage.uri,
            e,
        )
    return DekRotation(secrets=len(snapshot.records), revision=revision)
