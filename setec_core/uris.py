"""Showing URIs in messages without the credentials someone may have put in them."""

from __future__ import annotations


def redact(uri: str) -> str:
    """Return ``uri`` with any ``user:password@`` replaced by ``***@``, for messages
    and logs (``postgresql://app:hunter2@db/setec`` becomes ``postgresql://***@db/setec``).
    """
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
