"""Get throughput with a durable audit log: 1 thread against 16 (concurrent
requests share one fsync; target: 16 threads >= 4x the 1-thread rate).

A Database with the default SQLite store and a real file audit log (one fsync per
write, group commit) holds --secrets secrets; each thread calls ``Database.get`` on
random names for --seconds. Every get writes one audit line and returns only after it
is on disk, so with 1 thread the rate is bounded by fsync latency, and with 16 it
shows how many gets each fsync carries (``AuditLog.entries_written / fsyncs``).

Baseline in the same run: a plain loop of ``os.write`` + ``os.fsync`` of a 300-byte line
(one fsync per line, no group commit) with 1 and 16 threads, to show what the
filesystem alone gives (ext4 merges concurrent fsyncs into one journal commit).

A third pair shows the ceiling that the interpreter itself sets: the same gets against
an in-memory store whose audit log never syncs (``setec_core.testing.new_database``).
Sixteen Python threads on a machine with few cores pay for GIL hand-offs and context
switches on every get; if that ceiling is below 4x the 1-thread durable rate, no group
commit can reach the target on this machine, and the report says so.

The six cases are run in --rounds interleaved rounds (rotating order) and medians are
reported, because the machine is shared and noisy. CPU is the process's user + system
time per operation.

    python bench/audit.py              # 3 rounds of 6 cases x 3 s
    python bench/audit.py --quick      # 1 round of 1 s cases

Exits 1 if 16 threads give less than 4x the 1-thread get rate.
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
import threading
import time
from collections.abc import Callable

from setec_core import Database
from setec_core.testing import SUPERUSER, new_database

TARGET_RATIO = 4.0
LINE = b'{"bench":"' + b"x" * 287 + b'"}\n'  # 300 bytes
assert len(LINE) == 300


def measure(op: Callable[[random.Random], None], threads: int, seconds: float) -> dict[str, float]:
    """Run ``op`` in ``threads`` threads for ``seconds``; return ops/s and CPU per op."""
    counts = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = 0.0

    def worker(i: int) -> None:
        rng = random.Random(i)
        barrier.wait()
        n = 0
        while time.perf_counter() < stop:
            op(rng)
            n += 1
        counts[i] = n

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    cpu0, started = os.times(), time.perf_counter()
    stop = started + seconds
    barrier.wait()
    for w in workers:
        w.join()
    elapsed, cpu1 = time.perf_counter() - started, os.times()
    total = sum(counts)
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
    return {"rate": total / elapsed, "ops": total, "cpu_us": cpu / max(total, 1) * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", help="where to create the temporary store (default: $TMPDIR)")
    parser.add_argument("--secrets", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=16, help="the concurrent case")
    parser.add_argument("--seconds", type=float, help="per case (default 3)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 round of 1 s")
    args = parser.parse_args()
    seconds = args.seconds or (1.0 if args.quick else 3.0)
    rounds = args.rounds or (1 if args.quick else 3)
    logging.getLogger("setec").setLevel(logging.ERROR)

    root = tempfile.mkdtemp(prefix="setec-audit-", dir=args.dir)
    fd = -1
    try:
        db = Database.open(os.path.join(root, "state"), key="dev://bench")
        names = [f"prod/app-{i:06d}/db-pass" for i in range(args.secrets)]
        values = {name: os.urandom(32) for name in names}
        db.put_many(SUPERUSER, values)
        nosync_db = new_database()
        nosync_db.put_many(SUPERUSER, values)
        fd = os.open(os.path.join(root, "plain.log"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        log = db.audit_log
        base = (log.fsyncs, log.entries_written)

        def get(rng: random.Random) -> None:
            db.get(SUPERUSER, rng.choice(names))

        def nosync(rng: random.Random) -> None:
            nosync_db.get(SUPERUSER, rng.choice(names))

        def plain(rng: random.Random) -> None:
            os.write(fd, LINE)
            os.fsync(fd)

        ops = {"get": get, "nosync": nosync, "plain": plain}
        cases = [(kind, t) for kind in ops for t in (1, args.threads)]
        results: dict[tuple[str, int], list[dict[str, float]]] = {c: [] for c in cases}
        for r in range(rounds):
            for kind, threads in cases[r % len(cases) :] + cases[: r % len(cases)]:
                fsyncs, entries = log.fsyncs, log.entries_written
                got = measure(ops[kind], threads, seconds)
                if kind == "get":
                    got["per_fsync"] = (log.entries_written - entries) / max(1, log.fsyncs - fsyncs)
                results[kind, threads].append(got)
                print(
                    f"round {r + 1}: {kind:5} x{threads:<2} {got['rate']:8.0f}/s"
                    f"  cpu {got['cpu_us']:5.0f} us/op",
                    flush=True,
                )
        totals = (log.fsyncs - base[0], log.entries_written - base[1])
        db.close()
        nosync_db.close()
    finally:
        if fd >= 0:
            os.close(fd)
        shutil.rmtree(root, ignore_errors=True)

    def med(case: tuple[str, int], key: str) -> float:
        return statistics.median(x[key] for x in results[case])

    n = args.threads
    print(f"\nmedians of {rounds} rounds of {seconds:g} s, {args.secrets:,} secrets")
    head = ("case", "threads", "ops/s", "vs 1 thr", "CPU us/op", "per fsync")
    print("{:34} {:>7} {:>8} {:>9} {:>10} {:>10}".format(*head))
    rows = [
        ("Database.get (audit group commit)", "get"),
        ("Database.get, audit never synced", "nosync"),
        ("os.write + os.fsync, 300 B", "plain"),
    ]
    for label, kind in rows:
        for threads in (1, n):
            per = "1" if kind == "plain" else "-"
            if kind == "get":
                per = f"{med((kind, threads), 'per_fsync'):.1f}"
            ratio = med((kind, threads), "rate") / med((kind, 1), "rate")
            print(
                f"{label:34} {threads:>7} {med((kind, threads), 'rate'):>8.0f}"
                f" {ratio:>8.2f}x {med((kind, threads), 'cpu_us'):>10.0f} {per:>10}"
            )
    print(f"all get cases: {totals[0]:,} audit fsyncs for {totals[1]:,} entries")
    ratio = med(("get", n), "rate") / med(("get", 1), "rate")
    ceiling = med(("nosync", n), "rate") / med(("get", 1), "rate")
    print(
        f"ceiling: {n} threads of gets that never sync reach {ceiling:.2f}x the durable "
        "1-thread rate; group commit cannot beat that on this machine"
    )
    ok = ratio >= TARGET_RATIO
    print(
        f"\n{'PASS' if ok else 'FAIL'}: {n} threads give {ratio:.2f}x the 1-thread get rate "
        f"(target >= {TARGET_RATIO:g}x)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
