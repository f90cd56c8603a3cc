"""How long a Store of 500 secrets takes to start: batch gets against one get each.

The server is the real ``setec-serve --dev`` console script in its own process (SQLite
in a temporary state dir, durable audit log) on loopback. The bench puts ``--secrets``
secrets (64-byte values), then builds Stores declaring all of them, each with a fresh
Client and no cache, and times the constructor, which returns once it holds every
value. Two cases, in interleaved rounds (their order alternating) so that machine noise
falls on both alike:

- batched: the Store as it is, which asks the server what it offers and then fetches
  100 secrets a request (``/api/get-many``, docs/api.md §9.3);
- one get each (the baseline, what a Store does against Go setec): the same Store over
  a Client that reports no extensions, as a Go server's does.

A ``requests`` response hook counts the requests each start-up sent. Every get is
audited in both cases (one durable audit line per secret; a batch's lines share one
fsync). Target: the batched start-up takes at most 0.2 x the baseline's. Prints the
figures and the ratio; exits 1 if the target is missed.

    python bench/store_startup.py              # 500 secrets, 7 rounds
    python bench/store_startup.py --quick      # 500 secrets, 3 rounds
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import requests
from servers import scratch, start, stop

from setec_core.client import Client, Store

VALUE_SIZE = 64
TARGET = 0.2


class GoLikeClient(Client):
    """A Client that sees no extensions, as against Go setec: the Store then fetches
    one secret a request."""

    def extensions(self) -> frozenset[str]:
        """Nothing beyond Go's API."""
        return frozenset()


def start_store(url: str, names: list[str], batched: bool) -> tuple[float, int]:
    """Build one Store of ``names``; return its start-up time and requests sent."""
    sent = 0

    def count(response: requests.Response, *args: Any, **kwargs: Any) -> None:
        nonlocal sent
        sent += 1

    session = requests.Session()
    session.hooks["response"].append(count)
    client = (Client if batched else GoLikeClient)(url, session=session)
    started = time.perf_counter()
    store = Store(client, names, poll_interval=None)
    elapsed = time.perf_counter() - started
    handle = store.secret(names[-1])
    assert handle is not None
    assert handle() == names[-1].encode().ljust(VALUE_SIZE, b".")
    store.close()
    return elapsed, sent


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="3 rounds")
    args = parser.parse_args()
    rounds = 3 if args.quick else args.rounds
    logging.disable(logging.INFO)

    state = scratch("setec-bench-")
    exe = Path(sys.executable).parent / "setec-serve"
    serve = [str(exe) if exe.exists() else "setec-serve", "--dev", "--log-level", "warning"]
    proc, url = start([*serve, "--listen", "127.0.0.1:0", "--state-dir", str(state / "state")])
    times: dict[bool, list[float]] = {True: [], False: []}
    sent: dict[bool, int] = {}
    try:
        admin = Client(url)
        names = [f"bench/startup-{i:04d}" for i in range(args.secrets)]
        for name in names:
            admin.put(name, name.encode().ljust(VALUE_SIZE, b"."))
        start_store(url, names, True)  # warm both ends up; not counted
        for r in range(rounds):
            for batched in (True, False) if r % 2 == 0 else (False, True):
                elapsed, sent[batched] = start_store(url, names, batched)
                times[batched].append(elapsed)
    finally:
        stop([proc])
        shutil.rmtree(state, ignore_errors=True)

    batched_ms = statistics.median(times[True]) * 1000
    single_ms = statistics.median(times[False]) * 1000
    ratio = batched_ms / single_ms
    print(f"store_startup: a Store of {args.secrets} secrets ({VALUE_SIZE}-byte values), no cache,")
    print(f"  against setec-serve --dev in its own process; {rounds} interleaved rounds")
    print("  | start-up | requests | median ms | min-max ms | vs one get each |")
    for batched, label in ((True, "batched (get-many)"), (False, "one get each (Go)")):
        ms = statistics.median(times[batched]) * 1000
        low, high = min(times[batched]) * 1000, max(times[batched]) * 1000
        print(
            f"  | {label} | {sent[batched]} | {ms:.0f} | {low:.0f}-{high:.0f} | "
            f"{ms / single_ms:.2f} x |"
        )
    ok = ratio <= TARGET
    verdict = "PASS" if ok else "FAIL"
    print(f"  batched / one get each: {ratio:.3f} x (target <= {TARGET} x): {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
