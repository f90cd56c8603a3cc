"""Showing URIs in messages without the credentials someone may have put in them."""

from __future__ import annotations

from urllib.parse import unquote

#: Query parameters whose value is a credential (libpq's, as in
#: ``postgresql://app@db/setec?password=...``).
SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


def redact(uri: str) -> str:
    """Return ``uri`` with any ``user:password@`` replaced by ``***@``, and the value of
    any ``password`` or ``sslpassword`` query parameter by ``***``, for messages and
    logs (``postgresql://app:hunter2@db/setec`` becomes ``postgresql://***@db/setec``,
    ``postgresql://db/setec?password=hunter2`` becomes
    ``postgresql://db/setec?password=***``).
    """
    return _mask_parameters(_hide_userinfo(uri))


def _hide_userinfo(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "***@" + uri.rpartition("@")[2] if "@" in uri else uri
    # Everything up to the last "@" goes, not just urlsplit's userinfo: a password may
    # hold "/", "?" or "#", which end the authority for a URL parser. (A path with an
    # "@" in it is hidden too: too much hidden is the safe side.) An empty authority
    # ("dir:///path@x") holds no credentials.
    if rest.startswith("/") or "@" not in rest:
        return uri
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


def _mask_parameters(uri: str) -> str:
    base, sep, query = uri.partition("?")
    if not sep:
        return uri
    items = []
    for item in query.split("&"):
        name, eq, _value = item.partition("=")
        items.append(f"{name}=***" if eq and unquote(name).lower() in SECRET_PARAMETERS else item)
    return base + sep + "&".join(items)
