"""Why a request got no answer, in one line a user can act on.

requests wraps a failure several layers deep (its ``ConnectionError`` around urllib3's
``MaxRetryError`` around ``NewConnectionError`` around the ``OSError`` the socket
raised), and its message repeats every layer: ``HTTPConnectionPool(host=...): Max
retries exceeded with url: /api/list (Caused by NewConnectionError(...))``.
:func:`describe_failure` walks that chain by type and names what failed instead:

=====================================  ====================================================
what happened                          the line
=====================================  ====================================================
nothing listens on the port            ``cannot connect to URL: connection refused``
the host name does not resolve         ``cannot resolve host HOST: no such host``
the certificate is not trusted         ``cannot connect to URL: the TLS certificate of
                                       HOST is not trusted (...); point
                                       REQUESTS_CA_BUNDLE at ...``
the connection is never accepted       ``cannot connect to URL: no answer within N s``
accepted, never answered               ``no answer from URL within N s``
reset, or closed without an answer     ``the connection to URL was reset before the
                                       server answered``
the proxy's URL cannot be parsed       ``cannot connect to URL: its proxy URL is not
                                       valid (...)``
=====================================  ====================================================

The lines name the server's base URL (the Client's, which carries no credentials), never
a request body or a header, and never the proxy: its URL may carry a user name and
password (``http://user:pass@proxy:3128``), and requests' and urllib3's messages about a
proxy URL they cannot parse quote it whole. A failure none of the rows above match gets
requests' own message, with the user name and password of anything URL-shaped in it
masked (``http://***@proxy:3128``) in case it quotes a proxy after all.
"""

from __future__ import annotations

import errno
import http.client
import re
import socket
import ssl
from collections.abc import Iterator
from typing import TypeVar
from urllib.parse import urlsplit

import requests
import urllib3.exceptions
import urllib3.util

#: What :class:`~setec_core.client.Client` takes as ``timeout``: seconds, or
#: (connect, read), or ``None`` for none.
Timeout = float | tuple[float, float] | None

#: OpenSSL's verification results (``X509_V_ERR_*``) that mean "valid, but not for this
#: name or address", and "outside its validity period".
_NAME_MISMATCH = {62, 64}
_EXPIRED, _NOT_YET_VALID = 10, 9

#: How a failed DNS lookup reads (getaddrinfo's codes; Go says "no such host" too).
_DNS_REASONS = {
    socket.EAI_NONAME: "no such host",
    socket.EAI_AGAIN: "the DNS lookup failed for now (no network, or no answer from the "
    "DNS server)",
}

#: Why a proxy URL cannot be used, never quoting it (it may carry a password).
BAD_PROXY_URL = (
    "its proxy URL is not valid (check HTTPS_PROXY, HTTP_PROXY and ALL_PROXY: a scheme "
    "of http:// or https://, a host and a port from 1 to 65535; the URL is not shown, as "
    "it may carry a password)"
)

#: The user information of a URL: ``scheme://ANYTHING@`` or a bare ``user:password@``,
#: up to the last ``@`` of the word (a password may hold an unescaped ``@`` or ``/``).
_USER_INFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^\s'\"]*@|[^\s/@'\":]+:[^\s'\"]*@")

#: A request carrying a value that the server cut off may well be over its size limit
#: from this size up (setec-serve takes any request this large); below it, the hint
#: would mislead.
_LARGE_REQUEST = 16 * 1024

E = TypeVar("E", bound=BaseException)


def describe_failure(
    error: BaseException, server: str, timeout: Timeout, *, value_request_bytes: int = 0
) -> str:
    """One line saying why a request to ``server`` got no answer.

    :param error: what requests raised.
    :param server: the base URL the request went to.
    :param timeout: the timeout the request was sent with (the line says how long it
        waited).
    :param value_request_bytes: the size of the request body when it carries a secret
        value (put, create-version); a connection cut while sending a large one is
        probably the server refusing its size, and the line says so.
    """
    chain = list(_chain(error))
    host = urlsplit(server).hostname or server
    if isinstance(error, requests.ConnectTimeout):
        return f"cannot connect to {server}: no answer within {_seconds(timeout, 0)}"
    if isinstance(error, requests.ReadTimeout):
        return f"no answer from {server} within {_seconds(timeout, 1)}"
    # The proxy is not named: its URL may carry a user name and password.
    proxy = " through its proxy" if isinstance(error, requests.exceptions.ProxyError) else ""
    if _first(chain, requests.exceptions.InvalidURL, urllib3.exceptions.LocationValueError):
        return _unparsable(chain, server)
    verify = _first(chain, ssl.SSLCertVerificationError)
    if verify is not None:
        return f"cannot connect to {server}: {_untrusted(verify, host)}"
    tls = _first(chain, ssl.SSLError)
    if tls is not None:
        return f"cannot connect to {server}{proxy}: {_handshake(tls)}"
    dns = _first(chain, socket.gaierror)
    if dns is not None:
        if proxy:
            return (
                f"cannot connect to {server} through its proxy: the proxy's host does not resolve"
            )
        reason = _DNS_REASONS.get(dns.errno) if dns.errno is not None else None
        return f"cannot resolve host {host}: {reason or _strerror(dns)}"
    if _first(chain, ConnectionRefusedError) is not None:
        return f"cannot connect to {server}{proxy}: connection refused"
    # Before the resets: http.client's RemoteDisconnected is a ConnectionResetError.
    if _first(chain, http.client.RemoteDisconnected) is not None:
        line = f"{server} closed the connection without answering"
        hint = _size_hint(value_request_bytes)
        if not hint and urlsplit(server).scheme == "http":
            hint = " (if it serves TLS, use https://)"
        return line + hint
    cut = _first(chain, BrokenPipeError, ConnectionResetError, ConnectionAbortedError)
    if cut is not None:
        line = f"the connection to {server} was reset before the server answered"
        return line + _size_hint(value_request_bytes)
    if _first(chain, http.client.IncompleteRead) is not None or isinstance(
        error, requests.exceptions.ChunkedEncodingError
    ):
        return f"the answer from {server} was cut short"
    timed_out = _first(chain, TimeoutError)
    if timed_out is not None:
        return f"no answer from {server} within {_seconds(timeout, 1)}"
    os_error = next((e for e in chain if isinstance(e, OSError) and _is_socket_error(e)), None)
    if os_error is not None:
        return f"cannot connect to {server}{proxy}: {_strerror(os_error)}"
    # Something else (a session's own retry policy giving up, a redirect loop): requests'
    # message, on one line, with any user name and password masked.
    text = mask_user_info(" ".join(str(error).split()))[:300] or type(error).__name__
    return f"request to {server} failed: {text}"


def mask_user_info(text: str) -> str:
    """``text`` with the user information of every URL in it masked:
    ``http://user:pass@proxy:3128`` becomes ``http://***@proxy:3128`` (and a bare
    ``user:pass@proxy`` becomes ``***@proxy``)."""
    return _USER_INFO.sub(lambda m: f"{m['scheme'] or ''}***@", text)


def _unparsable(chain: list[BaseException], server: str) -> str:
    """The line for a URL that requests or urllib3 could not parse: the server's, which
    may be named, or else the proxy's, which is not."""
    if _first(chain, requests.exceptions.InvalidProxyURL, urllib3.exceptions.ProxySchemeUnknown):
        return f"cannot connect to {server}: {BAD_PROXY_URL}"
    try:
        urllib3.util.parse_url(server)
    except urllib3.exceptions.LocationValueError as e:
        # The Client refuses a server URL with a user name or password, so its URL and
        # urllib3's message about it can be shown.
        return f"server URL {server!r} is not a valid URL: {' '.join(str(e).split())[:300]}"
    return f"cannot connect to {server}: {BAD_PROXY_URL}"


def _chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it wraps: urllib3's ``reason``, exceptions passed
    as arguments (requests passes urllib3's), causes and contexts; each once."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        wrapped = [getattr(e, "reason", None), *e.args, e.__cause__, e.__context__]
        todo.extend(w for w in wrapped if isinstance(w, BaseException))


def _first(chain: list[BaseException], *kinds: type[E]) -> E | None:
    for e in chain:
        if isinstance(e, kinds):
            return e
    return None


def _is_socket_error(error: OSError) -> bool:
    # requests' and urllib3's wrappers are OSErrors too, without an errno.
    return isinstance(error.errno, int) and error.errno > 0


def _strerror(error: OSError) -> str:
    text = error.strerror or errno.errorcode.get(error.errno or 0) or type(error).__name__
    return text[:1].lower() + text[1:]


def _seconds(timeout: Timeout, which: int) -> str:
    if timeout is None:
        return "the time allowed"
    value = timeout[which] if isinstance(timeout, tuple) else timeout
    return f"{value:g} s"


def _untrusted(error: ssl.SSLCertVerificationError, host: str) -> str:
    detail = (error.verify_message or "").rstrip(".")
    if error.verify_code in _NAME_MISMATCH:
        return (
            f"the TLS certificate it presented is not valid for {host} ({detail}); "
            "use the name the certificate was issued for"
        )
    if error.verify_code == _EXPIRED:
        return f"the TLS certificate of {host} has expired"
    if error.verify_code == _NOT_YET_VALID:
        return f"the TLS certificate of {host} is not valid yet (is this machine's clock right?)"
    return (
        f"the TLS certificate of {host} is not trusted ({detail or 'verification failed'}); "
        "if the server is yours, point REQUESTS_CA_BUNDLE at the CA certificate that signed it"
    )


def _handshake(error: ssl.SSLError) -> str:
    reason = getattr(error, "reason", None)
    if reason == "WRONG_VERSION_NUMBER":
        return "TLS handshake failed: the server does not speak TLS on this port (try http://)"
    detail = reason.lower().replace("_", " ") if isinstance(reason, str) else type(error).__name__
    return f"TLS handshake failed ({detail})"


def _size_hint(value_request_bytes: int) -> str:
    if value_request_bytes < _LARGE_REQUEST:
        return ""
    return (
        f"; the request was {value_request_bytes} bytes, which may be over the server's "
        "size limit (setec-serve's default: 1 MiB, about 768 KiB of value)"
    )
