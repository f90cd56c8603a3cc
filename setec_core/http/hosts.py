"""Which ``Host`` headers the server answers: the defence against DNS rebinding.

A web page cannot send the API's ``Sec-X-Tailscale-No-Browsers`` header to another
origin, but it can make its own name point at 127.0.0.1 (or a tailnet address) after
the page has loaded, and then its requests go to setec as same-origin requests, carrying
``Host: attacker.example``. So every request's ``Host`` must be a name the server
answers to, or it is refused with 421 before anything else happens:

* any IP address literal (``127.0.0.1:8080``, ``[::1]``, ``100.101.102.103``): a page
  can only send one if the browser was pointed at that address itself, and then the
  page is the server's own;
* ``localhost`` and names under ``.localhost`` (browsers resolve them to loopback
  themselves, never through DNS);
* the names given with ``--allowed-host`` (exact names, or ``*.domain`` for any name
  under a domain), the host of ``--listen`` when it is a name, and the DNS names of the
  ``--tls-cert`` certificate.

The port is not compared: a rebinding page chooses the name, not the port. A request
without ``Host`` is refused unless it is HTTP/1.0 (whose clients may omit it, and which
browsers never speak).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

#: The names every server answers to, besides IP literals.
LOCAL_NAMES = ("localhost", "*.localhost")


class HostCheck:
    """Decides whether a ``Host`` header names this server.

    :param names: the names to allow besides IP literals and :data:`LOCAL_NAMES`: exact
        host names, or ``*.`` followed by a domain. Case and a trailing dot are ignored.
    """

    def __init__(self, names: Iterable[str] = ()) -> None:
        exact: set[str] = set()
        suffixes: set[str] = set()
        for name in (*LOCAL_NAMES, *names):
            name = name.strip().lower().rstrip(".")
            if name.startswith("*."):
                suffixes.add(name[1:])  # ".example.ts.net"
            elif name:
                exact.add(name)
        self.exact = frozenset(exact)
        self.suffixes = tuple(sorted(suffixes))
        # Most requests name the same few hosts: remember each verdict (bounded).
        self._seen: dict[str, bool] = {}

    def __repr__(self) -> str:
        shown = sorted(self.exact) + [f"*{s}" for s in self.suffixes]
        return f"HostCheck({shown!r})"

    def allows(self, host: str) -> bool:
        """Report whether the ``Host`` header value ``host`` names this server."""
        verdict = self._seen.get(host)
        if verdict is None:
            verdict = self._decide(host)
            if len(self._seen) < 1024:
                self._seen[host] = verdict
        return verdict

    def _decide(self, host: str) -> bool:
        match = _HOST.fullmatch(host.strip())
        if match is None:
            return False  # not "name", "IP" or "[IPv6]", each with an optional ":port"
        bracketed = match.group("v6")
        if bracketed is not None:
            return ":" in bracketed and _is_ip(bracketed)
        name = match.group("name").lower().rstrip(".")
        if not name:
            return False
        if _is_ip(name):
            return True
        return name in self.exact or any(
            name.endswith(suffix) and len(name) > len(suffix) for suffix in self.suffixes
        )


#: A Host header: a host name or an IPv4 address, or an IPv6 address (with a zone) in
#: brackets, each with an optional port. Anything else (user info, a path, a second
#: host joined by a comma) names nothing the server answers to.
_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+(?:%[A-Za-z0-9_.~-]+)?)\]|(?P<name>[A-Za-z0-9_.-]*))"
    r"(?::[0-9]{1,5})?"
)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def certificate_names(path: str) -> list[str]:
    """Return the DNS names (subject alternative names) of the first certificate in the
    PEM file at ``path``; an empty list if it has none or cannot be read."""
    from cryptography import x509

    try:
        with open(path, "rb") as f:
            cert = x509.load_pem_x509_certificates(f.read())[0]
        extension = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, IndexError, x509.ExtensionNotFound):
        return []
    return [str(name) for name in extension.value.get_values_for_type(x509.DNSName)]
