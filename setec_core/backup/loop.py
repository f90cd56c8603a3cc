"""Taking backups: names, which backups are genuine, retention, and the server's
background backup loop.

The loop follows Go setec: a backup right after start, then one per interval (a
minute by default) only if the store's revision changed since the last successful
backup. A failed backup is logged, counted, and tried again next round; it never
touches serving, which goes on from memory.

Backup names are ``YYYY/MM/DD/db-YYYY-MM-DDTHH:MM:SS.mmmZ.json`` in UTC. Go setec uses
the same shape with local time and unpadded dates; ours are zero-padded UTC, so that
sorting names sorts backups oldest first, whatever the server's time zone.

A name is only a claim: anyone who may add or rename files where the backups are can
make one up. A backup is *genuine* when its head authenticates
(:func:`~setec_core.backup.snapshot.check_head`) and its name is exactly the one
:func:`backup_name` gives the time its head says it was taken. Retention and
``latest`` (:class:`BackupCatalog`) go by genuine backups and their authenticated time
only, and leave everything else alone.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from setec_core.backup import BackupSink
from setec_core.backup.snapshot import MAX_HEAD_SIZE, BackupHead, head_needs_more, rfc3339
from setec_core.errors import (
    CorruptStoreError,
    KeyMismatchError,
    NotFound,
    SetecError,
    StorageError,
)

if TYPE_CHECKING:
    from setec_core.leases import JobLease

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
    """Return the names in ``sink`` shaped like backup names (:func:`is_backup_name`),
    oldest first by name. Names only: which of them are genuine backups is for
    :class:`BackupCatalog` to say.

    :raises StorageError: if the sink cannot be listed.
    """
    return sorted(name for name in sink.list() if is_backup_name(name))


FUTURE_SLACK = dt.timedelta(hours=1)
"""How far after the local clock a backup may be dated and still count. A genuine
backup dated later than that means a clock moved (here, or on the server that took
it): retention neither counts nor deletes it, ``latest`` skips it, and ``restore
latest`` refuses while it is there."""

_AHEAD = f"more than {FUTURE_SLACK.total_seconds() / 60:g} minutes after this machine's clock"

HEAD_READ = 4096
"""The bytes read first to check a backup's head (more, up to
:data:`~setec_core.backup.snapshot.MAX_HEAD_SIZE`, only for a longer head)."""

HeadCheck = Callable[[bytes], BackupHead]
"""Authenticates the first bytes of a backup and returns its head, or raises
:class:`~setec_core.errors.CorruptStoreError` (or
:class:`~setec_core.errors.KeyMismatchError`) if they do not authenticate:
:meth:`Database.check_backup_head <setec_core.Database.check_backup_head>` (the
server, with its data key) or :meth:`BackupKeys.check_head
<setec_core.backup.snapshot.BackupKeys.check_head>` (admin commands, with the KMS key)."""


def _misnamed(name: str, head: BackupHead) -> str | None:
    proper = backup_name(head.created)
    if name == proper:
        return None
    try:
        claim = f"is named for {rfc3339(taken_at(name))}"
    except ValueError:
        claim = "is not named for any time"
    return (
        f"it {claim} but holds the backup taken at {rfc3339(head.created)} (revision "
        f"{head.revision}), whose name is {proper}: it was renamed or copied"
    )


def check_backup_name(name: str, head: BackupHead) -> None:
    """Check that ``name`` is the name of the backup whose authenticated head is
    ``head``: exactly what :func:`backup_name` gives its creation time.

    :raises CorruptStoreError: in one line naming the time the name says, the time the
        backup was taken and the name it should have, if they disagree (the backup was
        renamed, or copied under another name).
    """
    why = _misnamed(name, head)
    if why is not None:
        raise CorruptStoreError(f"refusing backup {name}: {why}")


def read_head(sink: BackupSink, name: str) -> bytes:
    """Return the first bytes of the backup ``name``: enough to check its head.

    :raises NotFound: if there is no such backup.
    :raises StorageError: if it cannot be read.
    """
    data = sink.get_head(name, HEAD_READ)
    if len(data) >= HEAD_READ and head_needs_more(data):
        data = sink.get_head(name, MAX_HEAD_SIZE)
    return data


class BackupCatalog:
    """The genuine backups of ``sink``, as ``check`` authenticates them: what
    retention keeps and deletes, and which backup is ``latest``.

    A file whose head does not authenticate, or whose name is not its own, is left
    alone: never counted, never deleted, never ``latest``; it is reported once, through
    ``report``. What was learnt about a backup is remembered while the sink's stamp for
    it (:meth:`~setec_core.backup.BackupSink.list_stamps`) stays the same, so a
    long-lived catalog (the server's loop) reads only new or replaced backups.

    :param check: authenticates a backup's head (see :data:`HeadCheck`).
    :param report: called with one line for each file left alone, and oddities; the
        default logs a warning.
    """

    def __init__(
        self,
        sink: BackupSink,
        check: HeadCheck,
        *,
        report: Callable[[str], None] | None = None,
    ) -> None:
        self.sink = sink
        self._check = check
        self._say = report or log.warning
        self._verdicts: dict[str, tuple[str, BackupHead | str]] = {}
        self._reported: set[str] = set()

    def _listing(self) -> list[tuple[str, str]]:
        stamps = {name: s for name, s in self.sink.list_stamps().items() if is_backup_name(name)}
        for gone in self._verdicts.keys() - stamps.keys():
            del self._verdicts[gone]
        return sorted(stamps.items())

    def _judge(self, name: str, stamp: str) -> BackupHead | str:
        """Return the authenticated head of ``name``, or why it has none."""
        known = self._verdicts.get(name)
        if stamp and known is not None and known[0] == stamp:
            return known[1]
        verdict: BackupHead | str
        try:
            head = self._check(read_head(self.sink, name))
            verdict = _misnamed(name, head) or head
        except (CorruptStoreError, KeyMismatchError) as e:
            verdict = str(e)
        except StorageError as e:
            # Unreadable now (or gone): not remembered, so it is read again next time.
            return str(e)
        if stamp:
            self._verdicts[name] = (stamp, verdict)
        return verdict

    def _left_alone(self, name: str, why: str) -> None:
        if name not in self._reported:
            self._reported.add(name)
            self._say(f"leaving {name} in {self.sink.uri} alone: {why}")

    def latest(self, *, strict: bool = False, now: dt.datetime | None = None) -> str:
        """Return the name of the newest genuine backup, by its authenticated time.

        Genuine backups dated more than :data:`FUTURE_SLACK` after the clock are
        skipped, or with ``strict`` refused (restore: the clock here may be the one
        that is wrong, and then "latest" would be old).

        :raises NotFound: if there is no genuine backup; the message gives the
            commonest reason why the files there are not.
        :raises StorageError: if ``strict`` and the newest genuine backup is dated in
            the future; or if the sink cannot be listed.
        :raises KeyProviderError: if the KMS cannot be reached.
        """
        horizon = (now or _utcnow()) + FUTURE_SLACK
        listing = self._listing()
        skipped: list[tuple[str, str]] = []
        for name, stamp in reversed(listing):
            verdict = self._judge(name, stamp)
            if isinstance(verdict, BackupHead) and verdict.created <= horizon:
                return name
            if isinstance(verdict, BackupHead):
                if strict:
                    raise StorageError(
                        f"the newest backup in {self.sink.uri}, {name}, was taken at "
                        f"{rfc3339(verdict.created)}, after this machine's clock: one of "
                        "the two clocks is wrong; check them, or name the backup to use "
                        "instead of 'latest'"
                    )
                verdict = f"it was taken {_AHEAD}; did a clock move?"
            self._left_alone(name, verdict)
            skipped.append((name, verdict))
        if not skipped:
            raise NotFound(f"there are no backups in {self.sink.uri}")
        # The commonest reason (a wrong key, say) rather than one planted file's.
        why, count = Counter(why for _, why in skipped).most_common(1)[0]
        raise NotFound(
            f"there is no genuine backup to use in {self.sink.uri}: {len(skipped)} "
            f"file(s) skipped, {count} of them because {why}"
        )

    def prune(
        self, keep: int, *, newest: str | None = None, now: dt.datetime | None = None
    ) -> list[str]:
        """Delete all but the newest ``keep`` genuine backups, by their authenticated
        (creation time, revision); return what was deleted.

        Only genuine backups are counted or deleted, so files planted by someone who
        may add or rename objects cannot push genuine backups out. Genuine backups
        dated more than :data:`FUTURE_SLACK` after the clock are neither counted nor
        deleted (their heads are not even read).

        :param newest: the backup just taken: never deleted, whatever is dated after
            it (a clock that went back, another server writing to the same place).
        :raises StorageError: if the sink cannot be listed or a backup cannot be deleted.
        :raises KeyProviderError: if the KMS cannot be reached.
        """
        if keep < 1:
            raise ValueError("keep must be at least 1")
        horizon = (now or _utcnow()) + FUTURE_SLACK
        genuine: list[tuple[dt.datetime, int, str]] = []
        for name, stamp in self._listing():
            if taken_at(name) > horizon:
                self._left_alone(name, f"its name is dated {_AHEAD}")
                continue
            verdict = self._judge(name, stamp)
            if isinstance(verdict, str):
                self._left_alone(name, verdict)
            else:
                genuine.append((verdict.created, verdict.revision, name))
        names = [name for _, _, name in sorted(genuine)]
        if newest is not None and names and names[-1] != newest:
            self._say(
                f"backup {newest} was taken before {names[-1]}, already in {self.sink.uri}: "
                "did the clock go back, or does another server back up to the same place?"
            )
        doomed = [name for name in names[:-keep] if name != newest]
        for name in doomed:
            self.sink.delete(name)
            self._verdicts.pop(name, None)
        return doomed


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


class BackupSource(Backupable, Protocol):
    """What the server's loop backs up and prunes: a :class:`Backupable` that can also
    authenticate a backup's head (a :class:`~setec_core.Database`, with its data key)."""

    def check_backup_head(self, head: bytes) -> BackupHead:
        """Authenticate the first bytes of a backup (see :data:`HeadCheck`)."""
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
    ``keep`` genuine backups (:meth:`BackupCatalog.prune`), authenticated with the
    store's data key: backups sealed under another data key (taken before a
    ``rotate-dek``) cannot be told from forgeries, so they are left alone.

    With ``lease``, a :class:`~setec_core.leases.JobLease` on a store several replicas
    share, a round runs only on the replica holding the lease (the others count
    :attr:`standing_by`), and retention deletes only while it still holds it.

    The counters are read by the server's ``/metrics``: :attr:`taken`,
    :attr:`failures`, :attr:`last_success` (Unix time, 0 before the first),
    :attr:`last_size` and :attr:`last_seconds`; :attr:`last_error` is the last
    failure's one-line message (``""`` after a success).
    """

    def __init__(
        self,
        db: BackupSource,
        sink: BackupSink,
        *,
        interval: float = DEFAULT_INTERVAL,
        keep: int | None = None,
        lease: JobLease | None = None,
    ) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.db = db
        self.sink = sink
        self.interval = interval
        self.keep = keep
        self.lease = lease
        #: Rounds skipped because another replica holds the backup lease.
        self.standing_by = 0
        self.taken = 0
        self.failures = 0
        self.last_success = 0.0
        self.last_size = 0
        self.last_seconds = 0.0
        self.last_error = ""
        self._backed_up: int | None = None
        # Kept across rounds: it remembers which backups it has authenticated, so a
        # round reads the heads of new or replaced backups only.
        self._catalog = BackupCatalog(sink, db.check_backup_head)
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
        if self.lease is not None:
            self.lease.release()

    def run_once(self) -> BackupResult | None:
        """Take a backup if the store changed since the last one; return it, or ``None``
        if nothing changed or the backup failed (then it is logged and counted)."""
        lease = self.lease
        if lease is not None and not lease.held():
            # Another replica takes the backups (docs/replicas.md, "Jobs").
            self.standing_by += 1
            self._backed_up = None  # when this replica takes over, it backs up at once
            return None
        fence = lease.lease.fence if lease is not None and lease.lease is not None else 0
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
        # Retention deletes: only while the lease is still the one this round began
        # with, so two replicas never prune at once.
        if self.keep and (lease is None or lease.still_held(fence)):
            self._prune(result.name)
        return result

    def _prune(self, newest: str) -> None:
        assert self.keep is not None
        try:
            deleted = self._catalog.prune(self.keep, newest=newest)
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
