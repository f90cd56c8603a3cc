"""What a Store's poll costs: a Store tracking 1,000 secrets, one of which changes per poll.

The server is the real ``setec-serve --dev`` console script in its own process (SQLite
in a temporary state dir, durable audit log) on loopback. The bench puts ``--secrets``
secrets, then for each Store configuration builds a Store of all of them and runs
``--polls`` polls (``Store.refresh``); before each poll one secret gets a new active
version. A ``requests`` response hook on the Store's Client counts what crossed the
wire: secret values (decoded ``Value`` fields of 200 answers) and their bytes, response
body bytes, and statuses.

Configurations, all in the same run: the Store polling one secret at a time (Go's
Store: ``poll_concurrency=1``), our default (4 in flight), and the baseline a program
without conditional gets would use: a plain ``get`` of every secret.

Target: exactly one value travels per poll: the secret
that changed. Prints the figures and ratios; exits 1 if the target is missed.

    python bench/store_poll.py                # 1,000 secrets, 10 polls per Store
    python bench/store_poll.py --quick        # 1,000 secrets, 3 polls per Store
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import requests

from setec_core.client import Client, Store

VALUE_SIZE = 64


class WireCounter:
    """Counts what the server sends back through one requests.Session."""

    def __init__(self) -> None:
        self.statuses: Counter[int] = Counter()
        self.value_bytes = 0
        self.values = 0
        self.body_bytes = 0

    def hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self.statuses[response.status_code] += 1
        self.body_bytes += len(response.content)
        if response.status_code == 200 and response.url.endswith("/api/get"):
            self.values += 1
            self.value_bytes += len(base64.b64decode(json.loads(response.content)["Value"]))

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


def start_server(state: Path) -> tuple[subprocess.Popen[str], str]:
    exe = Path(sys.executable).parent / "setec-serve"
    command = [str(exe) if exe.exists() else "setec-serve", "--dev", "--log-level", "warning"]
    proc = subprocess.Popen(
        [*command, "--listen", "127.0.0.1:0", "--state-dir", str(state)],
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        found = re.search(r"listening on (\S+)", line)
        if found:
            return proc, found.group(1)
    raise SystemExit(f"setec-serve did not start (exit {proc.wait()})")


def poll_store(
    url: str, names: list[str], admin: Client, polls: int, concurrency: int, round_: int
) -> dict[str, Any]:
    counter = WireCounter()
    session = requests.Session()
    session.hooks["response"].append(counter.hook)
    client = Client(url, session=session)
    store = Store(client, names, poll_interval=None, poll_concurrency=concurrency)
    times, values, value_bytes, body_bytes = [], [], [], []
    statuses: dict[int, int] = {}
    for i in range(polls):
        changed = names[(round_ * polls + i) * 7919 % len(names)]
        new = f"c{concurrency} poll {i}".encode().ljust(VALUE_SIZE, b".")
        admin.activate(changed, admin.put(changed, new))
        counter.reset()
        started = time.perf_counter()
        store.refresh()
        times.append(time.perf_counter() - started)
        values.append(counter.values)
        value_bytes.append(counter.value_bytes)
        body_bytes.append(counter.body_bytes)
        statuses = dict(counter.statuses)
        assert store.secret(changed)() == new  # type: ignore[misc]
    store.close()
    return {
        "ms": statistics.median(times) * 1000,
        "values": values,
        "value_bytes": statistics.median(value_bytes),
        "body_bytes": statistics.median(body_bytes),
        "statuses": statuses,
    }


def naive_poll(url: str, names: list[str], rounds: int) -> dict[str, Any]:
    counter = WireCounter()
    session = requests.Session()
    session.hooks["response"].append(counter.hook)
    client = Client(url, session=session)
    times = []
    for _ in range(rounds):
        counter.reset()
        started = time.perf_counter()
        for name in names:
            client.get(name)
        times.append(time.perf_counter() - started)
    return {
        "ms": statistics.median(times) * 1000,
        "values": [counter.values],
        "value_bytes": counter.value_bytes,
        "body_bytes": counter.body_bytes,
        "statuses": dict(counter.statuses),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--polls", type=int, default=10, help="polls per Store and round")
    parser.add_argument("--quick", action="store_true", help="3 polls, 1 round")
    args = parser.parse_args()
    polls = 3 if args.quick else args.polls
    rounds = 1 if args.quick else 2
    logging.disable(logging.INFO)

    state = Path(tempfile.mkdtemp(prefix="setec-bench-"))
    proc, url = start_server(state / "state")
    try:
        admin = Client(url)
        names = [f"bench/secret-{i:04d}" for i in range(args.secrets)]
        for name in names:
            admin.put(name, name.encode().ljust(VALUE_SIZE, b"."))
        results: dict[str, list[dict[str, Any]]] = {"go (1 in flight)": [], "ours (4)": []}
        naive: list[dict[str, Any]] = []
        for r in range(rounds):  # interleaved, so machine noise falls on each alike
            results["go (1 in flight)"].append(poll_store(url, names, admin, polls, 1, r))
            results["ours (4)"].append(poll_store(url, names, admin, polls, 4, r))
            naive.append(naive_poll(url, names, 1))
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(state, ignore_errors=True)

    naive_ms = statistics.median(n["ms"] for n in naive)
    print(f"store_poll: {args.secrets} secrets against setec-serve --dev in its own process;")
    print(f"  {rounds} rounds x {polls} polls per Store, one secret changed before each poll")
    print("  | poller | values/poll | value bytes | body bytes | poll ms (median) | vs naive |")
    ok = True
    for label, runs in results.items():
        values = [v for run in runs for v in run["values"]]
        ok = ok and all(v == 1 for v in values)
        ms = statistics.median(run["ms"] for run in runs)
        print(
            f"  | {label} | {min(values)}-{max(values)} | {runs[0]['value_bytes']:.0f} | "
            f"{runs[0]['body_bytes']:.0f} {runs[0]['statuses']} | {ms:.0f} | "
            f"{ms / naive_ms:.2f} x |"
        )
    print(
        f"  | naive (get all) | {naive[0]['values'][0]} | {naive[0]['value_bytes']} | "
        f"{naive[0]['body_bytes']} | {naive_ms:.0f} | 1.00 x |"
    )
    go_ms = statistics.median(r["ms"] for r in results["go (1 in flight)"])
    ours_ms = statistics.median(r["ms"] for r in results["ours (4)"])
    print(f"  poll time, 4 in flight / 1 in flight: {ours_ms / go_ms:.2f} x")
    print(f"  target: exactly one value per poll: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
