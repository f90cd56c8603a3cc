"""When each secret was last accessed: kept in memory on every access, persisted lazily
(docs/api.md §9.5).

A get must not cost a write, so an access only stores the time in a dict
(:attr:`AccessTimes.seen`, one store a get). Now and then (:data:`FLUSH_SECONDS`, while
a server follows its store, and at close) :meth:`AccessTimes.flush` merges those times
into the store's ``last-access`` metadata entry in one commit: read the entry, keep the
later of its time and this process's for each secret, write it back with a
compare-and-swap on what was read, and go again if another process wrote it meanwhile.
So several server processes over one store (replicas, ``--workers``) each add what
they saw, and none loses another's; each also reads the others' times at its own flush.

The entry is one JSON object, ``{name: nanoseconds since the epoch}``, sealed under the
data key as the audit key is (:meth:`~setec_core.crypto.DataKey.seal_meta`): access
times say who uses which secret when, which the store's operator need not learn, and the
names in it are secret names. It is not part of the integrity entry (a store's operator
could roll it back or delete it, never forge it), and a restore brings back the times
the backup held. Secrets no longer in the store are dropped from it at each flush.

A flush is a commit of metadata only: it moves the store's revision (so a backup is
taken after it, at most once per flush) but no record, so it never conflicts with a
write of a secret.
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from collections.abc import Callable, Mapping

from setec_core.crypto import DataKey
from setec_core.errors import ConflictError, CorruptStoreError, SetecError
from setec_core.storage import MetaWrite, StorageBackend

log = logging.getLogger("setec.database")

#: The metadata entry holding every secret's last access, sealed under the data key.
LAST_ACCESS_META = "last-access"
#: Seconds between flushes while a server follows its store: how much a crash may lose
#: (a later restart shows an earlier last access, never a later one), and how long
#: another process may take to show an access this one served.
FLUSH_SECONDS = 300.0
#: How often a flush that lost the entry's compare-and-swap to another process's flush
#: reads it again and retries, before it gives up until the next one.
FLUSH_ATTEMPTS = 5

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def as_datetime(ns: int) -> datetime.datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (to the microsecond, the
    finest a datetime holds)."""
    return _EPOCH + datetime.timedelta(microseconds=ns // 1000)


class AccessTimes:
    """The last access of each secret of one open store (see the module's docstring).

    :param storage: the store whose ``last-access`` entry this keeps.
    :param dek: its data key, which seals the entry.
    """

    def __init__(self, storage: StorageBackend, dek: DataKey) -> None:
        self._storage = storage
        self._dek = dek
        #: name -> nanoseconds since the epoch of this process's latest access to it.
        #: The Database stores into it on every access (a dict store is atomic, and
        #: nothing else in the hot path is needed); :meth:`flush` only reads it.
        self.seen: dict[str, int] = {}
        # The entry as last read or written (merged with ours), and its bytes for the
        # compare-and-swap. Replaced whole, never changed in place: readers take no lock.
        self._stored: Mapping[str, int] = {}
        self._blob: bytes | None = None
        self._flush_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        #: Why the last flush failed, or ``""``.
        self.failure = ""
        #: How many flushes wrote the entry.
        self.flushes = 0

    def __repr__(self) -> str:
        return f"AccessTimes(seen={len(self.seen)}, stored={len(self._stored)})"

    # --- reading ---------------------------------------------------------------------

    def load(self, meta: Mapping[str, bytes]) -> None:
        """Take the stored times from the store's metadata as read at open. An entry
        that does not open under this data key (a store re-encrypted by an older
        ``rotate-dek``, or tampered with) is logged and treated as empty; the next
        flush replaces it."""
        blob = meta.get(LAST_ACCESS_META)
        self._stored, self._blob = self._decode(blob), blob

    def last(self, name: str) -> datetime.datetime | None:
        """When ``name`` was last accessed, as far as this process knows (its own
        accesses, and what every process had flushed when it last read the entry), or
        ``None`` if never."""
        ns = max(self.seen.get(name, 0), self._stored.get(name, 0))
        return as_datetime(ns) if ns else None

    def _decode(self, blob: bytes | None) -> Mapping[str, int]:
        if blob is None:
            return {}
        try:
            doc = json.loads(self._dek.open_meta(LAST_ACCESS_META, blob))
            if type(doc) is not dict or not all(type(t) is int for t in doc.values()):
                raise CorruptStoreError("not an object of times")
        except (CorruptStoreError, ValueError) as e:
            log.warning(
                "the %r entry of %s is unreadable (%s); last-access times start afresh",
                LAST_ACCESS_META,
                self._storage.uri,
                type(e).__name__,
            )
            return {}
        return doc

    # --- writing ---------------------------------------------------------------------

    def flush(self, live: Callable[[str], bool]) -> bool:
        """Merge this process's access times into the store's entry (the later time of
        each secret wins), dropping secrets for which ``live`` is false, and read what
        other processes flushed. One read of the entry, and one commit when it changes.

        :param live: whether a secret of that name exists (the Database's index).
        :returns: whether the entry was written.
        :raises SetecError: if the store cannot be read or written
            (:class:`~setec_core.errors.StorageUnavailable` while unreachable), or other
            processes kept writing the entry (:class:`ConflictError`); this process's
            times are kept for the next flush.
        """
        with self._flush_lock:
            observed = self.seen.copy()
            storage = self._storage
            for _ in range(FLUSH_ATTEMPTS):
                blob = storage.get_meta(LAST_ACCESS_META)
                stored = self._stored if blob == self._blob else self._decode(blob)
                merged = {name: ns for name, ns in stored.items() if live(name)}
                for name, ns in observed.items():
                    if ns > merged.get(name, 0) and live(name):
                        merged[name] = ns
                if merged == stored:  # nothing new, from us or for the store
                    self._stored, self._blob = stored, blob
                    self._forget_gone(observed, live)
                    return False
                plain = json.dumps(merged, separators=(",", ":"), ensure_ascii=False)
                sealed = self._dek.seal_meta(LAST_ACCESS_META, plain.encode("utf-8"))
                try:
                    storage.commit(meta=[MetaWrite(LAST_ACCESS_META, sealed, blob)])
                except ConflictError:
                    continue  # another process flushed first: merge with its times
                self._stored, self._blob = merged, sealed
                self.flushes += 1
                self._forget_gone(observed, live)
                return True
        raise ConflictError(
            f"the {LAST_ACCESS_META!r} entry of {storage.uri} kept changing under this "
            "flush; the next one tries again"
        )

    def _forget_gone(self, observed: Mapping[str, int], live: Callable[[str], bool]) -> None:
        # Deleted secrets need not be remembered; an access since the copy was taken
        # (a secret made again under the name) is kept.
        seen = self.seen
        for name, ns in observed.items():
            if not live(name) and seen.get(name) == ns:
                seen.pop(name, None)

    def flush_quietly(self, live: Callable[[str], bool]) -> None:
        """:meth:`flush` if anything was accessed, logging a failure instead of raising
        it (at close: a store that cannot take the times loses them, nothing else)."""
        if not self.seen:
            return
        try:
            self.flush(live)
        except Exception as e:  # a backend's own error too: close must go on past it
            # The type only for anything but ours, as elsewhere: a driver's message
            # could quote what it was handed.
            text = str(e) if isinstance(e, SetecError) else type(e).__name__
            log.warning("could not record last-access times in %s: %s", self._storage.uri, text)

    # --- the background flush --------------------------------------------------------

    def start(self, live: Callable[[str], bool], interval: float = FLUSH_SECONDS) -> None:
        """Flush every ``interval`` seconds in a background thread, until :meth:`stop`
        (once; later calls do nothing)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, args=(live, interval), name="setec-last-access", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the background thread and wait for a flush in progress. Harmless twice."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(30)

    def _run(self, live: Callable[[str], bool], interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                self.flush(live)
            except Exception as e:  # the thread must outlive any one failure
                text = str(e) if isinstance(e, SetecError) else type(e).__name__
                if text != self.failure:
                    log.warning(
                        "could not record last-access times in %s: %s; trying again in %g s",
                        self._storage.uri,
                        text,
                        interval,
                    )
                self.failure = text
                continue
            self.failure = ""


def resealed(meta: Mapping[str, bytes], old: DataKey, new: DataKey) -> list[MetaWrite]:
    """The metadata write that moves the ``last-access`` entry from data key ``old`` to
    ``new`` (for ``rotate-dek``, in its commit); none if there is no entry, or it does
    not open under ``old`` (the server then starts the times afresh)."""
    blob = meta.get(LAST_ACCESS_META)
    if blob is None:
        return []
    try:
        plain = old.open_meta(LAST_ACCESS_META, blob)
    except CorruptStoreError:
        return []
    return [MetaWrite(LAST_ACCESS_META, new.seal_meta(LAST_ACCESS_META, plain), blob)]
