"""Backup retention over a real dir:// sink: which heads a lasting catalog re-reads
(the sink gives stamps), and files planted where the backups are that are no backups
(links, FIFOs)."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from backup_helpers import NOW, back_up, catalog, minutes, stocked_database

from setec_core.backup.loop import backup_name
from setec_core.database import Database
from setec_plugins.dir_backup import DirBackupSink


@pytest.fixture
def db() -> Iterator[Database]:
    with stocked_database() as db:
        yield db


class CountingDirSink(DirBackupSink):
    """A dir:// sink (which gives stamps) recording which heads are read."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.heads: list[str] = []

    def get_head(self, name: str, size: int) -> bytes:
        self.heads.append(name)
        return super().get_head(name, size)


def test_a_lasting_catalog_rereads_only_new_or_replaced_backups(
    db: Database, tmp_path: Path
) -> None:
    """A catalog kept across rounds (the server's loop) reads the heads of new backups
    and of backups whose stamp changed only; a genuine backup replaced by junk after it
    was authenticated is judged again, so it does not count towards retention."""
    sink = CountingDirSink(str(tmp_path / "b"))
    found = catalog(db, sink)
    genuine = back_up(db, sink, *minutes(4, 3, 2))
    assert found.prune(2, newest=genuine[-1], now=NOW) == genuine[:1]
    assert sorted(sink.heads) == genuine
    sink.heads.clear()
    (fourth,) = back_up(db, sink, dt.timedelta(minutes=1))
    assert found.prune(3, newest=fourth, now=NOW) == []
    assert sink.heads == [fourth]
    sink.heads.clear()
    path = tmp_path / "b" / genuine[2]
    junk = path.with_name("junk")
    junk.write_bytes(b"x" * path.stat().st_size)
    os.replace(junk, path)
    (fifth,) = back_up(db, sink, dt.timedelta(seconds=30))
    # Genuine now: genuine[1], fourth, fifth; the replaced genuine[2] is not counted.
    assert found.prune(3, newest=fifth, now=NOW) == []
    assert sorted(sink.heads) == sorted([genuine[2], fifth])
    assert genuine[1] in sink.list()


def test_links_and_fifos_are_left_alone(db: Database, tmp_path: Path) -> None:
    """A FIFO or a symbolic link planted under a backup name is no backup: retention
    does not count, read or delete it, and goes on."""
    root = tmp_path / "b"
    sink = DirBackupSink(str(root))
    genuine = back_up(db, sink, *minutes(3, 2, 1))
    fifo = root / backup_name(NOW - dt.timedelta(minutes=2, seconds=30))
    os.mkfifo(fifo)
    link = root / backup_name(NOW - dt.timedelta(seconds=10))
    link.symlink_to(root / genuine[-1])
    said: list[str] = []
    assert catalog(db, sink, said).prune(2, newest=genuine[-1], now=NOW) == genuine[:1]
    assert fifo.exists()
    assert link.is_symlink()
    assert said == []  # not even listed
