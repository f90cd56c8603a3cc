"""Base64 exactly as Go's ``encoding/json`` reads ``[]byte`` (padded standard base64).

Every place setec reads base64 (request bodies, responses, cache files, FileClient
files) uses :func:`decode_base64`, so that all of them accept exactly what Go accepts.
``binascii.a2b_base64(strict_mode=True)`` alone is not enough: it also takes padding
after a complete quantum (``"YWJj="``), which Go rejects.
"""

from __future__ import annotations

import binascii
import re

_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def decode_base64(text: str) -> bytes:
    """Decode padded standard base64; like Go, skip ``\\r`` and ``\\n`` anywhere.

    :raises ValueError: if ``text`` is anything else. The message never quotes it.
    """
    clean = text.replace("\r", "").replace("\n", "")
    if not _BASE64.fullmatch(clean):
        raise ValueError("not padded standard base64")
    return binascii.a2b_base64(clean)


def encode_base64(value: bytes) -> str:
    """Encode ``value`` as padded standard base64."""
    return binascii.b2a_base64(value, newline=False).decode("ascii")
