"""Startup time and memory with 100,000 secrets (targets: open < 3 s
and RSS < 300 MB).

Builds a store of 100,000 secrets (or uses the one given with --state-dir), then, in
fresh child processes, measures:

* ``setec``: the wall time of ``Database.open(dir, key=...)`` (plugin loading, key
  unwrap, integrity check, reading and decrypting every record into the in-memory
  index) and the child's peak RSS (VmHWM) after opening;
* ``sqlite``: the baseline, stdlib ``sqlite3`` opening the same file and fetching every
  record row (no decryption, no index), and that child's peak RSS;
* ``import``: the peak RSS of a bare python that only imports ``setec_core.Database``;
* ``previous``: ``Database.open`` as ``setec`` measures it, with the packages of an
  earlier commit (``--previous``, by default the last before record decoding was made
  lean; extracted with git) instead of this checkout's: the figure before, measured in
  the same run. Target: ``setec`` opens in at most half its time.

Each run does all three, in that order; the medians of --runs runs (default 3) are
reported. The store file is in the page cache (warm start) for all of them.

    python bench/open.py                      # build 100,000 secrets in a temp dir
    python bench/open.py --state-dir DIR      # reuse an existing store (key dev://bench)

Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import extract_release

KEY = "dev://bench"
BATCH = 2_000
MAX_OPEN_SECONDS = 3.0
MAX_RSS_MB = 300.0
#: The last commit before opening was made lean.
PREVIOUS_COMMIT = "64d16d4"
#: setec's open time against the previous commit's, at most.
MAX_PREVIOUS_RATIO = 0.5


def peak_rss_mb() -> float:
    """The peak resident set size of this process (VmHWM), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def child(mode: str, state_dir: str) -> None:
    """Run one measurement in this (fresh) process and print it as JSON."""
    result: dict[str, float] = {}
    if mode == "setec":
        from setec_core import Database

        logging.getLogger("setec").setLevel(logging.ERROR)
        started = time.perf_counter()
        db = Database.open(state_dir, key=KEY)
        result["seconds"] = time.perf_counter() - started
        result["rows"] = len(db)
        result["rss_mb"] = peak_rss_mb()
        db.close()
    elif mode == "sqlite":
        import sqlite3

        started = time.perf_counter()
        conn = sqlite3.connect(os.path.join(state_dir, "secrets.db"))
        rows = conn.execute("SELECT key, data, revision FROM records").fetchall()
        result["seconds"] = time.perf_counter() - started
        result["rows"] = len(rows)
        result["rss_mb"] = peak_rss_mb()
        conn.close()
    elif mode == "import":
        # The names of setec_core are imported on first use: take one that loads the
        # database's modules, as "import setec_core" did before it was lazy.
        from setec_core import Database

        result["rss_mb"] = peak_rss_mb()
    else:
        raise SystemExit(f"unknown child mode {mode!r}")
    print(json.dumps(result))


def run_child(mode: str, state_dir: str, code: str | None = None) -> dict[str, float]:
    """Run ``mode`` in a fresh child process (with the packages in ``code`` first on its
    path, if given) and return what it measured."""
    started = time.perf_counter()
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [code, env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--child", mode, state_dir],
        check=True,
        capture_output=True,
        text=True,
        env=env,
        cwd=code or None,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - started
    return result


def build(state_dir: str, count: int) -> None:
    from setec_core import Database
    from setec_core.testing import SUPERUSER

    with Database.open(state_dir, key=KEY) as db:
        for start in range(0, count, BATCH):
            names = (f"prod/app-{i:06d}/db-pass" for i in range(start, min(count, start + BATCH)))
            db.put_many(SUPERUSER, {name: os.urandom(32) for name in names})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", help="an existing store to open (key dev://bench)")
    parser.add_argument("--dir", help="where to build the temporary store (default: $TMPDIR)")
    parser.add_argument("--count", type=int, default=100_000, help="secrets to build")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--previous", default=PREVIOUS_COMMIT, help="commit to compare with ('' for none)"
    )
    parser.add_argument("--child", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    logging.getLogger("setec").setLevel(logging.ERROR)

    temp = None
    state_dir = args.state_dir
    try:
        if state_dir is None:
            temp = tempfile.mkdtemp(prefix="setec-open-", dir=args.dir)
            state_dir = os.path.join(temp, "state")
            started = time.perf_counter()
            build(state_dir, args.count)
            print(f"built {args.count:,} secrets in {time.perf_counter() - started:.1f} s")
        previous = None
        if args.previous:
            previous = os.path.join(temp or tempfile.mkdtemp(), "previous-code")
            if not extract_release(Path(previous), args.previous):
                print(f"git or commit {args.previous} is not available: no 'previous' figures")
                previous = None
        results: dict[str, list[dict[str, float]]] = {"setec": [], "sqlite": [], "import": []}
        if previous is not None:
            results["previous"] = []
        for run in range(args.runs):
            for mode in results:
                if mode == "previous":
                    results[mode].append(run_child("setec", state_dir, previous))
                else:
                    results[mode].append(run_child(mode, state_dir))
            setec, sqlite = results["setec"][-1], results["sqlite"][-1]
            print(
                f"run {run + 1}: open {setec['seconds']:.3f} s, {setec['rss_mb']:.0f} MB; "
                f"sqlite {sqlite['seconds']:.3f} s, {sqlite['rss_mb']:.0f} MB; "
                f"import {results['import'][-1]['rss_mb']:.0f} MB",
                flush=True,
            )
    finally:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)

    def med(mode: str, key: str) -> float:
        return statistics.median(r[key] for r in results[mode])

    rows = int(results["setec"][0]["rows"])
    print(f"\nopening a store of {rows:,} secrets, medians of {args.runs} fresh processes")
    print(f"{'':34} {'seconds':>8} {'process s':>10} {'peak RSS MB':>12}")
    labels = {
        "setec": "Database.open (decrypt, index)",
        "sqlite": "sqlite3: open + fetch all rows",
        "import": "python: import Database",
        "previous": f"Database.open at {args.previous}",
    }
    if "previous" not in results:
        del labels["previous"]
    for mode, label in labels.items():
        secs = f"{med(mode, 'seconds'):.3f}" if mode != "import" else "-"
        print(
            f"{label:34} {secs:>8} {med(mode, 'process_seconds'):>10.3f}"
            f" {med(mode, 'rss_mb'):>12.0f}"
        )
    open_s, rss = med("setec", "seconds"), med("setec", "rss_mb")
    print(
        f"\nratios to the sqlite baseline: time {open_s / med('sqlite', 'seconds'):.1f}x, "
        f"RSS {rss / med('sqlite', 'rss_mb'):.1f}x; RSS above a bare import: "
        f"{rss - med('import', 'rss_mb'):.0f} MB "
        f"({(rss - med('import', 'rss_mb')) * 2**20 / rows:.0f} bytes per secret)"
    )
    ok_time, ok_rss = open_s < MAX_OPEN_SECONDS, rss < MAX_RSS_MB
    print(f"{'PASS' if ok_time else 'FAIL'}: open {open_s:.2f} s (target < {MAX_OPEN_SECONDS} s)")
    print(f"{'PASS' if ok_rss else 'FAIL'}: peak RSS {rss:.0f} MB (target < {MAX_RSS_MB:.0f} MB)")
    ok_previous = True
    if "previous" in results:
        ratio = open_s / med("previous", "seconds")
        ok_previous = ratio <= MAX_PREVIOUS_RATIO
        print(
            f"{'PASS' if ok_previous else 'FAIL'}: open {ratio:.2f}x the time at "
            f"{args.previous} (target <= {MAX_PREVIOUS_RATIO:g}x)"
        )
    sys.exit(0 if ok_time and ok_rss and ok_previous else 1)


if __name__ == "__main__":
    main()
