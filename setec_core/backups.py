"""Taking backups: names, retention, and the server's background backup loop.

The loop follows Go setec (SPEC.md §5): a backup right after start, then one per
interval (a minute by default) only if the store's revision changed since the last
successful backup. A failed backup is logged, counted, and tried again next round; it
never touches serving, which goes on from memory.

Backup names are ``YYYY/MM/DD/db-YYYY-MM-DDTHH:MM:SS.mmmZ.json`` in UTC. Go setec uses
the same shape with local time and unpadded dates; ours are zero-padded UTC, so that
sorting names sorts backups oldest first, whatever the server's time zone.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from setec_core.backup import BackupSink
from setec_core.errors import NotFound, SetecError, StorageError

log = logging.getLogger("setec.backup")

DEFAULT_INTERVAL = 60.0
_NAME = re.compile(r"^\d{4}/\d{2}/\d{2}/db-\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z\.json$")


def backup_name(when: dt.datetime) -> str:
    """Return the name of a backup taken at ``when`` (an aware datetime)."""
    utc = when.astimezone(dt.UTC)
    stamp = utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"
    return f"{utc:%Y/%m/%d}/db-{stamp}.json"


def taken_at(name: str) -> dt.datetime:
    """Return the UTC time the backup name ``name`` stands for.

    :raises ValueError: if ``name`` is not a name :func:`backup_name` could make: the
        wrong shape, no such time (month 13), or a folder that is not that time's date.
    """
    if _NAME.match(name) is None:
        raise ValueError(f"{name!r} is not a backup name")
    stamp = name.rsplit("/db-", 1)[1].removesuffix("Z.json")
    when = dt.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=dt.UTC)
    if not name.startswith(f"{when:%Y/%m/%d}/"):
        raise ValueError(f"{name!r} is filed under another date than its own")
    return when


def is_backup_name(name: str) -> bool:
    """Report whether ``name`` is a backup name made by :func:`backup_name` (see
    :func:`taken_at`); retention and ``latest`` consider only these, whatever else
    shares the sink."""
    try:
        taken_at(name)
    except ValueError:
        return False
    return True


def list_backups(sink: BackupSink) -> list[str]:
    """Return the names of the backups in ``sink``, oldest first (by name, which for
    backup names is by time).

    :raises StorageError: if the sink cannot be listed.
    """
    return sorted(name for name in sink.list() if is_backup_name(name))


#: Backups dated later than this past the local clock are not believed: not counted
#: by retention, never deleted by it, and not "latest".
FUTURE_SLACK = dt.timedelta(hours=1)


def _split_future(names: list[str], now: dt.datetime | None) -> tuple[list[str], list[str]]:
    horizon = (now or _utcnow()) + FUTURE_SLACK
    past: list[str] = []
    future: list[str] = []
    for name in names:
        (past if taken_at(name) <= horizon else future).append(name)
    return past, future


def prune(
    sink: BackupSink, keep: int, *, newest: str | None = None, now: dt.datetime | None = None
) -> list[str]:
    """Delete all but the newest ``keep`` backups from ``sink``; return what was deleted.

    Backups dated more than :data:`FUTURE_SLACK` ahead of the clock are neither counted
    nor deleted: a name planted by someone who may only add objects must not push real
    backups out.

    :param newest: the backup just taken: never deleted, whatever sorts after it (a
        clock that went back, another server writing to the same place).
    :raises StorageError: if the sink cannot be listed or a backup cannot be deleted.
    """
    if keep < 1:
        raise ValueError("keep must be at least 1")
    names, future = _split_future(list_backups(sink), now)
    for name in future:
        log.warning("backup %s is dated in the future; retention leaves it alone", name)
    if newest is not None and names and names[-1] != newest:
        log.warning(
            "backup %s sorts before %s already in %s: did the clock go back, or does "
            "another server back up to the same place?",
            newest,
            names[-1],
            sink.uri,
        )
    doomed = [name for name in names[:-keep] if name != newest]
    for name in doomed:
        sink.delete(name)
    return doomed


def latest_backup(sink: BackupSink, *, now: dt.datetime | None = None, strict: bool = False) -> str:
    """Return the name of the newest backup in ``sink``, skipping names dated more than
    :data:`FUTURE_SLACK` ahead of the clock (a stray or forged file must not become
    "latest").

    :param strict: refuse, rather than skip, when such names exist (restore: the
        clock here may be the one that is wrong, and then "latest" would be old).
    :raises NotFound: if there is none.
    :raises StorageError: if ``strict`` and some backup is dated in the future; or if
        the sink cannot be listed.
    """
    names, future = _split_future(list_backups(sink), now)
    if future and strict:
        raise StorageError(
            f"{len(future)} backup(s) in {sink.uri} are dated after this machine's clock "
            f"(the first: {future[0]}); check the clock, or name the backup to use "
            "instead of 'latest'"
        )
    for name in future:
        log.warning("skipping backup %s: it is dated in the future", name)
    if not names:
        raise NotFound(f"there are no backups in {sink.uri}")
    return names[-1]


class Backupable(Protocol):
    """What can be backed up: a :class:`~setec_core.Database` (the server, which holds
    the data key) or a :class:`~setec_core.maintenance.OfflineStore` (admin commands)."""

    @property
    def revision(self) -> int:
        """The store's revision; it changes whenever the store does."""
        ...

    def backup(self, *, created: dt.datetime | None = None) -> tuple[bytes, int]:
        """Return a sealed backup and the revision it holds."""
        ...


@dataclass(frozen=True)
class BackupResult:
    """One backup taken: its name, size in bytes, the store revision it holds, and how
    long it took in seconds."""

    name: str
    size: int
    revision: int
    seconds: float


def take_backup(
    db: Backupable, sink: BackupSink, *, now: Callable[[], dt.datetime] | None = None
) -> BackupResult:
    """Seal a snapshot of ``db`` and store it in ``sink``.

    :raises StorageError: if the store cannot be read or the sink refuses the backup.
    """
    started = time.perf_counter()
    when = (now or _utcnow)()
    data, revision = db.backup(created=when)
    name = backup_name(when)
    sink.put(name, data)
    return BackupResult(name, len(data), revision, time.perf_counter() - started)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class BackupLoop:
    """Backs ``db`` up to ``sink`` in a daemon thread: at start, then every
    ``interval`` seconds if the store changed. Optionally keeps only the newest
    ``keep`` backups.

    The counters are read by the server's ``/metrics``: :attr:`taken`,
    :attr:`failures`, :attr:`last_success` (Unix time, 0 before the first),
    :attr:`last_size` and :attr:`last_seconds`; :attr:`last_error` is the last
    failure's one-line message (``""`` after a success).
    """

    def __init__(
        self,
        db: Backupable,
        sink: BackupSink,
        *,
        interval: float = DEFAULT_INTERVAL,
        keep: int | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.db = db
        self.sink = sink
        self.interval = interval
        self.keep = keep
        self.taken = 0
        self.failures = 0
        self.last_success = 0.0
        self.last_size = 0
        self.last_seconds = 0.0
        self.last_error = ""
        self._backed_up: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="setec-backup", daemon=True)

    def start(self) -> None:
        """Start the loop (the first backup is taken at once)."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the loop, waiting up to ``timeout`` seconds for a backup in progress."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def run_once(self) -> BackupResult | None:
        """Take a backup if the store changed since the last one; return it, or ``None``
        if nothing changed or the backup failed (then it is logged and counted)."""
        try:
            revision = self.db.revision
            if revision == self._backed_up:
                return None
            result = take_backup(self.db, self.sink)
        except SetecError as e:
            self._failed(str(e))
            return None
        except Exception as e:
            # A bug or an SDK error we did not map: the type only, since an SDK's
            # message could quote request data.
            self._failed(f"{type(e).__name__} (an unexpected error; see the debug log)")
            log.debug("backup failed", exc_info=True)
            return None
        self._backed_up = result.revision
        self.taken += 1
        self.last_success = time.time()
        self.last_size = result.size
        self.last_seconds = result.seconds
        self.last_error = ""
        log.info(
            "backed up revision %d to %s (%d bytes in %.2f s)",
            result.revision,
            result.name,
            result.size,
            result.seconds,
        )
        if self.keep:
            self._prune(result.name)
        return result

    def _prune(self, newest: str) -> None:
        assert self.keep is not None
        try:
            deleted = prune(self.sink, self.keep, newest=newest)
        except Exception as e:
            # Like a failed backup: never let it end the loop. A SetecError's message
            # is ours; anything else is shown by type only.
            reason = str(e) if isinstance(e, SetecError) else type(e).__name__
            log.warning("backup retention failed: %s; will try after the next backup", reason)
            log.debug("retention failed", exc_info=True)
            return
        for name in deleted:
            log.info("retention (keep %d) deleted backup %s", self.keep, name)

    def _failed(self, message: str) -> None:
        self.failures += 1
        self.last_error = message
        log.error("backup failed: %s; will try again in %g s", message, self.interval)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception as e:  # run_once catches what it expects: this is a bug
                log.error("the backup loop hit a bug (%s); it carries on", type(e).__name__)
                log.debug("backup loop bug", exc_info=True)
            self._stop.wait(self.interval)
