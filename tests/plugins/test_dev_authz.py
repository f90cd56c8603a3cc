"""The dev authorizer: loopback peers and unix-socket peers are superusers, others are
refused, and it exists only in dev mode."""

from __future__ import annotations

from typing import Any

import pytest

from setec_core import Peer
from setec_core.errors import AccessDenied, ConfigError
from setec_core.server_info import ServerInfo
from setec_core.testing import AuthorizerContract
from setec_plugins.dev_authz import DevAuthorizer


def request(peer: str, transport: str = "tcp") -> Peer:
    """The peer a server reports for a request from ``peer`` over ``transport``."""
    if transport == "unix":
        return Peer(peer, None, unix=True)
    return Peer(peer, 51234)


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_peers_are_superusers(peer: str) -> None:
    """Every loopback address is the dev superuser, recorded with its own IP."""
    caller = DevAuthorizer.from_options({}, ServerInfo(dev=True)).identify(request(peer))
    assert caller.principal.user == "dev@localhost"
    assert caller.principal.ip == peer
    assert caller.allows("delete", "any/name")


def test_unix_socket_peers_are_local() -> None:
    """--dev --listen unix:PATH: the socket is 0600, so its peers are this user."""
    caller = DevAuthorizer.from_options({}, ServerInfo(dev=True)).identify(request("", "unix"))
    assert (caller.principal.ip, caller.principal.user) == ("unix", "dev@localhost")


@pytest.mark.parametrize("peer", ["10.0.0.5", "100.101.102.103", "", "not an address"])
def test_other_peers_are_refused(peer: str) -> None:
    """A peer that is not on loopback (or has no address) is refused."""
    with pytest.raises(AccessDenied):
        DevAuthorizer.from_options({}, ServerInfo(dev=True)).identify(request(peer))


def test_only_in_dev_mode() -> None:
    """The dev authorizer cannot be built for a server not in dev mode."""
    with pytest.raises(ConfigError, match="only available with --dev"):
        DevAuthorizer.from_options({}, ServerInfo(dev=False))


class TestDevContract(AuthorizerContract):
    """The dev authorizer meets the Authorizer contract."""

    @pytest.fixture
    def authorizer(self) -> DevAuthorizer:
        return DevAuthorizer.from_options({}, ServerInfo(dev=True))

    @pytest.fixture
    def known_peer(self) -> Peer:
        return request("127.0.0.1")

    @pytest.fixture
    def unknown_peer(self) -> Peer:
        return request("10.0.0.5")

    @pytest.fixture
    def bad_options(self) -> list[tuple[Any, ...]]:
        return [({},), ({"dev": True}, ServerInfo(dev=False))]
