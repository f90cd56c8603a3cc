"""The storage interface: a transactional store of opaque, encrypted records.

A backend never sees a secret name or value. Record keys are keyed hashes of names and
record data is AEAD ciphertext, both made by :mod:`setec_core.crypto`. What a backend
does see, and must keep safe, is:

* records, each a ``key -> data`` pair with a per-record ``revision``;
* a global revision counter, incremented by every commit that changes anything, and
  stamped on every record the commit writes. Deleting a record leaves a tombstone
  (``data is None``) with the new revision, so a replica can catch up with
  :meth:`StorageBackend.changes_since`;
* a small metadata area (``name -> bytes``): the wrapped data key, the schema version.

Writes are compare-and-swap: every :class:`RecordWrite` states the revision it expects
the record to have (0 for "absent or deleted"), and a :meth:`StorageBackend.commit`
applies all of its writes or none.

Metadata names are shared with the Database layer, which uses ``schema``, ``dek`` and
``kek``; a backend keeping its own bookkeeping there must use names the Database does
not (the SQLite backend hides its ``sqlite_schema`` row from :meth:`get_meta`).

Replicas (several servers over one store) use two more capabilities, each with a
default here that a backend may override with something better:

* :meth:`StorageBackend.wait_for_change` blocks until another handle may have
  committed, so a replica catches up at once instead of polling;
* leases (:meth:`StorageBackend.acquire_lease`, :class:`Lease`) let one replica at a
  time run a job, and list the replicas that are alive. Lease writes are not commits:
  they leave the revision, the records and the metadata alone.

Two helpers do the checks every :meth:`StorageBackend.commit` must make, with the
messages the built-in backends give: :func:`check_unique` (no key or metadata name
twice in one commit) and :func:`check_expected` (the compare-and-swap).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from setec_core.errors import ConflictError, StorageError
from setec_core.options import Option


@dataclass(frozen=True, slots=True)
class Record:
    """One stored record. ``data is None`` marks a tombstone (a deleted record)."""

    key: bytes
    data: bytes | None
    revision: int

    def __repr__(self) -> str:
        size = "tombstone" if self.data is None else f"{len(self.data)} bytes"
        return f"Record(key={self.key.hex()[:16]}..., {size}, revision={self.revision})"


@dataclass(frozen=True, slots=True)
class RecordWrite:
    """Set (``data`` bytes) or delete (``data is None``) the record at ``key``, provided
    its current revision is ``expect`` (0: it must be absent or a tombstone)."""

    key: bytes
    data: bytes | None
    expect: int


@dataclass(frozen=True, slots=True)
class MetaWrite:
    """Set the metadata entry ``name`` to ``value``, provided its current value is
    ``expect`` (``None``: it must not exist yet)."""

    name: str
    value: bytes
    expect: bytes | None


@dataclass(frozen=True)
class Snapshot:
    """A consistent copy of a whole store, as of :attr:`revision`: every live record
    and every metadata entry. Everything in it is as encrypted as the store itself."""

    revision: int
    meta: Mapping[str, bytes]
    records: Sequence[Record] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Lease:
    """A named lease, held by ``holder`` until it expires or is released.

    :ivar name: the lease's name (``"backup"``, ``"replica/HOST:PORT"``).
    :ivar holder: who holds it: any string that tells the contenders apart.
    :ivar fence: a number that grows whenever the lease is taken anew (by another
        holder, or by the same one after it expired or was released) and never goes
        back, so a job that wrote its fence down can tell that it was superseded.
    :ivar expires: the seconds it had left when the call that returned it read it (a
        duration rather than a time of day, because the store's clock decides expiry:
        PostgreSQL's, not the replicas').
    """

    name: str
    holder: str
    fence: int
    expires: float


#: How often the default :meth:`StorageBackend.wait_for_change` reads the revision.
POLL_SECONDS = 0.05


class StorageBackend(ABC):
    """A transactional store of opaque records, selected by URI scheme.

    Subclasses set :attr:`name` (kebab-case, e.g. ``"sqlite"``) and :attr:`schemes`
    (e.g. ``("sqlite",)``) and implement every abstract method. Implementations must
    be safe to call from many threads at once. A commit is durable when it returns:
    a crash at any instant leaves the store as it was before the commit or after it.

    Run :class:`setec_core.testing.StorageBackendContract` against a new backend.
    """

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    #: The ``setec-serve`` options this backend takes (docs/plugins.md, "Plugin
    #: options"). A backend that declares any is opened as ``from_uri(uri,
    #: options=VALUES)``, ``VALUES`` holding each option's value by its ``dest``.
    options: ClassVar[Sequence[Option]] = ()

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str) -> StorageBackend:
        """Open (creating if needed) the store named by ``uri``. A backend that
        declares :attr:`options` takes them as a keyword argument too.

        :raises ConfigError: if the URI is malformed or the location is unusable
            (for example, its directory cannot be created).
        :raises CorruptStoreError: if the location holds something that is not a
            readable store of this kind (a corrupt or truncated file).
        """

    @property
    @abstractmethod
    def uri(self) -> str:
        """The URI this store was opened with (no credentials in it)."""

    @abstractmethod
    def read_all(self) -> Iterator[Record]:
        """Yield every live record (no tombstones), in no particular order. The read
        happens when this is called (errors are raised here, not while iterating).
        For a cold start that must be consistent with :meth:`revision` while other
        processes write, use :meth:`export`.

        :raises StorageError: if the store cannot be read.
        """

    @abstractmethod
    def read(self, key: bytes) -> Record | None:
        """Return the live record at ``key``, or ``None`` if it is absent or deleted.

        :raises StorageError: if the store cannot be read.
        """

    @abstractmethod
    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        """Apply ``writes`` and ``meta`` atomically and durably; return the new global
        revision, which every written record now carries. An empty commit changes
        nothing and returns the current revision.

        :raises ConflictError: if any write's ``expect`` does not match; nothing is
            changed.
        :raises StorageError: if the commit fails, or names one key or metadata entry
            twice; nothing is changed.
        """

    @abstractmethod
    def get_meta(self, name: str) -> bytes | None:
        """Return the metadata entry ``name``, or ``None`` if it was never set.

        :raises StorageError: if the store cannot be read.
        """

    @abstractmethod
    def revision(self) -> int:
        """Return the global revision: 0 for a new store, then one more per commit.

        :raises StorageError: if the store cannot be read.
        """

    @abstractmethod
    def changes_since(self, revision: int) -> Iterator[Record]:
        """Yield every record, tombstones included, whose revision is greater than
        ``revision``, in increasing revision order (ties by key). Read when called.

        :raises StorageError: if the store cannot be read.
        """

    @abstractmethod
    def export(self) -> Snapshot:
        """Return a consistent snapshot of the whole store (for backups).

        :raises StorageError: if the store cannot be read.
        """

    def compact(self) -> None:  # noqa: B027 - optional hook, most backends hold nothing
        """Rewrite the store so that no freed record survives in it (SQLite: ``VACUUM``).
        Called after ``rotate-dek``, whose old records must not stay readable with the
        old data key. The default does nothing.

        :raises StorageError: if compaction fails; the store is unchanged.
        """

    # --- replicas ----------------------------------------------------------------

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        """Block until the global revision may differ from ``revision`` (another handle
        or process committed), or ``timeout`` seconds pass.

        True is a hint, not the truth: read :meth:`revision` and :meth:`changes_since`
        next. A backend should return within 0.1 s of another's commit, and raise
        :class:`StorageError` within a second of :meth:`close` from another thread.
        The default reads :meth:`revision` every :data:`POLL_SECONDS`; backends with
        a way to be told of commits override it.

        :param revision: the revision the caller has caught up to.
        :param timeout: the most seconds to wait (0: only look).
        :returns: True if the revision differs, or a change was signalled; False if
            ``timeout`` passed without one.
        :raises StorageUnavailable: if the store cannot be reached.
        :raises StorageError: if the store is closed, or cannot be read.
        """
        deadline = time.monotonic() + timeout
        while self.revision() == revision:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(POLL_SECONDS, remaining))
        return True

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``holder`` for ``ttl`` seconds, if it is free,
        expired or released, or renew it if ``holder`` holds it already. One atomic step
        across every handle on the store; it changes no revision, record or metadata.

        The default keeps leases in this handle, which is right only for a store no
        other handle can open (``memory://``); a shared store overrides it.

        :param name: the lease.
        :param holder: who takes it.
        :param ttl: how many seconds it lasts from now, unless renewed (more than 0).
        :returns: the lease as ``holder`` now holds it (its :attr:`Lease.fence`
            unchanged by a renewal), or ``None`` if another holder has it.
        :raises ValueError: if ``ttl`` is not more than 0.
        :raises StorageError: if the store cannot be read or written.
        """
        return _local_leases(self).acquire(name, holder, ttl)

    def release_lease(self, name: str, holder: str) -> None:
        """Give up the lease ``name`` if ``holder`` holds it (else do nothing), so that
        another holder may take it at once. Its fence is kept: the next holder's is
        higher.

        :raises StorageError: if the store cannot be written.
        """
        _local_leases(self).release(name, holder)

    def leases(self, prefix: str = "") -> list[Lease]:
        """Return the unexpired leases whose names start with ``prefix``, by name.

        :raises StorageError: if the store cannot be read.
        """
        return _local_leases(self).live(prefix)

    @abstractmethod
    def close(self) -> None:
        """Release the store. Later calls raise :class:`StorageError`, and so does a
        :meth:`wait_for_change` blocked in another thread. Calling it twice is
        harmless."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- helpers for backends --------------------------------------------------------------


class LocalLeases:
    """Leases kept in this process, under a lock, timed by :func:`time.monotonic`: the
    default behind :meth:`StorageBackend.acquire_lease` and its siblings, for a store
    that no other process can open."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> (holder, fence, monotonic expiry); a released lease keeps its fence.
        self._leases: dict[str, tuple[str, int, float]] = {}

    def acquire(self, name: str, holder: str, ttl: float) -> Lease | None:
        """:meth:`StorageBackend.acquire_lease`, in this process."""
        check_ttl(ttl)
        with self._lock:
            now = time.monotonic()
            held_by, fence, expires = self._leases.get(name, ("", 0, float("-inf")))
            if expires > now and held_by != holder:
                return None
            if expires <= now:
                fence += 1
            self._leases[name] = (holder, fence, now + ttl)
            return Lease(name, holder, fence, ttl)

    def release(self, name: str, holder: str) -> None:
        """:meth:`StorageBackend.release_lease`, in this process."""
        with self._lock:
            current = self._leases.get(name)
            if current is not None and current[0] == holder:
                self._leases[name] = (holder, current[1], float("-inf"))

    def live(self, prefix: str = "") -> list[Lease]:
        """:meth:`StorageBackend.leases`, in this process."""
        with self._lock:
            now = time.monotonic()
            return [
                Lease(name, holder, fence, expires - now)
                for name, (holder, fence, expires) in sorted(self._leases.items())
                if name.startswith(prefix) and expires > now
            ]


_LOCAL_LEASES_LOCK = threading.Lock()


def _local_leases(store: StorageBackend) -> LocalLeases:
    # Made on first use, so that backends need not call a base __init__.
    with _LOCAL_LEASES_LOCK:
        leases: LocalLeases | None = store.__dict__.get("_local_leases")
        if leases is None:
            leases = store.__dict__["_local_leases"] = LocalLeases()
        return leases


def check_ttl(ttl: float) -> None:
    """Refuse a lease time that is not a positive number of seconds.

    :raises ValueError: if ``ttl`` is not more than 0 (or is not a number).
    """
    if not ttl > 0:
        raise ValueError(f"a lease lasts more than 0 seconds, not {ttl!r}")


def check_unique(writes: Sequence[RecordWrite], meta: Sequence[MetaWrite]) -> None:
    """Refuse a commit that writes one record key, or one metadata name, twice.

    Call it first thing in :meth:`StorageBackend.commit`, before taking a lock or
    starting a transaction: it needs nothing from the store.

    :param writes: the commit's record writes.
    :param meta: the commit's metadata writes.
    :raises StorageError: naming the first key (by the start of its hex) or name that
        appears twice; the caller must then change nothing.
    """
    keys: set[bytes] = set()
    for w in writes:
        if w.key in keys:
            raise StorageError(
                f"a commit may write each record once, but {w.key.hex()[:16]}... is written twice"
            )
        keys.add(w.key)
    names: set[str] = set()
    for m in meta:
        if m.name in names:
            raise StorageError(
                f"a commit may write each meta entry once, but {m.name!r} is written twice"
            )
        names.add(m.name)


def check_expected(
    writes: Sequence[RecordWrite],
    meta: Sequence[MetaWrite],
    *,
    revision_of: Callable[[bytes], int],
    meta_of: Callable[[str], bytes | None],
) -> None:
    """The compare-and-swap of a commit: check that every record and metadata entry
    the commit writes is still as its writer expects, before anything is written.

    Call it inside the commit, where no other commit can interleave (under the lock or
    in the transaction that then applies the writes), so that nothing changes between
    the check and the write.

    :param writes: the commit's record writes; each ``expect`` is compared with
        ``revision_of(key)``.
    :param meta: the commit's metadata writes; each ``expect`` is compared with
        ``meta_of(name)``.
    :param revision_of: return the revision of the live record at a key, and 0 if
        there is none or it is a tombstone (``expect=0`` means "absent or deleted").
    :param meta_of: return the current value of a metadata entry, or ``None`` if it was
        never set.
    :raises ConflictError: at the first mismatch; the message names the record (by the
        start of its key's hex) or the metadata name, never a value. The caller must
        then change nothing.
    """
    for w in writes:
        have = revision_of(w.key)
        if have != w.expect:
            raise ConflictError(
                f"record {w.key.hex()[:16]}... was changed by another writer: "
                f"expected revision {w.expect}, found {have}"
            )
    for m in meta:
        have_meta = meta_of(m.name)
        if have_meta != m.expect:
            state = "absent" if have_meta is None else "a different value"
            raise ConflictError(
                f"meta entry {m.name!r} was changed by another writer: found {state}"
            )
