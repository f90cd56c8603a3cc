"""HTTP get throughput of setec-serve against the same WSGI server returning a constant.

Two servers run side by side as child processes, with the same cheroot settings
(``--threads`` threads, the same timeouts), both on loopback:

* ours: the real ``setec-serve --dev`` console script, over a SQLite store of
  ``--secrets`` secrets with its durable audit log (every get writes and fsyncs one
  audit line, shared between concurrent requests by group commit), request logging at
  the default level (``info``);
* baseline: a bare WSGI app in the same cheroot server that reads the request body and
  returns a constant ``{"Value": ..., "Version": 3}`` (what any server pays for HTTP).

``wrk`` (Debian package ``wrk``) drives ``POST /api/get`` for a random one of the
secrets, at 1, 8 and 64 connections; the cells run in ``--rounds`` interleaved rounds
and medians are reported. Target (ARCHITECTURE.md §8): at 64 connections our gets per
second >= 0.8 x the constant server's.

    python bench/http_get.py              # 2 rounds x 3 connection counts x 2 servers x 8 s
    python bench/http_get.py --quick      # 1 round of 3 s cells

Exits 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

TARGET = 0.8
CONNECTIONS = (1, 8, 64)
LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Sec-X-Tailscale-No-Browsers"] = "setec"
math.randomseed(os.time())
request = function()
  local body = string.format('{"Name":"bench/secret-%06d"}', math.random(0, {last}))
  return wrk.format(nil, "/api/get", nil, body)
end
"""
CONSTANT_SERVER = """\
import signal, sys, threading
from cheroot import wsgi
BODY = b'{{"Value":"{value}","Version":3}}'
def app(environ, start_response):
    length = int(environ.get("CONTENT_LENGTH") or 0)
    environ["wsgi.input"].read(length)
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(BODY)))])
    return [BODY]
server = wsgi.Server(("127.0.0.1", 0), app, numthreads={threads}, timeout=10,
                     shutdown_timeout=10)
server.prepare()
print("listening on http://127.0.0.1:%d" % server.bind_addr[1], flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
threading.Thread(target=server.serve, daemon=True).start()
stop.wait()
server.stop()
"""


def start(args: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """Start a server process and return it with the URL it printed."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        m = re.search(r"listening on (\S+)", line)
        if m:
            # Keep draining its output so that the server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"server {args[0]} did not start")


def wrk(url: str, connections: int, seconds: float, script: Path) -> dict[str, float]:
    """Run wrk and return requests/s, p50 and p99 in ms, and non-2xx responses."""
    out = subprocess.run(
        [
            "wrk",
            f"-t{min(2, connections)}",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    def ms(label: str) -> float:
        m = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        assert m, out
        return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]

    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    assert rate, out
    return {
        "rate": float(rate.group(1)),
        "p50": ms("50"),
        "p99": ms("99"),
        "bad": float(bad.group(1)) if bad else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--secrets", type=int, default=1_000)
    parser.add_argument("--threads", type=int, default=32, help="server threads (both)")
    parser.add_argument("--seconds", type=float, help="per cell (default 8)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (default 2)")
    parser.add_argument("--quick", action="store_true", help="1 round of 3 s cells")
    args = parser.parse_args()
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    rounds = args.rounds or (1 if args.quick else 2)
    if shutil.which("wrk") is None:
        raise SystemExit("this bench needs wrk: apt-get install wrk")
    serve = Path(sys.executable).parent / "setec-serve"
    if not serve.exists():
        raise SystemExit(f"{serve} not found: pip install -e . first")

    from setec_core import Database
    from setec_core.testing import SUPERUSER

    logging.getLogger("setec").setLevel(logging.ERROR)
    root = Path(tempfile.mkdtemp(prefix="setec-http-"))
    procs: list[subprocess.Popen[str]] = []
    try:
        state = root / "state"
        value = os.urandom(32)
        with Database.open(state, key="dev://") as db:
            db.put_many(SUPERUSER, {f"bench/secret-{i:06d}": value for i in range(args.secrets)})
        script = root / "get.lua"
        script.write_text(LUA.replace("{last}", str(args.secrets - 1)))
        ours, ours_url = start(
            [
                str(serve),
                "--dev",
                "--state-dir",
                str(state),
                "--listen",
                "127.0.0.1:0",
                "--threads",
                str(args.threads),
            ]
        )
        procs.append(ours)
        code = textwrap.dedent(CONSTANT_SERVER).format(
            value=base64.b64encode(value).decode(), threads=args.threads
        )
        const, const_url = start([sys.executable, "-c", code])
        procs.append(const)
        cells = [(kind, c) for c in CONNECTIONS for kind in ("constant", "setec")]
        results: dict[tuple[str, int], list[dict[str, float]]] = {cell: [] for cell in cells}
        for r in range(rounds):
            order = cells if r % 2 == 0 else cells[::-1]
            for kind, c in order:
                got = wrk(const_url if kind == "constant" else ours_url, c, seconds, script)
                results[kind, c].append(got)
                print(
                    f"round {r + 1}: {kind:8} c={c:<3} {got['rate']:8.0f}/s "
                    f"p50 {got['p50']:7.2f} ms p99 {got['p99']:7.2f} ms",
                    flush=True,
                )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)

    def med(cell: tuple[str, int], key: str) -> float:
        return statistics.median(x[key] for x in results[cell])

    print(
        f"\nmedians of {rounds} rounds of {seconds:g} s; {args.secrets:,} secrets; "
        f"{args.threads} server threads; load {os.getloadavg()[0]:.2f}"
    )
    print(f"{'server':10} {'conns':>5} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'vs const':>9}")
    for c in CONNECTIONS:
        for kind in ("constant", "setec"):
            ratio = med((kind, c), "rate") / med(("constant", c), "rate")
            print(
                f"{kind:10} {c:>5} {med((kind, c), 'rate'):>8.0f} {med((kind, c), 'p50'):>8.2f}"
                f" {med((kind, c), 'p99'):>8.2f} {ratio:>8.2f}x"
            )
    bad = sum(x["bad"] for cell in results for x in results[cell])
    if bad:
        print(f"WARNING: {bad:.0f} responses were not 2xx")
    ratio = med(("setec", 64), "rate") / med(("constant", 64), "rate")
    ok = ratio >= TARGET and not bad
    print(
        f"\n{'PASS' if ok else 'FAIL'}: at 64 connections setec serves {ratio:.2f}x the constant "
        f"server's gets per second (target >= {TARGET:g}x)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
