"""Guarded writes from the Client (docs/client.md, "Guarded writes"): the keyword-only
guards of put, create_version, activate, delete_version and delete; a failed guard is
VersionConflict with ``.current``; an unguarded call sends exactly Go's bytes; and a
guarded call to a server without ``cas`` (a Go server) sends nothing."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from go_like_server import GoLikeServer

from setec_core import InvalidRequestError, NotFound, UnsupportedError, VersionConflict
from setec_core.client import Client
from setec_core.testing import SUPERUSER, HeaderAuthorizer, make_caller
from setec_core.testing.server import LocalServer

VALUE = b"client-guarded-value-4d2a"


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
def three(server: LocalServer) -> LocalServer:
    """The server with secret "s" at versions 1, 2, 3, version 2 active."""
    for n in (1, 2, 3):
        server.db.put(SUPERUSER, "s", VALUE + bytes([48 + n]))
    server.db.activate(SUPERUSER, "s", 2)
    return server


def test_every_write_takes_the_guards(three: LocalServer, client: Client) -> None:
    """Each write goes through when its guard holds and raises VersionConflict, with
    the current info and a message naming the secret, when it does not."""
    calls = {
        "put": lambda **g: client.put("s", b"client-new", **g),
        "create_version": lambda **g: client.create_version("s", 8, b"client-new", **g),
        "activate": lambda **g: client.activate("s", 3, **g),
        "delete_version": lambda **g: client.delete_version("s", 1, **g),
    }
    for call in calls.values():
        info = client.info("s")
        with pytest.raises(VersionConflict) as raised:
            call(if_active_version=info.active_version + 100)
        current = raised.value.current
        assert current is not None
        assert (current.versions, current.active_version) == (info.versions, info.active_version)
        assert "'s'" in str(raised.value)
        call(if_active_version=info.active_version, if_versions=list(reversed(info.versions)))
    with pytest.raises(VersionConflict):
        client.delete("s", if_versions=[])
    client.delete("s", if_versions=client.info("s").versions)
    with pytest.raises(NotFound):
        client.info("s")


def test_must_not_exist(client: Client) -> None:
    """0 and [] mean the secret must not exist; current is None when it does not."""
    assert client.put("new", b"client-first", if_active_version=0) == 1
    with pytest.raises(VersionConflict) as raised:
        client.put("new", b"client-second", if_versions=[])
    assert raised.value.current is not None
    assert raised.value.current.versions == (1,)
    with pytest.raises(VersionConflict) as missing:
        client.activate("nothing", 1, if_active_version=1)
    assert missing.value.current is None
    assert "does not exist" in str(missing.value)


def test_unguarded_calls_send_gos_bytes_and_guarded_ones_the_fields(server: LocalServer) -> None:
    """Without guards the bodies are exactly what Go's client sends (and the client
    does not ask for extensions); with them the fields follow Go's, versions sorted."""
    session = RecordingSession()
    client = server.client(session=session)
    client.put("a", b"x")
    client.create_version("a", 5, b"y")
    client.activate("a", 1)
    client.delete_version("a", 5)
    client.delete("a")
    assert session.sent == [
        ("put", b'{"Name":"a","Value":"eA=="}'),
        ("create-version", b'{"Name":"a","Version":5,"Value":"eQ=="}'),
        ("activate", b'{"Name":"a","Version":1}'),
        ("delete-version", b'{"Name":"a","Version":5}'),
        ("delete", b'{"Name":"a"}'),
    ]
    session.sent.clear()
    client.put("a", b"x", if_active_version=0)
    client.activate("a", 1, if_versions={1})
    client.delete("a", if_active_version=1, if_versions=(1,))
    assert session.sent == [
        ("extensions", b"{}"),
        ("put", b'{"Name":"a","Value":"eA==","IfActiveVersion":0}'),
        ("activate", b'{"Name":"a","Version":1,"IfVersions":[1]}'),
        ("delete", b'{"Name":"a","IfActiveVersion":1,"IfVersions":[1]}'),
    ]


def test_a_caller_without_info_gets_no_current() -> None:
    """Through the client too, a caller who may not info the secret gets current None
    and a message with no versions."""
    writer = make_caller((["put"], ["*"]), user="writer")
    with LocalServer(authorizer=HeaderAuthorizer({"su": SUPERUSER, "w": writer})) as server:
        server.db.put(SUPERUSER, "s", VALUE)
        session = requests.Session()
        session.headers[HeaderAuthorizer.HEADER] = "w"
        with pytest.raises(VersionConflict) as raised:
            server.client(session=session).put("s", VALUE + b"2", if_active_version=2)
    assert raised.value.current is None
    assert str(raised.value) == "guard failed for secret 's'; nothing was written"


@pytest.mark.parametrize(
    ("guard", "reason"),
    [
        ({"if_active_version": "2"}, "if_active_version must be an integer"),
        ({"if_active_version": -1}, "if_active_version must be an integer"),
        ({"if_versions": "1,2"}, "if_versions must be a collection"),
        ({"if_versions": [1, 1]}, "it holds 1 more than once"),
        ({"if_versions": [0]}, "it holds 0"),
    ],
)
def test_a_malformed_guard_sends_nothing(
    server: LocalServer, guard: dict[str, Any], reason: str
) -> None:
    """A guard of the wrong type is refused by the client before anything is sent."""
    session = RecordingSession()
    client = server.client(session=session)
    with pytest.raises(InvalidRequestError, match=reason):
        client.put("a", VALUE, **guard)
    assert session.sent == []


def test_a_guarded_write_to_a_go_server_sends_nothing(go_like_server: GoLikeServer) -> None:
    """Against a server without "cas", every guarded write raises UnsupportedError and
    only the extensions question is sent (a Go server would have written unguarded);
    an unguarded write is sent as Go's client sends it."""
    client = Client(go_like_server.url)
    guarded = [
        lambda: client.put("a", VALUE, if_active_version=0),
        lambda: client.create_version("a", 2, VALUE, if_versions=[]),
        lambda: client.activate("a", 2, if_active_version=1),
        lambda: client.delete_version("a", 1, if_versions=[1, 2]),
        lambda: client.delete("a", if_active_version=3),
    ]
    for call in guarded:
        with pytest.raises(UnsupportedError, match="a write guarded by an expected version"):
            call()
    assert go_like_server.sent == [("/api/extensions", b"{}")]
    with pytest.raises(NotFound):
        client.delete_version("a", 1)
    assert go_like_server.sent[-1] == ("/api/delete-version", b'{"Name":"a","Version":1}')
