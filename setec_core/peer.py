"""The other end of an HTTP request, as an :class:`~setec_core.Authorizer` sees it.

The HTTP app builds one :class:`Peer` per request it identifies, from what its server
reported: the peer's address and port, whether the connection is TLS or a unix socket,
and the request's headers. Authorizers read that and nothing of the web framework, so
they can be written and tested without one::

    peer = Peer("100.64.0.7", 51234, headers={"Authorization": "Bearer ..."})
    caller = authorizer.identify(peer)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

# The two headers WSGI (like CGI) keeps without the HTTP_ prefix.
_UNPREFIXED = {"CONTENT_TYPE": "Content-Type", "CONTENT_LENGTH": "Content-Length"}


def _key(name: str) -> str:
    """The WSGI environ key of header ``name`` (``HTTP_X_FORWARDED_FOR``)."""
    key = name.upper().replace("-", "_")
    return key if key in _UNPREFIXED else "HTTP_" + key


class PeerHeaders(Mapping[str, str]):
    """A request's headers, read-only; names match without regard to case
    (``headers.get("authorization")`` finds ``Authorization``).

    Values are text as the server received them (each byte one character, as WSGI
    gives them); a header sent more than once is one value, joined with ``", "``. The
    HTTP app builds this as a view of the request's WSGI environ, copying nothing, so
    it holds only the headers its server let through. WSGI spells ``Tailscale_User_Login``
    and ``Tailscale-User-Login`` alike (``HTTP_TAILSCALE_USER_LOGIN``), so a proxy that
    strips only the hyphenated identity headers would let the other through: setec's
    front drops every header name with an underscore, and :meth:`of` drops them too.
    Its ``repr`` shows names, never values: they carry credentials.

    :param environ: header values under their WSGI keys (``HTTP_X_FORWARDED_FOR``,
        ``CONTENT_TYPE``); other keys are ignored. Build one from names with
        :meth:`of`.
    """

    __slots__ = ("_environ",)

    def __init__(self, environ: Mapping[str, Any]) -> None:
        self._environ = environ

    @classmethod
    def of(cls, headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> PeerHeaders:
        """Return the headers ``headers`` (a mapping or ``(name, value)`` pairs) hold,
        less any whose name contains ``_``, as setec's front drops them: here
        ``Tailscale_User_Login`` would read as ``Tailscale-User-Login``."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        environ: dict[str, str] = {}
        for name, value in pairs:
            if "_" in name:
                continue
            key = _key(name)
            environ[key] = f"{environ[key]}, {value}" if key in environ else value
        return cls(environ)

    def __getitem__(self, name: str) -> str:
        value = self._environ[_key(name)]
        if not isinstance(value, str):
            raise KeyError(name)
        return value

    def get(self, name: str, default: Any = None) -> Any:
        """Return the value of header ``name``, or ``default`` if it was not sent."""
        value = self._environ.get(_key(name), default)
        return value if isinstance(value, str) else default

    def __iter__(self) -> Iterator[str]:
        for key, value in self._environ.items():
            if key.startswith("HTTP_"):
                yield key[5:].replace("_", "-").title()
            elif key in _UNPREFIXED and value:
                yield _UNPREFIXED[key]

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"PeerHeaders({sorted(self)!r})"


def _no_headers() -> PeerHeaders:
    return PeerHeaders({})


@dataclass(frozen=True, slots=True)
class Peer:
    """Who sent an HTTP request, as far as the server's transport can tell.

    :param address: the peer's IP address as text (``"100.64.0.7"``, ``"::1"``), or
        ``""`` when the transport has none (a unix socket).
    :param port: the peer's TCP port, or ``None`` (a unix socket, or a server that did
        not say).
    :param unix: whether the request came over a unix socket, whose peers are users
        of this machine.
    :param tls: whether the connection is TLS (the server terminates it).
    :param headers: the request's headers, as :class:`PeerHeaders`; any other mapping
        given here is turned into one (:meth:`PeerHeaders.of`, which drops names
        containing ``_``).

    A peer can be a dict key (an authorizer may cache by it): its hash leaves out the
    headers, which compare by value but are a view that cannot be hashed.
    """

    address: str = ""
    port: int | None = None
    unix: bool = False
    tls: bool = False
    headers: Mapping[str, str] = field(default_factory=_no_headers, hash=False)

    def __post_init__(self) -> None:
        if type(self.headers) is not PeerHeaders:
            object.__setattr__(self, "headers", PeerHeaders.of(self.headers))
