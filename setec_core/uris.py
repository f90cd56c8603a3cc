"""Showing URIs in messages without the credentials someone may have put in them."""

from __future__ import annotations

import urllib.parse


def redact(uri: str) -> str:
    """Return ``uri`` with any ``user:password@`` replaced by ``***@``, for messages
    and logs (``postgresql://app:hunter2@db/setec`` becomes ``postgresql://***@db/setec``).
    """
    scheme, sep, _ = uri.partition("://")
    if not sep:
        return "***@" + uri.rpartition("@")[2] if "@" in uri else uri
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # an unparsable netloc ("[" without "]"): hide all of it
        return f"{scheme}://***"
    if "@" not in parts.netloc:
        return uri
    return urllib.parse.urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
