"""Audited put latency on SQLite and on PostgreSQL, against store size (the claim:
put latency stays flat as the store grows, on either store).

For each store (``sqlite://`` and ``postgresql://``) and each size N (default 1,000,
10,000 and 100,000) a fresh state directory holds the real audit log (fsync per write)
and, for SQLite, the store; the PostgreSQL stores are databases of one throwaway cluster
on loopback (``tests/peers/postgres_server.py``) started with PostgreSQL's durable
defaults (``fsync``, ``synchronous_commit`` and ``full_page_writes`` on; ``--fast-pg``
turns them off as the tests do). Each store is opened with
``Database.open(state_dir, key="dev://", storage=URI)`` and filled with N secrets by
``put_many`` in batches of 2,000; after untimed warm-up puts, single ``Database.put``
calls of new 32-byte values to random existing secrets are timed, in interleaved rounds
(every round visits every store, in a rotating order) so that noise from the shared
machine falls on all stores alike. Each put is one audit fsync plus one durable commit.

Baselines in the same rounds: a bare ``os.write`` + ``os.fsync`` of a 300-byte line in
a state directory (the audit log's floor), and for PostgreSQL a bare one-row autocommit
``UPDATE`` on the same cluster (one round trip and one durable commit, the store's
floor).

    python bench/storage_put.py            # N = 1,000, 10,000, 100,000 (about 1 min)
    python bench/storage_put.py --quick    # N = 1,000, 10,000; 60 puts (about 10 s)

Prints p50, p99 and mean per store and size, and the ratios PostgreSQL / SQLite at each
size and each size / the smallest size per store. It checks no target and exits 0.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from put_scaling import build, percentile, time_puts

from setec_core import Database

BACKENDS = ("sqlite", "postgresql")
PG_SETTINGS = ("fsync", "synchronous_commit", "full_page_writes", "wal_sync_method")


def start_postgres(durable: bool) -> Any:
    """Start the throwaway cluster of the tests' peers (imported from tests/peers/)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "peers"))
    from postgres_server import PostgresServer

    return PostgresServer.start(durable=durable)


def timed_calls(fn: Callable[[], object], count: int) -> list[float]:
    """Time ``count`` calls of ``fn`` (ms each)."""
    out = []
    for _ in range(count):
        started = time.perf_counter_ns()
        fn()
        out.append((time.perf_counter_ns() - started) / 1e6)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to create the state directories (default: $TMPDIR)")
    parser.add_argument("--sizes", help="comma-separated store sizes (default 1000,10000,100000)")
    parser.add_argument("--samples", type=int, help="timed puts per store and size (default 600)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--warmup", type=int, default=300, help="untimed puts per store")
    parser.add_argument("--quick", action="store_true", help="smoke run: N <= 10,000, 60 puts")
    parser.add_argument("--fast-pg", action="store_true", help="PostgreSQL without fsync")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.getLogger("setec").setLevel(logging.ERROR)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [1_000, 10_000] if args.quick else [1_000, 10_000, 100_000]
    samples = args.samples or (60 if args.quick else 600)
    warmup = min(args.warmup, 100) if args.quick else args.warmup
    per_round = max(1, samples // args.rounds)
    rng = random.Random(args.seed)
    whole = time.perf_counter()

    server = start_postgres(durable=not args.fast_pg)
    root = tempfile.mkdtemp(prefix="setec-storage-put-", dir=args.dir)
    dbs: dict[tuple[str, int], Database] = {}
    cells = [(backend, n) for n in sizes for backend in BACKENDS]
    try:
        import psycopg

        scratch_uri = server.new_database()
        pg = psycopg.connect(scratch_uri, autocommit=True)
        pg.execute("CREATE TABLE bench_floor (id int PRIMARY KEY, v bytea)")
        pg.execute("INSERT INTO bench_floor VALUES (0, NULL)")
        settings = {s: pg.execute(f"SHOW {s}").fetchone()[0] for s in PG_SETTINGS}  # type: ignore[index]
        version = pg.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        print(
            f"PostgreSQL {version} on 127.0.0.1: "
            + ", ".join(f"{k}={v}" for k, v in settings.items())
        )
        print("SQLite: WAL, synchronous=FULL; audit log: a real file, fsync per put\n")

        for backend, n in cells:
            state = os.path.join(root, f"{backend}-{n}")
            uri = (
                f"sqlite://{os.path.join(state, 'secrets.db')}"
                if backend == "sqlite"
                else server.new_database()
            )
            started = time.perf_counter()
            dbs[backend, n] = build(state, n, uri)
            print(f"built {backend} N={n:,} in {time.perf_counter() - started:.1f} s", flush=True)
        for backend, n in cells:
            # Warm-up, not measured: lets SQLite's WAL reach its checkpoint size (see
            # bench/put_scaling.py) and fills PostgreSQL's caches and pool.
            time_puts(dbs[backend, n], n, warmup, rng)

        fd = os.open(os.path.join(root, "floor.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        line = b"x" * 299 + b"\n"

        def write_and_sync() -> None:
            os.write(fd, line)
            os.fsync(fd)

        floors: dict[str, Callable[[], object]] = {
            "fsync": write_and_sync,
            "pg commit": lambda: pg.execute(
                "UPDATE bench_floor SET v = %s WHERE id = 0", (os.urandom(32),)
            ),
        }
        times: dict[Any, list[float]] = {c: [] for c in [*cells, *floors]}
        order: list[Any] = [*cells, *floors]
        for r in range(args.rounds):
            shift = r % len(order)
            for cell in order[shift:] + order[:shift]:
                if cell in floors:
                    times[cell].extend(timed_calls(floors[cell], per_round))
                else:
                    times[cell].extend(time_puts(dbs[cell], cell[1], per_round, rng))
        os.close(fd)
        pg.close()
    finally:
        for db in dbs.values():
            db.close()
        shutil.rmtree(root, ignore_errors=True)
        server.stop()

    def p50(cell: Any) -> float:
        return statistics.median(times[cell])

    def mean(cell: Any) -> float:
        return statistics.fmean(times[cell])

    count = per_round * args.rounds
    print(f"\nput latency, ms; {count} puts per cell in {args.rounds} interleaved rounds")
    print(f"{'store':>11} {'N':>8} {'p50':>7} {'p99':>7} {'mean':>7}")
    for backend, n in sorted(cells, key=lambda c: (BACKENDS.index(c[0]), c[1])):
        cell = (backend, n)
        print(
            f"{backend:>11} {n:>8,} {p50(cell):>7.3f} "
            f"{percentile(times[cell], 0.99):>7.3f} {mean(cell):>7.3f}"
        )
    print(f"\nbaselines, ms ({count} calls each, in the same rounds)")
    for name, label in (("fsync", "300-byte write + fsync"), ("pg commit", "PostgreSQL commit")):
        print(
            f"{label:>24}: p50 {p50(name):.3f}  p99 {percentile(times[name], 0.99):.3f}  "
            f"mean {mean(name):.3f}"
        )

    print("\nPostgreSQL / SQLite")
    print(f"{'N':>8} {'p50':>6} {'p99':>6} {'mean':>6}")
    for n in sizes:
        sq, pq = times["sqlite", n], times["postgresql", n]
        print(
            f"{n:>8,} {statistics.median(pq) / statistics.median(sq):>6.2f} "
            f"{percentile(pq, 0.99) / percentile(sq, 0.99):>6.2f} "
            f"{statistics.fmean(pq) / statistics.fmean(sq):>6.2f}"
        )
    print(f"\neach size / N={sizes[0]:,} (p50, mean)")
    print(f"{'N':>8}" + "".join(f"{b:>22}" for b in BACKENDS))
    for n in sizes:
        row = "".join(
            f"{p50((b, n)) / p50((b, sizes[0])):>14.2f} {mean((b, n)) / mean((b, sizes[0])):>7.2f}"
            for b in BACKENDS
        )
        print(f"{n:>8,}{row}")
    print(f"\nwhole run {time.perf_counter() - whole:.0f} s")


if __name__ == "__main__":
    main()
