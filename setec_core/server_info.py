"""What an authorizer is told about the server it guards: :class:`ServerInfo`.

``setec-serve`` builds one from ``--listen``, ``--tls-cert`` and ``--dev``, and
:meth:`~setec_core.plugins.Plugins.authorizer` passes it to
:meth:`Authorizer.from_options <setec_core.authz.Authorizer.from_options>`, so that no
plugin parses ``--listen`` again or keeps its own idea of the default address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

#: Where ``setec-serve`` listens unless told otherwise (``--listen``).
DEFAULT_HOST = "127.0.0.1"
#: The port of :data:`DEFAULT_HOST`.
DEFAULT_PORT = 8080


@dataclass(frozen=True)
class ServerInfo:
    """What an authorizer may need to know about the server it guards.

    The defaults are those of ``setec-serve``: ``127.0.0.1:8080``, plain HTTP, not in
    dev mode.

    :param host: the address or name the server listens on, without brackets
        (``--listen HOST:PORT``); unused when ``unix_socket`` is set.
    :param port: the TCP port (0 picks a free one at start).
    :param unix_socket: the path of the unix socket the server listens on instead
        (``--listen unix:PATH``), or ``None``.
    :param tls: whether the server speaks HTTPS.
    :param dev: whether the server runs in development mode (``--dev``).
    """

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    unix_socket: str | None = None
    tls: bool = False
    dev: bool = False

    @property
    def listen(self) -> str:
        """The listen address as ``--listen`` takes it, for messages: ``HOST:PORT``,
        ``[V6]:PORT`` or ``unix:PATH``."""
        if self.unix_socket is not None:
            return "unix:" + self.unix_socket
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def is_local(self) -> bool:
        """Whether only this machine can reach the server: it listens on a unix socket
        or on a loopback address (``localhost`` included)."""
        if self.unix_socket is not None:
            return bool(self.unix_socket)
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


#: The server an authorizer assumes when it is built without being told
#: (``setec-serve``'s defaults; see :class:`ServerInfo`).
DEFAULT_SERVER = ServerInfo()
