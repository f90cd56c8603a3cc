"""The Runner, in process: signals only set flags and the work runs in wait(); a reload
that fails keeps serving; an HTTP server that dies makes wait() report it."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from setec_cli.config import ServerConfig
from setec_cli.http_server import Runner
from setec_core.errors import ConfigError


def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"hi"]


def config(**overrides: Any) -> ServerConfig:
    fields: dict[str, Any] = {
        "state_dir": "unused",
        "key": "dev://",
        "storage": None,
        "authorizer": "dev",
        "host": "127.0.0.1",
        "port": 0,
        "max_request_bytes": 1024,
        "tls_cert": None,
        "tls_key": None,
        "threads": 4,
        "read_timeout": 5.0,
        "dev": True,
    }
    fields.update(overrides)
    return ServerConfig(**fields)


@pytest.fixture(autouse=True)
def keep_signal_handlers() -> Iterator[None]:
    """The Runner installs process-wide handlers; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def run_in_background(runner: Runner) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    # wait() must run on the main thread in production; here the signals are raised on
    # the main thread and only set flags, so a helper thread can wait.
    waiter = threading.Thread(
        target=lambda: result.append(runner.wait()), name="waiter", daemon=True
    )
    waiter.start()
    return waiter, result


def test_sighup_reloads_in_wait_and_a_failed_reload_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """SIGHUP runs the reload in wait(), on the waiting thread; a failed reload is
    logged (a bug without its message) and the server keeps serving."""
    caplog.set_level(logging.INFO)
    calls: list[str] = []
    reloaded = threading.Event()

    def reload() -> None:
        calls.append(threading.current_thread().name)
        reloaded.set()
        if len(calls) == 1:
            raise ConfigError("policy file 'p.json' is not valid JSON")
        if len(calls) == 2:
            raise RecursionError("maximum recursion depth exceeded secret-ish detail")

    runner = Runner(hello, config(), reload=reload)
    url = runner.start()
    waiter, result = run_in_background(runner)
    try:
        for expected in (1, 2, 3):
            reloaded.clear()
            os.kill(os.getpid(), signal.SIGHUP)
            assert reloaded.wait(5), f"reload {expected} did not run"
            assert requests.get(url, timeout=5).text == "hi"
    finally:
        runner.stop()
        waiter.join(15)
    assert result == [True]
    # The handler ran on the main thread; the reload itself in wait(), on "waiter".
    assert calls == ["waiter"] * 3
    assert "policy file 'p.json' is not valid JSON" in caplog.text
    assert "reload failed, keeping the previous configuration: RecursionError" in caplog.text
    assert "secret-ish detail" not in caplog.text
    assert "authorizer configuration reloaded" in caplog.text


def test_sigterm_stops_and_wait_reports_a_clean_stop() -> None:
    """SIGTERM stops the server: wait() reports a clean stop and the port no longer
    answers."""
    runner = Runner(hello, config())
    url = runner.start()
    waiter, result = run_in_background(runner)
    assert requests.get(url, timeout=5).status_code == 200
    os.kill(os.getpid(), signal.SIGTERM)
    waiter.join(15)
    assert result == [True]
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_a_dead_http_server_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    """If the HTTP front stops on its own, wait() reports a failure and the log says it
    stopped unexpectedly."""
    runner = Runner(hello, config())
    runner.start()
    waiter, result = run_in_background(runner)
    runner.front.stop()  # as if the serving thread had died
    waiter.join(15)
    assert result == [False]
    assert "the HTTP server stopped unexpectedly" in caplog.text


def test_close_before_wait_stops_the_worker_threads() -> None:
    """If startup fails after the server started, close() must stop the front's loop and
    app threads, or they would serve on with nobody to stop them."""
    before = {t.ident for t in threading.enumerate()}
    runner = Runner(hello, config())
    runner.start()
    started = [t for t in threading.enumerate() if t.ident not in before]
    assert len(started) == 1 + 4, "one loop thread and --threads app threads"
    runner.close()
    runner.close()  # twice is harmless
    for t in started:
        t.join(15)
        assert not t.is_alive()
