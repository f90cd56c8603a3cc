"""What the HTTP benches share: starting servers as child processes, driving them with
wrk, reading their CPU time, and the two baselines the HTTP front is measured against.

* ``previous_release(commit)``: the ``setec-serve`` of an earlier commit (by default the
  last one before the HTTP front was replaced), extracted from git into a temporary
  directory and run with this venv's packages, so that "today's figure" is measured in
  the same run on the same machine.
* ``CHEROOT_FRONT``: the current app served by cheroot with the settings the previous
  ``setec-serve`` used (32 threads, its timeouts and limits, its logging set-up), to
  tell what the front alone is worth. Needs the ``bench`` extra
  (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The last commit served by cheroot, thread per connection.
PREVIOUS_COMMIT = "50b08e0"
TICKS = os.sysconf("SC_CLK_TCK")

CHEROOT_FRONT = """\
import logging, logging.handlers, queue, signal, sys, threading
from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter
from setec_core import Database
from setec_core.http import make_app
from setec_plugins.dev_authz import DevAuthorizer

state, threads, cert, key = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
# The previous setec-serve's logging: a queue to one writer thread, records prepared
# (formatted and copied) on the request threads by the standard QueueHandler.
stream = logging.StreamHandler(sys.stderr)
stream.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
records = queue.SimpleQueue()
logging.getLogger().handlers[:] = [logging.handlers.QueueHandler(records)]
logging.getLogger().setLevel(logging.INFO)
logging.handlers.QueueListener(records, stream).start()
db = Database.open(state, key="dev://")
app = make_app(db, DevAuthorizer(), tls=bool(cert))
server = wsgi.Server(("127.0.0.1", 0), app, numthreads=threads, server_name="setec",
                     timeout=10, shutdown_timeout=10)
server.max_request_header_size = 64 * 1024
server.max_request_body_size = 1 << 20
if cert:
    server.ssl_adapter = BuiltinSSLAdapter(cert, key)
server.prepare()
scheme = "https" if cert else "http"
print(f"listening on {scheme}://127.0.0.1:{server.bind_addr[1]}", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
threading.Thread(target=server.serve, daemon=True).start()
stop.wait()
server.stop()
db.close()
"""


#: A wrk script posting ``/api/get`` for random secrets ``bench/secret-000000`` to
#: ``{last}`` (format it in), with the headers a setec API request needs.
GET_LUA = """\
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Sec-X-Tailscale-No-Browsers"] = "setec"
math.randomseed(os.time())
request = function()
  local body = string.format('{"Name":"bench/secret-%06d"}', math.random(0, {last}))
  return wrk.format(nil, "/api/get", nil, body)
end
"""


def start(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start a server process and return it with the URL it printed."""
    proc = subprocess.Popen(
        args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 60
    seen = []
    for line in proc.stdout:
        seen.append(line)
        m = re.search(r"listening on (\S+)", line)
        if m:
            # Keep draining its output so that the server never blocks on a full pipe.
            threading.Thread(target=proc.stdout.read, daemon=True).start()
            return proc, m.group(1)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"server {args} did not start:\n{''.join(seen)}")


def stop(procs: list[subprocess.Popen[str]]) -> None:
    """SIGTERM each process and wait for it (kill after 30 s)."""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds used so far by process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


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
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    assert rate, out
    return {
        "rate": float(rate.group(1)),
        "p50": ms("50"),
        "p99": ms("99"),
        "bad": float(bad.group(1)) if bad else 0.0,
        "errors": float(sum(int(g) for g in errors.groups())) if errors else 0.0,
    }


def extract_release(directory: Path, commit: str = PREVIOUS_COMMIT) -> bool:
    """Extract the packages of ``commit`` (and its ``pyproject.toml``) into
    ``directory``; ``False`` if git or the commit is not available."""
    if shutil.which("git") is None:
        return False
    archive = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "archive",
            commit,
            "setec_core",
            "setec_plugins",
            "setec_cli",
            "pyproject.toml",
        ],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        return False
    with tarfile.open(fileobj=BytesIO(archive.stdout)) as tar:
        tar.extractall(directory, filter="data")
    return True


def previous_release(directory: Path, commit: str = PREVIOUS_COMMIT) -> list[str] | None:
    """Extract the packages of ``commit`` into ``directory`` and return the command that
    runs its ``setec-serve`` (with this venv's dependencies), or ``None`` if git or the
    commit is not available."""
    if not extract_release(directory, commit):
        return None
    return [sys.executable, "-c", PREVIOUS_MAIN, str(directory)]


# The previous release found its plugins through the entry points installed for this
# checkout, which have changed since (its defaults were plugins; they are now built into
# core): it is given the entry points of its own pyproject.toml instead.
PREVIOUS_MAIN = """\
import importlib.metadata as metadata, sys, tomllib
root = sys.argv.pop(1)
sys.path.insert(0, root)
with open(root + "/pyproject.toml", "rb") as f:
    declared = tomllib.load(f)["project"]["entry-points"]["setec"]
points = metadata.EntryPoints(
    metadata.EntryPoint(name, value, "setec") for name, value in declared.items()
)
real = metadata.entry_points
metadata.entry_points = lambda **p: points if p.get("group") == "setec" else real(**p)
sys.argv[0] = "setec-serve"
from setec_cli.serve import main
main()
"""


def cheroot_front(state: Path, threads: int, cert: str = "", key: str = "") -> list[str]:
    """The command serving the current app from ``state`` through cheroot."""
    return [sys.executable, "-c", CHEROOT_FRONT, str(state), str(threads), cert, key]


def scratch(prefix: str) -> Path:
    """A new temporary directory (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix=prefix))
