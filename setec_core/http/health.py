"""The health pages: ``/healthz`` (Go setec's), and ``/readyz`` and ``/livez`` (the names
Kubernetes' probes use), decided from one :class:`Health` reading of the database.

Each page tells a supervisor something different:

* ``/healthz`` is Go's page, unchanged: ``ok``, ``degraded: ...`` (200) or
  ``unhealthy: ...`` (503).
* ``/livez`` asks "would a restart help?": 503 only in the states a restart mends (the
  audit log refused a write, or the store no longer agrees with this server), else
  ``ok``. A store outage is not one of them: a restarted server cannot open a store
  that is down, so it would stop serving the reads it still serves from memory.
* ``/readyz`` asks "should requests be sent here?": it answers as ``/healthz`` does. A
  degraded server is ready: it serves reads from memory and answers writes with a 503
  the client may retry, and when the store is down for every replica, taking them all
  out of rotation would turn an outage of writes into an outage of everything.

Their answers carry the header ``Setec-Version`` (only theirs: the API's answers stay
as lean as Go's).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata

from setec_core.database import Database
from setec_core.http.route import TEXT, Answer, error_answer

#: The header naming the server's version on the health pages' answers.
VERSION_HEADER = "Setec-Version"
#: Why a server whose store no longer agrees with it is unhealthy; the store's name and
#: the details are in the server's log.
STORE_DISAGREES = (
    "the store no longer agrees with this server; restart it (the server log says why)"
)


def server_version() -> str:
    """The version of the installed ``pysetec`` distribution, or ``unknown`` when the
    code runs without being installed (from a bare checkout on ``PYTHONPATH``)."""
    try:
        return metadata.version("pysetec")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True, slots=True)
class Health:
    """What the server can do now, as its health pages report it.

    :param unhealthy: why the server refuses every request until it is restarted, or
        ``""``.
    :param degraded: why writes fail while reads are served from memory, or ``""``.
    """

    unhealthy: str = ""
    degraded: str = ""

    @classmethod
    def of(cls, db: Database) -> Health:
        """Read the health of ``db``: its audit log, and the follower that keeps it
        caught up with the store, if it has one."""
        failure = db.audit_log.failure
        if failure:
            return cls(unhealthy=failure)
        follower = db.follower
        if follower is not None and follower.fatal:
            return cls(unhealthy=STORE_DISAGREES)
        if follower is not None and follower.failure:
            return cls(
                degraded=f"the store has not been read for {follower.stale_seconds:.0f} s; "
                "reads are served from memory and may be that stale, writes get 503"
            )
        return cls()


class HealthPages:
    """Builds the answers of ``/healthz``, ``/readyz`` and ``/livez`` for ``db``.

    :param db: the database whose health the pages report.
    """

    def __init__(self, db: Database) -> None:
        self._db = db
        self._headers = ((VERSION_HEADER, server_version()),)

    def healthz(self) -> Answer:
        """``ok``; ``degraded: REASON`` (200) while the store cannot be read;
        ``unhealthy: REASON`` (503) once the server refuses everything."""
        return self._answer(Health.of(self._db), live=False)

    def readyz(self) -> Answer:
        """Whether to send requests here: the same answer as :meth:`healthz`."""
        return self._answer(Health.of(self._db), live=False)

    def livez(self) -> Answer:
        """Whether a restart would help: ``unhealthy: REASON`` (503) when it would,
        else ``ok``, degraded or not."""
        return self._answer(Health.of(self._db), live=True)

    def _answer(self, health: Health, *, live: bool) -> Answer:
        if health.unhealthy:
            answer = error_answer(503, f"unhealthy: {health.unhealthy}")
        elif health.degraded and not live:
            answer = Answer(200, f"degraded: {health.degraded}\n".encode(), TEXT)
        else:
            answer = Answer(200, b"ok\n", TEXT)
        return Answer(answer.status, answer.body, answer.content_type, self._headers)
