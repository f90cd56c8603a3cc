"""Who is calling, and the interface that finds out.

A :class:`Caller` is what every :class:`~setec_core.Database` operation takes: the
principal recorded in the audit log and the rules that decide what it may do. An
:class:`Authorizer` plugin builds one per request from its :class:`~setec_core.peer.Peer`
(with Tailscale's whois, from ``tailscale serve`` headers, from a bearer token, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from setec_core.acl import Rule, rules_allow
from setec_core.options import Option
from setec_core.peer import Peer
from setec_core.server_info import DEFAULT_SERVER, ServerInfo


@dataclass(frozen=True)
class Principal:
    """The identity recorded in audit entries (docs/api.md §7.1).

    A tagged node has ``tags`` and no ``user``; a user login has ``user`` and no tags.
    """

    hostname: str = ""
    ip: str = ""
    user: str = ""
    tags: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """Return the audit-log form: ``hostname`` and ``ip`` always, ``user`` and
        ``tags`` only when non-empty, in Go's key order."""
        out: dict[str, Any] = {"hostname": self.hostname, "ip": self.ip}
        if self.user:
            out["user"] = self.user
        if self.tags:
            out["tags"] = list(self.tags)
        return out


@dataclass(frozen=True)
class Caller:
    """A principal and the rules that apply to it, for one request.

    :param principal: who is calling, as written to the audit log.
    :param rules: the grants; the caller may do what any rule allows.
    :param request_id: an optional identifier of the request, copied into its audit
        entries so that an entry can be matched with a request log line.
    """

    principal: Principal
    rules: tuple[Rule, ...] = ()
    request_id: str = field(default="", compare=False)

    def allows(self, action: str, name: str) -> bool:
        """Report whether this caller's rules grant ``action`` on the secret ``name``."""
        return rules_allow(self.rules, action, name)


class Authorizer(ABC):
    """Identifies the caller of an HTTP request. Registered by plugins through
    ``setec_register_authorizers`` and selected by :attr:`name`.

    Subclasses set :attr:`name` (kebab-case, e.g. ``"tailscale"``), may declare
    :attr:`options`, and implement :meth:`from_options` and :meth:`identify`.
    """

    name: ClassVar[str]
    #: The ``setec-serve`` options this authorizer takes (docs/plugins.md, "Plugin
    #: options"); :meth:`from_options` gets their values.
    options: ClassVar[Sequence[Option]] = ()

    @classmethod
    @abstractmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> Authorizer:
        """Build the authorizer.

        :param options: the values of the declared :attr:`options`, by their ``dest``
            (``setec-serve`` gives every one, defaults filled in; other callers may
            leave some out).
        :param server: where the server listens, whether it speaks TLS, whether it
            runs in dev mode; by default ``setec-serve``'s defaults.
        :raises ConfigError: if a required option is missing or invalid, or the
            server is one this authorizer must not guard; the message names the flag
            and says what to set.
        """

    @abstractmethod
    def identify(self, peer: Peer) -> Caller:
        """Return the caller who sent a request; the server calls this once per request
        that needs one (every API call and the dashboard), from many threads at once.

        :param peer: who sent it: address and port, TLS or unix socket, and the
            request's headers (:class:`~setec_core.peer.Peer`).
        :returns: the caller; the server fills in its request id.
        :raises AccessDenied: if the caller is unknown or its rules are malformed (403;
            the message goes to the client, so it never quotes a credential).
        :raises SetecError: another subclass if identity could not be determined
            (for example :class:`~setec_core.errors.UnavailableError`, 503, when the
            identity service is unreachable). Any other exception is a bug: the client
            gets 500 and the log its type and frames.
        """

    def reload(self) -> None:  # noqa: B027 - optional hook, most authorizers hold nothing
        """Re-read configuration (the server calls this on SIGHUP). The default does
        nothing.

        :raises ConfigError: if the new configuration is invalid; the authorizer must
            then keep serving with the old one.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most authorizers hold nothing
        """Release any resources held. The default does nothing."""


def make_caller(
    *rules: Rule | tuple[Iterable[str], Iterable[str]],
    user: str = "",
    tags: Iterable[str] = (),
    hostname: str = "",
    ip: str = "",
    request_id: str = "",
) -> Caller:
    """Build a caller from rules written as :class:`Rule` objects or as
    ``(actions, patterns)`` pairs, e.g. ``make_caller((["get"], ["prod/*"]), user="a@b")``.
    """
    built = tuple(r if isinstance(r, Rule) else Rule(r[0], r[1]) for r in rules)
    principal = Principal(hostname=hostname, ip=ip, user=user, tags=tuple(tags))
    return Caller(principal, built, request_id)
