"""``setec-serve --workers N``: the flag's checks, where each worker keeps its state, and
the refusals that come before any worker is started (one line, status 1 or 2, nothing
left running). Serving with workers is in tests/e2e/test_workers_serve.py."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from console_scripts import clean_env, console_script

from setec_cli.config import MAX_WORKERS, resolve
from setec_cli.http_server import bind
from setec_cli.workers import worker_state_dir
from setec_core import Plugins
from setec_core.errors import ConfigError


@pytest.fixture(scope="module")
def plugins() -> Plugins:
    """The installed plugins."""
    return Plugins.load()


def serve(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``setec-serve ARGS`` to completion, with no SETEC_* variable but ``env``."""
    return subprocess.run(
        [console_script("setec-serve"), *args],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def error_lines(stderr: str) -> list[str]:
    """The error lines of setec-serve's stderr (``setec-serve: error: ...``)."""
    return [line for line in stderr.splitlines() if line.startswith("setec-serve: error: ")]


def test_one_worker_is_the_default(plugins: Plugins) -> None:
    """Without --workers, one process serves (the configuration says 1)."""
    assert resolve({"dev": True}, plugins).workers == 1
    assert resolve({"dev": True, "workers": 4}, plugins).workers == 4


@pytest.mark.parametrize("workers", [0, -1, MAX_WORKERS + 1])
def test_workers_out_of_range_are_refused(plugins: Plugins, workers: int) -> None:
    """--workers outside 1..64 is refused, naming the flag, its variable and the range."""
    with pytest.raises(ConfigError, match=r"--workers .* \(or SETEC_WORKERS\).* 1 to 64"):
        resolve({"dev": True, "workers": workers}, plugins)


def test_workers_need_a_shared_store(plugins: Plugins) -> None:
    """A memory:// store lives inside one process: several workers over it would each
    have their own, so --workers 2 with it is refused; one worker is fine."""
    options: dict[str, Any] = {"dev": True, "storage": "memory://", "workers": 2}
    with pytest.raises(ConfigError, match=r"--workers 2 needs a store the workers share.*memory"):
        resolve(options, plugins)
    assert resolve({**options, "workers": 1}, plugins).storage == "memory://"


def test_each_worker_has_its_own_state_directory() -> None:
    """Worker 0 uses --state-dir itself (the layout of one process); worker i uses
    workers/i under it."""
    assert worker_state_dir("/var/lib/setec", 0) == Path("/var/lib/setec")
    assert worker_state_dir("/var/lib/setec", 1) == Path("/var/lib/setec/workers/1")
    assert worker_state_dir("s", 12) == Path("s/workers/12")


def test_the_flag_and_its_variable_are_documented_and_checked(tmp_path: Path) -> None:
    """--help shows --workers and SETEC_WORKERS; a bad value from either is a usage
    error (status 2) naming the range."""
    shown = serve("--help", cwd=tmp_path)
    assert "--workers" in shown.stdout
    assert "SETEC_WORKERS" in shown.stdout
    for result in (
        serve("--dev", "--workers", "65", cwd=tmp_path),
        serve("--dev", cwd=tmp_path, SETEC_WORKERS="0"),
    ):
        assert result.returncode == 2, result.stderr
        assert "1<=x<=64" in result.stderr
        assert "Traceback" not in result.stderr


def test_an_address_in_use_is_refused_before_any_worker_starts(tmp_path: Path) -> None:
    """The parent binds the one listening socket itself: an address in use is one
    line, status 1, and no worker is ever started."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve("--dev", "--workers", "2", "--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 1
    [error] = error_lines(result.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in error
    assert "worker 0" not in result.stderr
    assert "Traceback" not in result.stderr


def test_dev_workers_stay_on_loopback(tmp_path: Path) -> None:
    """--dev with --workers is allowed, and still refuses an address beyond loopback."""
    result = serve("--dev", "--workers", "2", "--listen", "0.0.0.0:0", cwd=tmp_path)
    assert result.returncode == 1
    [error] = error_lines(result.stderr)
    assert "--dev serves only on loopback" in error
    assert "worker 0" not in result.stderr


def test_workers_do_not_join_another_servers_port(plugins: Plugins) -> None:
    """Each worker has its own socket on the port (SO_REUSEPORT, so the kernel spreads
    connections over them); a port another server already listens on with
    SO_REUSEPORT (as a second --workers server would) is still refused, not shared."""
    other = socket.socket()
    other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    other.bind(("127.0.0.1", 0))
    other.listen()
    port = other.getsockname()[1]
    try:
        config = resolve({"dev": True, "listen": f"127.0.0.1:{port}"}, plugins)
        with pytest.raises(ConfigError, match="cannot listen on"):
            bind(config, 2)
        free = resolve({"dev": True, "listen": "127.0.0.1:0"}, plugins)
        sockets, url = bind(free, 3)
        try:
            ports = {s.getsockname()[1] for s in sockets}
            assert len(sockets) == 3
            assert ports == {int(url.rsplit(":", 1)[1])}
            assert all(s.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) for s in sockets)
        finally:
            for s in sockets:
                s.close()
    finally:
        other.close()
