"""The ``memory`` storage backend: a store that lives and dies with its process.

Select it with ``--storage memory://`` (anything after ``://`` is a label for your own
use and is ignored). Every :meth:`MemoryStorage.from_uri` call makes a new, empty store,
even with the same label. Use it for tests and throwaway development servers;
:func:`setec_core.testing.new_database` does.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from setec_core.errors import ConfigError, StorageError
from setec_core.storage import (
    MetaWrite,
    Record,
    RecordWrite,
    Snapshot,
    StorageBackend,
    check_expected,
    check_unique,
)
from setec_core.uris import redact


class MemoryStorage(StorageBackend):
    """A store held in a dict, guarded by one lock. Nothing is ever written to disk.
    Its leases are the default ones, in this process (no other can open the store).

    :param label: an optional name, shown by :meth:`__repr__` and :attr:`uri`.
    """

    name = "memory"
    schemes = ("memory",)

    def __init__(self, label: str = "") -> None:
        self._label = label
        self._lock = threading.Lock()
        # Signalled by every commit and by close(), for wait_for_change.
        self._changed = threading.Condition(self._lock)
        self._records: dict[bytes, Record] = {}
        self._meta: dict[str, bytes] = {}
        self._revision = 0
        self._closed = False

    @classmethod
    def from_uri(cls, uri: str) -> MemoryStorage:
        """Make a new, empty store for ``memory://`` or ``memory://LABEL``.

        :raises ConfigError: if ``uri`` is not of that form.
        """
        scheme, sep, label = uri.partition("://")
        if scheme.lower() != "memory" or not sep:
            raise ConfigError(
                f"storage URI {redact(uri)!r} is not a memory URI; expected memory:// or memory://LABEL"
            )
        return cls(label)

    def __repr__(self) -> str:
        return f"MemoryStorage({self._label!r})"

    @property
    def uri(self) -> str:
        """``memory://`` followed by the label."""
        return "memory://" + self._label

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"memory store {self._label!r} is closed")

    def read_all(self) -> Iterator[Record]:
        """Return an iterator over every live record (no tombstones), copied at once.

        :raises StorageError: if the store is closed.
        """
        with self._lock:
            self._check_open()
            return iter([r for r in self._records.values() if r.data is not None])

    def read(self, key: bytes) -> Record | None:
        """Return the live record at ``key``, or ``None`` if it is absent or deleted.

        :raises StorageError: if the store is closed.
        """
        with self._lock:
            self._check_open()
            record = self._records.get(key)
        return record if record is not None and record.data is not None else None

    def get_meta(self, name: str) -> bytes | None:
        """Return the metadata entry ``name``, or ``None`` if it was never set.

        :raises StorageError: if the store is closed.
        """
        with self._lock:
            self._check_open()
            return self._meta.get(name)

    def revision(self) -> int:
        """Return the global revision: 0 for a new store, then one more per commit.

        :raises StorageError: if the store is closed.
        """
        with self._lock:
            self._check_open()
            return self._revision

    def changes_since(self, revision: int) -> Iterator[Record]:
        """Return an iterator over every record, tombstones included, whose revision is
        greater than ``revision``, in increasing revision order (then by key).

        :raises StorageError: if the store is closed.
        """
        with self._lock:
            self._check_open()
            changed = [r for r in self._records.values() if r.revision > revision]
        changed.sort(key=lambda r: (r.revision, r.key))
        return iter(changed)

    def export(self) -> Snapshot:
        """Return a consistent copy of the whole store.

        :raises StorageError: if the store is closed.
        """
        with self._lock:
            self._check_open()
            return Snapshot(
                revision=self._revision,
                meta=dict(self._meta),
                records=[r for r in self._records.values() if r.data is not None],
            )

    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        """Check every ``expect``, then apply ``writes`` and ``meta`` together; return
        the new global revision, which every written record carries.

        A commit with no writes and no meta changes nothing and returns the current
        revision. Deleting an absent record with ``expect=0`` writes a tombstone.

        :raises ConflictError: if any ``expect`` does not match; nothing is changed.
        :raises StorageError: if a key or meta name appears twice or the store is
            closed; nothing is changed.
        """
        check_unique(writes, meta)
        with self._lock:
            self._check_open()
            if not writes and not meta:
                return self._revision
            check_expected(writes, meta, revision_of=self._live_revision, meta_of=self._meta.get)
            new = self._revision + 1
            for w in writes:
                self._records[w.key] = Record(w.key, w.data, new)
            for m in meta:
                self._meta[m.name] = m.value
            self._revision = new
            self._changed.notify_all()
            return new

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        """Block until a commit moves the revision away from ``revision``, or
        ``timeout`` seconds pass; woken by the commit itself.

        :returns: True if the revision differs, False on timeout.
        :raises StorageError: if the store is closed, before or while waiting.
        """
        with self._changed:
            self._changed.wait_for(
                lambda: self._closed or self._revision != revision, max(timeout, 0.0)
            )
            self._check_open()
            return self._revision != revision

    def _live_revision(self, key: bytes) -> int:
        # Called with the lock held.
        record = self._records.get(key)
        return 0 if record is None or record.data is None else record.revision

    def close(self) -> None:
        """Drop the store's contents. Calling it twice is harmless."""
        with self._lock:
            self._closed = True
            self._records.clear()
            self._meta.clear()
            self._changed.notify_all()
