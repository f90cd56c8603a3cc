"""``setec-serve --workers N`` end to end: the console script as a subprocess, with its
worker processes over one SQLite store (or PostgreSQL) and one listening socket; served
over fresh connections, stopped, reloaded and crashed with signals (docs/server.md,
"Several workers on one host")."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from console_scripts import clean_env, console_script
from serve_process import GUARD, ServeProcess, call, refused, run_serve

from setec_cli.workers import STEADY_SECONDS
from setec_plugins.policy_authz import new_token, policy_entry

WORKER = re.compile(r"worker (\d+): pid (\d+), state dir (\S+)")


def error_lines(stderr: str) -> list[str]:
    """The error lines of setec-serve's output (``setec-serve: error: ...``)."""
    return [line for line in stderr.splitlines() if line.startswith("setec-serve: error: ")]


@contextmanager
def serving(*args: str, cwd: Path, workers: int = 2) -> Iterator[ServeProcess]:
    """Run ``setec-serve --workers N ARGS`` once the parent says that all its workers
    listen; SIGTERM it at the end if it still runs."""
    with ServeProcess("--workers", str(workers), *args, cwd=cwd) as server:
        wait_for(server, f"({workers} workers)")
        yield server


def dev_args(state: Path) -> tuple[str, ...]:
    """--dev on ``state``, on a free loopback port."""
    return ("--dev", "--state-dir", str(state), "--listen", "127.0.0.1:0")


def wait_for(server: ServeProcess, text: str, count: int = 1, timeout: float = 30) -> None:
    """Wait until ``text`` appears ``count`` times in the server's output."""
    deadline = time.monotonic() + timeout
    while server.output.count(text) < count:
        assert server.proc is not None
        assert server.proc.poll() is None, server.output
        assert time.monotonic() < deadline, server.output
        time.sleep(0.05)


def replacement(server: ServeProcess, index: int) -> int:
    """Wait until the parent says a replacement for worker ``index`` serves; its pid."""
    serving = re.compile(rf"worker {index}: pid (\d+) serving")
    wait_for(server, f"worker {index}: pid", count=2)
    deadline = time.monotonic() + 30
    while not (found := serving.search(server.output)):
        assert time.monotonic() < deadline, server.output
        time.sleep(0.05)
    return int(found.group(1))


def worker_pids(output: str) -> dict[int, list[int]]:
    """Each worker slot's pids, in the order the parent started them."""
    pids: dict[int, list[int]] = {}
    for index, pid, _ in WORKER.findall(output):
        pids.setdefault(int(index), []).append(int(pid))
    return pids


def running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def lines_of(path: Path) -> int:
    """How many lines the file at ``path`` holds (0 if there is none)."""
    return path.read_bytes().count(b"\n") if path.exists() else 0


def hit_until(url: str, done: object, *, limit: int = 1000) -> int:
    """POST /api/list over a fresh connection each time until ``done()`` is true;
    every answer must be 200. Returns the number of requests."""
    for n in range(1, limit + 1):
        assert call(url, "list", {}).status_code == 200
        if done():  # type: ignore[operator]
            return n
    raise AssertionError(f"not done after {limit} requests")


def test_two_workers_serve_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    """``--workers 2``: the parent names each worker's pid and state directory and says
    "listening on" once; requests over fresh connections reach both workers (each
    audits into its own log: worker 0 in --state-dir, worker 1 in workers/1, created
    0700); SIGTERM stops both, the parent exits 0 and no process is left."""
    state = tmp_path / "state"
    with serving(*dev_args(state), cwd=tmp_path) as server:
        pids = worker_pids(server.output)
        assert sorted(pids) == [0, 1]
        assert f"state dir {state}/workers/1" in server.output
        assert (state / "workers" / "1").stat().st_mode & 0o777 == 0o700
        assert (state / "workers").stat().st_mode & 0o777 == 0o700
        logs = [state / "audit.log", state / "workers" / "1" / "audit.log"]
        before = [lines_of(log) for log in logs]
        hit_until(
            server.url, lambda: all(lines_of(log) > n for log, n in zip(logs, before, strict=True))
        )
        assert not (state / "workers" / "1" / "secrets.db").exists()
        code = server.stop(signal.SIGTERM)
    assert code == 0, server.output
    assert "stopped: every worker stopped cleanly" in server.output
    assert server.output.count("(2 workers)") == 1
    assert server.output.count("listening on") == 1
    assert not any(running(pid) for pid in (pids[0][0], pids[1][0]))
    assert "Traceback" not in server.output


def test_audit_verify_checks_every_workers_log(tmp_path: Path) -> None:
    """``audit verify`` on the state directory of a --workers server checks its
    audit.log and each workers/N/audit.log, each on its own, naming the file with its
    result; a line cut from a worker's log is a problem named in that file's lines."""
    state = tmp_path / "state"
    with serving(*dev_args(state), "--log-level", "warning", cwd=tmp_path) as server:
        logs = [state / "audit.log", state / "workers" / "1" / "audit.log"]
        hit_until(server.url, lambda: all(lines_of(log) > 1 for log in logs))
        assert server.stop() == 0
    verify = ("--dev", "--state-dir", str(state), "audit", "verify")
    result = run_serve(*verify, cwd=tmp_path, env=clean_env())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("audit.log: ")
    assert any(line.startswith("workers/1/audit.log: ") for line in lines)
    assert "workers/1/audit.log: holds the last entry the store recorded" in result.stdout
    assert lines[-1] == "ok"
    worker_log = logs[1].read_bytes().splitlines(keepends=True)
    logs[1].write_bytes(b"".join(worker_log[:-1]))
    result = run_serve(*verify, cwd=tmp_path, env=clean_env())
    assert result.returncode == 1
    assert any(
        line.startswith("workers/1/audit.log: the file ends before")
        for line in result.stdout.splitlines()
    ), result.stdout
    assert any(
        line.startswith("audit.log: holds the last entry the store recorded")
        for line in result.stdout.splitlines()
    ), result.stdout
    assert len(error_lines(result.stderr)) == 1


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2, 0.6])
def test_a_stop_signal_while_workers_start_never_hangs(tmp_path: Path, delay: float) -> None:
    """SIGTERM to the parent while its workers start stops everything promptly,
    without a traceback, and leaves no worker running."""
    proc = subprocess.Popen(
        [console_script("setec-serve"), "--workers", "3", *dev_args(tmp_path / "s")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=clean_env(),
    )  # fmt: skip
    assert proc.stdout is not None
    assert "worker 0: pid" in proc.stdout.readline()
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"setec-serve --workers hung after a SIGTERM {delay} s into startup")
    assert "Traceback" not in out
    assert proc.returncode == 0, out
    assert "stop signal received" in out
    assert not any(running(pid) for pids in worker_pids(out).values() for pid in pids)


def test_sighup_reloads_every_worker(tmp_path: Path) -> None:
    """SIGHUP to the parent reaches every worker: each re-reads the policy file, so a
    token added to it is accepted over any fresh connection, whichever worker takes it."""
    alice, bob = new_token(), new_token()
    policy = tmp_path / "policy.json"
    rules = [{"action": ["get", "info"], "secret": ["app/*"]}]
    policy.write_text(json.dumps({"tokens": [policy_entry(alice, user="a@x.com", rules=rules)]}))
    args = (
        "--state-dir", str(tmp_path / "s"), "--kms-key-name", "dev://workers",
        "--authorizer", "policy", "--policy-file", str(policy), "--listen", "127.0.0.1:0",
    )  # fmt: skip

    def listed(token: str) -> int:
        headers = {**GUARD, "Authorization": f"Bearer {token}"}
        return requests.post(
            f"{server.url}/api/list", json={}, headers=headers, timeout=10
        ).status_code

    with serving(*args, cwd=tmp_path) as server:
        assert {listed(bob) for _ in range(20)} == {403}
        both = [policy_entry(alice, user="a@x.com", rules=rules), policy_entry(bob, user="b@x.com")]
        policy.write_text(json.dumps({"tokens": both}))
        server.send(signal.SIGHUP)
        wait_for(server, "authorizer configuration reloaded", count=2)
        assert {listed(bob) for _ in range(40)} == {200}
        assert server.stop() == 0
    assert "SIGHUP: asking 2 workers to reload" in server.output
    assert bob not in server.output


def test_a_killed_worker_is_replaced_and_serving_goes_on(tmp_path: Path) -> None:
    """A worker killed (SIGKILL) after it has served a while is logged and replaced in
    its slot, with the same state directory; requests keep being answered, the new
    worker audits into that slot's log, and the parent still stops cleanly."""
    state = tmp_path / "state"
    with serving(*dev_args(state), cwd=tmp_path) as server:
        [old] = worker_pids(server.output)[1]
        time.sleep(STEADY_SECONDS + 0.5)
        os.kill(old, signal.SIGKILL)
        new = replacement(server, 1)
        assert f"worker 1 (pid {old}) was killed by SIGKILL" in server.output
        assert "starting a replacement" in server.output
        assert worker_pids(server.output)[1] == [old, new]
        assert server.output.count(f"state dir {state}/workers/1") == 2
        log = state / "workers" / "1" / "audit.log"
        before = lines_of(log)
        hit_until(server.url, lambda: lines_of(log) > before)
        assert server.stop() == 0, server.output
    assert not running(old)
    assert not running(new)


def test_a_worker_that_dies_soon_after_starting_stops_everything(tmp_path: Path) -> None:
    """A worker that dies within a few seconds of beginning to serve is not replaced (a
    crash loop must not spin): every worker stops, and the parent exits 1 with one line
    naming the worker."""
    state = tmp_path / "state"
    with serving(*dev_args(state), cwd=tmp_path) as server:
        pids = worker_pids(server.output)
        os.kill(pids[1][0], signal.SIGKILL)
        assert server.proc is not None
        code = server.proc.wait(30)
        server.stop()
    assert code == 1
    [error] = error_lines(server.output)
    assert f"worker 1 (pid {pids[1][0]}) was killed by SIGKILL" in error
    assert "replacement" not in server.output
    assert not running(pids[0][0])


def test_a_second_server_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    """A second ``--workers 2`` on a state directory a running one uses is refused in
    one line (the state directory's audit log is locked), exits 1 and leaves no process
    behind; the first keeps serving."""
    state = tmp_path / "state"
    args = dev_args(state)
    with serving(*args, cwd=tmp_path) as server:
        second = refused(
            "--workers", "2", *args, cwd=tmp_path, env=None, error_lines=error_lines,
            naming=("worker 0", "is in use", str(state / "audit.log")),
        )  # fmt: skip
        for pid in (pid for pids in worker_pids(second.stderr).values() for pid in pids):
            assert not running(pid)
        assert "listening on" not in second.stderr
        assert call(server.url, "list", {}).status_code == 200
        assert server.stop() == 0


def test_workers_share_a_unix_socket_that_only_the_parent_removes(tmp_path: Path) -> None:
    """On a unix socket: the workers serve it together; one worker that stops (SIGTERM
    to it alone) leaves the socket file to the others and is replaced; the parent
    removes the file when everything stops."""
    path = tmp_path / "setec.sock"
    state = tmp_path / "state"

    def listed() -> int:
        conn = _UnixConnection(str(path))
        try:
            conn.request("POST", "/api/list", body=b"{}", headers=GUARD)
            return conn.getresponse().status
        finally:
            conn.close()

    with serving(
        "--dev", "--state-dir", str(state), "--listen", f"unix:{path}", cwd=tmp_path
    ) as server:
        assert {listed() for _ in range(10)} == {200}
        [first] = worker_pids(server.output)[1]
        time.sleep(STEADY_SECONDS + 0.5)
        os.kill(first, signal.SIGTERM)
        replacement(server, 1)
        assert path.exists()
        assert {listed() for _ in range(20)} == {200}
        assert server.stop() == 0, server.output
    assert not path.exists()


def test_workers_over_postgresql(tmp_path: Path, postgres_uri: str) -> None:
    """``--workers 2 --storage postgresql://...``: both workers serve from the one
    database (no store in any state directory), and stop cleanly."""
    state = tmp_path / "state"
    args = ("--dev", "--state-dir", str(state), "--storage", postgres_uri)
    with serving(*args, "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        logs = [state / "audit.log", state / "workers" / "1" / "audit.log"]
        before = [lines_of(log) for log in logs]
        hit_until(
            server.url, lambda: all(lines_of(log) > n for log, n in zip(logs, before, strict=True))
        )
        assert server.stop() == 0, server.output
    assert not list(state.rglob("secrets.db"))


def test_a_put_through_one_worker_is_read_through_every_worker(tmp_path: Path) -> None:
    """Each worker catches up with the others' writes: after a put, gets of the new
    version over fresh connections (which land on either worker) soon all answer it."""
    with serving(*dev_args(tmp_path / "s"), cwd=tmp_path) as server:
        for version, value in ((1, "djE="), (2, "djI=")):
            assert call(server.url, "put", {"Name": "app/x", "Value": value}).json() == version
            deadline = time.monotonic() + 5
            while True:
                get = {"Name": "app/x", "Version": version}
                answers = [call(server.url, "get", get) for _ in range(20)]
                if all(r.status_code == 200 and r.json()["Value"] == value for r in answers):
                    break
                assert time.monotonic() < deadline, {(r.status_code, r.text) for r in answers}
                time.sleep(0.2)
        assert server.stop() == 0


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a unix socket."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10)
        sock.connect(self._path)
        self.sock = sock
