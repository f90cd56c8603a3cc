"""What watching (docs/api.md §9.2) buys and costs: rotation latency of a fleet of
Stores, and the price of 1,000 idle watches on one server.

The server is the real ``setec-serve --dev`` in its own process (SQLite in a temporary
state dir, durable audit log) on loopback.

*Rotation latency*: ``--stores`` Stores (threads of this process, each with its own
Client, as separate programs would have) hold one secret; the bench activates a new
version ``--rotations`` times and records when each Store's watcher fires. Reported:
p50 and p99 over every Store and rotation, and p50 and p99 of the time until the last
Store of a rotation holds the new value. Baseline in the same run: the same Stores
polling instead (``watch=False``). Polling's delay is uniform over its interval, so it
is measured for real at a short interval (``--poll-interval``, default 2 s, the Stores
started at staggered moments over it) and scaled to 30 s by the ratio of the intervals,
which the output says. Target: every Store holds a rotation within 1 s (p99 of the last
Store).

*Idle cost*: the server's RSS and thread count, and the audited gets/s it serves to
wrk (64 connections, ``/api/get`` of random secrets among 1,000), with no watches open
and with ``--watches`` watches parked (raw sockets, each a watch of one secret that
does not change, held open with nothing read), in interleaved rounds. Target: gets/s
with the watches >= 0.9 x without.

    python bench/watch.py            # 100 Stores, 5 rotations; 2 rounds of 8 s wrk cells
    python bench/watch.py --quick    # 100 Stores, 3 rotations; 1 round of 3 s cells
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import shutil
import socket
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from servers import GET_LUA, cpu_seconds, scratch, start, stop, wrk

from setec_core.client import Client, Store, Watcher

SCALED_INTERVAL = 30.0


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def rotation_latency(
    url: str, stores: int, rotations: int, watch: bool, interval: float
) -> tuple[list[float], list[float]]:
    """Seconds from each activation to each Store's watcher firing, and to the last."""
    admin = Client(url)
    name = "bench/rotating"
    admin.activate(name, admin.put(name, b"v0"))
    fleet: list[Store] = []
    try:
        for _ in range(stores):
            fleet.append(Store(Client(url), [name], poll_interval=interval, watch=watch))
            if not watch:  # staggered over the interval: polls fall anywhere in it
                time.sleep(interval / stores)
        watchers = [s.watcher(name) for s in fleet]
        if watch:
            time.sleep(1.0)  # every watch parked
        each: list[float] = []
        last: list[float] = []
        for r in range(rotations):
            arrived: list[float] = []
            threads = [
                threading.Thread(target=_record, args=(w, interval * 2 + 10, arrived))
                for w in watchers
            ]
            for t in threads:
                t.start()
            started = time.monotonic()
            admin.activate(name, admin.put(name, f"v{r + 1}".encode()))
            for t in threads:
                t.join()
            assert len(arrived) == stores, f"{stores - len(arrived)} Stores missed a rotation"
            delays = [a - started for a in arrived]
            each += delays
            last.append(max(delays))
            time.sleep(random.uniform(0.2, 0.5))
        return each, last
    finally:
        for s in fleet:
            s.close()


def _record(watcher: Watcher, patience: float, arrived: list[float]) -> None:
    """Append when ``watcher`` fires (list.append is atomic)."""
    if watcher.wait(patience):
        arrived.append(time.monotonic())


def proc_status(pid: int) -> tuple[float, int]:
    """The process's RSS in MiB and its thread count."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def open_watches(url: str, count: int) -> list[socket.socket]:
    """``count`` parked watches, each on its own connection, none of them read."""
    host = urlsplit(url)
    body = json.dumps(
        {"Secrets": [{"Name": "bench/secret-000000", "Version": 1}], "Timeout": 60}
    ).encode()
    request = (
        f"POST /api/watch HTTP/1.1\r\nHost: {host.netloc}\r\n"
        "Content-Type: application/json\r\nSec-X-Tailscale-No-Browsers: setec\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    socks = []
    for _ in range(count):
        s = socket.create_connection((host.hostname, host.port))
        s.sendall(request)
        socks.append(s)
    return socks


def open_count(url: str) -> float:
    """The server's ``setec_watches`` gauge, from /metrics if it serves one."""
    import requests

    try:
        text = requests.get(f"{url}/metrics", timeout=5).text
    except requests.RequestException:
        return float("nan")
    for line in text.splitlines():
        if line.startswith("setec_watches "):
            return float(line.split()[1])
    return float("nan")


def idle_cost(url: str, pid: int, watches: int, rounds: int, seconds: float, script: Path) -> dict:
    results: dict[str, list[dict[str, float]]] = {"none": [], "watches": []}
    wrk(url, 8, 1, script)  # warm up
    # Before any watch: memory a process once used stays with it, so the later cells
    # without watches are no baseline for RSS.
    rss, threads = proc_status(pid)
    results["before"] = [{"rss": rss, "threads": threads}]
    for r in range(rounds):
        for kind in ("none", "watches") if r % 2 == 0 else ("watches", "none"):
            socks = open_watches(url, watches) if kind == "watches" else []
            try:
                time.sleep(1.0)  # all parked
                rss, threads = proc_status(pid)
                parked = open_count(url)
                before = cpu_seconds(pid)
                got = wrk(url, 64, seconds, script)
                used = cpu_seconds(pid) - before
                got.update(rss=rss, threads=threads, parked=parked)
                got["cpu_us"] = used / max(1.0, got["rate"] * seconds) * 1e6
                results[kind].append(got)
                print(
                    f"  round {r + 1} {kind:8} {got['rate']:7.0f} gets/s  p99 "
                    f"{got['p99']:6.2f} ms  rss {rss:6.1f} MiB  threads {threads}  "
                    f"parked {parked:g}",
                    flush=True,
                )
            finally:
                for s in socks:
                    s.close()
            time.sleep(1.0)  # closed watches released
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", type=int, default=100)
    parser.add_argument("--rotations", type=int, help="default 5 (--quick: 3)")
    parser.add_argument("--poll-interval", type=float, default=2.0)
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--seconds", type=float, help="per wrk cell (default 8)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rotations = args.rotations or (3 if args.quick else 5)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 2)
    if shutil.which("wrk") is None:
        raise SystemExit("this bench needs wrk: apt-get install wrk")
    logging.disable(logging.WARNING)
    serve = Path(sys.executable).parent / "setec-serve"

    root = scratch("setec-watch-")
    command = [str(serve), "--dev", "--listen", "127.0.0.1:0", "--log-level", "warning"]
    proc, url = start([*command, "--state-dir", str(root / "state")])
    ok = True
    try:
        admin = Client(url)
        for i in range(1000):
            admin.put(f"bench/secret-{i:06d}", os.urandom(32))
        script = root / "get.lua"
        script.write_text(GET_LUA.replace("{last}", "999"))

        print(f"watch: setec-serve --dev in its own process; load average {os.getloadavg()}")
        print(f"rotation latency: {args.stores} Stores in this process, {rotations} rotations")
        single, _ = rotation_latency(url, 1, rotations, True, 3600.0)
        watched, watched_last = rotation_latency(url, args.stores, rotations, True, 3600.0)
        polled, polled_last = rotation_latency(
            url, args.stores, rotations, False, args.poll_interval
        )
        scale = SCALED_INTERVAL / args.poll_interval
        print(f"  one Store alone, watching: p50 {statistics.median(single) * 1000:.0f} ms")
        print("  | how | p50 each | p99 each | p50 last Store | p99 last Store |")
        print(
            f"  | watch | {percentile(watched, 50) * 1000:.0f} ms | "
            f"{percentile(watched, 99) * 1000:.0f} ms | "
            f"{percentile(watched_last, 50) * 1000:.0f} ms | "
            f"{percentile(watched_last, 99) * 1000:.0f} ms |"
        )
        print(
            f"  | polling every {args.poll_interval:g} s (measured) | "
            f"{percentile(polled, 50):.2f} s | {percentile(polled, 99):.2f} s | "
            f"{percentile(polled_last, 50):.2f} s | {percentile(polled_last, 99):.2f} s |"
        )
        print(
            f"  | polling every 30 s (measured x {scale:g}) | "
            f"{percentile(polled, 50) * scale:.1f} s | {percentile(polled, 99) * scale:.1f} s | "
            f"{percentile(polled_last, 50) * scale:.1f} s | "
            f"{percentile(polled_last, 99) * scale:.1f} s |"
        )
        ratio = statistics.median(polled) * scale / statistics.median(watched)
        print(f"  median delay, 30 s polling / watch: {ratio:,.0f} x")
        met = percentile(watched_last, 99) < 1.0
        ok = ok and met
        print(f"  target: every Store within 1 s (p99 of the last): {'met' if met else 'MISSED'}")

        print(f"idle cost: {args.watches} parked watches; wrk 64 connections, {seconds:g} s cells")
        results = idle_cost(url, proc.pid, args.watches, rounds, seconds, script)
        med = {k: {f: statistics.median(g[f] for g in v) for f in v[0]} for k, v in results.items()}
        none, busy = med["none"], med["watches"]
        none.update(med["before"])
        print("  | | gets/s | p99 ms | CPU us/get | RSS MiB | threads |")
        for label, m in (("no watches", none), (f"{args.watches} watches", busy)):
            print(
                f"  | {label} | {m['rate']:.0f} | {m['p99']:.2f} | {m['cpu_us']:.0f} | "
                f"{m['rss']:.1f} | {m['threads']:.0f} |"
            )
        print("  (RSS and threads without watches: before the first watch was opened)")
        rate = busy["rate"] / none["rate"]
        print(
            f"  with / without: gets/s {rate:.2f} x, RSS +{busy['rss'] - none['rss']:.1f} MiB "
            f"({(busy['rss'] - none['rss']) * 1024 / args.watches:.1f} KiB a watch), "
            f"threads +{busy['threads'] - none['threads']:.0f}"
        )
        met = rate >= 0.9
        ok = ok and met
        print(f"  target: gets/s with the watches >= 0.9 x without: {'met' if met else 'MISSED'}")
    finally:
        stop([proc])
        shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    sys.exit(main())
