"""Jobs that must run on one replica at a time, and which replicas are alive: leases in
the store (:meth:`StorageBackend.acquire_lease
<setec_core.storage.StorageBackend.acquire_lease>`).

Several server processes over one store (docs/replicas.md) must not all take backups or
prune old ones. Each holds a :class:`JobLease` for such a job: the one that holds it runs
the job, renewing it every round; the others stand by, and the first to ask after the
holder stopped renewing (it died, or lost the store) takes over, within the lease's
``ttl``. The lease's fence grows at every change of holder, so a holder checks it did
not lose the lease in the middle of a round before acting on what it did then.

Each server also holds a lease named ``replica/NAME`` while it runs (:data:`PRESENCE`),
so that admin commands can tell whether replicas are running on a store.
"""

from __future__ import annotations

import logging
import secrets
import time

from setec_core.errors import SetecError
from setec_core.storage import Lease, StorageBackend

log = logging.getLogger("setec.database")

#: The prefix of the lease each running server holds (``replica/NAME``).
PRESENCE = "replica/"
#: How long a running server's presence lasts without renewal (seconds).
PRESENCE_TTL = 15.0
#: How often a running server renews its presence (seconds).
RENEWAL = PRESENCE_TTL / 3


class JobLease:
    """``holder``'s claim on the lease ``name`` in ``storage``, lasting ``ttl`` seconds
    from each :meth:`held` that renewed it.

    :param storage: the shared store the lease is kept in.
    :param name: the job's lease (``backup``).
    :param holder: this replica's name.
    :param ttl: seconds the lease outlives its last renewal: how long the others wait
        for a holder that stopped.
    :param announce: log when the job comes to this replica or leaves it (a job's
        lease); a presence lease is taken by its own replica only, and says nothing.
    """

    def __init__(
        self, storage: StorageBackend, name: str, holder: str, ttl: float, *, announce: bool = True
    ) -> None:
        self.storage = storage
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.announce = announce
        #: The lease as last taken or renewed, or ``None`` while another holds it.
        self.lease: Lease | None = None

    def held(self) -> bool:
        """Take or renew the lease; return whether this replica holds it now. A store
        that cannot be reached counts as not held (the job waits for the next round).
        Changes of holder are logged."""
        try:
            lease = self.storage.acquire_lease(self.name, self.holder, self.ttl)
        except SetecError as e:
            log.warning("cannot renew the %s lease: %s", self.name, e)
            lease = None
        was = self.lease
        self.lease = lease
        if self.announce:
            if lease is not None and (was is None or was.fence != lease.fence):
                log.info("this replica (%s) now runs the %s job", self.holder, self.name)
            elif lease is None and was is not None:
                log.info("the %s job moved to another replica", self.name)
        return lease is not None

    def still_held(self, fence: int) -> bool:
        """Renew the lease and return whether it is still the one with ``fence``: no
        other replica took it meanwhile (call it before acting on a round's result)."""
        return self.held() and self.lease is not None and self.lease.fence == fence

    def release(self) -> None:
        """Give the lease up (at a clean stop), so another replica takes it at once.
        Best effort: a failure is logged."""
        if self.lease is None:
            return
        self.lease = None
        try:
            self.storage.release_lease(self.name, self.holder)
        except SetecError as e:
            log.warning("could not release the %s lease: %s", self.name, e)


def presence_holder(replica: str) -> str:
    """The holder of a running server's presence lease: its replica name and a random
    instance, so that a second server under the same name (a cloned disk, a copied
    replica file) cannot renew the first one's lease and is refused instead."""
    return f"{replica} {secrets.token_hex(4)}"


def take_presence(storage: StorageBackend, replica: str) -> JobLease | None:
    """Take the presence lease of ``replica`` for a server starting under that name,
    and return it; ``None`` if another server runs under the name now.

    The lease of a server that stopped cleanly was released. One that died (``kill -9``,
    a crash, a worker being replaced) has stopped renewing: a start watches the lease
    for a renewal period and, if it was not renewed, takes it over, so a restart after
    a crash waits a few seconds, not the lease's whole ttl. A lease that is renewed
    meanwhile belongs to a live server.

    :raises StorageError: if the store cannot be read or written.
    """
    lease = JobLease(
        storage, PRESENCE + replica, presence_holder(replica), PRESENCE_TTL, announce=False
    )
    if lease.held():
        return lease
    name = lease.name
    seen = {held.holder: held.expires for held in storage.leases(name) if held.name == name}
    started = time.monotonic()
    while time.monotonic() - started < RENEWAL + 1.5:
        time.sleep(0.25)
        elapsed = time.monotonic() - started
        now = {held.holder: held.expires for held in storage.leases(name) if held.name == name}
        for other, left in now.items():
            if other not in seen or left > seen[other] - elapsed + 1.0:
                return None  # taken or renewed since: a live server
        if not now:
            break  # it expired meanwhile
    for other in seen:
        # Not renewed for longer than a live server lets pass: its server is gone.
        log.warning(
            "replica %s: taking over the presence of an instance that stopped renewing it", replica
        )
        storage.release_lease(name, other)
    return lease if lease.held() else None


def live_replicas(storage: StorageBackend) -> list[str]:
    """The names of the servers running on ``storage`` now (whose presence leases are
    unexpired).

    :raises StorageError: if the store cannot be read.
    """
    return [lease.holder.split(" ", 1)[0] for lease in storage.leases(PRESENCE)]
