"""The Client against the real ``setec-serve --dev`` console script."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_process import ServeProcess

from setec_core import SecretInfo, SecretValue
from setec_core.client import Client
from setec_core.errors import ValueNotChanged

SECRET = b"e2e-client-value-3f0c"


def test_client_against_setec_serve(tmp_path: Path) -> None:
    """put, get, get_if_changed and list over real HTTP to a dev server process; the
    value never reaches the server's output."""
    with ServeProcess("--dev", "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        client = Client(server.url + "/", timeout=5)
        assert client.list() == []
        assert client.put("app/db-pass", SECRET) == 1
        assert client.get("app/db-pass") == SecretValue(SECRET, 1)
        with pytest.raises(ValueNotChanged):
            client.get_if_changed("app/db-pass", 1)
        assert client.list() == [SecretInfo("app/db-pass", (1,), 1)]
        assert server.stop() == 0
    assert SECRET.decode() not in server.output
