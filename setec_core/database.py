"""The Database: secrets, versions, access checks and audit, over pluggable parts.

Every operation of the setec API is a method taking the :class:`~setec_core.Caller` it
acts for. The order of checks, what is audited and what each outcome is follow Go
setec, with a few fixes: client mistakes raise :class:`InvalidRequestError` (400 on the
wire) instead of a bare error, a put never wraps to version 0 nor answers with a
deleted version, and ``_internal/`` names are refused by every write, create-version
included.

Reads are served from an in-memory index decrypted at open. Each secret's state is an
immutable :class:`SecretState`, replaced whole by a write, so readers take no lock.
Writes are serialised by one lock and each rewrites only its own record: audit entry
first (durable), then one storage commit. If the commit fails the index is untouched.

The store is tamper-evident as a whole (:mod:`setec_core.integrity`): every commit also
writes the integrity entry, a keyed digest of the live records plus the audit log's
durable head, with a compare-and-swap on its old value, and every open checks records,
entry and audit log against each other. The audit log is keyed with the store's audit
key from the first line this Database writes. That bookkeeping is the Database's
:class:`~setec_core.integrity_keeper.IntegrityKeeper`.

Opening one (the state directory, URIs turned into parts) is
:mod:`setec_core.opening`, and making or unwrapping the store's data key
:mod:`setec_core.data_key`.
"""

from __future__ import annotations

import builtins
import datetime
import functools
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Concatenate, NoReturn, ParamSpec, TypeVar

from setec_core.acl import Action
from setec_core.audit import AuditEntry, AuditLog, Outcome, local_principal
from setec_core.authz import Caller
from setec_core.backup.snapshot import BackupHead, check_head, seal_snapshot
from setec_core.changes import ChangeFeed
from setec_core.data_key import open_data_key
from setec_core.description import check_description
from setec_core.errors import (
    AccessDenied,
    ConfigError,
    ConflictError,
    CorruptStoreError,
    InvalidRequestError,
    InvalidVersionError,
    NotFound,
    PendingDeletionError,
    SetecError,
    StorageError,
    ValueNotChanged,
    VersionClaimed,
)
from setec_core.follower import FOLLOW_INTERVAL, Follower
from setec_core.guard import Guard, conflict, guard_of
from setec_core.integrity_keeper import COMMIT_ATTEMPTS as COMMIT_ATTEMPTS
from setec_core.integrity_keeper import IntegrityKeeper
from setec_core.keys import KeyProvider
from setec_core.last_access import FLUSH_SECONDS, AccessTimes
from setec_core.leases import take_presence
from setec_core.model import (
    MAX_GET_MANY,
    MAX_NAME_BYTES,
    MAX_VERSION,
    DeletedSecret,
    LazyState,
    SecretInfo,
    SecretState,
    SecretValue,
    record_may_be_pending,
    record_name,
)
from setec_core.opening import close_quietly, open_parts
from setec_core.recovery import RecoveryAction, deleted_secret, nanoseconds, pending_reason
from setec_core.storage import Record, RecordWrite, StorageBackend

if TYPE_CHECKING:
    from setec_core.plugins import Plugins

log = logging.getLogger("setec.database")

RESERVED_PREFIX = "_internal/"

# The clock of last access (docs/api.md §9.5), bound once: a get reads it.
_now_ns = time.time_ns

# (old state or None, new state or None for a deletion)
_Change = tuple[SecretState | None, SecretState | None]
# What an audit entry names as its action: a rule's action, or one of recoverable
# delete's (which ``delete`` grants).
_Audited = Action | RecoveryAction

#: How often a write that lost a race with another process's write of the same secret
#: is tried again on the state that process left, before the caller is told to retry.
#: A loser catches up and retries at once, so it loses again only if another process
#: commits to the same secret within that moment.
WRITE_ATTEMPTS = 20

_P = ParamSpec("_P")
_R = TypeVar("_R")


class _LostRaceError(Exception):
    # A write lost the race for its records to another process's commit; the index is
    # caught up with that commit, so the write can be worked out again.
    pass


def _retried(
    method: Callable[Concatenate[Database, _P], _R],
) -> Callable[Concatenate[Database, _P], _R]:
    # Run a write again when it lost a race (docs/replicas.md, "Writes"): each attempt
    # works from the index, which the lost commit brought up to date.
    @functools.wraps(method)
    def write(self: Database, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        attempt = 1
        while True:
            try:
                return method(self, *args, **kwargs)
            except _LostRaceError as lost:
                if attempt >= WRITE_ATTEMPTS:
                    raise ConflictError(
                        f"secret {lost.args[0]!r} keeps being changed by other server "
                        "processes; retry"
                    ) from None
                # The lost commit caught the index up; read whatever landed since, so
                # that the next attempt starts from the newest state there is.
                self.refresh()
                attempt += 1

    return write


class Database:
    """A setec database: open it with :meth:`open`, close it when done (or use
    ``with``). Safe to use from many threads at once.

    :param storage: where encrypted records live; the database closes it.
    :param key: the key provider holding the key-encryption key; closed with it.
    :param audit: the audit log every access is written to; closed with it.
    :raises KeyMismatchError: if ``key`` cannot unwrap the store's data key.
    :raises CorruptStoreError: if the store's metadata or a record is unreadable.
    :raises IntegrityCheckError: if the records, the integrity entry and the audit log
        do not agree: something other than setec changed the store or the log.
    :raises StorageError: if the store cannot be read.
    """

    def __init__(self, storage: StorageBackend, key: KeyProvider, audit: AuditLog) -> None:
        self._storage = storage
        self._key = key
        self._audit_log = audit
        self._write_lock = threading.Lock()
        self._index_lock = threading.Lock()
        # A secret read from the store at open stays a LazyState until first used:
        # read it through _state(), never _secrets.get().
        self._secrets: dict[str, SecretState | LazyState] = {}
        self._sorted: list[str] | None = None
        # name -> purge time (ns) of every secret pending deletion: the few the purge
        # job and list-deleted look at, without decoding every record.
        self._pending: dict[str, int] = {}
        self._recovery_window = 0.0
        #: The clock recoverable delete reads (Unix seconds): when a delete puts a
        #: secret aside, and which are due for purging. Tests may set a fake one.
        self.clock: Callable[[], float] = time.time
        self._changes = ChangeFeed()
        self._closed = False
        started = time.perf_counter()
        self._dek = open_data_key(storage, key, audit)
        self._integrity = IntegrityKeeper(storage, self._dek, audit)
        self._access = AccessTimes(storage, self._dek)
        # An access stores its time here and nothing more (docs/api.md §9.5).
        self._accessed = self._access.seen
        #: Seconds between flushes of last-access times once :meth:`follow` runs.
        self.access_flush_interval = FLUSH_SECONDS
        self._follower: Follower | None = None
        self._load()
        # Record where this replica's audit log stands now: a replica joining the store
        # is known to it from here on, and one that stopped abruptly has its last lines
        # vouched for (docs/replicas.md).
        self._integrity.record_head(self._reload)
        log.info(
            "opened %s with %d secrets in %.2f s (key %s)",
            storage.uri,
            len(self._secrets),
            time.perf_counter() - started,
            key.uri,
        )

    # --- opening ---------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        state_dir: str | os.PathLike[str] | None = None,
        *,
        key: str | KeyProvider,
        storage: str | StorageBackend | None = None,
        audit: AuditLog | None = None,
        plugins: Plugins | None = None,
    ) -> Database:
        """Open (creating if needed) a database.

        :param state_dir: directory for the default store (``secrets.db``, SQLite)
            and ``audit.log``; created with mode 0700.
        :param key: a key-provider URI (``aws-kms://ARN``, a bare ARN, ``dev://`` for
            development only) or a :class:`KeyProvider`. There is no default: a
            forgotten key must not silently mean the public development key.
        :param storage: a storage URI (``sqlite:///path``, ``memory://``) or backend;
            defaults to ``sqlite:///<state_dir>/secrets.db``.
        :param audit: the audit log; defaults to ``<state_dir>/audit.log``.
        :param plugins: a :class:`~setec_core.plugins.Plugins` facade used to resolve
            URIs; by default the installed plugins.
        :raises ConfigError: if the state directory is unusable, a URI names no
            installed plugin, or neither ``state_dir`` nor both ``storage`` and
            ``audit`` are given.
        :raises KeyMismatchError: if the store was created under another key.
        :raises CorruptStoreError: if the store cannot be read as a setec store.
        """
        with open_parts(state_dir, key=key, storage=storage, audit=audit, plugins=plugins) as parts:
            return cls(parts.storage, parts.key, parts.audit)

    def _load(self) -> None:
        # Records, metadata and revision from one consistent snapshot. The list of
        # ciphertexts goes straight to the keeper, which frees it once it has their terms.
        snapshot = self._storage.export()
        self._access.load(snapshot.meta)
        if not self._integrity.check_at_open(snapshot, self._index(snapshot.records)):
            # Another process upgraded the store a moment ago: read it again.
            self._secrets.clear()
            self._pending.clear()
            self._load()

    def _index(self, records: Sequence[Record]) -> builtins.list[bytes]:
        # Index every record by name; return their ciphertexts, in order. Each record
        # is decrypted (so authenticated) here, and decoded on first use (LazyState):
        # decoding was two thirds of the time to open a large store.
        dek_open, decode = self._dek.open, SecretState.decode
        secrets = self._secrets
        datas: builtins.list[bytes] = []
        try:
            for record in records:
                data = record.data
                assert data is not None  # snapshots hold live records only
                plain = dek_open(record.key, data)
                name = record_name(plain)
                if name is None or record_may_be_pending(plain):
                    # Decoded now; so is a secret pending deletion (rare), whose purge
                    # time the index keeps.
                    state = decode(plain, record.revision)
                    secrets[state.name] = state
                    if state.purge_at:
                        self._pending[state.name] = state.purge_at
                else:
                    secrets[name] = LazyState(plain, record.revision)
                datas.append(data)
        except CorruptStoreError as e:
            uri = self._storage.uri
            raise CorruptStoreError(f"store {uri}: {e} ('setec-serve check' lists them)") from None
        return datas

    def _state(self, name: str) -> SecretState | None:
        """The state of the secret ``name``, or ``None`` if there is none.

        :raises CorruptStoreError: if its record, read at open, does not decode.
        """
        state = self._secrets.get(name)
        if isinstance(state, LazyState):
            return state.resolve()
        return state

    # --- lifecycle -------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The store's global revision: it changes whenever the database does (the
        backup loop compares it to decide whether a new backup is needed)."""
        return self._storage.revision()

    @property
    def key(self) -> KeyProvider:
        """The key provider that wraps the data key."""
        return self._key

    @property
    def storage(self) -> StorageBackend:
        """The storage backend (for backups and admin tools)."""
        return self._storage

    @property
    def audit_log(self) -> AuditLog:
        """The audit log every access is written to."""
        return self._audit_log

    def backup(self, *, created: datetime.datetime | None = None) -> tuple[bytes, int]:
        """Return a sealed backup of the whole store (:mod:`setec_core.backup.snapshot`) and
        the store revision it holds. Writes wait while the store is read.

        :raises StorageError: if the store cannot be read, or its data key was rotated
            by another process since this database opened (restart the server).
        """
        snapshot = self._storage.export()
        # The check value says whether the store still uses our data key: a rotate-kek
        # by another process keeps it (the backup is good), a rotate-dek does not (it
        # would be sealed with the wrong key). Every store has one once opened.
        check = snapshot.meta.get("dek-check")
        if check is None or not hmac.compare_digest(check, self._dek.check_value):
            raise StorageError(
                f"the data key of {self._storage.uri} was rotated since this server "
                "started; restart it to back up under the new key"
            )
        when = created or datetime.datetime.now(datetime.UTC)
        return seal_snapshot(snapshot, self._dek, created=when), snapshot.revision

    def check_backup_head(self, head: bytes) -> BackupHead:
        """Authenticate the first bytes of a backup with this store's data key and
        return what its header says (:func:`~setec_core.backup.snapshot.check_head`), for the
        backup loop's retention, which makes no KMS call.

        :raises CorruptStoreError: if the head does not authenticate under this data
            key: a forgery, another store's backup, one sealed before a ``rotate-dek``,
            or a format v1 backup.
        """
        return check_head(head, self._dek)

    # --- other processes' commits ----------------------------------------------------

    def refresh(self) -> bool:
        """Catch up with what other processes over the same store committed since this
        Database last looked (docs/replicas.md). Reads then serve it. Cheap when nothing
        changed: one read of the store's revision.

        :returns: whether anything was read.
        :raises SetecError: if the store cannot be read
            (:class:`~setec_core.errors.StorageUnavailable` while it is unreachable), or
            what was committed does not agree with the store's integrity entry
            (:class:`~setec_core.errors.IntegrityCheckError`: the store was re-encrypted
            by ``rotate-dek``, or tampered with).
        """
        with self._write_lock:
            if self._closed:
                return False
            if self._storage.revision() == self._integrity.seen:
                return False
            self._integrity.catch_up(self._reload)
            return True

    def follow(self, *, interval: float = FOLLOW_INTERVAL) -> Follower:
        """Start catching up with other processes' commits in a background thread, as
        soon as the store signals one (and at least every ``interval`` seconds), until
        :meth:`close`. A server calls this, so that it serves what other processes
        over its store write (replicas, ``--workers``, an admin command). While it runs,
        a named replica holds its presence lease (:mod:`setec_core.leases`). Calling it
        again returns the same :class:`~setec_core.follower.Follower`.

        :raises StorageError: if the database is closed.
        :raises ConfigError: if another server holds this replica's presence lease (it
            runs under the same name).
        """
        with self._write_lock:
            if self._closed:
                raise StorageError("the database is closed")
            if self._follower is None:
                replica = self.replica
                presence = None
                if replica:
                    presence = take_presence(self._storage, replica)
                    if presence is None:
                        raise ConfigError(
                            f"another server runs as replica {replica!r} on store "
                            f"{self._storage.uri} (its presence lease is live): each "
                            "replica needs a state directory and a name of its own"
                        )
                self._follower = Follower(self, interval=interval, presence=presence)
                self._follower.start()
                self._access.start(self._exists, self.access_flush_interval)
            return self._follower

    @property
    def replica(self) -> str:
        """The replica name of this Database's audit log (docs/replicas.md), or ``""``."""
        return self._audit_log.replica

    @property
    def synced_revision(self) -> int:
        """The store revision this Database's index reflects (its own commits and the
        others' it has read)."""
        return self._integrity.seen

    @property
    def follower(self) -> Follower | None:
        """The follower :meth:`follow` started, if any."""
        return self._follower

    @property
    def changes(self) -> ChangeFeed:
        """Wakes subscribers when secrets change, by this Database's writes or by other
        processes' commits it reads (:mod:`setec_core.changes`; watches use it)."""
        return self._changes

    def __len__(self) -> int:
        return len(self._secrets)

    def __repr__(self) -> str:
        return f"<Database {self._storage.uri} secrets={len(self._secrets)} key={self._key.uri}>"

    def close(self) -> None:
        """Close the audit log (synced), the store and the key provider. Closing
        again does nothing.

        If the store's last commit is not yet witnessed by a line of the audit log, a
        ``checkpoint`` entry is written first; then the log's final head is recorded in
        the store, so that lines cut from it while setec is stopped are found at the next
        open.
        """
        follower = self._follower
        if follower is not None:
            follower.stop()
        self._access.stop()
        with self._write_lock:
            if self._closed:
                return
            self._closed = True
            self._access.flush_quietly(self._exists)
            self._integrity.checkpoint()
            close_quietly(self._audit_log)
            self._integrity.record_head(self._reload)
            for thing in (self._storage, self._key):
                close_quietly(thing)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reads -----------------------------------------------------------------------

    def list(self, caller: Caller) -> list[SecretInfo]:
        """Return every secret the caller may ``info``, sorted by name.

        Writes one audit entry (action ``info``, no secret) whatever the caller may
        see, and never raises :class:`AccessDenied`.
        """
        self._audit(caller, Action.INFO, Outcome.OK, "")
        with self._index_lock:
            if self._sorted is None:
                self._sorted = sorted(self._secrets)
            names = self._sorted
        out = []
        for name in names:
            state = self._state(name)
            if state is not None and not state.purge_at and caller.allows(Action.INFO, name):
                out.append(state.info(self._access.last(name)))
        return out

    def info(self, caller: Caller, name: str) -> SecretInfo:
        """Return the versions and active version of ``name`` (needs ``info``).

        :raises AccessDenied: if the caller may not ``info`` it (audited).
        :raises NotFound: if there is no such secret (audited).
        """
        _check_name(name, empty_ok=True)
        action = Action.INFO
        if not caller.allows(action, name):
            self._refuse(AccessDenied(), caller, action, Outcome.DENIED, name)
        state = self._state(name)
        if state is None or state.purge_at:  # pending deletion: as if missing
            self._refuse(NotFound(), caller, action, Outcome.NOT_FOUND, name)
        self._audit(caller, action, Outcome.OK, name)
        return state.info(self._access.last(name))

    def get(self, caller: Caller, name: str, version: int = 0) -> SecretValue:
        """Return the active value of ``name``, or ``version`` of it if not 0.

        :raises AccessDenied: if the caller may not ``get`` it (audited).
        :raises NotFound: if there is no such secret or version (audited).
        :raises InvalidRequestError: if ``version`` is not a uint32 (not audited).
        """
        _check_name(name, empty_ok=True)
        _check_version(version, zero_ok=True)
        action = Action.GET
        if not caller.allows(action, name):
            self._refuse(AccessDenied(), caller, action, Outcome.DENIED, name, version=version)
        state = self._state(name)
        served = (version or state.active) if state is not None else 0
        if state is None or state.purge_at or served not in state.versions:
            self._refuse(NotFound(), caller, action, Outcome.NOT_FOUND, name, version=version)
        self._audit(caller, action, Outcome.OK, name, version=version, served=served)
        self._accessed[name] = _now_ns()
        return SecretValue(state.versions[served], served)

    def get_many(
        self, caller: Caller, asked: Sequence[tuple[str, int]]
    ) -> builtins.list[SecretValue | SetecError]:
        """:meth:`get` of each ``(name, version)`` at once (version 0: the active one),
        with one audit write: each gets the entry its own get would write, and all of
        them are durable before this returns (or, for the HTTP front, before the answer
        leaves: :meth:`AuditLog.deferred`).

        :returns: for each item, in order, its :class:`SecretValue`, or the
            :class:`AccessDenied` or :class:`NotFound` its get would raise. Access is
            checked first, so a denied secret's result says nothing of whether it
            exists.
        :raises InvalidRequestError: for no items, more than :data:`MAX_GET_MANY`, an
            item asked twice, or a name or version :meth:`get` refuses; nothing is
            audited.
        :raises AuditError: if the entries cannot be written; no value is returned.
        """
        if not asked:
            raise InvalidRequestError("a batch get must name at least one secret")
        if len(asked) > MAX_GET_MANY:
            raise InvalidRequestError(
                f"a batch get names at most {MAX_GET_MANY} secrets, not {len(asked)}; "
                "split it into several"
            )
        seen: set[tuple[str, int]] = set()
        for name, version in asked:
            _check_name(name, empty_ok=True)
            _check_version(version, zero_ok=True)
            if (name, version) in seen:
                which = f"version {version}" if version else "the active version"
                raise InvalidRequestError(
                    f"secret {_shown(name)} ({which}) is asked for twice in the batch"
                )
            seen.add((name, version))
        entries: builtins.list[AuditEntry] = []
        results: builtins.list[SecretValue | SetecError] = []
        for name, version in asked:
            # get's checks and entries, in its order: access first.
            if not caller.allows(Action.GET, name):
                entries.append(_entry(caller, Action.GET, Outcome.DENIED, name, version))
                results.append(AccessDenied())
                continue
            state = self._state(name)
            served = (version or state.active) if state is not None else 0
            if state is None or state.purge_at or served not in state.versions:
                entries.append(_entry(caller, Action.GET, Outcome.NOT_FOUND, name, version))
                results.append(NotFound())
                continue
            entries.append(_entry(caller, Action.GET, Outcome.OK, name, version, served))
            results.append(SecretValue(state.versions[served], served))
        # One write, one sync: the entries of every secret, or none and no value.
        self._audit_log.write(*entries)
        now = _now_ns()
        for (name, _), result in zip(asked, results, strict=True):
            if isinstance(result, SecretValue):
                self._accessed[name] = now
        return results

    def get_if_changed(self, caller: Caller, name: str, version: int) -> SecretValue:
        """Return the active value of ``name`` unless its active version is ``version``
        (a conditional get, for polling). ``version`` 0 means a plain :meth:`get`.

        Audited only when denied or when a value is returned (docs/api.md §7.2), so polls
        that find nothing new leave no trace.

        :raises AccessDenied: if the caller may not ``get`` it (audited).
        :raises NotFound: if there is no such secret (not audited).
        :raises ValueNotChanged: if the active version is ``version`` (not audited).
        """
        if version == 0:
            return self.get(caller, name)
        _check_name(name, empty_ok=True)
        _check_version(version, zero_ok=False)
        if not caller.allows(Action.GET, name):
            self._refuse(AccessDenied(), caller, Action.GET, Outcome.DENIED, name)
        state = self._state(name)
        if state is None or state.purge_at:
            raise NotFound()
        # A poll that finds nothing new still shows the secret in use (docs/api.md §9.5).
        self._accessed[name] = _now_ns()
        if state.active == version:
            raise ValueNotChanged()
        self._audit(caller, Action.GET, Outcome.OK, name, served=state.active)
        return SecretValue(state.versions[state.active], state.active)

    def active_version(self, name: str) -> int:
        """The active version of ``name``, or 0 if there is no such secret (or it is
        pending deletion). Checks no access and writes no audit entry: for a watch,
        which checks access itself and tells no more than ``info`` would
        (:mod:`setec_core.watch`).

        :raises CorruptStoreError: if its record, read at open, does not decode.
        """
        state = self._state(name)
        # A secret pending deletion is gone, as far as readers know.
        return 0 if state is None or state.purge_at else state.active

    # --- writes ----------------------------------------------------------------------

    def put(
        self,
        caller: Caller,
        name: str,
        value: bytes,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> int:
        """Add ``value`` as a new version of ``name`` and return its version number.

        The first put creates version 1 and activates it; later puts do not change
        the active version. A value equal to the latest version's returns that
        version and writes nothing.

        Every write takes the guards ``if_active_version`` (the active version must be
        this one; 0: the secret must not exist) and ``if_versions`` (its versions must
        be exactly these; empty: it must not exist), checked against the state the
        write replaces, atomically with it (docs/library.md, "Guarded writes").

        :raises InvalidRequestError: for an empty or ``_internal/`` name, a value that
            is not bytes, a secret whose versions are used up, or a malformed guard.
        :raises AccessDenied: if the caller may not ``put`` it (audited).
        :raises VersionConflict: if a guard does not hold (audited); nothing is
            written.
        """
        guard = guard_of(if_active_version, if_versions)
        return self._put_many(caller, {name: value}, {} if guard is None else {name: guard})[name]

    def put_many(self, caller: Caller, items: Mapping[str, bytes]) -> dict[str, int]:
        """:meth:`put` several secrets at once, all or nothing, with one audit sync
        and one storage commit. Returns each name's version.

        :raises InvalidRequestError: as :meth:`put`, for any item; nothing is written.
        :raises AccessDenied: if any put is denied; nothing is written.
        """
        return self._put_many(caller, items, {})

    @_retried
    def _put_many(
        self, caller: Caller, items: Mapping[str, bytes], guards: Mapping[str, Guard]
    ) -> dict[str, int]:
        if not items:
            return {}
        values = {}
        for name, value in items.items():
            _check_name(name, empty_ok=False)
            values[name] = _as_bytes(value)
        action = Action.PUT
        # All or nothing: refuse the batch before touching anything, auditing the
        # items that were refused.
        denied = [n for n in values if not caller.allows(action, n)]
        if denied:
            self._refuse(AccessDenied(), caller, action, Outcome.DENIED, *denied)
        reserved = [n for n in values if n.startswith(RESERVED_PREFIX)]
        if reserved:
            self._refuse(_reserved(reserved[0]), caller, action, Outcome.INVALID, *reserved)
        with self._write_lock:
            result: dict[str, int] = {}
            changes: builtins.list[_Change] = []
            for name, value in values.items():
                old = self._state(name)
                self._check_not_pending(old, caller, action, name)
                self._check_guard(guards.get(name), caller, action, name, old)
                if old is None:
                    new = SecretState(name, {1: value}, 1, 1, frozenset())
                elif old.versions.get(old.latest) == value:
                    result[name] = old.latest
                    continue
                elif old.latest >= MAX_VERSION:
                    self._refuse(
                        InvalidRequestError(
                            f"secret {name!r} has used every version up to {MAX_VERSION}; "
                            "delete it and put it again to start over at 1"
                        ),
                        caller,
                        action,
                        Outcome.INVALID,
                        name,
                    )
                else:
                    latest = old.latest + 1
                    new = replace(old, versions={**old.versions, latest: value}, latest=latest)
                changes.append((old, new))
                result[name] = new.latest
            changed = {new.name for _, new in changes if new is not None}
            self._audit_log.write(
                *[
                    _entry(caller, action, Outcome.OK if n in changed else Outcome.UNCHANGED, n)
                    for n in values
                ]
            )
            self._commit(caller, action, changes)
            self._touch(*values)
            return result

    @_retried
    def create_version(
        self,
        caller: Caller,
        name: str,
        version: int,
        value: bytes,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> None:
        """Store ``value`` as exactly ``version`` of ``name`` and make it active. Takes
        the guards of :meth:`put`, checked before the version is.

        :raises InvalidVersionError: if ``version`` is 0 (checked before access, not
            audited, as in Go setec).
        :raises InvalidRequestError: for an empty or ``_internal/`` name, a version
            out of range or a value that is not bytes.
        :raises AccessDenied: if the caller may not ``create-version`` (audited).
        :raises VersionClaimed: if the version exists or was ever deleted (audited).
        :raises VersionConflict: if a guard does not hold (audited).
        """
        _check_name(name, empty_ok=False)
        value = _as_bytes(value)
        if version == 0:
            raise _version_zero(name)
        _check_version(version, zero_ok=False)
        guard = guard_of(if_active_version, if_versions)
        action = Action.CREATE_VERSION
        self._check_write(caller, action, name, version, needs_version=False)
        with self._write_lock:
            old = self._state(name)
            self._check_not_pending(old, caller, action, name, version)
            self._check_guard(guard, caller, action, name, old, version)
            if old is None:
                new = SecretState(name, {version: value}, version, version, frozenset())
            elif version in old.versions or version in old.deleted:
                self._refuse(
                    VersionClaimed(), caller, action, Outcome.VERSION_CLAIMED, name, version=version
                )
            else:
                new = replace(
                    old,
                    versions={**old.versions, version: value},
                    active=version,
                    latest=max(old.latest, version),
                )
            self._audit(caller, action, Outcome.OK, name, version=version)
            self._commit(caller, action, [(old, new)], version)
            self._touch(name)

    @_retried
    def activate(
        self,
        caller: Caller,
        name: str,
        version: int,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> None:
        """Make ``version`` the active version of ``name``. Takes the guards of
        :meth:`put`, checked before the version is.

        :raises InvalidRequestError: for an empty or ``_internal/`` name.
        :raises InvalidVersionError: if ``version`` is 0 (audited).
        :raises AccessDenied: if the caller may not ``activate`` (audited).
        :raises NotFound: if there is no such secret or version (audited).
        :raises VersionConflict: if a guard does not hold (audited).
        """
        _check_name(name, empty_ok=False)
        _check_version(version, zero_ok=True)
        guard = guard_of(if_active_version, if_versions)
        action = Action.ACTIVATE
        self._check_write(caller, action, name, version, needs_version=True)
        with self._write_lock:
            old = self._state(name)
            if old is not None and old.purge_at:  # pending deletion: as if missing
                old = None
            self._check_guard(guard, caller, action, name, old, version)
            if old is None or version not in old.versions:
                self._refuse(NotFound(), caller, action, Outcome.NOT_FOUND, name, version=version)
            if old.active == version:
                self._audit(caller, action, Outcome.UNCHANGED, name, version=version)
                self._touch(name)
                return
            self._audit(caller, action, Outcome.OK, name, version=version)
            self._commit(caller, action, [(old, replace(old, active=version))], version)
            self._touch(name)

    @_retried
    def delete_version(
        self,
        caller: Caller,
        name: str,
        version: int,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> None:
        """Delete one inactive version of ``name``; its number stays claimed. Takes the
        guards of :meth:`put`, checked before the version is.

        :raises InvalidVersionError: if ``version`` is 0 (audited).
        :raises InvalidRequestError: for an ``_internal/`` name, or if ``version`` is
            the active version (audited).
        :raises AccessDenied: if the caller may not ``delete`` (audited).
        :raises NotFound: if there is no such secret or version (audited).
        :raises VersionConflict: if a guard does not hold (audited).
        """
        _check_name(name, empty_ok=True)
        _check_version(version, zero_ok=True)
        guard = guard_of(if_active_version, if_versions)
        action = Action.DELETE
        self._check_write(caller, action, name, version, needs_version=True)
        with self._write_lock:
            old = self._state(name)
            if old is not None and old.purge_at:  # pending deletion: as if missing
                old = None
            self._check_guard(guard, caller, action, name, old, version)
            if old is None:
                self._refuse(NotFound(), caller, action, Outcome.NOT_FOUND, name, version=version)
            if version == old.active:
                self._refuse(
                    InvalidRequestError(
                        f"cannot delete version {version} of secret {name!r}: it is the "
                        "active version; activate another version first"
                    ),
                    caller,
                    action,
                    Outcome.INVALID,
                    name,
                    version=version,
                )
            if version not in old.versions:
                self._refuse(NotFound(), caller, action, Outcome.NOT_FOUND, name, version=version)
            versions = {v: b for v, b in old.versions.items() if v != version}
            new = replace(old, versions=versions, deleted=old.deleted | {version})
            self._audit(caller, action, Outcome.OK, name, version=version)
            self._commit(caller, action, [(old, new)], version)
            self._touch(name)

    @_retried
    def delete(
        self,
        caller: Caller,
        name: str,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
        purge: bool = False,
    ) -> None:
        """Delete ``name`` entirely: every version and its history of deleted
        versions. Deleting a secret that does not exist succeeds and writes nothing.
        Takes the guards of :meth:`put`.

        With a :attr:`recovery_window`, the secret is put aside instead (audited with
        outcome ``recoverable``): reads no longer see it, its name stays reserved, and
        :meth:`undelete` brings it back until it is purged, the window's length from
        now. A secret already put aside stays so, its purge time unchanged. With
        ``purge``, the secret goes for good at once, put aside or not (audited as
        ``purge``).

        :raises InvalidRequestError: for an ``_internal/`` name (audited).
        :raises AccessDenied: if the caller may not ``delete`` (audited).
        :raises VersionConflict: if a guard does not hold (audited).
        """
        _check_name(name, empty_ok=True)
        guard = guard_of(if_active_version, if_versions)
        if purge:
            self._purge(caller, name, guard)
            return
        action = Action.DELETE
        self._check_write(caller, action, name, 0, needs_version=False)
        with self._write_lock:
            old = self._state(name)
            pending = old is not None and old.purge_at != 0
            self._check_guard(guard, caller, action, name, None if pending else old)
            if old is None:
                self._audit(caller, action, Outcome.NOT_FOUND, name)
                return
            if pending:
                self._audit(caller, action, Outcome.UNCHANGED, name)
                return
            window = self._recovery_window
            if window > 0:
                now = nanoseconds(self.clock())
                aside = replace(old, deleted_at=now, purge_at=now + nanoseconds(window))
                self._audit(caller, action, Outcome.RECOVERABLE, name)
                self._commit(caller, action, [(old, aside)])
                return
            self._audit(caller, action, Outcome.OK, name)
            self._commit(caller, action, [(old, None)])

    @_retried
    def set_info(self, caller: Caller, name: str, description: str) -> None:
        """Set the description of ``name`` (docs/api.md §9.5); ``""`` clears it. It is
        kept in the secret's record, encrypted with it; no version is made and the
        active version stays as it is. Audited as ``set-info`` with the description's
        length in bytes, never its text. Not an access: last access stays as it was.

        :raises InvalidRequestError: for an empty name, or a description that is not
            one line of at most :data:`~setec_core.description.MAX_DESCRIPTION_BYTES`
            bytes (not audited); for an ``_internal/`` name (audited).
        :raises AccessDenied: if the caller may not ``set-info`` (audited).
        :raises NotFound: if there is no such secret (audited).
        """
        _check_name(name, empty_ok=False)
        check_description(description)
        size = len(description.encode("utf-8"))
        if not caller.allows(Action.SET_INFO, name):
            self._set_info_refused(AccessDenied(), caller, name, size, Outcome.DENIED)
        if name.startswith(RESERVED_PREFIX):
            self._set_info_refused(_reserved(name), caller, name, size, Outcome.INVALID)
        with self._write_lock:
            old = self._state(name)
            if old is None or old.purge_at:  # pending deletion: as if missing
                self._set_info_refused(NotFound(), caller, name, size, Outcome.NOT_FOUND)
            if old.description == description:
                self._audit_log.write(_set_info_entry(caller, name, size, Outcome.UNCHANGED))
                return
            self._audit_log.write(_set_info_entry(caller, name, size, Outcome.OK))
            self._commit(caller, Action.SET_INFO, [(old, replace(old, description=description))])

    def _set_info_refused(
        self, error: SetecError, caller: Caller, name: str, size: int, outcome: Outcome
    ) -> NoReturn:
        self._audit_log.write(_set_info_entry(caller, name, size, outcome))
        raise error

    def flush_access(self) -> bool:
        """Record this process's last-access times in the store now, merged with what
        other processes recorded (:mod:`setec_core.last_access`), rather than at the
        next periodic flush or at :meth:`close`.

        :returns: whether anything was written.
        :raises SetecError: if the store cannot be read or written.
        """
        return self._access.flush(self._exists)

    # --- recoverable delete (docs/api.md, "Recoverable delete") -----------------------

    @property
    def recovery_window(self) -> float:
        """Seconds a deleted secret is kept aside before it is purged; 0 (the
        default, Go setec's behaviour) deletes at once. ``setec-serve
        --recovery-window`` sets it."""
        return self._recovery_window

    @recovery_window.setter
    def recovery_window(self, seconds: float) -> None:
        if not seconds >= 0:  # NaN too
            raise ValueError(f"the recovery window must be 0 or more seconds, not {seconds}")
        self._recovery_window = float(seconds)

    def _purge(self, caller: Caller, name: str, guard: Guard | None) -> None:
        # delete with purge: the caller of a write already retried (delete).
        action = RecoveryAction.PURGE
        if not caller.allows(Action.DELETE, name):
            self._refuse(AccessDenied(), caller, action, Outcome.DENIED, name)
        if name.startswith(RESERVED_PREFIX):
            self._refuse(_reserved(name), caller, action, Outcome.INVALID, name)
        with self._write_lock:
            old = self._state(name)
            pending = old is not None and old.purge_at != 0
            self._check_guard(guard, caller, action, name, None if pending else old)
            if old is None:
                self._audit(caller, action, Outcome.NOT_FOUND, name)
                return
            self._audit(caller, action, Outcome.OK, name)
            self._commit(caller, action, [(old, None)])

    @_retried
    def undelete(self, caller: Caller, name: str) -> None:
        """Bring back the secret ``name`` that a delete put aside, exactly as it was:
        every version, the active one, the claimed numbers of deleted versions.

        :raises InvalidRequestError: for an ``_internal/`` name or one over 1,024
            bytes.
        :raises AccessDenied: if the caller may not ``delete`` it (audited).
        :raises NotFound: if no secret of that name is pending deletion (audited).
        """
        _check_name(name, empty_ok=True)
        action = RecoveryAction.UNDELETE
        if not caller.allows(Action.DELETE, name):
            self._refuse(AccessDenied(), caller, action, Outcome.DENIED, name)
        if name.startswith(RESERVED_PREFIX):
            self._refuse(_reserved(name), caller, action, Outcome.INVALID, name)
        with self._write_lock:
            old = self._state(name)
            if old is None or not old.purge_at:
                self._refuse(NotFound(), caller, action, Outcome.NOT_FOUND, name)
            self._audit(caller, action, Outcome.OK, name)
            self._commit(caller, action, [(old, replace(old, deleted_at=0, purge_at=0))])

    def list_deleted(self, caller: Caller) -> builtins.list[DeletedSecret]:
        """Return every secret pending deletion that the caller may ``delete``, sorted
        by name. Writes one audit entry (action ``list-deleted``, no secret), as
        :meth:`list` does, and never raises :class:`AccessDenied`."""
        self._audit(caller, RecoveryAction.LIST_DELETED, Outcome.OK, "")
        with self._index_lock:
            names = sorted(self._pending)
        out = []
        for name in names:
            if caller.allows(Action.DELETE, name):
                state = self._state(name)
                if state is not None and state.purge_at:
                    out.append(deleted_secret(state))
        return out

    def next_purge(self) -> float | None:
        """When the first secret pending deletion is due to be purged (Unix seconds),
        or ``None`` if none is pending."""
        with self._index_lock:
            first = min(self._pending.values(), default=None)
        return None if first is None else first / 1e9

    @_retried
    def purge_due(self) -> builtins.list[str]:
        """Purge every secret whose recovery window has ended (by :attr:`clock`), in one
        commit, each audited as ``purge`` by this server (the principal of its own
        entries: this host, ip ``local``). The purge job calls it
        (:class:`~setec_core.purge.PurgeLoop`).

        :returns: the names purged, sorted.
        :raises SetecError: if the audit log or the store fails; nothing is purged.
        """
        with self._write_lock:
            now = nanoseconds(self.clock())
            with self._index_lock:
                due = sorted(n for n, at in self._pending.items() if at <= now)
            changes: builtins.list[_Change] = []
            names = []
            for name in due:
                old = self._state(name)
                if old is not None and 0 < old.purge_at <= now:
                    changes.append((old, None))
                    names.append(name)
            if not changes:
                return []
            server = Caller(local_principal())
            self._audit(server, RecoveryAction.PURGE, Outcome.OK, *names)
            self._commit(server, RecoveryAction.PURGE, changes)
            return names

    def _check_not_pending(
        self, old: SecretState | None, caller: Caller, action: Action, name: str, version: int = 0
    ) -> None:
        # A write to a secret pending deletion: its name is reserved until it is
        # undeleted or purged. Only a caller who may delete it learns that it is
        # pending (and until when); to any other it is a write it may not make.
        if old is None or not old.purge_at:
            return
        error: SetecError = AccessDenied()
        if caller.allows(Action.DELETE, name):
            error = PendingDeletionError(pending_reason(name, old.purge_at))
        self._refuse(error, caller, action, Outcome.PENDING_DELETION, name, version=version)

    # --- machinery -------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        # Whether the index holds ``name`` (pending deletion included): the secrets
        # whose last access is worth keeping.
        return name in self._secrets

    def _touch(self, *names: str) -> None:
        # A write is an access too (docs/api.md §9.5).
        now = _now_ns()
        for name in names:
            self._accessed[name] = now

    def _check_write(
        self, caller: Caller, action: Action, name: str, version: int, *, needs_version: bool
    ) -> None:
        # Go setec's order after the access check: reserved names, then version 0.
        if not caller.allows(action, name):
            self._refuse(AccessDenied(), caller, action, Outcome.DENIED, name, version=version)
        if name.startswith(RESERVED_PREFIX):
            self._refuse(_reserved(name), caller, action, Outcome.INVALID, name, version=version)
        if needs_version and version == 0:
            self._refuse(
                _version_zero(name), caller, action, Outcome.INVALID, name, version=version
            )

    def _check_guard(
        self,
        guard: Guard | None,
        caller: Caller,
        action: _Audited,
        name: str,
        old: SecretState | None,
        version: int = 0,
    ) -> None:
        # Called with the write lock held, with the state the write will replace: the
        # commit's compare-and-swap is on that state's record, so a write that passes
        # here lands on exactly that state or loses the race and is worked out (and
        # checked) again on the newer one. The guard compares what info would show
        # (a secret pending deletion does not exist there), and a caller who may info
        # the secret gets that info as its current state.
        if guard is None:
            return
        info = None if old is None or old.purge_at else old.info(self._access.last(name))
        if guard.holds(info):
            return
        visible = caller.allows(Action.INFO, name)
        refusal = conflict(guard, name, info, visible=visible)
        self._refuse(refusal, caller, action, Outcome.GUARD_FAILED, name, version=version)

    def _audit(
        self,
        caller: Caller,
        action: _Audited,
        outcome: Outcome,
        *names: str,
        version: int = 0,
        served: int = 0,
    ) -> None:
        # One entry per name, made durable together (one sync).
        self._audit_log.write(*[_entry(caller, action, outcome, n, version, served) for n in names])

    def _refuse(
        self,
        error: SetecError,
        caller: Caller,
        action: _Audited,
        outcome: Outcome,
        *names: str,
        version: int = 0,
    ) -> NoReturn:
        # An audited refusal: the entries are durable before the caller hears why.
        self._audit(caller, action, outcome, *names, version=version)
        raise error

    def _commit(
        self, caller: Caller, action: _Audited, changes: Sequence[_Change], version: int = 0
    ) -> None:
        # Called with the write lock held, after the audit entries are durable.
        if not changes:
            return
        writes = []
        for old, new in changes:
            name = _name_of(old, new)
            key = self._dek.storage_key(name)
            data = None if new is None else self._dek.seal(key, new.encode())
            writes.append(RecordWrite(key, data, old.revision if old else 0))
        try:
            revision = self._integrity.commit(writes, self._reload)
        except SetecError:
            self._audit_failure(caller, action, changes, version)
            raise
        if revision is None:
            # Another process changed one of these secrets first; the keeper brought
            # the index up to date with it, and the write is worked out again.
            names = [_name_of(old, new) for old, new in changes]
            self._audit(caller, action, Outcome.CONFLICT, *names, version=version)
            raise _LostRaceError(names[0])
        with self._index_lock:
            for old, new in changes:
                if new is None:
                    assert old is not None
                    del self._secrets[old.name]
                    self._sorted = None
                else:
                    if old is None:
                        self._sorted = None
                    self._secrets[new.name] = replace(new, revision=revision)
                self._note_pending(_name_of(old, new), new)
        if self._changes:  # nobody watches: nothing more to pay
            self._changes.changed(_name_of(old, new) for old, new in changes)

    def _reload(self, records: Sequence[Record], removed: Sequence[bytes]) -> None:
        # Another writer committed (IntegrityKeeper read what): put the live ``records``
        # it changed into the index and take out the secrets whose records it deleted.
        dek = self._dek
        changed: builtins.list[str] = []
        with self._index_lock:
            if removed:
                by_key = {dek.storage_key(n): n for n in self._secrets}
                for key in removed:
                    name = by_key.get(key)
                    if name is not None:
                        del self._secrets[name]
                        self._pending.pop(name, None)
                        changed.append(name)
            for record in records:
                assert record.data is not None  # the keeper passes live records
                state = SecretState.decode(dek.open(record.key, record.data), record.revision)
                self._secrets[state.name] = state
                self._note_pending(state.name, state)
                changed.append(state.name)
            self._sorted = None
        # Other processes' changes wake this process's watches as its own writes do.
        self._changes.changed(changed)

    def _note_pending(self, name: str, state: SecretState | None) -> None:
        # With the index lock held: keep the purge times of pending secrets in step.
        if state is not None and state.purge_at:
            self._pending[name] = state.purge_at
        else:
            self._pending.pop(name, None)

    def _audit_failure(
        self, caller: Caller, action: _Audited, changes: Sequence[_Change], version: int
    ) -> None:
        names = [_name_of(old, new) for old, new in changes]
        try:
            self._audit(caller, action, Outcome.ERROR, *names, version=version)
        except SetecError:
            log.exception("could not audit a failed %s", action.value)


def _entry(
    caller: Caller, action: _Audited, outcome: Outcome, name: str, version: int = 0, served: int = 0
) -> AuditEntry:
    # ``authorized`` is false exactly when the caller's rules refused the action.
    return AuditEntry(
        caller.principal,
        action.value,
        outcome != Outcome.DENIED,
        name,
        version,
        outcome,
        served,
        caller.request_id,
    )


def _set_info_entry(caller: Caller, name: str, size: int, outcome: Outcome) -> AuditEntry:
    # The description's length stands for its text, which may say more than a name.
    return AuditEntry(
        caller.principal,
        Action.SET_INFO.value,
        outcome != Outcome.DENIED,
        name,
        outcome=outcome,
        request_id=caller.request_id,
        description_bytes=size,
    )


def _reserved(name: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"secret name {name!r} is reserved: names starting with "
        f"{RESERVED_PREFIX!r} cannot be written"
    )


def _version_zero(name: str) -> InvalidVersionError:
    return InvalidVersionError(f"invalid version, please specify a version > 0 (secret {name!r})")


def _name_of(old: SecretState | None, new: SecretState | None) -> str:
    state = new or old
    assert state is not None  # a change has an old state, a new one, or both
    return state.name


def _check_name(name: Any, *, empty_ok: bool) -> None:
    # Checked before anything is audited: a name is written into every audit entry
    # about it, so an unbounded one would let any caller grow the log at will.
    if not isinstance(name, str):
        raise InvalidRequestError(f"secret name must be a string, not {type(name).__name__}")
    if not name:
        if empty_ok:
            return
        raise InvalidRequestError("secret name must not be empty")
    if name.isascii():
        size = len(name)
    else:
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidRequestError(
                f"secret name {_shown(name)} is not valid Unicode (it holds a lone surrogate)"
            ) from None
    if size > MAX_NAME_BYTES:
        raise InvalidRequestError(
            f"secret name {_shown(name)} is {size} bytes long; names are at most "
            f"{MAX_NAME_BYTES} bytes (UTF-8)"
        )


def _shown(name: str) -> str:
    # Enough of a name to recognise it, never a megabyte of it in a message.
    return repr(name) if len(name) <= 60 else repr(name[:60]) + "..."


def _check_version(version: Any, *, zero_ok: bool) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidRequestError(f"version must be an integer, not {type(version).__name__}")
    if not (0 if zero_ok else 1) <= version <= MAX_VERSION:
        raise InvalidRequestError(
            f"version {version} is out of range; versions are 1 to {MAX_VERSION}"
        )


def _as_bytes(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise InvalidRequestError(
        f"secret value must be bytes, not {type(value).__name__}"
        + ("; encode it first, e.g. value.encode()" if isinstance(value, str) else "")
    )
