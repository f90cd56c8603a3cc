"""How long a ``setec`` command takes from start to exit, against what the same request
costs with curl and what a bare python costs.

Starts the real ``setec-serve --dev`` in its own process (SQLite in a temporary state
dir) on loopback, puts one secret, then times ``--runs`` fresh processes of each case,
in interleaved rounds so that machine noise falls on every case alike:

* ``curl``: the same ``/api/get`` request ``setec get`` makes (POST, the browser guard
  header, ``Content-Type: application/json``): what the request itself costs;
* ``setec get NAME``: the console script, start to exit;
* ``python -c pass``: the interpreter's floor;
* ``python -c 'import click, requests'``: the floor of the libraries the client
  commands are built on, which ``setec get`` cannot go under;
* ``setec --help`` (loads the plugins, which may add commands) and ``setec version``;
* with ``--previous COMMIT`` (the default: the last commit before the server command
  and setec_core's names were imported lazily), the three ``setec`` cases of that
  commit, extracted from git and run with this venv's packages.

Every case runs with its bytecode cached (in a scratch ``PYTHONPYCACHEPREFIX``, written
by an untimed first run), as after ``pip install``. Prints the median and p90 wall time
and the median CPU time (user + system) of each case, and ``setec get`` as a ratio to
curl, to the interpreter, to the libraries and to the previous commit. Target:
``setec get`` (its own code and the request) adds at most 40% to the libraries' floor
(median wall time <= 1.4 x that of ``import click, requests``); exits 1 if it is
missed.

    python bench/cli_startup.py                  # 20 runs per case
    python bench/cli_startup.py --quick          # 5 runs per case
    python bench/cli_startup.py --previous ''    # no previous commit
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from servers import extract_release

from setec_core.client import Client

#: The last commit whose ``setec`` imported the whole server at start-up.
PREVIOUS_COMMIT = "76fd4e5"
NAME = "bench/startup"
VALUE = b"a value of the bench"
TARGET = 1.4

# The previous commit's setec, as its console script runs it. Where it loads plugins
# ("1" after the directory), it is given the entry points of its own pyproject.toml,
# as servers.PREVIOUS_MAIN does for its setec-serve; elsewhere it is not, as the
# importlib.metadata and tomllib that takes would be counted against it.
PREVIOUS_SETEC = """\
import sys
root, own_entry_points = sys.argv.pop(1), sys.argv.pop(1) == "1"
sys.path.insert(0, root)
if own_entry_points:
    import importlib.metadata as metadata, tomllib
    with open(root + "/pyproject.toml", "rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]["setec"]
    points = metadata.EntryPoints(
        metadata.EntryPoint(name, value, "setec") for name, value in declared.items()
    )
    real = metadata.entry_points
    metadata.entry_points = lambda **p: points if p.get("group") == "setec" else real(**p)
sys.argv[0] = "setec"
from setec_cli.setec import main
main()
"""


def script(name: str) -> str:
    """The path of one of this venv's console scripts."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        raise SystemExit(f"{name} is not installed; run pip install -e . in this venv")
    return found


def start_server(state: Path) -> tuple[subprocess.Popen[str], str]:
    """Start ``setec-serve --dev`` on a free loopback port; return it and its URL."""
    command = [script("setec-serve"), "--dev", "--log-level", "warning"]
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


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, float, bytes]:
    """Run ``command`` to its end; return its wall seconds, CPU seconds and stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{command} failed: {proc.stderr.decode(errors='replace')}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return wall, cpu, proc.stdout


def p90(values: list[float]) -> float:
    """The 90th percentile of ``values`` (nearest rank)."""
    ordered = sorted(values)
    return ordered[max(0, -(-len(ordered) * 9 // 10) - 1)]


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="timed runs per case")
    parser.add_argument("--quick", action="store_true", help="5 runs per case")
    parser.add_argument(
        "--previous",
        default=PREVIOUS_COMMIT,
        metavar="COMMIT",
        help=f"also time this commit's setec (default {PREVIOUS_COMMIT}; '' for none)",
    )
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs

    scratch = Path(tempfile.mkdtemp(prefix="setec-bench-cli-"))
    proc, url = start_server(scratch / "state")
    try:
        Client(url).put(NAME, VALUE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("SETEC_")}
        env["SETEC_SERVER"] = url
        # Bytecode cached, as after pip install: without it (PYTHONDONTWRITEBYTECODE
        # and an editable checkout) every run compiles this project's modules again.
        # The cache is kept in the scratch directory, not next to the sources.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(scratch / "pycache")
        setec = script("setec")
        cases: dict[str, list[str]] = {}
        curl = shutil.which("curl")
        if curl:
            cases["curl /api/get"] = [
                *(curl, "-sSf", "-X", "POST", "-H", "Sec-X-Tailscale-No-Browsers: setec"),
                *("-H", "Content-Type: application/json"),
                *("--data", f'{{"Name":"{NAME}","Version":0}}', f"{url}/api/get"),
            ]
        cases["setec get"] = [setec, "get", NAME]
        cases["python -c pass"] = [sys.executable, "-c", "pass"]
        cases["import click, requests"] = [sys.executable, "-c", "import click, requests"]
        cases["setec --help"] = [setec, "--help"]
        cases["setec version"] = [setec, "version"]
        previous = bool(args.previous) and extract_release(scratch / "previous", args.previous)
        if previous:
            old = [sys.executable, "-c", PREVIOUS_SETEC, str(scratch / "previous")]
            cases[f"setec get ({args.previous})"] = [*old, "0", "get", NAME]
            cases[f"setec --help ({args.previous})"] = [*old, "1", "--help"]
            cases[f"setec version ({args.previous})"] = [*old, "0", "version"]

        for label, command in cases.items():  # untimed: writes .pyc files, warms caches
            _, _, out = run_once(command, env)
            if label.startswith("setec get"):
                assert out == VALUE, (label, out)
        walls: dict[str, list[float]] = {label: [] for label in cases}
        cpus: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(runs):
            for label, command in cases.items():
                wall, cpu, _ = run_once(command, env)
                walls[label].append(wall)
                cpus[label].append(cpu)
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)

    median = {label: statistics.median(times) for label, times in walls.items()}
    get = median["setec get"]
    print(f"cli_startup: {runs} runs per case, interleaved; setec-serve --dev on loopback")
    print("  | case | wall p50 ms | wall p90 ms | CPU p50 ms | setec get / this |")
    for label in cases:
        print(
            f"  | {label} | {median[label] * 1000:.0f} | {p90(walls[label]) * 1000:.0f} | "
            f"{statistics.median(cpus[label]) * 1000:.0f} | {get / median[label]:.2f} x |"
        )
    floor = median["import click, requests"]
    if curl:
        print(f"  setec get / curl: {get / median['curl /api/get']:.1f} x")
    print(f"  setec get / python floor: {get / median['python -c pass']:.2f} x")
    print(f"  setec get / libraries floor: {get / floor:.2f} x")
    if previous:
        before = median[f"setec get ({args.previous})"]
        print(f"  setec get / previous setec get: {get / before:.2f} x")
    ok = get <= TARGET * floor
    print(
        f"  target: setec get <= {TARGET} x the libraries' floor: "
        f"{get / floor:.2f} x, {'PASS' if ok else 'FAIL'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
