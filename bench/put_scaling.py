"""Put latency against store size (target: put p50 at 100,000 secrets
within 1.5x of put p50 at 100 secrets).

For each size N a fresh state directory (SQLite store + real audit log) is filled with
N secrets by ``put_many``; then single ``Database.put`` calls of new 32-byte values to
random existing secrets are timed. Each put is one audit fsync plus one durable SQLite
commit. Sizes are measured in interleaved rounds (every round visits every store, in a
rotating order) so that noise from the shared machine falls on all sizes alike.

    python bench/put_scaling.py            # N = 100, 10,000, 100,000; ~300 puts each
    python bench/put_scaling.py --quick    # N = 100, 1,000, 10,000; fewer puts

Exits 1 if the largest N's p50 exceeds 1.5x the smallest N's p50.
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

from setec_core import Database
from setec_core.testing import SUPERUSER

TARGET_RATIO = 1.5
BATCH = 2_000
KEY = "dev://bench"


def secret_name(i: int) -> str:
    return f"prod/app-{i:06d}/db-pass"


def build(state_dir: str, n: int, storage: str | None = None) -> Database:
    """Open a new store in ``state_dir`` (or at the ``storage`` URI, with its audit log
    in ``state_dir``) and fill it with ``n`` secrets."""
    db = Database.open(state_dir, key=KEY, storage=storage)
    for start in range(0, n, BATCH):
        batch = {secret_name(i): os.urandom(32) for i in range(start, min(n, start + BATCH))}
        db.put_many(SUPERUSER, batch)
    return db


def time_puts(db: Database, n: int, count: int, rng: random.Random) -> list[float]:
    """Time ``count`` single puts of new values to random existing secrets (ms each)."""
    out = []
    for _ in range(count):
        name = secret_name(rng.randrange(n))
        value = os.urandom(32)
        started = time.perf_counter_ns()
        db.put(SUPERUSER, name, value)
        out.append((time.perf_counter_ns() - started) / 1e6)
    return out


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to create the temporary stores (default: $TMPDIR)")
    parser.add_argument("--sizes", help="comma-separated store sizes (default 100,10000,100000)")
    parser.add_argument("--samples", type=int, help="timed puts per size (default 300)")
    parser.add_argument("--rounds", type=int, default=30, help="interleaved rounds (default 30)")
    parser.add_argument("--quick", action="store_true", help="smoke run: small sizes, 60 puts")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    parser.add_argument("--warmup", type=int, default=400, help="untimed puts per store")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    logging.getLogger("setec").setLevel(logging.ERROR)
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    else:
        sizes = [100, 1_000, 10_000] if args.quick else [100, 10_000, 100_000]
    samples = args.samples or (60 if args.quick else 300)
    per_round = max(1, samples // args.rounds)
    rng = random.Random(args.seed)

    root = tempfile.mkdtemp(prefix="setec-put-scaling-", dir=args.dir)
    dbs: dict[int, Database] = {}
    try:
        for n in sizes:
            started = time.perf_counter()
            dbs[n] = build(os.path.join(root, f"n{n}"), n)
            print(f"built N={n:,} in {time.perf_counter() - started:.1f} s", flush=True)
        for n in sizes:
            # Warm-up, not measured: enough puts for each store's SQLite WAL to reach
            # its auto-checkpoint size (1,000 pages), after which commits reuse WAL
            # space. Before that, puts to a small store grow the WAL file (each fsync
            # then also commits a file-size change) and are ~0.15 ms slower.
            time_puts(dbs[n], n, args.warmup, rng)
        times: dict[int, list[float]] = {n: [] for n in sizes}
        for r in range(args.rounds):
            order = sizes[r % len(sizes) :] + sizes[: r % len(sizes)]
            for n in order:
                times[n].extend(time_puts(dbs[n], n, per_round, rng))
    finally:
        for db in dbs.values():
            db.close()
        if args.keep:
            print(f"stores kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    base = statistics.median(times[sizes[0]])
    print(f"\nput latency, {per_round * args.rounds} puts per size in {args.rounds} rounds")
    print(f"{'N':>9} {'p50 ms':>8} {'p90 ms':>8} {'p50 / p50 at N=' + str(sizes[0]):>18}")
    for n in sizes:
        p50 = statistics.median(times[n])
        print(f"{n:>9,} {p50:>8.3f} {percentile(times[n], 0.9):>8.3f} {p50 / base:>18.2f}")
    ratio = statistics.median(times[sizes[-1]]) / base
    ok = ratio <= TARGET_RATIO
    print(
        f"\n{'PASS' if ok else 'FAIL'}: p50 at N={sizes[-1]:,} is {ratio:.2f}x p50 at "
        f"N={sizes[0]:,} (target <= {TARGET_RATIO}x)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
