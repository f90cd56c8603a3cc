"""The ``dev`` authorizer: every caller on loopback is a superuser. Only with ``--dev``.

It exists so that ``setec-serve --dev`` works with no setup, like Go setec's dev mode.
It refuses to be built unless the server runs in dev mode, and it refuses callers that
are not on a loopback address, so a dev server exposed by mistake still grants nothing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Mapping
from typing import Any

from setec_core.acl import ALL_ACTIONS, Rule
from setec_core.authz import Authorizer, Caller, Principal
from setec_core.errors import AccessDenied, ConfigError
from setec_core.hookspecs import hookimpl
from setec_core.options import check_option_names
from setec_core.peer import Peer
from setec_core.server_info import DEFAULT_SERVER, ServerInfo

#: The rules every loopback caller gets: everything.
SUPERUSER_RULES = (Rule(ALL_ACTIONS, ["*"]),)


class DevAuthorizer(Authorizer):
    """Grants every action on every secret to loopback callers (user ``dev@localhost``)."""

    name = "dev"

    def __init__(self) -> None:
        # The same few loopback callers again and again: one Caller each.
        self._callers: dict[str, Caller] = {}

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> DevAuthorizer:
        """:raises ConfigError: unless the server runs in dev mode."""
        check_option_names(cls, options, f"authorizer {cls.name!r}")
        if not server.dev:
            raise ConfigError(
                "the 'dev' authorizer grants everything to every local caller and is only "
                "available with --dev; choose --authorizer tailscale, tailscale-serve or policy"
            )
        return cls()

    def identify(self, peer: Peer) -> Caller:
        """:raises AccessDenied: if the peer is not on a loopback address or a unix
        socket."""
        address = "unix" if peer.unix else peer.address
        if not peer.unix and not _is_loopback(address):
            raise AccessDenied(f"access denied: the dev server only serves loopback, not {address}")
        caller = self._callers.get(address)
        if caller is None:
            principal = Principal(hostname="localhost", ip=address, user="dev@localhost")
            caller = Caller(principal, SUPERUSER_RULES)
            if len(self._callers) < 256:
                self._callers[address] = caller
        return caller


@functools.lru_cache(maxsize=256)
def _is_loopback(peer: str) -> bool:
    try:
        return ipaddress.ip_address(peer).is_loopback
    except ValueError:
        return False


@hookimpl
def setec_register_authorizers(register: Any) -> None:
    """Register the ``dev`` authorizer."""
    register(DevAuthorizer)
