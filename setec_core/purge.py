"""The purge job of recoverable delete (docs/api.md, "Recoverable delete"): removes for
good the secrets whose recovery window has ended.

Like the backup loop (:class:`~setec_core.backup.loop.BackupLoop`) it runs in a daemon
thread of the server and, on a store several replicas share, only on the replica that
holds its :class:`~setec_core.leases.JobLease` (``purge``): the others stand by and the
first to ask after the holder stopped renewing takes over. Even two replicas purging at
once would not purge twice: a purge is a write like any other, and the second one's
commit loses the race, catches up, and finds nothing left to do.

A round purges what is due (:meth:`Database.purge_due
<setec_core.Database.purge_due>`), each secret audited ``purge`` by the server. The
loop wakes every :data:`DEFAULT_INTERVAL` seconds, sooner when the first pending secret
is due before that, and never less than the recovery window apart, so a short window
is honoured within about its own length. A failed round is logged and tried again at
the next; it never touches serving.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from setec_core.errors import SetecError

if TYPE_CHECKING:
    from setec_core.database import Database
    from setec_core.leases import JobLease

log = logging.getLogger("setec.purge")

#: The longest the loop sleeps between rounds (seconds).
DEFAULT_INTERVAL = 60.0
#: The shortest, so that a store of secrets all due now is not polled in a tight loop.
MIN_WAIT = 0.05
#: The name of the job's lease.
LEASE = "purge"


def lease_ttl(interval: float = DEFAULT_INTERVAL) -> float:
    """How long the purge lease outlives its holder's last renewal (as the backup
    lease: two rounds and some slack)."""
    return 2 * interval + 10


class PurgeLoop:
    """Purges ``db``'s secrets whose recovery window has ended, in a daemon thread.

    :param db: the database; its :attr:`~setec_core.Database.clock` says what is due.
    :param interval: the longest wait between rounds, in seconds.
    :param lease: on a store several replicas share, the job's lease: a round runs
        only while this replica holds it (the others count :attr:`standing_by`).

    :attr:`purged` counts the secrets purged, :attr:`failures` the rounds that failed,
    and :attr:`last_error` is the last failure's one-line message (``""`` after a
    round that went well).
    """

    def __init__(
        self,
        db: Database,
        *,
        interval: float = DEFAULT_INTERVAL,
        lease: JobLease | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.db = db
        self.interval = interval
        self.lease = lease
        self.standing_by = 0
        self.purged = 0
        self.failures = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="setec-purge", daemon=True)

    def start(self) -> None:
        """Start the loop (its first round runs at once)."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop, waiting up to ``timeout`` seconds for a round in progress,
        and give up the lease so that another replica takes the job at once."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.lease is not None:
            self.lease.release()

    def wake(self) -> None:
        """Run a round now rather than at the next wake-up (tests, after moving a fake
        clock on)."""
        self._wake.set()

    def run_once(self) -> list[str]:
        """Purge what is due, if this replica holds the job; return the names purged
        (none on a failure, which is logged and counted)."""
        lease = self.lease
        if lease is not None and not lease.held():
            self.standing_by += 1
            return []
        try:
            names = self.db.purge_due()
        except SetecError as e:
            self._failed(str(e))
            return []
        except Exception as e:
            # A bug: the type only, as elsewhere (a message could quote what it handled).
            self._failed(f"{type(e).__name__} (an unexpected error; see the debug log)")
            log.debug("purge failed", exc_info=True)
            return []
        self.last_error = ""
        self.purged += len(names)
        for name in names:
            log.info("purged secret %r: its recovery window ended", name)
        return names

    def next_wait(self) -> float:
        """Seconds until the next round: the interval, or less when the first pending
        secret is due sooner or the recovery window is shorter."""
        wait = self._round_wait()
        first = self.db.next_purge()
        if first is not None:
            wait = min(wait, first - self.db.clock())
        return max(wait, MIN_WAIT)

    def _round_wait(self) -> float:
        # The interval, or the recovery window if shorter (at least a second): the wait
        # after a round that stood by or failed, when what is due could not be purged.
        window = self.db.recovery_window
        return min(self.interval, max(window, 1.0)) if window > 0 else self.interval

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        log.error("purging deleted secrets failed: %s; will try again", message)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                missed = (self.standing_by, self.failures)
                self.run_once()
                # Only a round that did its work may be followed at once by the next.
                idle = (self.standing_by, self.failures) != missed
                wait = self._round_wait() if idle else self.next_wait()
            except Exception as e:  # run_once catches what it expects: this is a bug
                log.error("the purge loop hit a bug (%s); it carries on", type(e).__name__)
                log.debug("purge loop bug", exc_info=True)
                wait = self.interval
            self._wake.wait(wait)
            self._wake.clear()
