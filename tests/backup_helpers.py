"""What the backup tests share: a database of a few secrets, and genuine backups of it
taken at chosen times, judged the way the server judges them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager

from setec_core.backup import BackupSink
from setec_core.backup.loop import BackupCatalog, take_backup
from setec_core.database import Database
from setec_core.testing import SUPERUSER, new_database

VALUES = {f"app/secret-{i}": f"backup-value-{i}-f00d".encode() for i in range(5)}
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)


@contextmanager
def stocked_database() -> Iterator[Database]:
    """A new in-memory database holding :data:`VALUES`."""
    with new_database() as db:
        for name, value in VALUES.items():
            db.put(SUPERUSER, name, value)
        yield db


def back_up(db: Database, sink: BackupSink, *ago: dt.timedelta) -> list[str]:
    """Take one genuine backup of ``db`` dated each ``ago`` before :data:`NOW` (a
    negative one is in the future); return their names."""
    names = []
    for delta in ago:
        when = NOW - delta
        names.append(take_backup(db, sink, now=lambda when=when: when).name)
    return names


def minutes(*counts: float) -> list[dt.timedelta]:
    """Each count as a timedelta of that many minutes."""
    return [dt.timedelta(minutes=m) for m in counts]


def catalog(db: Database, sink: BackupSink, said: list[str] | None = None) -> BackupCatalog:
    """The server's view: heads authenticated with the store's data key."""
    return BackupCatalog(sink, db.check_backup_head, report=None if said is None else said.append)
