"""A Store against the real ``setec-serve`` console script: startup, a poll that brings a
new version, the server going away (last good values kept), and a restart of the
program from its cache while the server is still down."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import pytest
from serve_process import ServeProcess

from setec_core.client import Client, FileCache, Store
from setec_core.errors import PollError
from setec_core.testing.clock import FakeTicker

SECRET = b"e2e-store-value-55d1"


def test_store_survives_the_server_going_away(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A Store follows updates while the server runs and keeps its last values once it
    stops, a restarted program starts from the cache, and no value reaches the logs."""
    caplog.set_level(logging.DEBUG)
    cache = FileCache(tmp_path / "app" / "secrets.cache")
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        client = Client(server.url, timeout=5)
        client.put("app/db-pass", SECRET)
        client.put("app/api-key", b"key-1")
        ticker = FakeTicker()
        store = Store(client, ["app/db-pass", "app/api-key"], cache=cache, ticker=ticker)
        db_pass, api_key = store.secret("app/db-pass"), store.secret("app/api-key")
        assert db_pass is not None
        assert api_key is not None
        assert (db_pass(), api_key()) == (SECRET, b"key-1")
        client.activate("app/api-key", client.put("app/api-key", b"key-2"))
        ticker.poll()
        assert api_key() == b"key-2"
        assert server.stop(signal.SIGTERM) == 0
    with pytest.raises(PollError, match=f"cannot connect to {server.url}: connection refused"):
        store.refresh()
    assert (db_pass(), api_key()) == (SECRET, b"key-2")  # the last good values
    store.close()

    # The program restarts while the server is still down: the cache starts it.
    down = Client(server.url, timeout=1)
    with Store(down, ["app/db-pass", "app/api-key"], cache=cache, poll_interval=None) as again:
        assert again.secret("app/api-key")() == b"key-2"  # type: ignore[misc]
    assert SECRET.decode() not in caplog.text + server.output
