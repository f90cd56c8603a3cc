"""Replicas at the Database layer: several Databases over one store, each with its own
state directory (audit log and replica name), as several server processes have them.
Each replica's audit head is recorded in the store under its own name, each catches up
with the others' commits, and writes of one secret through two replicas never lose or
duplicate a version."""

from __future__ import annotations

import json
import shutil
import sqlite3
import struct
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from store_tampering import key_of, tamper
from werkzeug.test import Client

from setec_core import Database, SecretValue
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.audit_chain import KEYED
from setec_core.backup.loop import BackupLoop
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.data_key import unwrap_data_key
from setec_core.errors import (
    ConfigError,
    IntegrityCheckError,
    KeyMismatchError,
    NotFound,
    StorageUnavailable,
)
from setec_core.http import make_app
from setec_core.integrity import INTEGRITY_META, LEGACY_REPLICA, StoreKeys, StoreSeal
from setec_core.leases import JobLease
from setec_core.maintenance import AdminAudit
from setec_core.opening import REPLICA_FILE, replica_name
from setec_core.storage import MetaWrite, RecordWrite
from setec_core.store_check import check_store
from setec_core.testing import SUPERUSER, FixedAuthorizer
from setec_core.testing.fakes import FaultyStorage
from setec_core.testing.storage_contract import run_together
from setec_plugins.dir_backup import DirBackupSink

SU = SUPERUSER
KEY = "dev://"


def open_replica(tmp_path: Path, name: str) -> Database:
    """A Database over the shared store ``tmp_path/secrets.db``, with its own state
    directory ``tmp_path/name`` (its audit log and replica name)."""
    return Database.open(tmp_path / name, key=KEY, storage=f"sqlite://{tmp_path / 'secrets.db'}")


def lines(state: Path) -> list[dict[str, object]]:
    """The entries of a state directory's audit log."""
    return [json.loads(line) for line in (state / "audit.log").read_bytes().splitlines()]


def seal_of(tmp_path: Path) -> StoreSeal:
    """The shared store's integrity entry, authenticated."""
    storage = SqliteStorage(tmp_path / "secrets.db")
    try:
        dek = unwrap_data_key(storage, DevKeyProvider(""), storage.get_meta("dek") or b"")
        blob = storage.get_meta(INTEGRITY_META)
        assert blob is not None
        return StoreSeal.decode(StoreKeys(dek), blob)
    finally:
        storage.close()


def test_two_replicas_open_one_store_and_each_records_its_own_audit_head(
    tmp_path: Path,
) -> None:
    """A second replica with its own audit log opens a store the first one writes (a
    store recording one audit head refused it), each log's entries name their replica,
    the store records both heads, and both reopen and check clean."""
    a = open_replica(tmp_path, "a")
    b = open_replica(tmp_path, "b")
    a.put(SU, "x", b"replica-value-1")
    b.put(SU, "y", b"replica-value-2")
    a.close()
    b.close()
    name_a, name_b = replica_name(tmp_path / "a"), replica_name(tmp_path / "b")
    assert name_a != name_b
    assert {line["replica"] for line in lines(tmp_path / "a")} == {name_a}
    assert {line["replica"] for line in lines(tmp_path / "b")} == {name_b}
    assert set(seal_of(tmp_path).heads) == {name_a, name_b}
    for name in ("a", "b"):
        with open_replica(tmp_path, name) as db:
            assert db.get(SU, "x").value == b"replica-value-1"
        storage = SqliteStorage(tmp_path / "secrets.db")
        report = check_store(storage, DevKeyProvider(""), audit_path=tmp_path / name / "audit.log")
        storage.close()
        assert report.ok, report.problems
        assert report.audit is not None
        assert report.audit.recorded_line > 0


def test_lines_cut_from_one_replicas_log_are_found_when_it_reopens(tmp_path: Path) -> None:
    """Each replica's log is checked against its own recorded head: cutting lines from
    replica b's log is refused at b's next open, while replica a opens as before."""
    for name in ("a", "b"):
        with open_replica(tmp_path, name) as db:
            db.put(SU, f"s-{name}", b"replica-value")
    log_b = tmp_path / "b" / "audit.log"
    log_b.write_bytes(b"".join(log_b.read_bytes().splitlines(keepends=True)[:-2]))
    with pytest.raises(IntegrityCheckError, match="ends before the entry the store recorded"):
        open_replica(tmp_path, "b")
    with open_replica(tmp_path, "a") as db:
        assert db.get(SU, "s-b").value == b"replica-value"


def test_a_replica_catches_up_with_another_replicas_commits(tmp_path: Path) -> None:
    """refresh() reads what another replica committed (new secrets, new versions,
    deletions), and returns False when nothing changed."""
    with open_replica(tmp_path, "a") as a, open_replica(tmp_path, "b") as b:
        a.put(SU, "x", b"replica-old")
        a.put(SU, "gone", b"replica-gone")
        assert b.refresh() is True
        assert b.get(SU, "x") == SecretValue(b"replica-old", 1)
        assert b.refresh() is False
        a.put(SU, "x", b"replica-new")
        a.activate(SU, "x", 2)
        a.delete(SU, "gone")
        b.refresh()
        assert b.get(SU, "x") == SecretValue(b"replica-new", 2)
        assert [i.name for i in b.list(SU)] == ["x"]


def test_the_follower_serves_another_replicas_put_within_a_second(tmp_path: Path) -> None:
    """With follow() running, a put acknowledged by one replica is served by the other
    well within the one second docs/replicas.md promises, without any call to it."""
    with open_replica(tmp_path, "a") as a, open_replica(tmp_path, "b") as b:
        follower = b.follow()
        for n in range(1, 4):
            value = f"replica-followed-{n}".encode()
            a.put(SU, "x", value)
            acked = time.monotonic()
            while served(b, n) != value:
                assert time.monotonic() - acked < 1.0, "the follower did not catch up in 1 s"
                time.sleep(0.005)
        assert follower.failure == ""
        assert follower.catch_ups >= 1


def served(db: Database, version: int) -> bytes | None:
    """Version ``version`` of secret x as ``db`` serves it, or None."""
    try:
        return db.get(SU, "x", version).value
    except NotFound:
        return None


def test_a_write_that_loses_a_race_is_tried_again_and_audited_as_a_conflict(
    tmp_path: Path,
) -> None:
    """Replica b writes a secret a changed since b last looked: b's commit loses, b
    catches up and puts again on a's state, so the version follows a's instead of
    failing; b's log says ``conflict`` and then ``ok``."""
    with open_replica(tmp_path, "a") as a, open_replica(tmp_path, "b") as b:
        a.put(SU, "x", b"replica-1")
        b.refresh()
        a.put(SU, "x", b"replica-2")
        assert b.put(SU, "x", b"replica-3") == 3
        assert b.get(SU, "x", 2).value == b"replica-2"
        a.create_version(SU, "y", 5, b"replica-5")
        b.put(SU, "unrelated", b"replica-u")  # catches up on y without a conflict
        b.activate(SU, "x", 2)
    puts = [
        e["outcome"]
        for e in lines(tmp_path / "b")
        if (e["action"], e.get("secret")) == ("put", "x")
    ]
    assert puts == ["ok", "conflict", "ok"]
    with open_replica(tmp_path, "a") as a:
        assert a.info(SU, "x").versions == (1, 2, 3)
        assert a.info(SU, "x").active_version == 2


def test_concurrent_puts_of_one_secret_through_two_replicas_leave_no_gap_or_twin(
    tmp_path: Path,
) -> None:
    """Threads in two replicas putting distinct values of one secret at once: every put
    gets its own version, the versions are 1..N with no gap and no duplicate, and every
    value is kept."""
    a = open_replica(tmp_path, "a")
    b = open_replica(tmp_path, "b")
    got: dict[int, bytes] = {}

    def putter(n: int) -> None:
        db = a if n % 2 else b
        for i in range(10):
            value = f"replica-race-{n}-{i}".encode()
            version = db.put(SU, "hot", value)
            assert version not in got
            got[version] = value

    assert run_together(4, putter) == []
    a.close()
    b.close()
    assert sorted(got) == list(range(1, 41))
    with open_replica(tmp_path, "a") as db:
        assert db.info(SU, "hot").versions == tuple(range(1, 41))
        for version, value in got.items():
            assert db.get(SU, "hot", version).value == value


def test_a_store_sealed_before_replicas_is_continued_by_its_named_log(tmp_path: Path) -> None:
    """A store whose integrity entry records one unnamed audit head (setec before
    replicas) opens: the state directory's log continues that head, is checked against
    it (cut lines are still found), and from its next commit the head is recorded under
    the replica's name instead."""
    state = tmp_path / "a"
    with open_replica(tmp_path, "a") as db:
        db.put(SU, "x", b"replica-legacy")
    _rewrite_as_single_head_entry(tmp_path, replica_name(state))
    assert set(seal_of(tmp_path).heads) == {LEGACY_REPLICA}
    log = state / "audit.log"
    whole = log.read_bytes()
    log.write_bytes(b"".join(whole.splitlines(keepends=True)[:-1]))
    with pytest.raises(IntegrityCheckError, match="ends before the entry the store recorded"):
        open_replica(tmp_path, "a")
    log.write_bytes(whole)
    with open_replica(tmp_path, "a") as db:
        db.put(SU, "x", b"replica-legacy-2")
    assert set(seal_of(tmp_path).heads) == {replica_name(state)}


def _rewrite_as_single_head_entry(tmp_path: Path, name: str) -> None:
    # The entry as setec before replicas wrote it: version 1, one head, no names.
    storage = SqliteStorage(tmp_path / "secrets.db")
    dek = unwrap_data_key(storage, DevKeyProvider(""), storage.get_meta("dek") or b"")
    keys = StoreKeys(dek)
    blob = storage.get_meta(INTEGRITY_META)
    assert blob is not None
    seal = StoreSeal.decode(keys, blob)
    head = seal.heads[name]
    body = struct.pack(
        ">BQQ32sBQQ32s",
        1,
        seal.commits,
        seal.records,
        seal.digest.to_bytes(32),
        1,
        head.start,
        head.end,
        bytes.fromhex(head.link[len(KEYED) :]),
    )
    storage.commit(meta=[MetaWrite(INTEGRITY_META, body + keys.tag(body), blob)])
    storage.close()


def test_the_replica_name_is_kept_in_the_state_directory(tmp_path: Path) -> None:
    """The first open names the state directory's replica and keeps the name; a name the
    operator wrote there is used; an invalid one is refused in one line naming the file."""
    (tmp_path / "s1").mkdir()
    first = replica_name(tmp_path / "s1")
    assert replica_name(tmp_path / "s1") == first
    assert (tmp_path / "s1" / REPLICA_FILE).read_text().strip() == first
    (tmp_path / "s2").mkdir()
    (tmp_path / "s2" / REPLICA_FILE).write_text("db-east-1\n")
    assert replica_name(tmp_path / "s2") == "db-east-1"
    (tmp_path / "s2" / REPLICA_FILE).write_text("no spaces allowed\n")
    with pytest.raises(ConfigError, match=r"replica.*not a replica name") as info:
        replica_name(tmp_path / "s2")
    assert "\n" not in str(info.value)
    assert replica_name(tmp_path / "s3-missing", create=False) == ""


class OutageStorage(FaultyStorage):
    """A store whose server can be taken away: while ``down``, every read and commit
    raises StorageUnavailable, as the PostgreSQL backend does during an outage."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable(
                "PostgreSQL store postgresql://db.test/setec: connection refused"
            )

    def revision(self) -> int:
        self._check()
        return super().revision()

    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        self._check()
        return super().commit(writes, meta)

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        self._check()
        return super().wait_for_change(revision, timeout)


def test_while_the_store_is_unreachable_reads_go_on_and_writes_get_503(tmp_path: Path) -> None:
    """The store goes away: gets are still served from memory, /healthz answers 200
    'degraded' and the metrics say the store is unreachable, a put gets 503 with a
    one-line reason; when the store is back, all of it is ok again by itself."""
    storage = OutageStorage(SqliteStorage(tmp_path / "secrets.db"))
    db = Database(storage, DevKeyProvider(""), AuditLog(MemoryAuditSink()))
    db.put(SU, "x", b"replica-outage")
    follower = db.follow(interval=0.05)
    app = make_app(db, FixedAuthorizer(SU))
    app.metrics.watch_follower(follower)  # as setec-serve does
    client = Client(app)
    post = {"headers": {"Sec-X-Tailscale-No-Browsers": "setec"}}
    try:
        storage.down = True
        deadline = time.monotonic() + 5
        while not follower.failure:
            assert time.monotonic() < deadline, "the follower did not notice the outage"
            time.sleep(0.01)
        got = client.post("/api/get", json={"Name": "x"}, **post)
        assert got.status_code == 200
        health = client.get("/healthz")
        assert health.status_code == 200
        assert health.data.startswith(b"degraded: ")
        assert b"setec_store_reachable 0.0" in client.get("/metrics").data
        put = client.post("/api/put", json={"Name": "x", "Value": "bmV3"}, **post)
        assert put.status_code == 503
        assert put.data == b"the store cannot be reached; try again later\n"
        storage.down = False
        deadline = time.monotonic() + 10
        while client.get("/healthz").data != b"ok\n":
            assert time.monotonic() < deadline, "the follower did not recover"
            time.sleep(0.02)
        assert b"setec_store_reachable 1.0" in client.get("/metrics").data
        put = client.post("/api/put", json={"Name": "x", "Value": "bmV3"}, **post)
        assert put.status_code == 200
    finally:
        db.close()


def test_the_backup_job_runs_on_one_replica_and_moves_when_it_stops(tmp_path: Path) -> None:
    """Two replicas' backup loops under the same lease: only the holder backs up, the
    other stands by; when the holder stops (releasing the lease) the other takes over
    at its next round and backs up at once."""
    a = open_replica(tmp_path, "a")
    b = open_replica(tmp_path, "b")
    sink = DirBackupSink.from_uri(f"dir://{tmp_path / 'backups'}")
    loops = [
        BackupLoop(db, sink, interval=60, lease=JobLease(db.storage, "backup", db.replica, 30))
        for db in (a, b)
    ]
    try:
        a.put(SU, "x", b"replica-backup")
        assert loops[0].run_once() is not None
        assert loops[1].run_once() is None
        assert loops[1].standing_by == 1
        b.put(SU, "x", b"replica-backup-2")
        assert loops[0].run_once() is not None  # the holder backs up b's change too
        assert loops[1].run_once() is None
        loops[0].stop()  # releases the lease
        taken = loops[1].run_once()
        assert taken is not None
        assert taken.revision == b.revision
        assert loops[0].lease is not None
        assert loops[0].lease.lease is None
    finally:
        loops[1].stop()
        a.close()
        b.close()


def test_a_new_replica_name_is_saved_only_once_the_database_opened(tmp_path: Path) -> None:
    """A start refused before the store opens (here: another key) leaves no replica
    file; a state directory that lost its file gets back the name its log's lines
    carry, so its recorded head is still found."""
    with open_replica(tmp_path, "a") as db:
        db.put(SU, "x", b"replica-named")
    name = replica_name(tmp_path / "a")
    with pytest.raises(KeyMismatchError):
        Database.open(
            tmp_path / "b", key="dev://other", storage=f"sqlite://{tmp_path / 'secrets.db'}"
        )
    assert not (tmp_path / "b" / REPLICA_FILE).exists()
    (tmp_path / "a" / REPLICA_FILE).unlink()
    with open_replica(tmp_path, "a") as db:
        assert db.replica == name
    assert replica_name(tmp_path / "a", create=False) == name


def test_a_renamed_state_directory_does_not_hide_a_cut_log(tmp_path: Path) -> None:
    """Cutting lines from replica b's log and renaming its state directory's replica
    (so that no recorded head would be checked) is refused: the log's authentic last
    line names the replica it was written by. Putting the name back finds the cut."""
    for name in ("a", "b"):
        with open_replica(tmp_path, name) as db:
            for n in range(4):
                db.put(SU, f"s-{name}", f"replica-value-{n}".encode())
    log_b = tmp_path / "b" / "audit.log"
    log_b.write_bytes(b"".join(log_b.read_bytes().splitlines(keepends=True)[:-2]))
    original = (tmp_path / "b" / REPLICA_FILE).read_text()
    (tmp_path / "b" / REPLICA_FILE).write_text("innocent-new-replica\n")
    with pytest.raises(IntegrityCheckError, match="was written by replica") as info:
        open_replica(tmp_path, "b")
    assert original.strip() in str(info.value)
    (tmp_path / "b" / REPLICA_FILE).write_text(original)
    with pytest.raises(IntegrityCheckError, match="ends before the entry the store recorded"):
        open_replica(tmp_path, "b")


def test_a_record_put_back_while_replicas_run_stays_refused(tmp_path: Path) -> None:
    """An older ciphertext of a record copied back (its revision bumped so replicas
    read it): the replica that catches up refuses it, and refuses it again at the next
    look (it is not taken as caught up), and keeps serving the genuine value."""
    with open_replica(tmp_path, "a") as a, open_replica(tmp_path, "b") as b:
        a.put(SU, "acl", b"replica-old-acl")
        key = key_of(tmp_path, "acl")
        old = (
            sqlite3.connect(tmp_path / "secrets.db")
            .execute("SELECT data FROM records WHERE key = ?", (key,))
            .fetchone()[0]
        )
        a.put(SU, "acl", b"replica-new-acl")
        a.activate(SU, "acl", 2)
        b.refresh()
        tamper(
            tmp_path,
            ("UPDATE revision_counter SET revision = revision + 1", ()),
            (
                "UPDATE records SET data = ?, revision = (SELECT revision FROM revision_counter)"
                " WHERE key = ?",
                (old, key),
            ),
        )
        for _ in range(2):
            with pytest.raises(IntegrityCheckError, match="fails its integrity check"):
                b.refresh()
        assert b.get(SU, "acl") == SecretValue(b"replica-new-acl", 2)


def test_an_older_store_put_back_is_found_by_a_replica_with_no_head(tmp_path: Path) -> None:
    """A copy of the store taken before replica b recorded any head, put back after b
    wrote: b's log (with no head recorded for it in the copy) ends in a line claiming
    more commits than the copy made, so b refuses to open it, and 'check' says so."""
    with open_replica(tmp_path, "a") as a:
        a.put(SU, "x", b"replica-before")
    saved = (tmp_path / "secrets.db").read_bytes()
    with open_replica(tmp_path, "b") as b:
        b.put(SU, "x", b"replica-after-1")
        b.put(SU, "x", b"replica-after-2")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"secrets.db{suffix}").unlink(missing_ok=True)
    (tmp_path / "secrets.db").write_bytes(saved)
    with pytest.raises(IntegrityCheckError, match="rolled back"):
        open_replica(tmp_path, "b")
    storage = SqliteStorage(tmp_path / "secrets.db")
    report = check_store(storage, DevKeyProvider(""), audit_path=tmp_path / "b" / "audit.log")
    storage.close()
    assert any("rolled back" in problem for problem in report.problems), report.problems


def test_an_admin_command_does_not_take_a_renamed_state_directory(tmp_path: Path) -> None:
    """The admin commands check the log as a start does: after lines were cut and the
    replica file renamed, AdminAudit.check refuses (it would otherwise record a head
    under the new name, and the server would then open cleanly)."""
    with open_replica(tmp_path, "a") as db:
        for n in range(4):
            db.put(SU, "x", f"replica-admin-{n}".encode())
    log = tmp_path / "a" / "audit.log"
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:-2]))
    (tmp_path / "a" / REPLICA_FILE).write_text("renamed\n")
    storage = SqliteStorage(tmp_path / "secrets.db")
    audit = AdminAudit(log)
    try:
        with pytest.raises(IntegrityCheckError, match="was written by replica"):
            audit.check(storage, DevKeyProvider(""))
    finally:
        audit.close()
        storage.close()


def test_healthz_is_unhealthy_when_the_store_no_longer_agrees(tmp_path: Path) -> None:
    """An integrity entry that is no longer authentic (the store re-encrypted by
    another process, or tampered with) is not an outage to wait out: /healthz answers
    503 and the server must be restarted."""
    with open_replica(tmp_path, "a") as db:
        db.put(SU, "x", b"replica-health")
        follower = db.follow(interval=0.05)
        client = Client(make_app(db, FixedAuthorizer(SU)))
        tamper(
            tmp_path,
            ("UPDATE meta SET value = ? WHERE name = 'integrity'", (b"\\x00" * 200,)),
            ("UPDATE revision_counter SET revision = revision + 1", ()),
        )
        deadline = time.monotonic() + 5
        while not follower.fatal:
            assert time.monotonic() < deadline, "the follower did not find the entry"
            time.sleep(0.01)
        health = client.get("/healthz")
        assert health.status_code == 503
        assert health.data.startswith(b"unhealthy: the store no longer agrees")


def test_a_second_server_under_the_same_name_is_refused(tmp_path: Path) -> None:
    """A copy of a state directory (a cloned disk) opened beside the original: both
    logs check out, but the second to follow finds the name's presence lease held by
    another instance and is refused in one line; once the first stops, it may run."""
    with open_replica(tmp_path, "a") as db:
        db.put(SU, "x", b"replica-clone")
    shutil.copytree(tmp_path / "a", tmp_path / "clone")
    first = open_replica(tmp_path, "a")
    first.follow()
    clone = open_replica(tmp_path, "clone")
    try:
        with pytest.raises(ConfigError, match="another server runs as replica") as info:
            clone.follow()
        assert "\n" not in str(info.value)
        first.close()
        clone.follow()
    finally:
        first.close()
        clone.close()


def test_a_restart_after_a_crash_takes_over_the_dead_instances_presence(
    tmp_path: Path,
) -> None:
    """A server killed without releasing its presence lease: a restart under its name
    watches the lease for a renewal period, sees nobody renew it, and takes it over
    (well before the lease's 15 s ttl), instead of being refused as a clone."""
    with open_replica(tmp_path, "a") as db:
        db.put(SU, "x", b"replica-crash")
    name = replica_name(tmp_path / "a")
    storage = SqliteStorage(tmp_path / "secrets.db")
    try:
        assert storage.acquire_lease(f"replica/{name}", f"{name} dead0001", 15) is not None
    finally:
        storage.close()
    db = open_replica(tmp_path, "a")
    try:
        started = time.monotonic()
        db.follow()
        assert time.monotonic() - started < 10
        storage = SqliteStorage(tmp_path / "secrets.db")
        holders = [lease.holder for lease in storage.leases("replica/")]
        storage.close()
        assert len(holders) == 1
        assert holders[0].startswith(f"{name} ")
        assert holders[0] != f"{name} dead0001"
    finally:
        db.close()
