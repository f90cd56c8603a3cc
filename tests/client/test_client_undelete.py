"""The client side of recoverable delete: ``Client.delete(purge=...)``,
``Client.undelete`` and ``Client.list_deleted`` against the real server, the bytes they
send, and their refusal, before sending anything, against a server that does not offer
``recoverable-delete`` (Go setec's would ignore ``Purge`` and delete recoverably, or
answer 404)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import requests
from go_like_server import GoLikeServer

from setec_core import NotFound, UnsupportedError
from setec_core.client import Client
from setec_core.model import DeletedSecret
from setec_core.testing import SUPERUSER
from setec_core.testing.clock import FakeClock
from setec_core.testing.server import LocalServer

VALUE = b"client-recoverable-value"
UTC = dt.UTC


class RecordingSession(requests.Session):
    """A requests session that keeps the path and body of every request it sends."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, bytes]] = []

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Record, then send as usual."""
        self.sent.append((str(url).split("/api/", 1)[1], kwargs.get("data") or b""))
        return super().request(method, url, *args, **kwargs)


@pytest.fixture
def windowed(server: LocalServer) -> LocalServer:
    """The server with a one-day window on a fake clock, and secret "s" at versions 1
    and 2 (1 active)."""
    server.db.recovery_window = 86400
    server.db.clock = FakeClock(1_700_000_000.5)
    server.db.put(SUPERUSER, "s", VALUE + b"1")
    server.db.put(SUPERUSER, "s", VALUE + b"2")
    return server


def test_delete_undelete_and_list_deleted_round_trip(windowed: LocalServer) -> None:
    """delete puts "s" aside; list_deleted reads its versions and times back as aware
    UTC datetimes; undelete brings it back; a second undelete is NotFound."""
    client = windowed.client()
    client.delete("s")
    with pytest.raises(NotFound):
        client.get("s")
    assert client.list_deleted() == [
        DeletedSecret(
            "s",
            (1, 2),
            1,
            dt.datetime(2023, 11, 14, 22, 13, 20, 500000, tzinfo=UTC),
            dt.datetime(2023, 11, 15, 22, 13, 20, 500000, tzinfo=UTC),
        )
    ]
    client.undelete("s")
    assert client.get("s").value == VALUE + b"1"
    assert client.list_deleted() == []
    with pytest.raises(NotFound):
        client.undelete("s")


def test_a_plain_delete_sends_gos_bytes_and_purge_the_field(windowed: LocalServer) -> None:
    """Without purge the body is Go's and no extensions question is asked; with it the
    client asks once, then sends ``"Purge":true``, and the secret is gone for good."""
    session = RecordingSession()
    client = windowed.client(session=session)
    client.delete("s")
    assert session.sent == [("delete", b'{"Name":"s"}')]
    session.sent.clear()
    client.delete("s", purge=True)
    assert session.sent == [("extensions", b"{}"), ("delete", b'{"Name":"s","Purge":true}')]
    assert client.list_deleted() == []
    with pytest.raises(NotFound):
        client.undelete("s")


def test_a_go_server_is_never_sent_purge_undelete_or_list_deleted(
    go_like_server: GoLikeServer,
) -> None:
    """Against a server without ``recoverable-delete``, purge, undelete and
    list_deleted raise UnsupportedError naming what was refused, and only the
    extensions question is sent; a plain delete goes out as Go's client sends it."""
    client = Client(go_like_server.url)
    for call, what in (
        (lambda: client.delete("s", purge=True), "purging a deleted secret"),
        (lambda: client.undelete("s"), "undelete"),
        (client.list_deleted, "a list of deleted secrets"),
    ):
        with pytest.raises(UnsupportedError, match=f"does not offer {what}.*nothing was sent"):
            call()
    assert go_like_server.sent == [("/api/extensions", b"{}")]
    with pytest.raises(NotFound):
        client.delete("s")
    assert go_like_server.sent[-1] == ("/api/delete", b'{"Name":"s"}')
