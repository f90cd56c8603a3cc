"""The operations endpoints of a real ``setec-serve`` over loopback: the health pages
(``/healthz``, ``/readyz``, ``/livez``) with their version header, and ``/metrics``
with the process's own metrics (docs/server.md, "Operating it")."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import requests
from serve_process import ServeProcess

GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}


def test_a_real_server_answers_the_health_pages_with_its_version(tmp_path: Path) -> None:
    """Each health page answers 200 ``ok`` (HEAD too) with ``Setec-Version`` naming the
    installed version; an API answer carries no such header."""
    version = metadata.version("pysetec")
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        for page in ("/healthz", "/readyz", "/livez"):
            got = requests.get(server.url + page, timeout=10)
            assert (got.status_code, got.text) == (200, "ok\n"), page
            assert got.headers["Setec-Version"] == version
            head = requests.head(server.url + page, timeout=10)
            assert (head.status_code, head.headers["Setec-Version"]) == (200, version)
        listed = requests.post(f"{server.url}/api/list", data="{}", headers=GUARD, timeout=10)
        assert listed.status_code == 200
        assert "Setec-Version" not in listed.headers


def test_a_real_servers_metrics_show_its_process(tmp_path: Path) -> None:
    """/metrics of a running server has the process's resident memory, CPU time and
    open file descriptors (prometheus-client's process collector), the Python runtime
    and its garbage collector, beside setec's own metrics."""
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        requests.get(f"{server.url}/livez", timeout=10)
        text = requests.get(f"{server.url}/metrics", timeout=10).text

    def value(name: str) -> float:
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, f"{name} is not in /metrics"
        return float(found[1])

    # A Python server with its libraries loaded holds well over 10 MB.
    assert value("process_resident_memory_bytes") > 10_000_000
    assert value("process_open_fds") >= 3
    assert value("process_cpu_seconds_total") > 0
    assert 'python_info{implementation="CPython"' in text
    assert 'python_gc_collections_total{generation="0"}' in text
    assert 'setec_http_requests_total{class="2xx",code="200",method="/livez"} 1.0' in text


def test_unauthenticated_pages_reveal_no_path_argument_or_key(tmp_path: Path) -> None:
    """What anyone who can reach the server sees without an identity (the health pages'
    headers and bodies, /metrics) holds no path, no key URI and no command-line
    argument: a server started with distinctive ones shows none of them, and no label
    value in /metrics but a route holds a slash (docs/server.md, "Operating it")."""
    marker = "zq7-marker"
    state = tmp_path / f"state-{marker}"
    args = (
        "--dev",
        "--listen",
        "127.0.0.1:0",
        "--state-dir",
        str(state),
        "--kms-key-name",
        f"dev://{marker}-key",
        "--storage",
        f"sqlite://{tmp_path / f'{marker}.db'}",
        "--allowed-host",
        f"{marker}.example",
    )
    with ServeProcess(*args, cwd=tmp_path) as server:
        seen = []
        for page in ("/healthz", "/readyz", "/livez", "/metrics"):
            got = requests.get(server.url + page, timeout=10)
            assert got.status_code == 200, page
            seen.append(repr(dict(got.headers)) + got.text)
        metrics = seen[-1]
    for text in seen:
        assert marker not in text
        assert str(tmp_path) not in text
        assert "sqlite" not in text
        assert "dev://" not in text
    labels = set(re.findall(r'(\w+)="([^"]*)"', metrics))
    assert ("method", "/livez") in labels
    for name, value in labels:
        # Routes are the only label values with a slash: no path, URI or argument.
        assert value.startswith("/") if name == "method" else "/" not in value, (name, value)
