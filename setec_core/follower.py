"""Following a store that other processes write: a background thread that keeps one
:class:`~setec_core.Database`'s in-memory index caught up with their commits.

Several server processes over one store (replicas over PostgreSQL, or ``--workers`` over
one SQLite file) each serve reads from memory. A :class:`Follower` waits for the store
to signal a change (:meth:`StorageBackend.wait_for_change
<setec_core.storage.StorageBackend.wait_for_change>`: PostgreSQL's ``NOTIFY``, SQLite's
``data_version``), then has the Database read what changed
(:meth:`Database.refresh <setec_core.Database.refresh>`). The signal is only a hint:
what is read is the store's revision and ``changes_since``, and the wait times out every
``interval`` seconds, so a lost signal delays a change by at most that much.

When the store cannot be reached the follower keeps trying, with a growing pause, and
says so (:attr:`Follower.failure`, :attr:`Follower.stale_seconds`): the server keeps
serving reads from memory, and ``/healthz`` reports it as degraded (docs/replicas.md).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from setec_core.errors import CorruptStoreError, SetecError
from setec_core.leases import RENEWAL

if TYPE_CHECKING:
    from setec_core.database import Database
    from setec_core.leases import JobLease

log = logging.getLogger("setec.database")

#: Seconds between checks of the store's revision when no change is signalled.
FOLLOW_INTERVAL = 0.5
#: The longest pause between attempts while the store cannot be reached.
MAX_PAUSE = 5.0


class Follower:
    """Keeps ``db`` caught up with other processes' commits until :meth:`stop`.

    :param db: the Database to keep up to date.
    :param interval: the longest wait for a change signal before the revision is read
        anyway (seconds).
    :param presence: the lease saying this server runs (:data:`setec_core.leases.PRESENCE`),
        renewed every third of its ttl and released at :meth:`stop`.
    """

    def __init__(
        self, db: Database, *, interval: float = FOLLOW_INTERVAL, presence: JobLease | None = None
    ) -> None:
        self._db = db
        self.interval = interval
        self.presence = presence
        self._renewed = -float("inf")
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_ok = time.monotonic()
        #: Why the last attempt to read the store failed, or ``""`` while it succeeds.
        self.failure = ""
        #: Whether that failure is one waiting cannot mend: what the store holds no
        #: longer agrees with this server (re-encrypted by ``rotate-dek``, tampered
        #: with). The server must be restarted; ``/healthz`` says it is unhealthy.
        self.fatal = False
        #: How many times the Database read other processes' commits.
        self.catch_ups = 0

    def start(self) -> None:
        """Start the background thread (once)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="setec-follower", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the thread and wait for it (at most a few seconds). Harmless twice."""
        self._stopping.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(self.interval + 5)
        if self.presence is not None:
            self.presence.release()

    @property
    def stale_seconds(self) -> float:
        """Seconds since the store was last read successfully: how far behind other
        processes' writes the Database may be. Near 0 (at most about ``interval``) while
        the store is reachable."""
        return time.monotonic() - self._last_ok

    def _run(self) -> None:
        db = self._db
        pause = 0.1
        while not self._stopping.is_set():
            try:
                self._renew()
                db.storage.wait_for_change(db.synced_revision, self.interval)
                if self._stopping.is_set():
                    return
                if db.refresh():
                    self.catch_ups += 1
            except Exception as e:  # the thread must outlive any one failure
                self._failed(e)
                self._stopping.wait(pause)
                pause = min(pause * 2, MAX_PAUSE)
                continue
            pause = 0.1
            self._last_ok = time.monotonic()
            if self.failure:
                log.warning("the store %s is reachable again; caught up", db.storage.uri)
                self.failure = ""
                self.fatal = False

    def _renew(self) -> None:
        if self._stopping.is_set():
            return  # never take the presence back after stop() released it
        presence = self.presence
        due = presence is not None and time.monotonic() - self._renewed >= RENEWAL
        if due and presence is not None and presence.held():
            self._renewed = time.monotonic()

    def _failed(self, error: Exception) -> None:
        if self._stopping.is_set():
            return
        text = str(error) if isinstance(error, SetecError) else f"{type(error).__name__}: {error}"
        if text != self.failure:
            # Once per distinct failure, not once per attempt.
            log.error(
                "cannot catch up with the store %s: %s; serving reads from memory, "
                "writes fail until it is back",
                self._db.storage.uri,
                text,
            )
        self.failure = text
        self.fatal = isinstance(error, CorruptStoreError)
