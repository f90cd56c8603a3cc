"""Replicas: how soon a write acknowledged by one server process is served by another,
and how audited gets per second scale with server processes over one store.

Everything runs on loopback in child processes started here: a throwaway PostgreSQL
cluster (``tests/peers/postgres_server.py``, with PostgreSQL's durable defaults;
``--fast-pg`` turns fsync off as the tests do) and ``setec-serve --dev`` processes,
each with its own state directory (its durable audit log, request logging at ``info``)
over a store of ``--secrets`` secrets.

1. **Propagation.** Replica A takes a put of a new secret; as soon as A acknowledges it,
   one client polls replica B with conditional gets of that name (``404``, not audited,
   until B has it) as fast as it can, and the time from A's answer to B's ``200`` with
   the value is one sample. ``--puts`` samples per cell (a random pause of up to 10 ms
   between them, so that puts fall anywhere in B's polling cycle), with B idle and with
   B under wrk's read load (64 connections of audited gets; ``--connections``). Over
   PostgreSQL (two replicas, ``LISTEN``/``NOTIFY``) and over one SQLite file (two
   processes with separate state directories and the same ``--storage sqlite:///...``;
   the workers of ``--workers 2`` cannot be addressed one at a time). The product's bound is 1 s
   (docs/replicas.md); printed: p50, p99 and max, and p99 / 1 s. The baseline in the same
   cell is B's median poll round trip, the resolution of the measurement.
2. **Scale-out.** Audited gets/s (``POST /api/get`` of random secrets) under the same
   load, two wrk instances of 32 connections each: ``--workers 2`` against
   ``--workers 1`` (each over its own copy of one SQLite store), and two PostgreSQL
   replicas (one wrk instance each) against one (both wrk instances on it); ``--rounds``
   interleaved rounds of ``--seconds`` each, medians. Also printed: the servers' CPU
   time per get, the cores used by the servers, by wrk and by the whole machine. Target:
   two processes serve at least 1.6 x the gets per second of one.

    python bench/replicas.py            # 200 puts per cell, 3 rounds of 5 s (about 1 min 45 s)
    python bench/replicas.py --quick    # 50 puts per cell, 1 round of 3 s (about 35 s)

Needs the Debian packages ``wrk`` and ``postgresql`` and the ``postgres`` extra. Exits 1
if a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import os
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from put_scaling import percentile
from servers import GET_LUA as LUA
from servers import TICKS, cpu_seconds, scratch, stop, wrk

BOUND_MS = 1000.0
TARGET_SCALE = 1.6
CONNECTIONS = 64
#: A version no secret here reaches: a conditional get of it is 404 (not audited) until
#: the secret exists, then 200 with its value.
NEVER = 4294967295
GUARD = {"Content-Type": "application/json", "Sec-X-Tailscale-No-Browsers": "setec"}
LISTENING = re.compile(r"listening on (\S+)(?: \((\d+) workers\))?")
WORKER = re.compile(r"worker \d+: pid (\d+)")


@dataclass
class Server:
    """A running ``setec-serve``: its process, URL and the pids that serve (with
    ``--workers`` N > 1, the workers': the parent only waits for signals)."""

    proc: subprocess.Popen[str]
    url: str
    pids: list[int] = field(default_factory=list)

    def cpu(self) -> list[float]:
        """CPU seconds used so far by each of its serving processes."""
        return [cpu_seconds(pid) for pid in self.pids]


def serve(args: list[str], workers: int = 1) -> Server:
    """Start ``setec-serve ARGS --workers N`` and return it once every worker listens."""
    command = [str(Path(sys.executable).parent / "setec-serve"), *args]
    proc = subprocess.Popen(
        [*command, "--workers", str(workers)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    pids = []
    seen = []
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        seen.append(line)
        pids += [int(p) for p in WORKER.findall(line)]
        m = LISTENING.search(line)
        if m and (workers == 1 or m.group(2) == str(workers)):
            # Keep draining its output so that the server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return Server(proc, m.group(1), pids or [proc.pid])
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"setec-serve {args} did not start:\n{''.join(seen)}")


class Client:
    """One keep-alive HTTP connection to a server's API."""

    def __init__(self, url: str) -> None:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        self._conn = http.client.HTTPConnection(host, int(port), timeout=30)

    def call(self, endpoint: str, body: dict[str, Any]) -> tuple[int, bytes]:
        """POST ``body`` to ``/api/ENDPOINT``; the status and the response body."""
        self._conn.request("POST", f"/api/{endpoint}", json.dumps(body), GUARD)
        response = self._conn.getresponse()
        return response.status, response.read()

    def close(self) -> None:
        """Close the connection."""
        self._conn.close()


def propagation(
    a: Server, b: Server, prefix: str, count: int, rng: random.Random
) -> tuple[list[float], list[float]]:
    """Put ``count`` new secrets on ``a``, each followed by conditional gets on ``b``
    until it serves the value; the delays from ``a``'s answer (ms) and every poll's
    round trip (ms)."""
    writer, reader = Client(a.url), Client(b.url)
    delays, trips = [], []
    try:
        for i in range(count):
            name = f"{prefix}-{i:04d}"
            value = base64.b64encode(os.urandom(16)).decode()
            status, body = writer.call("put", {"Name": name, "Value": value})
            if status != 200:
                raise SystemExit(f"put {name} on {a.url}: {status} {body[:200]!r}")
            acked = time.perf_counter()
            ask = {"Name": name, "Version": NEVER, "UpdateIfChanged": True}
            while True:
                sent = time.perf_counter()
                status, body = reader.call("get", ask)
                now = time.perf_counter()
                trips.append((now - sent) * 1e3)
                if status == 200:
                    if json.loads(body)["Value"] != value:
                        raise SystemExit(f"{b.url} served another value of {name}")
                    break
                if status != 404 or now - acked > 30:
                    raise SystemExit(f"{name} not served by {b.url}: {status} {body[:200]!r}")
            delays.append((now - acked) * 1e3)
            time.sleep(rng.uniform(0, 0.010))
    finally:
        writer.close()
        reader.close()
    return delays, trips


class Load:
    """wrk's read load on one server until :meth:`stop` (SIGINT makes wrk report)."""

    def __init__(self, url: str, script: Path, connections: int) -> None:
        self._proc = subprocess.Popen(
            ["wrk", "-t2", f"-c{connections}", "-d600s", "-s", str(script), url],
            stdout=subprocess.PIPE,
            text=True,
        )

    def stop(self) -> float:
        """Stop wrk; the requests per second it saw."""
        self._proc.send_signal(signal.SIGINT)
        out, _ = self._proc.communicate(timeout=30)
        m = re.search(r"Requests/sec:\s+([\d.]+)", out)
        return float(m.group(1)) if m else float("nan")


def held_connections(server: Server) -> list[int]:
    """How many established TCP connections to ``server``'s port each of its serving
    processes holds (a connection goes to whichever worker accepts it first)."""
    port = f"{int(server.url.rsplit(':', 1)[1]):04X}"
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[1].endswith(":" + port) and fields[3] == "01":  # ESTABLISHED
                inodes.add(f"socket:[{fields[9]}]")
    counts = []
    for pid in server.pids:
        fds = Path(f"/proc/{pid}/fd")
        counts.append(sum(os.readlink(fd) in inodes for fd in fds.iterdir()))
    return counts


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent not idle so far (all cores)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICKS


def drive(
    urls: list[str], servers: list[Server], seconds: float, script: Path, connections: int
) -> dict[str, Any]:
    """One wrk instance per URL, all at once for ``seconds``, ``connections`` in all;
    gets/s summed, the worst p50 and p99, and CPU used by the servers (in all and by
    each serving process), wrk and the machine."""
    results: list[dict[str, float]] = []
    each = connections // len(urls)

    def one(url: str) -> None:
        results.append(wrk(url, each, seconds, script))

    threads = [threading.Thread(target=one, args=(url,)) for url in urls]
    cpu = [c for s in servers for c in s.cpu()]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy, started = busy_seconds(), time.monotonic()
    for t in threads:
        t.start()
    time.sleep(min(1.0, seconds / 2))  # wrk opens its connections at once
    split = [c for s in servers for c in held_connections(s)]
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    rate = sum(r["rate"] for r in results)
    used = [c - c0 for c0, c in zip(cpu, [c for s in servers for c in s.cpu()], strict=True)]
    return {
        "rate": rate,
        "p50": max(r["p50"] for r in results),
        "p99": max(r["p99"] for r in results),
        "failed": sum(r["bad"] + r["errors"] for r in results),
        "cpu_us": sum(used) / max(1.0, rate * seconds) * 1e6,
        "server_cores": sum(used) / wall,
        "each": "+".join(f"{c / wall:.2f}" for c in used),
        "split": "+".join(str(c) for c in split),
        "wrk_cores": (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime)
        / wall,
        "busy_cores": (busy_seconds() - busy) / wall,
    }


def seed(state: Path, count: int, storage: str | None = None) -> None:
    """A store of ``count`` secrets under the dev key (in ``state``, or ``storage``)."""
    from setec_core import Database
    from setec_core.testing import SUPERUSER

    value = os.urandom(32)
    with Database.open(state, key="dev://", storage=storage) as db:
        db.put_many(SUPERUSER, {f"bench/secret-{i:06d}": value for i in range(count)})


def start_postgres(durable: bool) -> Any:
    """Start the throwaway cluster of the tests' peers (imported from tests/peers/)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "peers"))
    from postgres_server import PostgresServer

    return PostgresServer.start(durable=durable)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--puts", type=int, help="propagation samples per cell (default 200)")
    parser.add_argument("--seconds", type=float, help="per scale-out cell (default 5)")
    parser.add_argument("--rounds", type=int, help="interleaved scale-out rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="50 puts, 1 round of 3 s")
    parser.add_argument("--secrets", type=int, default=1_000)
    parser.add_argument(
        "--connections", type=int, default=CONNECTIONS, help="wrk's, in every load (default 64)"
    )
    parser.add_argument("--fast-pg", action="store_true", help="PostgreSQL without fsync")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    puts = args.puts or (50 if args.quick else 200)
    seconds = args.seconds or (3.0 if args.quick else 5.0)
    rounds = args.rounds or (1 if args.quick else 3)
    if shutil.which("wrk") is None:
        raise SystemExit("this bench needs wrk: apt-get install wrk")
    logging.getLogger("setec").setLevel(logging.ERROR)
    rng = random.Random(args.seed)
    whole = time.monotonic()
    quiet = os.getloadavg()[0]  # before this bench loads the machine

    root = scratch("setec-replicas-")
    script = root / "get.lua"
    script.write_text(LUA.replace("{last}", str(args.secrets - 1)))
    pg = start_postgres(durable=not args.fast_pg)
    servers: list[Server] = []
    spread: dict[tuple[str, str], dict[str, Any]] = {}
    scale: dict[str, list[dict[str, Any]]] = {}
    try:
        pg_uri = pg.new_database()
        seed(root / "pg-seed", args.secrets, pg_uri)
        seed(root / "sqlite-seed", args.secrets)
        for copy in ("shared", "workers-1", "workers-2"):
            shutil.copytree(root / "sqlite-seed", root / copy)
        dev = ["--dev", "--listen", "127.0.0.1:0"]

        def replica(name: str, storage: str) -> Server:
            server = serve([*dev, "--state-dir", str(root / name), "--storage", storage])
            servers.append(server)
            return server

        def measure(store: str, a: Server, b: Server) -> None:
            for load in ("idle", "loaded"):
                running = Load(b.url, script, args.connections) if load == "loaded" else None
                time.sleep(1.0 if running else 0)  # let wrk's connections open
                delays, trips = propagation(a, b, f"bench/{store}-{load}", puts, rng)
                rate = running.stop() if running else 0.0
                spread[store, load] = {"delays": delays, "trips": trips, "rate": rate}
                print(
                    f"propagation {store:10} B {load:6}: p50 {percentile(delays, 0.5):7.2f} ms"
                    f" p99 {percentile(delays, 0.99):7.2f} ms max {max(delays):7.2f} ms",
                    flush=True,
                )

        pg_a = replica("pg-a", pg_uri)
        pg_b = replica("pg-b", pg_uri)
        measure("postgresql", pg_a, pg_b)
        shared = f"sqlite://{root / 'shared' / 'secrets.db'}"
        sqlite_a = replica("sqlite-a", shared)
        sqlite_b = replica("sqlite-b", shared)
        measure("sqlite", sqlite_a, sqlite_b)
        for server in (sqlite_a, sqlite_b):  # idle, but their followers poll the file
            servers.remove(server)
        stop([sqlite_a.proc, sqlite_b.proc])

        one = serve([*dev, "--state-dir", str(root / "workers-1")], workers=1)
        servers.append(one)
        two = serve([*dev, "--state-dir", str(root / "workers-2")], workers=2)
        servers.append(two)
        cells: dict[str, tuple[list[str], list[Server]]] = {
            "--workers 1": ([one.url, one.url], [one]),
            "--workers 2": ([two.url, two.url], [two]),
            "postgresql, 1 replica": ([pg_a.url, pg_a.url], [pg_a, pg_b]),
            "postgresql, 2 replicas": ([pg_a.url, pg_b.url], [pg_a, pg_b]),
        }
        for urls, _ in cells.values():  # warm up: caches, first fsyncs
            drive(urls, [], 1, script, args.connections)
        scale = {cell: [] for cell in cells}
        for r in range(rounds):
            order = list(cells) if r % 2 == 0 else list(cells)[::-1]
            for cell in order:
                got = drive(*cells[cell], seconds, script, args.connections)
                scale[cell].append(got)
                print(
                    f"round {r + 1}: {cell:22} {got['rate']:5.0f} gets/s, p99 {got['p99']:5.1f} ms,"
                    f" {got['cpu_us']:3.0f} us/get; connections {got['split']}, cores"
                    f" {got['each']} (wrk {got['wrk_cores']:.2f}, machine {got['busy_cores']:.2f})",
                    flush=True,
                )
    finally:
        stop([s.proc for s in servers])
        pg.stop()
        shutil.rmtree(root, ignore_errors=True)

    ok = report(spread, scale, puts, rounds, seconds, args.fast_pg, args.connections)
    print(f"whole run {time.monotonic() - whole:.0f} s; load average before it {quiet:.2f}")
    sys.exit(0 if ok else 1)


def report(
    spread: dict[tuple[str, str], dict[str, Any]],
    scale: dict[str, list[dict[str, Any]]],
    puts: int,
    rounds: int,
    seconds: float,
    fast_pg: bool,
    connections: int,
) -> bool:
    """Print the tables and the verdicts; whether every target is met."""
    durability = "fsync off" if fast_pg else "durable defaults"
    print(
        f"\nPropagation: put acknowledged by replica A -> the value served by replica B, "
        f"{puts} puts per cell; PostgreSQL with its {durability}; "
        f"load on B: wrk, {connections} connections of audited gets"
    )
    print(
        f"{'store':11} {'B':7} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'poll ms':>8}"
        f" {'p99 / 1 s':>10} {'B gets/s':>9}"
    )
    ok = True
    for (store, load), got in spread.items():
        p99 = percentile(got["delays"], 0.99)
        ok = ok and p99 < BOUND_MS
        rate = f"{got['rate']:9.0f}" if load == "loaded" else f"{'-':>9}"
        print(
            f"{store:11} {load:7} {percentile(got['delays'], 0.5):8.2f} {p99:8.2f}"
            f" {max(got['delays']):8.2f} {statistics.median(got['trips']):8.2f}"
            f" {p99 / BOUND_MS:10.4f} {rate}"
        )
    print("(poll ms: B's median conditional-get round trip, the measurement's resolution)")

    def med(cell: str, key: str) -> float:
        return float(statistics.median(x[key] for x in scale[cell]))

    print(
        f"\nScale-out: audited gets/s, 2 wrk x {connections // 2} connections, "
        f"medians of {rounds} rounds of {seconds:g} s"
    )
    print(
        f"{'servers':24} {'gets/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'us/get':>7}"
        f" {'cores: servers':>14} {'wrk':>5} {'machine':>7} {'ratio':>7}"
    )
    verdicts = []
    for base, more in (
        ("--workers 1", "--workers 2"),
        ("postgresql, 1 replica", "postgresql, 2 replicas"),
    ):
        for cell in (base, more):
            ratio = med(cell, "rate") / med(base, "rate")
            print(
                f"{cell:24} {med(cell, 'rate'):7.0f} {med(cell, 'p50'):7.2f}"
                f" {med(cell, 'p99'):7.2f} {med(cell, 'cpu_us'):7.0f}"
                f" {med(cell, 'server_cores'):14.2f} {med(cell, 'wrk_cores'):5.2f}"
                f" {med(cell, 'busy_cores'):7.2f} {ratio:6.2f}x"
            )
        ratio = med(more, "rate") / med(base, "rate")
        ok = ok and ratio >= TARGET_SCALE
        verdicts.append(
            f"{'PASS' if ratio >= TARGET_SCALE else 'FAIL'}: {more} serve {ratio:.2f}x the "
            f"gets per second of {base} (target >= {TARGET_SCALE:g}x)"
        )
    splits = ", ".join(x["split"] for x in scale["--workers 2"])
    print(f"(connections held by each worker of --workers 2, by round: {splits})")
    failed = sum(x["failed"] for runs in scale.values() for x in runs)
    if failed:
        print(f"WARNING: {failed:.0f} responses were not 2xx or failed")
        ok = False
    worst = max(percentile(c["delays"], 0.99) for c in spread.values())
    print(
        f"\n{'PASS' if worst < BOUND_MS else 'FAIL'}: propagation p99 at most {worst:.1f} ms "
        f"(bound {BOUND_MS:g} ms: {worst / BOUND_MS:.3f} of it)"
    )
    print("\n".join(verdicts))
    return ok


if __name__ == "__main__":
    main()
