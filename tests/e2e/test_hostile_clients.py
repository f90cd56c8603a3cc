"""Attacks on the running server, as an attacker would run them: forged identity headers
behind ``tailscale serve``, DNS rebinding, silent TLS clients, slowloris headers and
bodies, and floods of idle connections. Each was reproduced against the previous HTTP
front (cheroot, thread per connection) and must fail now."""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from serve_process import ServeProcess
from tls_certs import self_signed

GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
ALL = ["get", "info", "put", "create-version", "activate", "delete"]
CAPS = json.dumps({"tailscale.com/cap/secrets": [{"action": ALL, "secret": ["*"]}]})
SECRET = "hostile-test-secret-5522"


def address(server: ServeProcess) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None
    assert parts.port is not None
    return parts.hostname, parts.port


def audit_lines(state: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]


# --- forged identity behind tailscale serve ------------------------------------------


@pytest.fixture
def serve_backend(tmp_path: Path) -> Iterator[tuple[ServeProcess, Path]]:
    """setec-serve as it runs behind `tailscale serve`: loopback, tailscale-serve."""
    state = tmp_path / "state"
    args = (
        "--state-dir", str(state), "--kms-key-name", "dev://", "--listen", "127.0.0.1:0",
        "--authorizer", "tailscale-serve",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        yield server, state


def test_underscore_spellings_cannot_forge_a_serve_identity(
    serve_backend: tuple[ServeProcess, Path],
) -> None:
    """`tailscale serve` deletes only the hyphenated identity headers; the underscore
    spellings reached WSGI as the same keys, so any caller could claim any login and
    every capability. They are dropped: the caller has no identity (403)."""
    server, state = serve_backend
    forged = {
        **GUARD,
        "Tailscale_User_Login": "mallory@example.com",
        "Tailscale_App_Capabilities": CAPS,
    }
    for method, body in (("put", {"Name": "x", "Value": "eA=="}), ("list", {})):
        resp = requests.post(f"{server.url}/api/{method}", json=body, headers=forged, timeout=10)
        assert resp.status_code == 403
        assert "no Tailscale-User-Login header" in resp.text
    assert not any("mallory" in json.dumps(line) for line in audit_lines(state))


def test_underscore_capabilities_cannot_widen_a_real_login(
    serve_backend: tuple[ServeProcess, Path],
) -> None:
    """A real user (whose headers serve set) adds an underscore capabilities header:
    it is ignored, so the user keeps exactly the grants serve sent."""
    server, _ = serve_backend
    real = {
        **GUARD,
        "Tailscale-User-Login": "alice@example.com",
        "Tailscale-App-Capabilities": json.dumps(
            {"tailscale.com/cap/secrets": [{"action": ["info"], "secret": ["*"]}]}
        ),
        "Tailscale_App_Capabilities": CAPS,
    }
    resp = requests.post(
        f"{server.url}/api/put", json={"Name": "x", "Value": "eA=="}, headers=real, timeout=10
    )
    assert resp.status_code == 403


def test_funnel_marker_cannot_be_emptied_by_an_underscore_twin(
    serve_backend: tuple[ServeProcess, Path],
) -> None:
    """A Funnel request (from the internet) carries serve's Tailscale-Funnel-Request;
    an empty Tailscale_Funnel_Request used to override it, and the forged login passed."""
    server, _ = serve_backend
    headers = {
        **GUARD,
        "Tailscale-Funnel-Request": "?1",
        "Tailscale_Funnel_Request": "",
        "Tailscale-User-Login": "alice@example.com",
        "Tailscale-App-Capabilities": CAPS,
    }
    resp = requests.post(f"{server.url}/api/list", json={}, headers=headers, timeout=10)
    assert resp.status_code == 403
    assert "Funnel" in resp.text


def test_unix_socket_listener_behind_serve(tmp_path: Path) -> None:
    """`--listen unix:PATH`, which the tailscale-serve docs recommend on shared hosts,
    works: the socket is 0600 and serves the identity serve sends."""
    sock_path = tmp_path / "run" / "setec.sock"
    sock_path.parent.mkdir(mode=0o700)
    args = (
        "--state-dir", str(tmp_path / "state"), "--kms-key-name", "dev://",
        "--listen", f"unix:{sock_path}", "--authorizer", "tailscale-serve",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        assert server.url == f"unix:{sock_path}"
        assert sock_path.stat().st_mode & 0o777 == 0o600
        conn = _UnixConnection(str(sock_path))
        headers = {
            **GUARD,
            "Host": "setec.example.ts.net",
            "Tailscale-User-Login": "alice@example.com",
            "Tailscale-App-Capabilities": CAPS,
        }
        conn.request("POST", "/api/put", json.dumps({"Name": "u", "Value": "eA=="}), headers)
        put = conn.getresponse()
        assert put.status == 421  # serve's name must be allowed
        assert b"--allowed-host" in put.read()
        conn.close()
    args_allowed = (*args, "--allowed-host", "setec.example.ts.net")
    with ServeProcess(*args_allowed, cwd=tmp_path):
        conn = _UnixConnection(str(sock_path))
        conn.request("POST", "/api/put", json.dumps({"Name": "u", "Value": "eA=="}), headers)
        put = conn.getresponse()
        assert (put.status, put.read()) == (200, b"1")
        conn.close()
    assert not sock_path.exists()  # removed at stop
    lines = audit_lines(tmp_path / "state")
    assert any(line.get("principal", {}).get("user") == "alice@example.com" for line in lines)  # type: ignore[union-attr]


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=10)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


# --- DNS rebinding ---------------------------------------------------------------------


def test_dns_rebinding_host_is_refused(tmp_path: Path) -> None:
    """A page that rebinds its own name to 127.0.0.1 reaches a --dev server as a
    same-origin request with its own Host; that Host gets 421, on the API and on the
    dashboard, before anything is read or audited."""
    state = tmp_path / "state"
    args = ("--dev", "--state-dir", str(state), "--listen", "127.0.0.1:0")
    with ServeProcess(*args, cwd=tmp_path) as server:
        port = address(server)[1]
        put = {"Name": "rebind", "Value": "eA=="}
        for hostile in (
            "attacker.example",
            f"attacker.example:{port}",
            "localhost.attacker.example",
        ):
            headers = {**GUARD, "Host": hostile}
            resp = requests.post(f"{server.url}/api/put", json=put, headers=headers, timeout=10)
            assert resp.status_code == 421, hostile
            assert "--allowed-host" in resp.text
            page = requests.get(f"{server.url}/", headers={"Host": hostile}, timeout=10)
            assert page.status_code == 421
        assert not any(line.get("secret") == "rebind" for line in audit_lines(state))
        for friendly in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", "[::1]:80"):
            headers = {**GUARD, "Host": friendly}
            resp = requests.post(f"{server.url}/api/list", json={}, headers=headers, timeout=10)
            assert resp.status_code == 200, friendly


def test_allowed_host_names_and_certificate_names(tmp_path: Path) -> None:
    """--allowed-host adds names (and *.domain patterns); the certificate's DNS names are
    allowed without being repeated."""
    cert, key = self_signed(tmp_path, dns_names=["setec.example.ts.net"])
    args = (
        "--dev", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key),
        "--allowed-host", "secrets.corp.example", "--allowed-host", "*.lb.example",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        for host, code in (
            ("setec.example.ts.net", 200),
            ("secrets.corp.example:443", 200),
            ("a.lb.example", 200),
            ("lb.example", 421),
            ("evil.example.ts.net", 421),
        ):
            resp = requests.post(
                f"{server.url}/api/list",
                json={},
                headers={**GUARD, "Host": host},
                timeout=10,
                verify=str(cert),
            )
            assert resp.status_code == code, host


# --- stalled clients -------------------------------------------------------------------


def timed_list(url: str, **kw: object) -> float:
    """Seconds a fresh client takes to get an answer to /api/list."""
    started = time.monotonic()
    resp = requests.post(f"{url}/api/list", json={}, headers=GUARD, timeout=10, **kw)  # type: ignore[arg-type]
    assert resp.status_code == 200
    return time.monotonic() - started


def test_silent_tls_clients_do_not_freeze_the_server(tmp_path: Path) -> None:
    """TCP connections that never send a ClientHello used to block every other client,
    the handshake running on the accept thread. Now a fresh client is answered at once,
    and each silent one is dropped after --read-timeout."""
    cert, key = self_signed(tmp_path)
    args = (
        "--dev", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key),
        "--read-timeout", "2",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        silent = [socket.create_connection(address(server), timeout=10) for _ in range(8)]
        try:
            time.sleep(0.2)
            assert timed_list(server.url, verify=str(cert)) < 1.0
            started = time.monotonic()
            for sock in silent:
                assert sock.recv(100) == b""  # closed by the server
            assert time.monotonic() - started < 6
        finally:
            for sock in silent:
                sock.close()


def trickle(sock: socket.socket, data: bytes, pause: float, stop: threading.Event) -> None:
    for byte in data:
        if stop.is_set():
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return
        stop.wait(pause)


def test_slowloris_headers_and_bodies(tmp_path: Path) -> None:
    """40 connections trickling header bytes and 20 trickling a body, against 2 app
    threads, used to stop the server (and --read-timeout applied to each receive, so a
    byte per second kept a connection forever). Now a fresh client is answered at once,
    and every slow request gets 408 once --read-timeout has passed since its first
    byte."""
    args = ("--dev", "--listen", "127.0.0.1:0", "--threads", "2", "--read-timeout", "2")
    with ServeProcess(*args, cwd=tmp_path) as server:
        head = (
            b"POST /api/get HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Sec-X-Tailscale-No-Browsers: setec\r\nContent-Length: 100\r\n\r\n"
        )
        stop = threading.Event()
        slow: list[socket.socket] = []
        threads = []
        for n in range(60):
            sock = socket.create_connection(address(server), timeout=15)
            slow.append(sock)
            # Two-thirds trickle the head; the rest send it whole, then trickle the body.
            if n % 3:
                data, pause = head, 0.3
            else:
                sock.sendall(head)
                # A body that would carry a value: whatever happens to it, it must
                # never reach the server's output.
                data, pause = b'{"Name": "x", "Value": "' + SECRET.encode().ljust(74) + b'"}', 0.3
            t = threading.Thread(target=trickle, args=(sock, data, pause, stop), daemon=True)
            t.start()
            threads.append(t)
        try:
            time.sleep(0.5)
            assert timed_list(server.url) < 1.0
            started = time.monotonic()
            for sock in slow:
                answer = sock.recv(4096)
                assert answer.startswith(b"HTTP/1.1 408 "), answer[:40]
                assert b"the request was not received in time" in answer
            # Deadlines run from each request's first byte (sent within 0.5 s above).
            assert time.monotonic() - started < 4
            metrics = requests.get(f"{server.url}/metrics", timeout=10).text
            assert 'setec_http_front_refused_total{code="408"} 60.0' in metrics
        finally:
            stop.set()
            for sock in slow:
                sock.close()
        assert SECRET not in server.output


def test_idle_connection_flood_cannot_lock_clients_out(tmp_path: Path) -> None:
    """Idle connections from one address beyond --max-connections-per-source make room:
    the longest idle is closed, and a fresh client from the same address is served."""
    args = ("--dev", "--listen", "127.0.0.1:0", "--max-connections-per-source", "50")
    with ServeProcess(*args, cwd=tmp_path) as server:
        idle = [socket.create_connection(address(server), timeout=10) for _ in range(200)]
        try:
            assert timed_list(server.url) < 1.0
            closed = 0
            for sock in idle:
                sock.settimeout(0.05)
                try:
                    closed += sock.recv(1) == b""
                except ConnectionResetError:
                    closed += 1  # aborted: the socket is freed at once, no TIME_WAIT
                except TimeoutError:
                    pass
            # 200 + 1 fresh connections, at most 50 open at once.
            assert closed >= 150
        finally:
            for sock in idle:
                sock.close()


def test_tls_handshake_deadline_counts_from_accept(tmp_path: Path) -> None:
    """A client that starts a TLS handshake and stalls inside it is dropped after
    --read-timeout too (asyncio's handshake deadline)."""
    cert, key = self_signed(tmp_path)
    args = (
        "--dev", "--listen", "127.0.0.1:0", "--tls-cert", str(cert), "--tls-key", str(key),
        "--read-timeout", "1",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        raw = socket.create_connection(address(server), timeout=10)
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing)
        with pytest.raises(ssl.SSLWantReadError):
            tls.do_handshake()
        raw.sendall(outgoing.read()[:20])  # a piece of the ClientHello, then nothing
        started = time.monotonic()
        assert raw.recv(100) == b""
        assert time.monotonic() - started < 4
        raw.close()
