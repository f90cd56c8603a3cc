"""The ``dev`` authorizer: every caller on loopback is a superuser. Only with ``--dev``.

It exists so that ``setec-serve --dev`` works with no setup, like Go setec's dev mode.
It refuses to be built unless the server runs in dev mode, and it refuses callers that
are not on a loopback address, so a dev server exposed by mistake still grants nothing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from setec_core.acl import ALL_ACTIONS, Rule
from setec_core.authz import Authorizer, Caller, Principal
from setec_core.errors import AccessDenied, ConfigError
from setec_core.hookspecs import hookimpl

#: The rules every loopback caller gets: everything.
SUPERUSER_RULES = (Rule(ALL_ACTIONS, ["*"]),)


class DevAuthorizer(Authorizer):
    """Grants every action on every secret to loopback callers (user ``dev@localhost``)."""

    name = "dev"

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> DevAuthorizer:
        """:raises ConfigError: unless ``options["dev"]`` is true."""
        if not options.get("dev"):
            raise ConfigError(
                "the 'dev' authorizer grants everything to every local caller and is only "
                "available with --dev; choose --authorizer tailscale, tailscale-serve or policy"
            )
        return cls()

    def identify(self, request: Any) -> Caller:
        """:raises AccessDenied: if the peer is not on a loopback address."""
        peer = request.remote_addr or ""
        try:
            loopback = ipaddress.ip_address(peer).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise AccessDenied(f"access denied: the dev server only serves loopback, not {peer}")
        return Caller(
            Principal(hostname="localhost", ip=peer, user="dev@localhost"), SUPERUSER_RULES
        )


@hookimpl
def setec_register_authorizers(register: Any) -> None:
    """Register the ``dev`` authorizer."""
    register(DevAuthorizer)
