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

Restore and rotate-dek leave a store whose integrity entry (:mod:`setec_core.integrity`)
vouches for exactly its records, and whose audit key is the one it had (re-sealed under
the new data key by rotate-dek), so audit lines written before still verify. Neither
vouches for records it has not checked: rotate-dek refuses a store that fails its
integrity check, and restore one whose backup does.

:class:`AdminAudit` is how the admin commands write their audit entries: keyed, after
checking the log against the store, and recording the log's new head in the store.

Nothing here logs or returns a secret value.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from setec_core.audit import AuditEntry, AuditLog, Outcome, local_principal
from setec_core.audit_chain import AuditHead
from setec_core.audit_sink import FileAuditSink, replace_audit_file
from setec_core.backup.snapshot import BackupInfo, OpenedBackup, open_backup, seal_snapshot
from setec_core.crypto import DEK_CONTEXT, DataKey
from setec_core.data_key import SCHEMA_VERSION, unwrap_data_key
from setec_core.errors import (
    ConfigError,
    ConflictError,
    IntegrityCheckError,
    KeyMismatchError,
    SetecError,
    StorageError,
)
from setec_core.integrity import (
    AUDIT_KEY_META,
    INTEGRITY_META,
    StoreKeys,
    StoreSeal,
    check_records,
    claims_more,
    digest_of,
    new_audit_key,
    open_audit_key,
    read_seal,
    recorded_head,
    written_by_another,
    xor_all,
)
from setec_core.integrity_keeper import COMMIT_ATTEMPTS
from setec_core.keys import KeyProvider
from setec_core.last_access import resealed
from setec_core.leases import PRESENCE_TTL, live_replicas
from setec_core.model import SecretState
from setec_core.opening import replica_name
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
    """Write a backup already checked by :func:`~setec_core.backup.snapshot.open_backup` into
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
    _seal_restored(opened, meta)
    storage.commit(
        [RecordWrite(r.key, r.data, 0) for r in opened.snapshot.records],
        [MetaWrite(name, value, None) for name, value in sorted(meta.items())],
    )
    return opened.info


def _seal_restored(opened: OpenedBackup, meta: dict[str, bytes]) -> None:
    # The backup's tag vouches for its records and metadata together, so a fresh
    # integrity entry can vouch for its records; but a backup whose own entry disagrees
    # with them was taken from a store that had already been tampered with.
    keys = StoreKeys(opened.dek)
    seal = read_seal(meta, keys, "in the backup")
    digest, count = digest_of(keys, opened.snapshot.records)
    if seal is not None:
        try:
            check_records("in the backup", seal, count, digest)
        except IntegrityCheckError as e:
            raise IntegrityCheckError(
                f"{e}: the backup was taken from a store that had been tampered with; "
                "restore an older backup"
            ) from None
    audit_key = open_audit_key(opened.dek, meta) or new_audit_key()
    # No audit head: the restored store has not met the audit log it will be used
    # with; the admin command (or the first commit) records one.
    restored = StoreSeal(seal.commits if seal else 0, count, digest)
    meta[INTEGRITY_META] = restored.encode(keys)
    meta[AUDIT_KEY_META] = opened.dek.seal_meta(AUDIT_KEY_META, audit_key)


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
    :raises IntegrityCheckError: if the store fails its integrity check; nothing changed.
    :raises ConflictError: if the store changed meanwhile; nothing changed.
    :raises ConfigError: if servers are running on the store (their presence leases,
        :mod:`setec_core.leases`); nothing changed.
    """
    running = live_replicas(storage)
    if running:
        raise ConfigError(
            f"servers are running on store {storage.uri} (replica "
            f"{', '.join(running)}): stop every one first; rotate-dek gives the store a new "
            "data key, which a running server does not have (a stopped server's presence "
            f"ends within {PRESENCE_TTL:g} s)"
        )
    snapshot = storage.export()
    wrapped, old = _unlock(storage, key)
    if snapshot.meta.get("dek") != wrapped:
        raise StorageError("the data key changed while reading the store; run rotate-dek again")
    # Never launder a tampered store into a fresh, valid one: check before rewriting.
    old_keys = StoreKeys(old)
    seal = read_seal(snapshot.meta, old_keys, storage.uri)
    if seal is not None:
        digest, count = digest_of(old_keys, snapshot.records)
        check_records(storage.uri, seal, count, digest)
    audit_key = open_audit_key(old, snapshot.meta)
    new = DataKey.generate()
    new_keys = StoreKeys(new)
    writes = []
    sealed = []
    for record in snapshot.records:
        assert record.data is not None
        plain = old.open(record.key, record.data)
        name = SecretState.decode(plain, 0).name
        target = new.storage_key(name)
        data = new.seal(target, plain)
        sealed.append(data)
        writes.append(RecordWrite(target, data, 0))
        writes.append(RecordWrite(record.key, None, record.revision))
    digest = xor_all(new_keys.terms(sealed))
    rotated = StoreSeal(
        (seal.commits if seal else 0) + 1,
        len(snapshot.records),
        digest,
        seal.heads if seal else {},
    )
    revision = storage.commit(
        writes,
        [
            MetaWrite("dek", _rewrap(new.material, key), wrapped),
            MetaWrite("dek-check", new.check_value, snapshot.meta.get("dek-check")),
            MetaWrite(INTEGRITY_META, rotated.encode(new_keys), snapshot.meta.get(INTEGRITY_META)),
            # The audit key itself never changes, so lines from before still verify.
            MetaWrite(
                AUDIT_KEY_META,
                new.seal_meta(AUDIT_KEY_META, audit_key or new_audit_key()),
                snapshot.meta.get(AUDIT_KEY_META),
            ),
            # Last-access times (docs/api.md §9.5) are sealed under the data key too.
            *resealed(snapshot.meta, old, new),
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


_AUDIT_ADVICE = (
    "'setec-serve audit verify' shows the details; once you have kept the file as "
    "evidence, 'setec-serve audit rotate' starts a new one"
)


@dataclass(frozen=True, repr=False)
class _StoreView:
    # What an admin command needs of a store to audit itself in it (keys inside: no
    # repr).
    dek: DataKey
    keys: StoreKeys
    seal: StoreSeal | None
    blob: bytes | None
    audit_key: bytes | None


def _view(storage: StorageBackend, key: KeyProvider) -> _StoreView:
    snapshot = storage.export()
    wrapped = snapshot.meta.get("dek")
    if wrapped is None:
        raise StorageError(f"store {storage.uri} has no data key: it is empty or not a setec store")
    dek = unwrap_data_key(storage, key, wrapped)
    keys = StoreKeys(dek)
    meta: Mapping[str, bytes] = snapshot.meta
    return _StoreView(
        dek,
        keys,
        read_seal(meta, keys, storage.uri),
        meta.get(INTEGRITY_META),
        open_audit_key(dek, meta),
    )


class AdminAudit:
    """The audit log of a state directory, held by an admin command that changes the
    store (restore, rotate-kek, rotate-dek, audit rotate).

    Opening it takes the state directory's lock (the log's, which a running server
    holds). :meth:`check` checks the log against the store before the change, as an open
    would, so that a command never records a new head over lines that were cut;
    :meth:`record` then writes the command's entry, keyed with the store's audit key, and
    records the log's new head in the store. :attr:`notes` collects what the operator
    should be told (a log set aside, say).

    :param path: the state directory's audit log.
    :param replica: the replica name (docs/replicas.md) under which the store records
        the log's head; by default, that of the state directory holding ``path``.
    :raises ConfigError: if a server, or another command, holds it.
    """

    def __init__(self, path: str | os.PathLike[str], *, replica: str | None = None) -> None:
        self.path = Path(path)
        self._log = AuditLog.open(self.path)
        try:
            if replica is None:
                # As a server's start does: a missing name file gets back the name the
                # log's lines carry.
                replica = replica_name(self.path.parent, create=False)
                if not replica:
                    replica = self._log.last_replica or replica_name(self.path.parent)
        except BaseException:
            self._log.close()
            raise
        self._log.name_replica(replica)
        self._adopted = False
        self.principal = local_principal()
        self.notes: list[str] = []
        self.recorded = False

    @property
    def log(self) -> AuditLog:
        """The audit log held."""
        return self._log

    def check(self, storage: StorageBackend, key: KeyProvider) -> None:
        """Check the log against the head ``storage`` recorded, and key it.

        :raises IntegrityCheckError: if the log does not hold the recorded head, or was
            written under another key; nothing was changed.
        :raises KeyMismatchError: if ``key`` cannot unwrap the store's data key.
        """
        view = _view(storage, key)
        if view.audit_key is None:
            if self._log.ends_keyed:
                raise IntegrityCheckError(
                    f"store {storage.uri} has no audit key, but its audit log is keyed: the "
                    "log belongs to another store, or the store's key was deleted"
                )
            return
        self._log.use_key(view.audit_key)
        problem = self._tail_problem(view, storage.uri)
        if problem:
            raise IntegrityCheckError(f"{problem}; {_AUDIT_ADVICE}")

    def _recorded(self, view: _StoreView) -> AuditHead | None:
        head, self._adopted = recorded_head(
            view.seal, self._log.replica, log_ends_keyed=self._log.ends_keyed
        )
        return head

    def _tail_problem(self, view: _StoreView, where: str) -> str:
        # What a server's start checks (IntegrityKeeper): the log against its recorded
        # head, or, with none, its last link and that line's claim; then the name the
        # last line was written under.
        recorded = self._recorded(view)
        if recorded is not None:
            problem = self._log.check_tail(recorded).problem
        else:
            problem = self._log.check_last_link()
            if not problem and view.seal is not None:
                problem = claims_more(self._log, view.seal, where)
        return problem or written_by_another(self._log, self._log.replica)

    def record(self, storage: StorageBackend, key: KeyProvider, action: str) -> None:
        """Write an ``ok`` entry for ``action``, keyed with the store's audit key, and
        record the log's new head in ``storage``. A log written under another audit key
        (a restore of another store's backup) is first set aside, with a note.

        :raises AuditError: if the entry cannot be made durable.
        :raises StorageError: if the head cannot be recorded.
        """
        view = _view(storage, key)
        if view.audit_key is None:
            # A store of an earlier version, never opened by this one: no key yet, so
            # the entry is written as that version would have.
            self._log.write(AuditEntry(self.principal, action, True, outcome=Outcome.OK))
            self.recorded = True
            return
        self._log.use_key(view.audit_key)
        if self._log.check_last_link():
            aside = self._aside("replaced")
            self._swap(view.audit_key, aside, continues=None)
            self.notes.append(
                f"the audit log was written under another store's audit key; it is kept as "
                f"{aside} and a new one was started"
            )
        self._write_and_record(storage, view, action)

    def rotate(self, storage: StorageBackend, key: KeyProvider) -> Path | None:
        """Start a new audit file that continues the chain: the old one is kept aside
        (returned; ``None`` if it was empty or missing), and its first line, an
        ``audit-rotate`` entry, names the link it continues from. If the old file does
        not hold the head the store recorded, the new one continues from that head
        instead, so the loss stays visible, and a note says so.

        :raises IntegrityCheckError: if the store has no audit key yet.
        """
        view = _view(storage, key)
        if view.audit_key is None or view.seal is None:
            raise IntegrityCheckError(
                f"store {storage.uri} has no audit key yet (it was written by an earlier "
                "version of setec): start the server on it once, then rotate"
            )
        self._log.use_key(view.audit_key)
        problem = self._tail_problem(view, storage.uri)
        head = self._log.durable_head
        if problem:
            recorded = self._recorded(view)
            self.notes.append(f"the old audit log did not check out: {problem}")
            continues = bytes.fromhex(recorded.link.split(":", 1)[1]) if recorded else None
        else:
            continues = bytes.fromhex(head.link.split(":", 1)[1]) if head else None
        aside = self._aside("") if head is not None else None
        self._swap(view.audit_key, aside, continues=continues)
        self._write_and_record(storage, view, "audit-rotate")
        return aside

    def failed(self, action: str) -> None:
        """Write an ``error`` entry for ``action``, if the log can take one (keyed, or
        not keyed at all); best effort."""
        if self._log.ends_keyed and not self._log.keyed:
            return
        try:
            self._log.write(AuditEntry(self.principal, action, True, outcome=Outcome.ERROR))
        except SetecError as e:
            log.warning("could not audit the failed %s: %s", action, e)

    def close(self) -> None:
        """Sync and close the log, releasing the state directory.

        :raises AuditError: if that fails.
        """
        self._log.close()

    def _aside(self, why: str) -> Path:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        return self.path.with_name(f"{self.path.name}.{why + '-' if why else ''}{stamp}")

    def _swap(self, audit_key: bytes, aside: Path | None, *, continues: bytes | None) -> None:
        old = self._log
        sink = old.sink
        assert isinstance(sink, FileAuditSink)  # AuditLog.open made it
        if aside is None:
            # The old file is empty (lost, and recreated by the open): keep using it.
            self._log = AuditLog(sink, audit_key, continues=continues)
        else:
            new = replace_audit_file(sink, aside)
            old.close()
            self._log = AuditLog(new, audit_key, continues=continues)
        # The new file is the same replica's log.
        self._log.name_replica(old.replica)

    def _write_and_record(self, storage: StorageBackend, view: _StoreView, action: str) -> None:
        seal = view.seal or StoreSeal(0, 0, 0)
        self._log.claim_commits(seal.commits)
        self._log.write(AuditEntry(self.principal, action, True, outcome=Outcome.OK))
        self.recorded = True
        head = self._log.durable_head
        blob = view.blob
        if head is None or blob is None:
            return
        # Servers running on the store from other state directories (replicas) may
        # commit meanwhile: record the head on top of their entry.
        for _ in range(COMMIT_ATTEMPTS):
            entry = seal.with_head(self._log.replica, head, drop_legacy=self._adopted)
            try:
                storage.commit(meta=[MetaWrite(INTEGRITY_META, entry.encode(view.keys), blob)])
                return
            except ConflictError:
                blob = storage.get_meta(INTEGRITY_META)
                if blob is None:
                    break
                seal = StoreSeal.decode(view.keys, blob)
        raise StorageError(
            f"store {storage.uri} kept changing while this command ran; its audit head was "
            "not recorded (the next command or server start records it)"
        )
