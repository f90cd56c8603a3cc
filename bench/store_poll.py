"""What a Store's poll costs: a Store tracking 1,000 secrets, one of which changes per poll.

A real server on loopback (``setec_core.testing.server``, an in-memory database with
its audit log in memory) serves a Store of ``--secrets`` declared secrets. Before each
poll one secret gets a new active version; the poll then runs (``Store.refresh``). A
``requests`` response hook on the Store's Client counts what crossed the wire: bytes of
secret values (decoded ``Value`` fields of 200 answers), responses by status, and all
response body bytes.

Baseline, in the same run: the naive poll a program without conditional gets would
make, one plain ``get`` per secret, over the same Client and server.

Target (issue 4, ARCHITECTURE.md §8): exactly one value travels per poll: the secret
that changed. Prints the figures and the ratios; exits 1 if the target is missed.

    python bench/store_poll.py                # 1,000 secrets, 20 polls
    python bench/store_poll.py --quick        # 1,000 secrets, 5 polls
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import statistics
import sys
import time
from collections import Counter
from typing import Any

import requests

from setec_core.client import Client, Store
from setec_core.testing import SUPERUSER
from setec_core.testing.server import new_server

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=1000)
    parser.add_argument("--polls", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="5 polls")
    args = parser.parse_args()
    polls = 5 if args.quick else args.polls
    logging.disable(logging.INFO)  # the dev key's warning and access logs

    with new_server() as server:
        names = [f"bench/secret-{i:04d}" for i in range(args.secrets)]
        for name in names:
            server.db.put(SUPERUSER, name, name.encode().ljust(VALUE_SIZE, b"."))
        counter = WireCounter()
        session = requests.Session()
        session.hooks["response"].append(counter.hook)
        client = Client(server.url, session=session)

        started = time.perf_counter()
        store = Store(client, names, poll_interval=None)
        startup = time.perf_counter() - started

        poll_times, per_poll = [], []
        for i in range(polls):
            changed = names[(i * 7919) % len(names)]
            version = server.db.put(SUPERUSER, changed, f"new value {i}".encode().ljust(64))
            server.db.activate(SUPERUSER, changed, version)
            counter.reset()
            started = time.perf_counter()
            store.refresh()
            poll_times.append(time.perf_counter() - started)
            per_poll.append((counter.values, counter.value_bytes, counter.body_bytes,
                             dict(counter.statuses)))  # fmt: skip
            assert store.secret(changed)() == f"new value {i}".encode().ljust(64)  # type: ignore[misc]
        store.close()

        naive_times, naive = [], WireCounter()
        session.hooks["response"] = [naive.hook]
        for _ in range(max(2, polls // 4)):
            naive.reset()
            started = time.perf_counter()
            for name in names:
                client.get(name)
            naive_times.append(time.perf_counter() - started)

    values = [p[0] for p in per_poll]
    value_bytes = [p[1] for p in per_poll]
    body_bytes = [p[2] for p in per_poll]
    poll_ms = statistics.median(poll_times) * 1000
    naive_ms = statistics.median(naive_times) * 1000
    print(f"store_poll: {args.secrets} secrets, {polls} polls, one secret changed before each")
    print(f"  startup (initial fetch of every secret): {startup * 1000:.0f} ms")
    print(f"  values per poll:        {values[0]} (min {min(values)}, max {max(values)})")
    print(f"  value bytes per poll:   median {statistics.median(value_bytes):.0f}")
    print(f"  body bytes per poll:    median {statistics.median(body_bytes):.0f} "
          f"(statuses {per_poll[-1][3]})")  # fmt: skip
    print(f"  poll wall time:         median {poll_ms:.1f} ms")
    print(f"  naive poll (get all):   {naive.values} values, {naive.value_bytes} value bytes, "
          f"{naive.body_bytes} body bytes, median {naive_ms:.1f} ms")  # fmt: skip
    print(f"  ratio value bytes ours/naive: "
          f"{statistics.median(value_bytes) / naive.value_bytes:.4f}")  # fmt: skip
    print(f"  ratio poll time ours/naive:   {poll_ms / naive_ms:.2f}")
    ok = all(v == 1 for v in values)
    print(f"  target: exactly one value per poll: {'met' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
