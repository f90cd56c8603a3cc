"""Audited, durable gets per second through ``setec-serve``, against the previous HTTP
front in the same run.

Three servers run side by side as child processes on loopback, each over its own copy
of one SQLite store of ``--secrets`` secrets, with its durable audit log (every get
writes and fsyncs one audit line, shared between concurrent gets by group commit) and
request logging at ``info``:

* ``setec``: the real ``setec-serve --dev`` console script (the asyncio front);
* ``cheroot``: the same app served by cheroot with the previous front's settings (32
  threads), which tells what the front alone is worth;
* ``previous``: the ``setec-serve`` of the last commit served by cheroot, extracted from
  git (``bench/servers.py``): "today's figure" before this front.

``wrk`` (Debian package ``wrk``) posts ``/api/get`` for random secrets at 1, 8 and 64
connections, in ``--rounds`` interleaved rounds; medians of gets/s, p50, p99 and the
server's CPU time per get are reported. Targets: at 64 connections ``setec`` serves at
least 3 x the ``previous`` gets per second, with p99 under 50 ms.

    python bench/http_get.py              # 2 rounds x 3 connection counts x 3 servers x 8 s
    python bench/http_get.py --quick      # 1 round of 3 s cells

Needs the ``bench`` extra (cheroot). Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
from pathlib import Path

from servers import GET_LUA as LUA
from servers import cheroot_front, cpu_seconds, previous_release, scratch, start, stop, wrk

TARGET_RATIO = 3.0
TARGET_P99_MS = 50.0
CONNECTIONS = (1, 8, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, help="per cell (default 8)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s cells")
    parser.add_argument("--threads", type=int, default=16, help="setec-serve --threads")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 2)
    if shutil.which("wrk") is None:
        raise SystemExit("this bench needs wrk: apt-get install wrk")
    serve = Path(sys.executable).parent / "setec-serve"
    if not serve.exists():
        raise SystemExit(f"{serve} not found: pip install -e '.[bench]' first")

    from setec_core import Database
    from setec_core.testing import SUPERUSER

    logging.getLogger("setec").setLevel(logging.ERROR)
    root = scratch("setec-http-")
    procs = []
    try:
        value = os.urandom(32)
        seed = root / "seed"
        with Database.open(seed, key="dev://") as db:
            db.put_many(SUPERUSER, {f"bench/secret-{i:06d}": value for i in range(args.secrets)})
        states = {}
        for kind in ("setec", "cheroot", "previous"):
            states[kind] = root / kind
            shutil.copytree(seed, states[kind])
        script = root / "get.lua"
        script.write_text(LUA.replace("{last}", str(args.secrets - 1)))
        common = ["--dev", "--listen", "127.0.0.1:0"]
        servers = {}
        proc, url = start(
            [
                str(serve),
                *common,
                "--state-dir",
                str(states["setec"]),
                "--threads",
                str(args.threads),
            ]
        )
        procs.append(proc)
        servers["setec"] = (proc, url)
        proc, url = start(cheroot_front(states["cheroot"], 32))
        procs.append(proc)
        servers["cheroot"] = (proc, url)
        previous = previous_release(root / "previous-code")
        if previous is not None:
            proc, url = start([*previous, *common, "--state-dir", str(states["previous"])])
            procs.append(proc)
            servers["previous"] = (proc, url)
        else:
            print("git or the previous commit is not available: no 'previous' server")
        kinds = list(servers)
        cells = [(kind, c) for c in CONNECTIONS for kind in kinds]
        results: dict[tuple[str, int], list[dict[str, float]]] = {cell: [] for cell in cells}
        for _, url in servers.values():  # warm each up: caches, first fsyncs
            wrk(url, 8, 1, script)
        for r in range(rounds):
            order = cells if r % 2 == 0 else cells[::-1]
            for kind, c in order:
                proc, url = servers[kind]
                before = cpu_seconds(proc.pid)
                got = wrk(url, c, seconds, script)
                used = cpu_seconds(proc.pid) - before
                got["cpu_us"] = used / max(1.0, got["rate"] * seconds) * 1e6
                results[kind, c].append(got)
                print(
                    f"round {r + 1}: {kind:8} c={c:<3} {got['rate']:8.0f}/s "
                    f"p50 {got['p50']:7.2f} ms p99 {got['p99']:7.2f} ms "
                    f"cpu {got['cpu_us']:5.0f} us/get",
                    flush=True,
                )
    finally:
        stop(procs)
        shutil.rmtree(root, ignore_errors=True)

    def med(cell: tuple[str, int], key: str) -> float:
        return statistics.median(x[key] for x in results[cell])

    base = "previous" if "previous" in kinds else "cheroot"
    print(
        f"\nmedians of {rounds} rounds of {seconds:g} s; {args.secrets:,} secrets; "
        f"setec-serve --threads {args.threads}; load {os.getloadavg()[0]:.2f}"
    )
    print(
        f"{'server':10} {'conns':>5} {'gets/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'cpu us/get':>10} {'vs ' + base:>12}"
    )
    for c in CONNECTIONS:
        for kind in kinds:
            ratio = med((kind, c), "rate") / med((base, c), "rate")
            print(
                f"{kind:10} {c:>5} {med((kind, c), 'rate'):>8.0f} {med((kind, c), 'p50'):>8.2f}"
                f" {med((kind, c), 'p99'):>8.2f} {med((kind, c), 'cpu_us'):>10.0f}"
                f" {ratio:>11.2f}x"
            )
    bad = sum(
        x["bad"] + x["errors"] for cell in results for x in results[cell] if cell[0] == "setec"
    )
    if bad:
        print(f"WARNING: {bad:.0f} of setec's responses were not 2xx or failed")
    ratio = med(("setec", 64), "rate") / med((base, 64), "rate")
    p99 = med(("setec", 64), "p99")
    ok = ratio >= TARGET_RATIO and p99 < TARGET_P99_MS and not bad
    print(
        f"\n{'PASS' if ok else 'FAIL'}: at 64 connections setec serves {ratio:.2f}x the "
        f"{base} server's gets per second (target >= {TARGET_RATIO:g}x), p99 {p99:.1f} ms "
        f"(target < {TARGET_P99_MS:g} ms)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
