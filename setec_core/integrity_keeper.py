"""Keeping an open store's integrity entry: the Database's side of
:mod:`setec_core.integrity`.

A Database holds one :class:`IntegrityKeeper`, which owns the integrity entry as last
written or read, every live record's digest term, and the store revision the Database's
index reflects. Everything the Database does about the entry, the audit key and the
audit log's recorded head is here:

* at open, it checks the records against the entry and the audit log against the head
  the entry recorded, and keys the audit log; a store written by an earlier version of
  setec gets its entry and audit key here (:meth:`IntegrityKeeper.check_at_open`);
* every commit writes the records with the entry they lead to, with a compare-and-swap
  on the old entry. When another writer won the race, it reads what that writer changed
  (the Database reloads those records into its index) and, if none of them is one of
  ours, tries again (:meth:`IntegrityKeeper.commit`);
* at close, it writes a ``checkpoint`` line if the audit log does not yet witness the
  last commit, and records the log's final head in the entry
  (:meth:`IntegrityKeeper.checkpoint`, :meth:`IntegrityKeeper.record_head`).

A new store gets its entry and audit key from :func:`new_store_meta`, after
:func:`check_new_store`. What the entry holds and why is in :mod:`setec_core.integrity`;
what the checks detect, for operators, in docs/audit.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from setec_core.audit import AuditEntry, AuditLog, Outcome, local_principal
from setec_core.audit_chain import AuditHead
from setec_core.crypto import DataKey
from setec_core.errors import ConflictError, IntegrityCheckError, SetecError, StorageError
from setec_core.integrity import (
    AUDIT_KEY_META,
    INTEGRITY_META,
    StoreKeys,
    StoreSeal,
    check_records,
    claims_more,
    new_audit_key,
    open_audit_key,
    read_seal,
    recorded_head,
    written_by_another,
    xor_all,
)
from setec_core.storage import MetaWrite, Record, RecordWrite, Snapshot, StorageBackend

# The Database's logger: these messages are about the store it opened.
log = logging.getLogger("setec.database")

#: How often a write whose commit lost the integrity entry's compare-and-swap to
#: another writer (on other records) catches up and tries again.
COMMIT_ATTEMPTS = 5
_AUDIT_ADVICE = (
    "'setec-serve audit verify' shows the details; once you have kept the file as "
    "evidence, 'setec-serve audit rotate' starts a new one"
)
_STORE_ADVICE = "restore it from a backup ('setec-serve check' shows the details)"

#: How the Database brings its index up to date with another writer's commits: called
#: with the live records that writer changed and the storage keys of the records it
#: deleted (records this Database knew).
Reload = Callable[[Sequence[Record], Sequence[bytes]], None]


def check_new_store(uri: str, audit_log: AuditLog) -> None:
    """Refuse to create a store beside the keyed audit log of an existing one.

    :param uri: the new store's URI, for the message.
    :raises IntegrityCheckError: if ``audit_log`` is persistent and ends in a keyed line:
        the store it belongs to was deleted or replaced, and must not silently start
        over.
    """
    if audit_log.sink.persistent and audit_log.ends_keyed:
        raise IntegrityCheckError(
            f"store {uri} is new, but the audit log beside it belongs to "
            "an existing store (its lines are keyed): the store was deleted or "
            "replaced; restore it from a backup, or, to start a new store here, move "
            "the audit log aside first"
        )


def new_store_meta(dek: DataKey) -> list[MetaWrite]:
    """The integrity entry (no records) and a fresh audit key of a new store under
    ``dek``, as metadata writes expecting absence, to commit with its data key."""
    return [
        MetaWrite(INTEGRITY_META, StoreSeal(0, 0, 0).encode(StoreKeys(dek)), None),
        MetaWrite(AUDIT_KEY_META, dek.seal_meta(AUDIT_KEY_META, new_audit_key()), None),
    ]


class IntegrityKeeper:
    """The integrity bookkeeping of one open store (see the module's docstring).

    Every method but :meth:`check_at_open` is called with the Database's write lock
    held; :meth:`check_at_open` while the Database opens, before it is shared.

    :param storage: the store.
    :param dek: its data key, from which the entry's keys are derived.
    :param audit_log: the audit log the entry records the head of; the keeper keys it
        and tells it the store's commit count.
    """

    def __init__(self, storage: StorageBackend, dek: DataKey, audit_log: AuditLog) -> None:
        self._storage = storage
        self._dek = dek
        self._keys = StoreKeys(dek)
        self._audit_log = audit_log
        # The integrity entry as last written or read, its bytes (for the
        # compare-and-swap), each live record's digest term, and the store revision
        # the index reflects (another writer's changes are read from there on).
        self._seal = StoreSeal(0, 0, 0)
        self._seal_blob: bytes | None = None
        self._terms: dict[bytes, int] = {}
        self._seen = 0
        # Whose audit head this keeper records (the log's replica name), and whether
        # that log continues the head of an unnamed log, to be forgotten at the next
        # entry written (see StoreSeal).
        self._replica = audit_log.replica
        self._adopted = False

    # --- opening ---------------------------------------------------------------------

    def check_at_open(self, snapshot: Snapshot, datas: list[bytes]) -> bool:
        """Check a store just read against its integrity entry, and the audit log
        against the head the entry recorded; key the audit log with the store's audit
        key. A store written by an earlier version of setec (no entry, no audit key)
        gets both, vouching for its records as they are.

        :param snapshot: the store as read, whose records the Database has opened.
        :param datas: the ``data`` of the snapshot's records, in order; the keeper drops
            the list once it has their terms.
        :returns: ``False`` if another process gave the store its entry at the same
            moment: read the store again and call this again. ``True`` otherwise.
        :raises IntegrityCheckError: if the records, the entry and the audit log do not
            agree, naming what differs and what to do.
        :raises CorruptStoreError: if the audit key does not open under the data key.
        """
        uri = self._storage.uri
        records = snapshot.records
        terms = self._keys.terms(datas)
        self._terms = dict(zip((record.key for record in records), terms, strict=True))
        digest = xor_all(terms)
        # The store's ciphertexts stay referenced by the snapshot; the lists of them and
        # of their terms are freed before the audit log is read.
        del datas, terms
        self._seen = snapshot.revision
        seal = read_seal(snapshot.meta, self._keys, uri)
        audit_key = open_audit_key(self._dek, snapshot.meta)
        if seal is None:
            return self._upgrade(len(self._terms), digest)
        check_records(uri, seal, len(self._terms), digest)
        if audit_key is None:
            raise IntegrityCheckError(
                f"store {uri} has an integrity entry but no audit key: the key was deleted; "
                f"{_STORE_ADVICE}"
            )
        self._seal, self._seal_blob = seal, snapshot.meta[INTEGRITY_META]
        self._check_audit(audit_key)
        return True

    def _check_audit(self, audit_key: bytes) -> None:
        # Key the audit log, and check it against the head the store recorded. Only a
        # persistent log can be checked: a log in memory starts empty every time.
        log_ = self._audit_log
        log_.use_key(audit_key)
        seal = self._seal
        recorded, self._adopted = recorded_head(seal, self._replica, log_ends_keyed=log_.ends_keyed)
        if log_.sink.persistent:
            if recorded is not None:
                tail = log_.check_tail(recorded)
                if tail.problem:
                    raise IntegrityCheckError(f"{tail.problem}; {_AUDIT_ADVICE}")
                if tail.claim is not None and tail.claim > seal.commits:
                    raise IntegrityCheckError(
                        f"store {self._storage.uri} was rolled back to an earlier state: "
                        f"audit.log line at byte {tail.claim_at} was written when the store "
                        f"had made {tail.claim} commits, but its integrity entry records "
                        f"{seal.commits} (an older copy of secrets.db, or of its records and "
                        f"integrity entry, was put back); {_STORE_ADVICE}"
                    )
            else:
                problem = log_.check_last_link() or claims_more(log_, seal, self._storage.uri)
                if problem:
                    raise IntegrityCheckError(f"{problem}; {_AUDIT_ADVICE}")
                self._joining(seal)
            # The last line's link now checks out under the key, so the name in it is
            # the one it was written under. A log under another name would be checked
            # against no head at all: a renamed state directory must not hide lines cut
            # from its log.
            problem = written_by_another(log_, self._replica)
            if problem:
                raise IntegrityCheckError(problem)
        log_.claim_commits(seal.commits)

    def _joining(self, seal: StoreSeal) -> None:
        # No head is recorded for this replica: it is new to the store, or its log was
        # replaced wholesale. Say so, with the replicas the store knows.
        known = ", ".join(sorted(name or "(unnamed)" for name in seal.heads)) or "none"
        if self._audit_log.durable_head is None:
            log.info(
                "replica %s joins store %s (replicas recorded so far: %s)",
                self._replica or "(unnamed)",
                self._storage.uri,
                known,
            )
        else:
            log.warning(
                "store %s has recorded no audit head for replica %s, whose audit.log is "
                "not empty: it stopped before its first head was recorded, or its log and "
                "name were replaced; replicas recorded: %s ('setec-serve check' lists them)",
                self._storage.uri,
                self._replica or "(unnamed)",
                known,
            )

    def _upgrade(self, records: int, digest: int) -> bool:
        # A store written by an earlier version of setec: no integrity entry, no audit
        # key. Add both, vouching for the records as they are (they all just opened).
        uri = self._storage.uri
        if self._audit_log.sink.persistent and self._audit_log.ends_keyed:
            raise IntegrityCheckError(
                f"store {uri} has no integrity entry and no audit key, but its audit log is "
                "keyed: both were deleted from the store (to pass it off as one of an "
                f"earlier version), or the audit log belongs to another store; {_STORE_ADVICE}"
            )
        log.warning(
            "store %s has no integrity entry (it was written by an earlier version of "
            "setec): adding one. If this store was already opened by this version, it was "
            "tampered with: run 'setec-serve check'",
            uri,
        )
        audit_key = new_audit_key()
        self._audit_log.use_key(audit_key)
        seal = StoreSeal(0, records, digest).with_head(self._replica, self._durable_head())
        blob = seal.encode(self._keys)
        try:
            self._seen = self._storage.commit(
                meta=[
                    MetaWrite(INTEGRITY_META, blob, None),
                    MetaWrite(AUDIT_KEY_META, self._dek.seal_meta(AUDIT_KEY_META, audit_key), None),
                ]
            )
        except ConflictError:
            # Another process upgraded it a moment ago: the Database reads it again.
            self._terms.clear()
            return False
        self._seal, self._seal_blob = seal, blob
        self._audit_log.claim_commits(seal.commits)
        return True

    def _durable_head(self) -> AuditHead | None:
        # Only a persistent log's head means anything at the next open.
        log_ = self._audit_log
        return log_.durable_head if log_.sink.persistent else None

    # --- catching up -----------------------------------------------------------------

    @property
    def seen(self) -> int:
        """The store revision the Database's index reflects."""
        return self._seen

    def catch_up(self, reload: Reload) -> None:
        """Read what other writers committed since :attr:`seen` (passing it to
        ``reload``) and check it against their integrity entry.

        :raises SetecError: if it cannot be read (:class:`StorageError`, or
            :class:`~setec_core.errors.StorageUnavailable` while the store is
            unreachable), or does not agree with the entry (:class:`IntegrityCheckError`).
        """
        try:
            self._catch_up((), reload)
        except SetecError:
            raise
        except Exception as e:
            raise StorageError(f"the storage backend failed: {type(e).__name__}: {e}") from e

    # --- commits ---------------------------------------------------------------------

    def commit(self, writes: Sequence[RecordWrite], reload: Reload) -> int | None:
        """Commit ``writes`` together with the integrity entry they lead to, with a
        compare-and-swap on the current entry, and return the store's new revision.

        Call it after the audit entries of the writes are durable. If another writer
        committed first, its changes are read (and passed to ``reload``) and, if they
        left the records of ``writes`` alone, the commit is tried again, up to
        :data:`COMMIT_ATTEMPTS` times in all.

        :returns: the new revision, or ``None`` if another writer changed a record of
            ``writes`` first (or kept winning the race): nothing was written, and the
            caller's index is up to date; tell the client to retry.
        :raises SetecError: if the commit failed (a backend's own exception is raised as
            :class:`StorageError`), or another writer's changes could not be read or do
            not agree with its integrity entry (:class:`IntegrityCheckError`).
        """
        live = iter(self._keys.terms([w.data for w in writes if w.data is not None]))
        terms = [None if write.data is None else next(live) for write in writes]
        attempt = 0
        while True:
            attempt += 1
            seal = self._next_seal(writes, terms)
            blob = seal.encode(self._keys)
            try:
                revision = self._storage.commit(
                    writes, [MetaWrite(INTEGRITY_META, blob, self._seal_blob)]
                )
                break
            except ConflictError:
                # Another writer committed since we last looked: read what it did. If it
                # left our records alone, only the integrity entry moved: go again on
                # top of it.
                if not self._catch_up(writes, reload) and attempt < COMMIT_ATTEMPTS:
                    continue
                return None
            except SetecError:
                raise
            except Exception as e:
                raise StorageError(f"the storage backend failed: {type(e).__name__}: {e}") from e
        for write, term in zip(writes, terms, strict=True):
            if term is None:
                self._terms.pop(write.key, None)
            else:
                self._terms[write.key] = term
        self._seal, self._seal_blob, self._seen = seal, blob, revision
        self._adopted = False
        self._audit_log.claim_commits(seal.commits)
        return revision

    def _next_seal(self, writes: Sequence[RecordWrite], terms: Sequence[int | None]) -> StoreSeal:
        # The integrity entry once ``writes`` are applied: O(1) per record, from the
        # terms of the records replaced (kept in memory) and of the new ones.
        seal = self._seal
        digest, records = seal.digest, seal.records
        for write, term in zip(writes, terms, strict=True):
            old = self._terms.get(write.key)
            if old is not None:
                digest ^= old
                records -= 1
            if term is not None:
                digest ^= term
                records += 1
        return seal.advanced(records, digest).with_head(
            self._replica, self._durable_head(), drop_legacy=self._adopted
        )

    def _catch_up(self, writes: Sequence[RecordWrite], reload: Reload) -> bool:
        # Another writer committed: read every record it changed since the revision
        # our index reflects, and its integrity entry, and check that they agree.
        # Returns whether it changed any record of ``writes`` (a true conflict).
        storage, uri = self._storage, self._storage.uri
        for _ in range(COMMIT_ATTEMPTS):
            revision = storage.revision()
            blob = storage.get_meta(INTEGRITY_META)
            changes = list(storage.changes_since(self._seen))
            if storage.revision() == revision and storage.get_meta(INTEGRITY_META) == blob:
                break
        else:
            raise ConflictError("the store is changing too fast to catch up; retry")
        if blob is None:
            raise IntegrityCheckError(
                f"store {uri} lost its integrity entry while this server ran; {_STORE_ADVICE}"
            )
        try:
            seal = StoreSeal.decode(self._keys, blob)
        except IntegrityCheckError:
            raise IntegrityCheckError(
                f"store {uri}: its integrity entry is no longer authentic under this "
                "server's data key: the store was re-encrypted (rotate-dek) or tampered "
                "with; restart the server"
            ) from None
        self._check_successor(seal)
        known = self._terms
        live = [record for record in changes if record.data is not None]
        terms = self._keys.terms([record.data for record in live if record.data is not None])
        # Check what the other writer left against its entry before anything here moves:
        # a failure must stay a failure at the next look, not become the state caught
        # up with (the revision would then say there is nothing new to check).
        digest, records = self._seal.digest, self._seal.records
        for record in changes:
            old = known.get(record.key)
            if old is not None:
                digest ^= old
                records -= 1
        for term in terms:
            digest ^= term
            records += 1
        check_records(uri, seal, records, digest)
        # A tombstone of a record we never had (made and deleted meanwhile) changes
        # nothing. The index next: a record that does not open stops here, before any
        # term moves.
        gone = [record.key for record in changes if record.data is None and record.key in known]
        reload(live, gone)
        for record in changes:
            known.pop(record.key, None)
        for record, term in zip(live, terms, strict=True):
            known[record.key] = term
        self._seal, self._seal_blob, self._seen = seal, blob, revision
        self._audit_log.claim_commits(seal.commits)
        mine = {w.key for w in writes}
        return any(record.key in mine for record in changes)

    def _check_successor(self, seal: StoreSeal) -> None:
        # Another writer's entry follows ours: it counts at least the commits ours did,
        # and carries our audit head over as we last wrote it (nobody else writes it).
        # An older entry put back (with the records it vouches for) fails here.
        uri = self._storage.uri
        ours = self._seal.head_of(self._replica)
        # (The unnamed head is the one a named log adopts and drops: not checked.)
        if seal.commits < self._seal.commits or (
            self._replica and self._seal_blob is not None and seal.head_of(self._replica) != ours
        ):
            raise IntegrityCheckError(
                f"store {uri} was rolled back while this server ran: its integrity entry "
                f"is an older one (it records {seal.commits} commits and not this "
                f"replica's last audit head), or another server runs under this replica's "
                f"name ({self._replica!r}); {_STORE_ADVICE}"
            )

    # --- closing ---------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write a ``checkpoint`` line to the audit log claiming the store's commit
        count, unless the log's last line already does (or the log cannot take it).
        Call it at close, before the log is closed.

        Without it, a store rolled back by its last write would look like one whose
        last write was interrupted before its commit. A failure is logged, not raised.
        """
        log_ = self._audit_log
        if not (log_.sink.persistent and log_.keyed and log_.failure == ""):
            return
        if self._seal.commits <= (log_.last_claim or 0):
            return
        try:
            log_.write(AuditEntry(local_principal(), "checkpoint", True, outcome=Outcome.OK))
        except SetecError as e:
            log.warning("could not write the audit checkpoint at close: %s", e)

    def record_head(self, reload: Reload) -> None:
        """Record the audit log's final head in the integrity entry, if it moved since
        the last commit. Call it at close, after the log is closed (synced).

        Best effort: if the head is not recorded, the next open checks against the one
        recorded by the last commit, which the log still holds. A failure is logged,
        not raised.

        :param reload: as for :meth:`commit`, if another writer committed meanwhile.
        """
        head = self._durable_head()
        if self._seal_blob is None or head is None:
            return
        if head == self._seal.head_of(self._replica) and not self._adopted:
            return
        for _ in range(COMMIT_ATTEMPTS):
            seal = self._seal.with_head(self._replica, head, drop_legacy=self._adopted)
            blob = seal.encode(self._keys)
            try:
                self._storage.commit(meta=[MetaWrite(INTEGRITY_META, blob, self._seal_blob)])
            except ConflictError:
                try:
                    self._catch_up((), reload)
                except SetecError as e:
                    log.warning("could not record the audit log's head at close: %s", e)
                    return
                continue
            except SetecError as e:
                log.warning("could not record the audit log's head at close: %s", e)
                return
            self._seal, self._seal_blob = seal, blob
            self._adopted = False
            return
