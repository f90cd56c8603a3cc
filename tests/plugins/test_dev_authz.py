"""The dev authorizer: loopback peers and unix-socket peers are superusers, others are
refused, and it exists only in dev mode."""

from __future__ import annotations

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from setec_core.errors import AccessDenied, ConfigError
from setec_plugins.dev_authz import DevAuthorizer


def request(peer: str, transport: str = "tcp") -> Request:
    environ = EnvironBuilder(environ_base={"REMOTE_ADDR": peer}).get_environ()
    environ["setec.transport"] = transport
    return Request(environ)


@pytest.mark.parametrize("peer", ["127.0.0.1", "127.8.9.10", "::1"])
def test_loopback_peers_are_superusers(peer: str) -> None:
    caller = DevAuthorizer.from_options({"dev": True}).identify(request(peer))
    assert caller.principal.user == "dev@localhost"
    assert caller.principal.ip == peer
    assert caller.allows("delete", "any/name")


def test_unix_socket_peers_are_local() -> None:
    """--dev --listen unix:PATH: the socket is 0600, so its peers are this user."""
    caller = DevAuthorizer.from_options({"dev": True}).identify(request("", "unix"))
    assert (caller.principal.ip, caller.principal.user) == ("unix", "dev@localhost")


@pytest.mark.parametrize("peer", ["10.0.0.5", "100.101.102.103", "", "not an address"])
def test_other_peers_are_refused(peer: str) -> None:
    with pytest.raises(AccessDenied):
        DevAuthorizer.from_options({"dev": True}).identify(request(peer))


def test_only_in_dev_mode() -> None:
    with pytest.raises(ConfigError, match="only available with --dev"):
        DevAuthorizer.from_options({"dev": False})
