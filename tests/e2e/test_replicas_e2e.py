"""Replicas end to end (docs/replicas.md): several ``setec-serve`` processes, each with its
own state directory, over one real PostgreSQL database; driven over HTTP with the
Python client, killed, stopped and started again, and the database itself stopped and
started under them."""

from __future__ import annotations

import re
import signal
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.postgres_server import PostgresServer
from replica_process import Replica, eventually, replicas
from serve_process import run_serve

from setec_core.client import Client
from setec_core.errors import NotFound, RequestError, SetecError
from setec_plugins.postgres_storage import PostgresStorage

#: How soon a replica serves what another one committed: the product's promise.
PROPAGATION_SECONDS = 1.0


def value_of(client: Client, name: str, version: int) -> bytes | None:
    """Version ``version`` of ``name`` as ``client``'s server serves it, or ``None``
    while it does not have it."""
    try:
        return client.get_version(name, version).value
    except NotFound:
        return None


def serves(
    replica: Replica, name: str, version: int, value: bytes, within: float, since: float = 0.0
) -> float:
    """Wait until ``replica`` serves ``value`` as version ``version`` of ``name``;
    return the seconds from ``since`` (a :func:`time.monotonic` time; by default, now)
    until it did."""
    since = since or time.monotonic()
    client = replica.client()
    eventually(
        lambda: True if value_of(client, name, version) == value else None,
        within=within,
        what=f"replica {replica.name} serving {name!r} version {version}",
    )
    return time.monotonic() - since


def unserved(client: Client, puts: dict[str, bytes]) -> list[str]:
    """The names of ``puts`` (version 1 of each holding its value) that ``client``'s
    server does not serve so."""
    return [name for name, value in puts.items() if value_of(client, name, 1) != value]


def store_state(uri: str) -> tuple[int, object, object]:
    """The store's revision, records and metadata, read directly (to show that a
    command changed nothing)."""
    with PostgresStorage(uri) as store:
        snapshot = store.export()
    return snapshot.revision, snapshot.records, snapshot.meta


def store_revision(uri: str) -> int:
    """The store's revision now."""
    with PostgresStorage(uri) as store:
        return store.revision()


def password_of(uri: str) -> str:
    """The password in a test database's URI."""
    password = urllib.parse.urlsplit(uri).password
    assert password, uri
    return password


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster of this test's own, which it may stop and start (the
    session's cluster serves the other tests)."""
    with PostgresServer.start() as server:
        yield server


def test_a_put_through_one_replica_is_served_by_the_others_within_a_second(
    tmp_path: Path, postgres_uri: str
) -> None:
    """Three replicas: each put through the first is served by the two others within
    a second of its answer."""
    with replicas(tmp_path, postgres_uri, "alpha", "beta", "gamma") as (a, b, c):
        writer = a.client()
        delays: list[float] = []
        for i in range(5):
            value = f"value {i}".encode()
            version = writer.put("app/shared", value)
            answered = time.monotonic()
            for other in (b, c):
                delays.append(serves(other, "app/shared", version, value, 5, answered))
        assert max(delays) < PROPAGATION_SECONDS, f"delays: {[round(d, 3) for d in delays]}"


def test_concurrent_puts_of_one_secret_through_two_replicas_get_distinct_versions(
    tmp_path: Path, postgres_uri: str
) -> None:
    """Threads putting one secret through two replicas at once: every acknowledged put
    has a version of its own, both replicas end up with versions 1..N (no gap, no
    duplicate), each version serves the value whose put returned it, and nobody got a
    500 (a write that keeps losing races is a 503)."""
    per_thread, threads_per_replica = 12, 2
    with replicas(tmp_path, postgres_uri, "alpha", "beta") as pair:
        acked: list[tuple[int, bytes]] = []
        refused: list[SetecError] = []
        lock = threading.Lock()
        start = threading.Barrier(len(pair) * threads_per_replica)

        def put_many(replica: Replica, thread: int) -> None:
            client = replica.client()
            start.wait()
            for i in range(per_thread):
                value = f"{replica.name}/{thread}/{i}".encode()
                try:
                    version = client.put("app/contended", value)
                except SetecError as e:
                    with lock:
                        refused.append(e)
                    continue
                with lock:
                    acked.append((version, value))

        threads = [
            threading.Thread(target=put_many, args=(replica, t))
            for replica in pair
            for t in range(threads_per_replica)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        conflicts = [e for e in refused if isinstance(e, RequestError) and e.status == 503]
        assert len(conflicts) == len(refused), [str(e) for e in refused]
        versions = sorted(version for version, _ in acked)
        assert len(set(versions)) == len(versions), f"a version returned twice: {versions}"
        assert versions == list(range(1, len(versions) + 1)), versions
        assert len(acked) + len(conflicts) == len(pair) * threads_per_replica * per_thread
        # A loser retries on the newest state at once: refusals are rare (a guard
        # against losers being starved; measured well under 1%).
        assert len(conflicts) <= len(pair) * threads_per_replica * per_thread // 10
        for replica in pair:
            client = replica.client()
            eventually(
                lambda client=client: (
                    True if client.info("app/contended").versions == tuple(versions) else None
                ),
                within=5,
                what=f"replica {replica.name} holding versions 1..{len(versions)}",
            )
            for version, value in acked:
                assert client.get_version("app/contended", version).value == value, (
                    replica.name,
                    version,
                )
        outcomes: Counter[str] = Counter()
        for replica in pair:
            assert "Traceback" not in replica.output, replica.output
            assert '"status": 500' not in replica.output, replica.output
            entries = replica.audit_entries()
            assert {e.get("replica") for e in entries} == {replica.name}
            outcomes.update(e["outcome"] for e in entries if e["action"] == "put")
        # Each attempt at a put is audited "ok" before its commit, and an attempt that
        # lost the race is then audited "conflict" (and tried again, up to 5 times).
        assert outcomes["ok"] - outcomes["conflict"] == len(acked), (outcomes, len(acked))
        assert outcomes["conflict"] >= 5 * len(conflicts), (outcomes, len(conflicts))


def test_puts_acknowledged_before_a_kill_survive_it(tmp_path: Path, postgres_uri: str) -> None:
    """A replica killed with SIGKILL while two replicas take puts: every put either
    acknowledged is served by the survivor, and by the killed one once it is started
    again on its state directory; then ``audit verify`` passes on both state
    directories (the killed replica's log still agrees with the store)."""
    with replicas(tmp_path, postgres_uri, "alpha", "beta") as (victim, survivor):
        acked: dict[str, bytes] = {}
        failures: list[BaseException] = []
        lock = threading.Lock()
        killed, stop = threading.Event(), threading.Event()

        def put_until_stopped(replica: Replica, thread: int) -> None:
            client = Client(replica.url, timeout=10)
            for i in range(1_000_000):
                if stop.is_set():
                    return
                name, value = f"app/{replica.name}-{thread}-{i}", f"v{i}".encode()
                try:
                    client.put(name, value)
                except SetecError as e:
                    # Once the victim is killed its puts fail (no connection, or cut
                    # mid-answer): not acknowledged, so nothing is promised of them.
                    if not (replica is victim and killed.is_set()):
                        with lock:
                            failures.append(e)
                    return
                with lock:
                    acked[name] = value

        threads = [
            threading.Thread(target=put_until_stopped, args=(replica, t))
            for replica in (victim, survivor)
            for t in range(2)
        ]
        for thread in threads:
            thread.start()
        eventually(
            lambda: True if sum(n.startswith("app/alpha") for n in acked) >= 20 else None,
            within=30,
            what="20 puts through the victim",
        )
        killed.set()
        assert victim.stop(signal.SIGKILL) == -signal.SIGKILL
        time.sleep(0.3)  # the survivor keeps taking puts after the kill
        stop.set()
        for thread in threads:
            thread.join(30)
        assert not any(thread.is_alive() for thread in threads)
        assert not failures, [str(e) for e in failures]
        assert acked, "no put was acknowledged"
        # The survivor may still be catching up with the victim's last commits.
        survivor_client = survivor.client()

        def all_served() -> bool:
            missing = unserved(survivor_client, acked)
            assert not missing, f"not served: {missing}"
            return True

        eventually(all_served, within=10, what="the survivor serving every acknowledged put")
        victim.start()
        assert not unserved(victim.client(), acked)
        assert victim.stop() == 0, victim.output
        assert survivor.stop() == 0, survivor.output
    for replica in (victim, survivor):
        code, said = replica.admin("audit", "verify")
        assert code == 0, f"{replica.name}: {said}"
        assert "ok" in said.splitlines(), said


def test_replicas_ride_out_a_database_outage(tmp_path: Path, own_postgres: PostgresServer) -> None:
    """PostgreSQL stopped under two replicas: both keep serving known secrets,
    /healthz says degraded, a put is a 503 with a one-line reason (no traceback, no
    password, there or in the servers' output); once PostgreSQL is back, both say ok
    again by themselves within seconds, puts succeed and each serves the other's."""
    uri = own_postgres.new_database()
    with replicas(tmp_path, uri, "alpha", "beta") as (a, b):
        version = a.client().put("app/known", b"before")
        serves(b, "app/known", version, b"before", within=5)
        own_postgres.pause()
        for replica in (a, b):
            status, body = eventually(
                lambda replica=replica: (
                    got if (got := replica.healthz())[1].startswith("degraded:") else None
                ),
                within=15,
                what=f"replica {replica.name} saying it is degraded",
            )[0]
            assert status == 200, body
            assert replica.metric("setec_store_reachable") == 0
            assert replica.client().get("app/known").value == b"before"
            with pytest.raises(RequestError) as refused:
                replica.client().put("app/during", b"outage")
            assert refused.value.status == 503, refused.value
            reason = refused.value.reason
            assert len(reason.splitlines()) == 1, reason
            assert "Traceback" not in reason, reason
            assert password_of(uri) not in reason, reason
        own_postgres.resume()
        for replica in (a, b):
            eventually(
                lambda replica=replica: True if replica.healthz() == (200, "ok\n") else None,
                within=15,
                what=f"replica {replica.name} healthy again",
            )
            assert replica.metric("setec_store_reachable") == 1
        version = a.client().put("app/after", b"from alpha")
        serves(b, "app/after", version, b"from alpha", within=5)
        version = b.client().put("app/after", b"from beta")
        serves(a, "app/after", version, b"from beta", within=5)
        for replica in (a, b):
            assert replica.client().get("app/known").value == b"before"
    for replica in (a, b):
        assert "Traceback" not in replica.output, replica.output
        assert password_of(uri) not in replica.output


def test_rotate_dek_waits_for_every_replica_to_stop(tmp_path: Path, postgres_uri: str) -> None:
    """rotate-dek while a replica runs is refused in one line naming it, exit
    non-zero, the store unchanged; once every replica stopped cleanly (which ends
    their presence) it re-encrypts, and a replica started again serves the secrets."""
    with replicas(tmp_path, postgres_uri, "alpha", "beta") as (a, b):
        a.client().put("app/one", b"1")
        serves(b, "app/one", 1, b"1", within=5)
        assert b.stop() == 0, b.output
        before = store_state(postgres_uri)
        code, said = b.admin("rotate-dek")
        assert code != 0, said
        errors = [line for line in said.splitlines() if "error" in line]
        assert len(errors) == 1, said
        assert "alpha" in errors[0], said
        assert "beta" not in errors[0], said  # stopped cleanly: its presence ended
        assert "Traceback" not in said, said
        assert password_of(postgres_uri) not in said
        assert store_state(postgres_uri) == before
        assert a.stop() == 0, a.output
        code, said = b.admin("rotate-dek")
        assert code == 0, said
        assert "re-encrypted 1 secrets" in said, said
        assert store_state(postgres_uri)[2] != before[2]  # a new wrapped data key
        a.start()
        assert a.client().get("app/one").value == b"1"


def test_rotate_kek_runs_beside_running_replicas(tmp_path: Path, postgres_uri: str) -> None:
    """rotate-kek from a state directory of its own while two replicas run: it
    succeeds, both replicas go on serving and writing (they keep the data key), and a
    replica restarted with the new key serves everything; the admin's audit log and
    each replica's verify."""
    with replicas(tmp_path, postgres_uri, "alpha", "beta") as (a, b):
        a.client().put("app/one", b"kek-1")
        admin = ("--state-dir", str(tmp_path / "admin"), "--storage", postgres_uri)
        done = run_serve(
            "rotate-kek",
            "--to",
            "dev://rotated",
            *admin,
            "--kms-key-name",
            "dev://",
            cwd=tmp_path,
        )
        assert done.returncode == 0, done.stderr
        assert a.client().put("app/one", b"kek-2") == 2
        serves(b, "app/one", 2, b"kek-2", within=5)
        assert b.stop() == 0, b.output
        b.extra = ("--kms-key-name", "dev://rotated")
        b.start()
        assert b.client().get_version("app/one", 2).value == b"kek-2"
        assert b.client().put("app/one", b"kek-3") == 3
        serves(a, "app/one", 3, b"kek-3", within=5)
    for state in ("admin", "alpha", "beta"):
        verify = run_serve(
            "audit",
            "verify",
            "--state-dir",
            str(tmp_path / state),
            "--storage",
            postgres_uri,
            "--kms-key-name",
            "dev://rotated",
            cwd=tmp_path,
        )
        assert verify.returncode == 0, (state, verify.stdout, verify.stderr)


BACKED_UP = re.compile(r"backed up revision (\d+)")


def backed_up(replica: Replica, revision: int) -> bool | None:
    """True once ``replica`` said it backed up ``revision`` or a later one."""
    return True if any(int(r) >= revision for r in BACKED_UP.findall(replica.output)) else None


def backups_in(directory: Path) -> list[Path]:
    """The backups a dir:// sink holds under ``directory`` (not its temporary files)."""
    return [p for p in directory.rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]


def test_one_replica_at_a_time_takes_the_backups(tmp_path: Path, postgres_uri: str) -> None:
    """Two replicas with the same --backup: only the one holding the backup lease
    backs up (each backup in the directory is one it says it took), and once it is
    stopped with SIGTERM the other takes over and backs up a new change."""
    sink = tmp_path / "backups"
    extra = ("--backup", f"dir://{sink}", "--backup-interval", "1")
    with replicas(tmp_path, postgres_uri, "alpha", "beta", extra=extra) as pair:
        # The first to start normally takes the lease, but either may.
        holder = eventually(
            lambda: next((r for r in pair if BACKED_UP.search(r.output)), None),
            within=15,
            what="a backup at start",
        )[0]
        other = pair[1] if holder is pair[0] else pair[0]
        for i in range(3):
            revision_before = store_revision(postgres_uri)
            pair[i % 2].client().put("app/backed", f"v{i}".encode())
            revision = store_revision(postgres_uri)
            assert revision > revision_before
            eventually(
                lambda revision=revision: backed_up(holder, revision),
                within=15,
                what=f"a backup of revision {revision} by {holder.name}",
            )
        assert not BACKED_UP.search(other.output), other.output
        assert len(backups_in(sink)) == len(BACKED_UP.findall(holder.output))
        assert holder.stop() == 0, holder.output
        stopped = time.monotonic()
        other.client().put("app/backed", b"after the handover")
        revision = store_revision(postgres_uri)
        eventually(
            lambda: backed_up(other, revision),
            within=15,
            what=f"a backup of revision {revision} by {other.name}",
        )
        took_over = time.monotonic() - stopped
        said = BACKED_UP.findall(holder.output) + BACKED_UP.findall(other.output)
        assert len(backups_in(sink)) == len(said), holder.output + other.output
        # The lease is released at the stop; the other asks at its next round (1 s).
        assert took_over < 10, f"{other.name} backed up {took_over:.1f} s after the stop"
