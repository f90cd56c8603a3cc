"""The ``memory`` storage backend: a store that lives and dies with its process.

Select it with ``--storage memory://`` (anything after ``://`` is a label for your own
use and is ignored). Every :meth:`MemoryStorage.from_uri` call makes a new, empty store,
even with the same label. Use it for tests and throwaway development servers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from setec_core.errors import ConfigError, ConflictError, StorageError
from setec_core.hookspecs import hookimpl
from setec_core.storage import MetaWrite, Record, RecordWrite, Snapshot, StorageBackend
from setec_core.uris import redact


class MemoryStorage(StorageBackend):
    """A store held in a dict, guarded by one lock. Nothing is ever written to disk.

    :param label: an optional name, shown by :meth:`__repr__` and :attr:`uri`.
    """

    name = "memory"
    schemes = ("memory",)

    def __init__(self, label: str = "") -> None:
        self._label = label
        self._lock = threading.Lock()
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
        _check_unique(writes, meta)
        with self._lock:
            self._check_open()
            if not writes and not meta:
                return self._revision
            for w in writes:
                current = self._records.get(w.key)
                have = 0 if current is None or current.data is None else current.revision
                if have != w.expect:
                    raise ConflictError(
                        f"record {w.key.hex()[:16]}... was changed by another writer: "
                        f"expected revision {w.expect}, found {have}"
                    )
            for m in meta:
                have_meta = self._meta.get(m.name)
                if have_meta != m.expect:
                    state = "absent" if have_meta is None else "a different value"
                    raise ConflictError(
                        f"meta entry {m.name!r} was changed by another writer: found {state}"
                    )
            new = self._revision + 1
            for w in writes:
                self._records[w.key] = Record(w.key, w.data, new)
            for m in meta:
                self._meta[m.name] = m.value
            self._revision = new
            return new

    def close(self) -> None:
        """Drop the store's contents. Calling it twice is harmless."""
        with self._lock:
            self._closed = True
            self._records.clear()
            self._meta.clear()


def _check_unique(writes: Sequence[RecordWrite], meta: Sequence[MetaWrite]) -> None:
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


@hookimpl
def setec_register_storage_backends(register: Callable[[type[Any]], None]) -> None:
    """Register :class:`MemoryStorage` (``memory://``)."""
    register(MemoryStorage)
