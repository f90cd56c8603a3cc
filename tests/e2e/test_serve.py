"""``setec-serve`` end to end: the console script started as a subprocess, spoken to
over HTTP(S) on loopback, stopped by signals."""

from __future__ import annotations

import base64
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
import requests
from console_scripts import default_sigint
from serve_process import ServeProcess, console_script, run_serve
from tls_certs import self_signed

from setec_core.audit import verify

GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
SECRET = b"e2e-secret-value-7f3a"


def call(url: str, method: str, body: object, **kw: object) -> requests.Response:
    return requests.post(f"{url}/api/{method}", json=body, headers=GUARD, timeout=10, **kw)  # type: ignore[arg-type]


def test_dev_server_serves_the_readme_curl(tmp_path: Path) -> None:
    """The README's first command: a dev server with no setup, its state in
    ./setec-dev.state (0700), audit.log (0600), a loud warning."""
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        put = call(
            server.url,
            "put",
            {"Name": "dev/hello-world", "Value": base64.b64encode(SECRET).decode()},
        )
        assert (put.status_code, put.text) == (200, "1")
        # The seed's curl sends lower-case keys.
        got = requests.post(
            f"{server.url}/api/get", data='{"name": "dev/hello-world"}', headers=GUARD, timeout=10
        )
        assert got.json() == {"Value": base64.b64encode(SECRET).decode(), "Version": 1}
        assert requests.get(f"{server.url}/healthz", timeout=10).text == "ok\n"
        assert server.stop() == 0
    out = server.output
    assert "NOT SAFE FOR PRODUCTION" in out
    assert "stopped" in out
    state = tmp_path / "setec-dev.state"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "audit.log").stat().st_mode) == 0o600
    report = verify(state / "audit.log")
    assert report.ok
    assert report.entries == 2
    assert SECRET.decode() not in out
    assert base64.b64encode(SECRET).decode() not in out


def test_state_survives_restart_and_env_vars_work(tmp_path: Path) -> None:
    """SETEC_STATE_DIR and SETEC_LISTEN configure the server, and a secret put before a
    restart is listed after it, from that directory (not --dev's default)."""
    env = {"SETEC_STATE_DIR": str(tmp_path / "st"), "SETEC_LISTEN": "127.0.0.1:0"}
    with ServeProcess("--dev", cwd=tmp_path, env=env) as server:
        call(server.url, "put", {"Name": "a", "Value": "eA=="})
    with ServeProcess("--dev", cwd=tmp_path, env=env) as server:
        listed = call(server.url, "list", {}).json()
        assert "LastAccess" in listed[0]  # the put, recorded at the stop (api.md §9.5)
        del listed[0]["LastAccess"]
        assert listed == [{"Name": "a", "Versions": [1], "ActiveVersion": 1}]
    assert (tmp_path / "st" / "audit.log").exists()
    assert not (tmp_path / "setec-dev.state").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--state-dir (or SETEC_STATE_DIR) must be given"),
        (("--state-dir", "s"), "--kms-key-name (or SETEC_KMS_KEY_NAME) must be given"),
        (("--dev", "--listen", "0.0.0.0:8080"), "--dev serves only on loopback"),
        (("--dev", "--listen", "nonsense"), "--listen 'nonsense' is not HOST:PORT"),
        (("--dev", "--authorizer", "nope", "--listen", "127.0.0.1:0"), "nope"),
        (
            (
                "--state-dir",
                "s",
                "--kms-key-name",
                "dev://",
                "--authorizer",
                "dev",
                "--listen",
                "127.0.0.1:0",
            ),
            "only available with --dev",
        ),
        (("--dev", "--kms-key-name", "nope://x"), "nope://x"),
        (("--dev", "--tls-cert", "c.pem"), "--tls-cert and --tls-key must be given together"),
        (("--dev", "--tls-cert", "c.pem", "--tls-key", "k.pem"), "is not a readable file"),
    ],
    ids=[
        "no state dir",
        "no key",
        "dev on a public address",
        "bad listen",
        "unknown authorizer",
        "dev authorizer without dev",
        "unknown key scheme",
        "cert without key",
        "missing cert file",
    ],
)
def test_startup_errors_are_one_clear_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    """Each unusable configuration exits 1 with a message saying what is wrong, and no
    traceback."""
    result = run_serve(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_wrong_key_refuses_and_changes_nothing(tmp_path: Path) -> None:
    """Opening a state directory with another key exits 1 naming that key, without a
    traceback, and leaves every file as it was."""
    state = tmp_path / "st"
    with ServeProcess(
        "--dev", "--state-dir", str(state), "--listen", "127.0.0.1:0", cwd=tmp_path
    ) as server:
        call(server.url, "put", {"Name": "a", "Value": "eA=="})
    before = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
    result = run_serve(
        "--dev", "--state-dir", str(state), "--kms-key-name", "dev://other", cwd=tmp_path
    )
    assert result.returncode == 1
    assert "dev://other" in result.stderr
    assert "Traceback" not in result.stderr
    after = {p.name: p.read_bytes() for p in state.iterdir() if p.is_file()}
    assert after == before


def test_plugins_command_lists_the_defaults(tmp_path: Path) -> None:
    """`setec-serve plugins` lists the default key provider, storage backends and dev
    authorizer."""
    result = run_serve("plugins", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for kind, name in [
        ("key provider", "dev"),
        ("storage backend", "sqlite"),
        ("storage backend", "memory"),
        ("authorizer", "dev"),
    ]:
        assert any(line.startswith(kind) and f" {name} " in line for line in lines), result.stdout


def test_tls(tmp_path: Path) -> None:
    """With --tls-cert and --tls-key the server speaks HTTPS only (plain HTTP does not
    connect) and sends Strict-Transport-Security."""
    cert, key = self_signed(tmp_path)
    args = ("--dev", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key))
    with ServeProcess(*args, cwd=tmp_path) as server:
        assert server.url.startswith("https://127.0.0.1:")
        resp = call(server.url, "put", {"Name": "a", "Value": "eA=="}, verify=str(cert))
        assert resp.text == "1"
        assert "max-age" in resp.headers["Strict-Transport-Security"]
        with pytest.raises(requests.ConnectionError):
            requests.post(server.url.replace("https", "http") + "/api/list", timeout=5)


def test_sigterm_lets_requests_finish(tmp_path: Path) -> None:
    """Graceful shutdown: while clients hammer the server, SIGTERM stops it; every
    response that arrived is whole, and the audit log is complete and valid."""
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        call(server.url, "put", {"Name": "a", "Value": "eA=="})
        ok: list[int] = []
        bad: list[str] = []
        stop = threading.Event()

        def hammer() -> None:
            with requests.Session() as s:
                while not stop.is_set():
                    try:
                        r = s.post(
                            f"{server.url}/api/get", json={"Name": "a"}, headers=GUARD, timeout=10
                        )
                    except requests.ConnectionError:
                        return
                    if r.status_code == 200 and r.json()["Version"] == 1:
                        ok.append(1)
                    else:
                        bad.append(f"{r.status_code} {r.text!r}")

        threads = [threading.Thread(target=hammer) for _ in range(8)]
        for t in threads:
            t.start()
        while len(ok) < 200 and not bad:
            threading.Event().wait(0.01)
        code = server.stop(signal.SIGTERM)
        stop.set()
        for t in threads:
            t.join(10)
    assert code == 0
    assert not bad
    report = verify(tmp_path / "setec-dev.state" / "audit.log")
    assert report.ok
    # Every 200 was audited first (plus the put); nothing was audited without a reply
    # being attempted, so the log has at least as many lines as successes.
    assert report.entries >= len(ok) + 1


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_during_startup_never_hangs(tmp_path: Path, signum: int) -> None:
    """A signal that arrives while the server opens its database or binds its socket
    ends the process promptly, without a traceback (cheroot's worker threads are not
    daemons: left running, they would keep the process alive forever)."""
    for attempt, delay in enumerate((0.0, 0.01, 0.03, 0.06, 0.1)):
        proc = subprocess.Popen(
            [console_script("setec-serve"), "--dev", "--listen", "127.0.0.1:0",
             "--state-dir", str(tmp_path / f"s{attempt}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            preexec_fn=default_sigint,
        )  # fmt: skip
        assert proc.stderr is not None
        # The first line comes after the imports; the signal lands in the startup.
        assert "dev mode" in proc.stderr.readline()
        time.sleep(delay)
        proc.send_signal(signum)
        try:
            _, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            pytest.fail(f"setec-serve hung after a signal {delay} s into startup")
        assert "Traceback" not in err
        # 0 if it was already serving; before that, click's "Aborted!" (1) for SIGINT
        # or the default action of SIGTERM (nothing is half-written either way).
        assert proc.returncode in (0, 1, -signum), err


def test_setec_server_alias(tmp_path: Path) -> None:
    """``setec server`` is the same command as ``setec-serve``."""
    result = subprocess.run(
        [console_script("setec"), "server", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--state-dir" in result.stdout
    assert "--tailscale-socket" in result.stdout


def test_readme_server_command_and_curl(tmp_path: Path) -> None:
    """The README's server command ends in ``setec-serve --dev`` (after making a
    virtual environment and installing into it), and its curl examples
    (run here through requests, with the same headers and bodies) work against it."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    command = (
        "python3 -m venv .venv && .venv/bin/python -m pip install -e . && "
        ".venv/bin/setec-serve --dev"
    )
    assert command in readme
    bodies = re.findall(r"-X POST http://127\.0\.0\.1:8080(/api/\w+) -d '([^']*)'", readme)
    assert [path for path, _ in bodies] == ["/api/put", "/api/get"]
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        answers = [
            requests.post(server.url + path, data=body, headers=GUARD, timeout=10)
            for path, body in bodies
        ]
    assert [a.status_code for a in answers] == [200, 200]
    assert answers[1].json() == {"Value": "aGVsbG8=", "Version": 1}


def test_slow_clients_time_out_and_do_not_starve_others(tmp_path: Path) -> None:
    """Clients that send headers and then stall hold a thread only until the read
    timeout; they get a 4xx, and a normal client is served meanwhile."""
    args = ("--dev", "--listen", "127.0.0.1:0", "--threads", "2", "--read-timeout", "1")
    with ServeProcess(*args, cwd=tmp_path) as server:
        host, port = server.url.removeprefix("http://").rsplit(":", 1)
        head = (
            b"POST /api/get HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Sec-X-Tailscale-No-Browsers: setec\r\nContent-Length: 100\r\n\r\n"
        )
        stalled = []
        for _ in range(4):  # twice as many as there are threads
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.sendall(head + b'{"Na')
            stalled.append(sock)
        try:
            resp = call(server.url, "list", {})
            assert resp.status_code == 200
            started = time.monotonic()
            for sock in stalled:
                # cheroot answers a stalled request line with 408; a body that stops
                # midway just gets the connection closed.
                status_line = sock.recv(4096).split(b"\r\n", 1)[0]
                assert status_line == b"" or status_line.split()[1] in (b"400", b"408")
            assert time.monotonic() - started < 5
        finally:
            for sock in stalled:
                sock.close()
