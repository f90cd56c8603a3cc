"""Base64 exactly as Go's ``encoding/json`` reads ``[]byte`` (padded standard base64),
and JSON strings for lines setec writes itself (audit and access logs).

Every place setec reads base64 (request bodies, responses, cache files, FileClient
files) uses :func:`decode_base64`, so that all of them accept exactly what Go accepts.
``binascii.a2b_base64(strict_mode=True)`` alone is not enough: it also takes padding
after a complete quantum (``"YWJj="``), which Go rejects.
"""

from __future__ import annotations

import binascii
import json
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


#: Characters a JSON string may hold as they are, with no thought for UTF-8.
_PLAIN = re.compile(r"[ !#-\[\]-~]*")


def json_text(value: object) -> str:
    """``value`` as compact JSON: raw UTF-8 where it can be, ``\\u`` escapes only when a
    string holds a lone surrogate (which has no UTF-8 form)."""
    out = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    try:
        out.encode()
    except UnicodeEncodeError:
        out = json.dumps(value, separators=(",", ":"))
    return out


def json_string(text: str) -> str:
    """``text`` as a JSON string, as :func:`json_text` writes it, but without calling
    the JSON encoder for the common case of printable ASCII with no quote or backslash
    (log lines are built by hand for speed, and their strings are mostly such)."""
    if _PLAIN.fullmatch(text):
        return f'"{text}"'
    return json_text(text)
