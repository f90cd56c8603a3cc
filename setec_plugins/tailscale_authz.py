"""The ``tailscale`` and ``tailscale-serve`` authorizers: callers and rules from Tailscale.

``tailscale`` (docs/api.md §6.3) does what Go setec does through tsnet: for every
request it asks tailscaled who the peer is, with ``GET /localapi/v0/whois?addr=IP:PORT``
over tailscaled's LocalAPI unix socket (option ``tailscale_socket``, default
``/var/run/tailscale/tailscaled.sock``). A tagged node is identified by its tags, any
other node by its user's login name; the hostname is the node's name and the IP is the
peer address of the connection. The rules are the peer's ``tailscale.com/cap/secrets``
capability values, one rule each; the legacy ``https://tailscale.com/cap/secrets`` is
read only when the first gives no rules. The server must listen on the tailnet address
itself (not behind a proxy) and needs read access to the socket.

``tailscale-serve`` is for a server behind ``tailscale serve
--accept-app-caps=tailscale.com/cap/secrets``: serve terminates TLS, deletes any
identity headers a client sent, and adds the caller's login (``Tailscale-User-Login``)
and capabilities (``Tailscale-App-Capabilities``, a JSON object ``{cap: [rule, ...]}``),
RFC 2047 Q-encoded when not ASCII. Anyone who can connect to the server's port can
forge those headers, so this authorizer only runs on a loopback address or a unix
socket; on a shared host, prefer a unix socket that only serve can open, because every
local user can reach a loopback port. Serve sends no identity for tagged nodes, so they
are refused here and must use a server with the ``tailscale`` authorizer. The audit IP
is the one serve puts in ``X-Forwarded-For``; the audit hostname is empty, because serve
does not say which node the caller is on.

Client messages (403 and 503 bodies) never carry capability contents; the details go
to the ``setec.authz.tailscale`` and ``setec.authz.tailscale_serve`` loggers.
"""

from __future__ import annotations

import email.errors
import email.header
import http.client
import ipaddress
import json
import logging
import os
import socket
import urllib.parse
from collections.abc import Mapping
from typing import Any

from setec_core.acl import Rule
from setec_core.authz import Authorizer, Caller, Principal
from setec_core.errors import AccessDenied, ConfigError, InvalidRequestError, UnavailableError
from setec_core.hookspecs import hookimpl
from setec_core.options import Option, check_option_names
from setec_core.peer import Peer
from setec_core.server_info import DEFAULT_SERVER, ServerInfo

log = logging.getLogger("setec.authz.tailscale")
serve_log = logging.getLogger("setec.authz.tailscale_serve")

#: The peer capability that carries setec rules.
CAP_SECRETS = "tailscale.com/cap/secrets"
#: The old name of :data:`CAP_SECRETS`, read only when it gives no rules.
LEGACY_CAP_SECRETS = "https://tailscale.com/cap/secrets"
#: tailscaled's LocalAPI socket on Linux.
DEFAULT_SOCKET = "/var/run/tailscale/tailscaled.sock"
#: The Host header tailscaled's LocalAPI requires.
LOCALAPI_HOST = "local-tailscaled.sock"
#: Seconds to wait for tailscaled before answering 503.
WHOIS_TIMEOUT = 5.0

# A whois answer is a few kilobytes; anything far larger is not tailscaled talking.
_MAX_WHOIS_BYTES = 1 << 20

_UNAVAILABLE = "tailscaled is unavailable, so the caller cannot be identified; try again later"
_MALFORMED_GRANT = (
    f"access denied: a {CAP_SECRETS} grant for this caller is not a valid rule; "
    "the server log names it"
)


class TailscaleAuthorizer(Authorizer):
    """Identifies callers with tailscaled's whois, as Go setec does (docs/api.md §6.3).

    :param socket_path: tailscaled's LocalAPI unix socket.
    :param timeout: seconds to wait for tailscaled on each request.
    :raises ConfigError: if ``socket_path`` is empty.
    """

    name = "tailscale"
    options = (
        Option(
            "--tailscale-socket",
            "tailscaled's LocalAPI socket.",
            default=DEFAULT_SOCKET,
            metavar="PATH",
        ),
    )

    def __init__(
        self, socket_path: str = DEFAULT_SOCKET, *, timeout: float = WHOIS_TIMEOUT
    ) -> None:
        if not socket_path:
            raise ConfigError(
                "the tailscale authorizer needs tailscaled's socket, and --tailscale-socket "
                f"is empty; set it to the socket tailscaled listens on (usually {DEFAULT_SOCKET})"
            )
        self.socket_path = socket_path
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"TailscaleAuthorizer({self.socket_path!r})"

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> TailscaleAuthorizer:
        """Build from ``tailscale_socket`` (default :data:`DEFAULT_SOCKET`).

        :raises ConfigError: if the socket option is empty, or the server listens on a
            unix socket (whois needs the peer's tailnet IP address).
        """
        check_option_names(cls, options, f"authorizer {cls.name!r}")
        if server.unix_socket is not None:
            raise ConfigError(
                f"the tailscale authorizer identifies callers by their tailnet IP address, "
                f"which a unix socket ({server.listen!r}) does not have; listen on the node's "
                "tailnet address, or use --authorizer tailscale-serve behind tailscale serve"
            )
        socket_path = options.get("tailscale_socket")
        authorizer = cls(DEFAULT_SOCKET if socket_path is None else str(socket_path))
        if not os.path.exists(authorizer.socket_path):
            # Not fatal: tailscaled may start after us; requests get 503 until it does.
            log.warning(
                "tailscaled socket %s does not exist (yet); requests get 503 until "
                "tailscaled runs there (see --tailscale-socket)",
                authorizer.socket_path,
            )
        return authorizer

    def identify(self, peer: Peer) -> Caller:
        """Ask tailscaled who ``peer`` is and return its caller.

        :raises AccessDenied: if tailscaled does not know the peer, has no user or tags
            for it, or one of its grants is not a valid rule.
        :raises UnavailableError: if tailscaled cannot be reached or answers nonsense.
        """
        ip, port = _peer_address(peer)
        addr = ip if port is None else (f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}")
        answer = self.whois(addr)
        try:
            return _caller_from_whois(answer, ip)
        except _MalformedAnswerError as e:
            log.error("tailscaled's whois answer for %s is malformed: %s", addr, e)
            raise UnavailableError(_UNAVAILABLE) from None

    def whois(self, addr: str) -> dict[str, Any]:
        """Return tailscaled's decoded whois answer for ``addr`` (``IP:PORT``, ``[V6]:PORT``
        or ``IP``).

        :raises AccessDenied: if tailscaled does not know the peer (404).
        :raises UnavailableError: if tailscaled cannot be reached, refuses us, times out,
            or answers anything but a JSON object.
        """
        path = "/localapi/v0/whois?" + urllib.parse.urlencode({"addr": addr})
        conn = _UnixHTTPConnection(self.socket_path, self.timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read(_MAX_WHOIS_BYTES + 1)
        except (OSError, http.client.HTTPException) as e:
            log.error(
                "whois %s: cannot talk to tailscaled at %s: %s: %s; is tailscaled running "
                "and is --tailscale-socket right?",
                addr,
                self.socket_path,
                type(e).__name__,
                e,
            )
            raise UnavailableError(_UNAVAILABLE) from None
        finally:
            conn.close()
        status = response.status
        if status == 404:
            log.warning("whois %s: tailscaled does not know this peer (%s)", addr, _snippet(body))
            raise AccessDenied(f"access denied: {ip_of(addr)} is not a known tailnet peer")
        if status == 403:
            log.error(
                "whois %s: tailscaled refused the request (403 %s); run setec as root or as "
                "the user named by `tailscale set --operator=USER`",
                addr,
                _snippet(body),
            )
            raise UnavailableError(_UNAVAILABLE)
        if status != 200 or len(body) > _MAX_WHOIS_BYTES:
            log.error(
                "whois %s: tailscaled answered %d with %d bytes: %s",
                addr,
                status,
                len(body),
                _snippet(body),
            )
            raise UnavailableError(_UNAVAILABLE)
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError) as e:
            log.error("whois %s: tailscaled's answer is not JSON (%s): %s", addr, e, _snippet(body))
            raise UnavailableError(_UNAVAILABLE) from None
        if not isinstance(answer, dict):
            log.error(
                "whois %s: tailscaled's answer is not a JSON object: %s", addr, _snippet(body)
            )
            raise UnavailableError(_UNAVAILABLE)
        return answer


class TailscaleServeAuthorizer(Authorizer):
    """Identifies callers from the headers ``tailscale serve`` adds; loopback only."""

    name = "tailscale-serve"

    def __init__(self) -> None:
        self._warned_no_caps = False

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> TailscaleServeAuthorizer:
        """Build for a server that listens on a loopback address or a unix socket.

        :raises ConfigError: if the server is reachable from other hosts.
        """
        check_option_names(cls, options, f"authorizer {cls.name!r}")
        if not server.is_local:
            raise ConfigError(
                "the tailscale-serve authorizer trusts identity headers that anyone who can "
                f"reach the server could forge, and --listen {server.listen!r} is not a loopback "
                "address or unix socket; listen on 127.0.0.1:PORT and run `tailscale serve "
                f"--accept-app-caps={CAP_SECRETS} PORT`, or use --authorizer tailscale to "
                "serve on the tailnet address directly"
            )
        return cls()

    def identify(self, peer: Peer) -> Caller:
        """Return the caller named by the serve headers ``peer`` carries.

        :raises AccessDenied: if there is no ``Tailscale-User-Login`` (a tagged node, a
            Funnel request, or a request that did not come through serve), or the
            capabilities header or one of its grants is malformed.
        """
        headers = peer.headers
        if headers.get("Tailscale-Funnel-Request"):
            raise AccessDenied("access denied: requests through Tailscale Funnel have no identity")
        try:
            login = _decode_rfc2047(headers.get("Tailscale-User-Login", "")).strip()
        except ValueError as e:
            serve_log.error("the Tailscale-User-Login header is malformed: %s", e)
            raise AccessDenied(
                "access denied: the Tailscale-User-Login header is malformed"
            ) from None
        if not login:
            raise AccessDenied(
                "access denied: no Tailscale-User-Login header; tailscale serve sends one only "
                "for users' devices, so tagged nodes must use a server with the 'tailscale' "
                "authorizer"
            )
        ip = _forwarded_ip(peer)
        raw = headers.get("Tailscale-App-Capabilities")
        if raw is None:
            if not self._warned_no_caps:
                self._warned_no_caps = True
                serve_log.warning(
                    "request from %s (%s) has no Tailscale-App-Capabilities header, so it has "
                    "no rules; run tailscale serve with --accept-app-caps=%s",
                    login,
                    ip,
                    CAP_SECRETS,
                )
            return Caller(Principal(ip=ip, user=login))
        who = f"{ip} ({login})"
        try:
            cap_map = json.loads(_decode_rfc2047(raw))
            if not isinstance(cap_map, dict):
                raise _MalformedAnswerError("not a JSON object")
            cap, grants = _select_grants(cap_map)
        except (ValueError, RecursionError, _MalformedAnswerError) as e:
            serve_log.error(
                "peer %s: the Tailscale-App-Capabilities header is malformed (%s): %.500r",
                who,
                e,
                raw,
            )
            raise AccessDenied(
                "access denied: the Tailscale-App-Capabilities header is malformed"
            ) from None
        rules = _decode_rules(cap, grants, who, serve_log)
        return Caller(Principal(ip=ip, user=login), rules)


def ip_of(addr: str) -> str:
    """Return the IP of ``IP:PORT``, ``[V6]:PORT`` or a bare IP."""
    if addr.startswith("["):
        return addr[1:].partition("]")[0]
    if addr.count(":") == 1:
        return addr.partition(":")[0]
    return addr


# --- helpers --------------------------------------------------------------------------


class _MalformedAnswerError(Exception):
    """An identity answer has the wrong shape (mapped to 503 or 403 by the caller)."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP/1.1 over tailscaled's unix socket, with ``Host: local-tailscaled.sock``."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__(LOCALAPI_HOST, timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._path)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


def _peer_address(peer: Peer) -> tuple[str, str | None]:
    raw = peer.address
    try:
        ip = ipaddress.ip_address(raw)
    except ValueError:
        log.warning("cannot identify a caller whose peer address is %r (not an IP)", raw)
        raise AccessDenied("access denied: the connection has no IP address to identify") from None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; tailscaled knows a.b.c.d.
        ip = ip.ipv4_mapped
    return str(ip), (None if peer.port is None else str(peer.port))


def _caller_from_whois(answer: Mapping[str, Any], ip: str) -> Caller:
    node = answer.get("Node")
    if not isinstance(node, dict):
        raise _MalformedAnswerError("no Node object")
    hostname = node.get("Name") or ""
    tags = node.get("Tags") or []
    profile = answer.get("UserProfile") or {}
    cap_map = answer.get("CapMap") or {}
    if not isinstance(hostname, str):
        raise _MalformedAnswerError("Node.Name is not a string")
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise _MalformedAnswerError("Node.Tags is not a list of strings")
    if not isinstance(profile, dict) or not isinstance(cap_map, dict):
        raise _MalformedAnswerError("UserProfile or CapMap is not an object")
    login = profile.get("LoginName") or ""
    if not isinstance(login, str):
        raise _MalformedAnswerError("UserProfile.LoginName is not a string")
    if tags:
        # A tagged node's identity is its tags; its UserProfile is a placeholder.
        principal = Principal(hostname=hostname, ip=ip, tags=tuple(tags))
    elif login:
        principal = Principal(hostname=hostname, ip=ip, user=login)
    else:
        log.warning("whois %s (%s): tailscaled reports neither tags nor a login name", ip, hostname)
        raise AccessDenied("access denied: tailscaled reports no user or tags for this peer")
    cap, grants = _select_grants(cap_map)
    peer = f"{ip} ({principal.user or ','.join(principal.tags)}, {hostname})"
    return Caller(principal, _decode_rules(cap, grants, peer, log))


def _select_grants(cap_map: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Return the capability name and values to use: the primary one, or the legacy one
    if the primary gives no rules (docs/api.md §6.3)."""
    for cap in (CAP_SECRETS, LEGACY_CAP_SECRETS):
        values = cap_map.get(cap)
        if values is None:
            continue
        if not isinstance(values, list):
            raise _MalformedAnswerError(f"the {cap} capability is not a list")
        if values:
            return cap, values
    return CAP_SECRETS, []


def _decode_rules(
    cap: str, grants: list[Any], peer: str, logger: logging.Logger
) -> tuple[Rule, ...]:
    rules = []
    for grant in grants:
        try:
            rules.append(Rule.from_json(grant))
        except InvalidRequestError as e:
            logger.error(
                "peer %s: the %s grant %s is not a valid rule (%s); fix it in the tailnet "
                "policy file",
                peer,
                cap,
                json.dumps(grant),
                e,
            )
            raise AccessDenied(_MALFORMED_GRANT) from None
    return tuple(rules)


def _decode_rfc2047(value: str) -> str:
    """Decode a header value that tailscale serve may have Q-encoded (Go's
    ``mime.QEncoding.Encode``, which leaves ASCII values as they are)."""
    if not value.startswith("=?"):
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (email.errors.HeaderParseError, LookupError, UnicodeDecodeError) as e:
        raise ValueError(f"bad RFC 2047 encoding: {e}") from None


def _forwarded_ip(peer: Peer) -> str:
    # Serve sets X-Forwarded-For to exactly the peer IP, replacing any the client sent.
    forwarded = peer.headers.get("X-Forwarded-For", "").split(",")[0].strip()
    try:
        return str(ipaddress.ip_address(forwarded))
    except ValueError:
        return peer.address


def _snippet(body: bytes) -> str:
    return " ".join(body[:200].decode("utf-8", "replace").split()) or "(empty)"


@hookimpl
def setec_register_authorizers(register: Any) -> None:
    """Register the ``tailscale`` and ``tailscale-serve`` authorizers."""
    register(TailscaleAuthorizer)
    register(TailscaleServeAuthorizer)
