"""Recoverable delete in the Database and its purge job (docs/api.md, "Recoverable
delete"): the pending state is in the secret's encrypted record, so it survives a
restart and a backup restored; records written before it decode unchanged; the purge
job purges on time, once, on the one replica that holds its lease."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from setec_core import Database, NotFound
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.leases import JobLease
from setec_core.maintenance import restore_backup
from setec_core.model import SecretState
from setec_core.purge import LEASE, PurgeLoop
from setec_core.testing import SUPERUSER as SU
from setec_core.testing import audit_entries, new_database
from setec_core.testing.clock import FakeClock

NOW = 1_800_000_000.0
HOUR = 3600.0


def aside(db: Database, clock: FakeClock | None = None) -> FakeClock:
    """Give ``db`` a one-hour window on a fake clock at :data:`NOW`; return the clock."""
    clock = clock or FakeClock(NOW)
    db.recovery_window = HOUR
    db.clock = clock
    return clock


def test_old_records_decode_unchanged_and_live_records_keep_their_bytes() -> None:
    """A record without the pending keys decodes as live; a live state encodes exactly
    as before (no new keys); a pending one round-trips its times."""
    old = b'{"name":"x","versions":{"1":"YQ=="},"active":1,"latest":1}'
    state = SecretState.decode(old, 3)
    assert (state.deleted_at, state.purge_at) == (0, 0)
    assert state.encode() == old
    pending = SecretState("x", {1: b"a"}, 1, 1, frozenset(), deleted_at=5, purge_at=9)
    again = SecretState.decode(pending.encode(), 1)
    assert (again.deleted_at, again.purge_at) == (5, 9)


def test_a_pending_secret_survives_a_restart(tmp_path: Path) -> None:
    """Put aside, closed, opened again (records read lazily at open): still invisible,
    still listed with the same times, and undelete brings it back whole."""
    with Database.open(tmp_path, key="dev://") as db:
        aside(db)
        db.put(SU, "keep", b"restart-kept-value")
        db.put(SU, "app/x", b"restart-value-1")
        db.put(SU, "app/x", b"restart-value-2")
        db.delete(SU, "app/x")
        before = db.list_deleted(SU)
    with Database.open(tmp_path, key="dev://") as db:
        assert db.list_deleted(SU) == before
        assert db.next_purge() == NOW + HOUR
        with pytest.raises(NotFound):
            db.get(SU, "app/x")
        assert [i.name for i in db.list(SU)] == ["keep"]
        db.undelete(SU, "app/x")
        assert db.get(SU, "app/x", 2).value == b"restart-value-2"
        assert db.info(SU, "app/x").versions == (1, 2)


def test_a_backup_restored_keeps_the_pending_state() -> None:
    """A backup taken while a secret is pending, restored into a new store, opens with
    it pending until the same time, undeletable."""
    with new_database(key="dev://recovery") as db:
        aside(db)
        db.put(SU, "svc/k", b"backup-pending-value")
        db.delete(SU, "svc/k")
        data, _ = db.backup()
        listed = db.list_deleted(SU)
    target = MemoryStorage()
    key = DevKeyProvider("recovery")
    restore_backup(data, target, key=key)
    with Database(target, key, AuditLog(MemoryAuditSink())) as restored:
        assert restored.list_deleted(SU) == listed
        with pytest.raises(NotFound):
            restored.info(SU, "svc/k")
        restored.undelete(SU, "svc/k")
        assert restored.get(SU, "svc/k").value == b"backup-pending-value"


def test_pending_secrets_of_another_replica_are_seen_and_purged_once(
    tmp_path: Path, postgres_uri: str
) -> None:
    """Two replicas over one PostgreSQL store, each with a purge loop under the same
    lease: a secret put aside through one is pending on the other too; when it is due,
    only the lease holder purges it, and the other stands by; both then see it gone."""
    a = Database.open(tmp_path / "a", key="dev://", storage=postgres_uri)
    b = Database.open(tmp_path / "b", key="dev://", storage=postgres_uri)
    clock = aside(a)
    aside(b, clock)
    loops = [PurgeLoop(db, lease=JobLease(db.storage, LEASE, db.replica, 30)) for db in (a, b)]
    try:
        a.put(SU, "shared", b"replica-purge-value")
        a.delete(SU, "shared")
        b.refresh()
        assert [s.name for s in b.list_deleted(SU)] == ["shared"]
        assert loops[0].run_once() == []  # a takes the lease; nothing due yet
        clock.advance(HOUR)
        assert loops[1].run_once() == []
        assert loops[1].standing_by == 1
        assert loops[0].run_once() == ["shared"]
        b.refresh()
        assert b.list_deleted(SU) == []
        assert b.next_purge() is None
        assert loops[1].run_once() == []
        purges = [e for e in audit_entries_of(tmp_path / "a") if e.get("action") == "purge"]
        assert len(purges) == 1
        assert not [e for e in audit_entries_of(tmp_path / "b") if e.get("action") == "purge"]
    finally:
        for loop in loops:
            loop.stop()
        a.close()
        b.close()


def test_two_replicas_purging_at_once_purge_once(tmp_path: Path, postgres_uri: str) -> None:
    """Even without the lease (both call purge_due), the second finds nothing to do:
    the purge is a write, and the loser of the race catches up."""
    a = Database.open(tmp_path / "a", key="dev://", storage=postgres_uri)
    b = Database.open(tmp_path / "b", key="dev://", storage=postgres_uri)
    try:
        clock = aside(a)
        aside(b, clock)
        a.put(SU, "raced", b"replica-race-value")
        a.delete(SU, "raced")
        b.refresh()
        clock.advance(HOUR)
        assert a.purge_due() == ["raced"]
        assert b.purge_due() == []
        assert b.next_purge() is None
    finally:
        a.close()
        b.close()


def test_the_loop_purges_on_time_when_woken() -> None:
    """A running loop purges a secret once the clock passes its time and the loop is
    woken (it would wake by itself within the window); before that it keeps it."""
    with new_database() as db:
        clock = aside(db)
        db.put(SU, "soon", b"loop-value")
        db.delete(SU, "soon")
        loop = PurgeLoop(db)
        assert loop.run_once() == []  # not due yet
        loop.start()
        try:
            clock.advance(HOUR)
            loop.wake()
            deadline = time.monotonic() + 5
            while db.next_purge() is not None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert db.next_purge() is None
            assert loop.purged == 1
        finally:
            loop.stop()
        purge = audit_entries(db)[-1]
        assert (purge["action"], purge["secret"], purge["principal"]["ip"]) == (
            "purge",
            "soon",
            "local",
        )


def test_the_loop_waits_no_longer_than_the_next_deadline() -> None:
    """The wait is the interval, shortened to the window and to the first deadline."""
    with new_database() as db:
        loop = PurgeLoop(db, interval=60)
        assert loop.next_wait() == 60
        clock = aside(db)
        assert loop.next_wait() == 60
        db.recovery_window = 10
        assert loop.next_wait() == 10
        db.put(SU, "x", b"wait-value")
        db.delete(SU, "x")
        clock.advance(8)
        assert loop.next_wait() == pytest.approx(2)


def test_the_recovery_window_refuses_a_negative_length() -> None:
    """A negative or NaN window is a programming error, refused at once."""
    with new_database() as db:
        for bad in (-1.0, float("nan")):
            with pytest.raises(ValueError, match="0 or more"):
                db.recovery_window = bad
        assert db.recovery_window == 0


def audit_entries_of(state: Path) -> list[dict[str, object]]:
    """The entries of a state directory's audit log."""
    return [json.loads(line) for line in (state / "audit.log").read_bytes().splitlines()]
