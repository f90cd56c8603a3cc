"""The Store's cache blob, byte-compatible with Go setec's.

``{"<name>":{"secret":{"Value":"<b64>","Version":<n>},"versions":{"<v>":"<b64>"},
"lastAccess":"<unix seconds>"}, ...}``: names sorted, members in that order,
``versions`` omitted when empty, ``secret`` ``null`` for an entry that only holds
explicit versions, ``lastAccess`` an integer written as a JSON string.

Go discards a whole cache that holds a ``null`` secret, and panics on a blob that is
the literal ``null``; here the first is valid and the second is an
invalid cache, discarded with a warning like any other.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from setec_core.encoding import decode_base64, encode_base64
from setec_core.model import MAX_VERSION, SecretValue
from setec_core.wire import go_escape

# ASCII digits only: str.isdigit() takes "²", which int() then refuses.
_DIGITS = re.compile(r"[0-9]+")
_INTEGER = re.compile(r"-?[0-9]+")


class InvalidCacheError(Exception):
    """The blob is not a valid cache. The message never quotes the blob."""


@dataclass(repr=False)
class CachedEntry:
    """One secret as the cache holds it. Its ``repr`` shows no value."""

    secret: SecretValue | None
    versions: dict[int, bytes] = field(default_factory=dict)
    last_access: int = 0

    def __repr__(self) -> str:
        return (
            f"CachedEntry(secret={self.secret!r}, versions={sorted(self.versions)}, "
            f"last_access={self.last_access})"
        )


def encode(entries: dict[str, CachedEntry]) -> bytes:
    """The blob for ``entries``, exactly as Go's Store writes it."""
    doc: dict[str, Any] = {}
    for name in sorted(entries):
        entry = entries[name]
        item: dict[str, Any] = {
            "secret": None
            if entry.secret is None
            else {"Value": _b64(entry.secret.value), "Version": entry.secret.version}
        }
        if entry.versions:
            # Go sorts map keys as strings: "10" before "2".
            item["versions"] = {
                str(v): _b64(entry.versions[v]) for v in sorted(entry.versions, key=str)
            }
        item["lastAccess"] = str(int(entry.last_access))
        doc[name] = item
    return go_escape(json.dumps(doc, separators=(",", ":"), ensure_ascii=False)).encode()


def decode(blob: bytes) -> dict[str, CachedEntry]:
    """The entries of ``blob``.

    :raises InvalidCacheError: saying what is wrong, never quoting the blob.
    """
    try:
        doc = json.loads(blob)
    except (ValueError, RecursionError):
        # Not the decoder's message: it quotes the document, which holds values.
        raise InvalidCacheError("the cache is not valid JSON") from None
    if not isinstance(doc, dict):
        raise InvalidCacheError("the cache is not a JSON object")
    entries = {}
    for name, raw in doc.items():
        if not name:
            raise InvalidCacheError("the cache has an entry with an empty name")
        if not isinstance(raw, dict):
            raise InvalidCacheError(f"the cache entry for {name!r} is not an object")
        entries[name] = _entry(name, _fold(raw))
    return entries


def _entry(name: str, raw: dict[str, Any]) -> CachedEntry:
    secret = raw.get("secret")
    if secret is not None:
        if not isinstance(secret, dict):
            raise InvalidCacheError(f"the cache entry for {name!r} has a malformed secret")
        secret = _fold(secret)
        secret = SecretValue(
            value=_unb64(secret.get("value"), name), version=_version(secret.get("version"), name)
        )
    versions: dict[int, bytes] = {}
    raw_versions = raw.get("versions") or {}
    if not isinstance(raw_versions, dict):
        raise InvalidCacheError(f"the cache entry for {name!r} has malformed versions")
    for key, value in raw_versions.items():
        if not _DIGITS.fullmatch(key):
            raise InvalidCacheError(f"the cache entry for {name!r} has a malformed version")
        versions[_version(int(key), name)] = _unb64(value, name)
    if secret is None and not versions:
        raise InvalidCacheError(f"the cache entry for {name!r} holds no secret")
    last = raw.get("lastaccess", "0")
    if isinstance(last, str) and _INTEGER.fullmatch(last):
        last_access = int(last)
    elif type(last) is int:  # lenient: Go writes a string, but a number is unambiguous
        last_access = last
    else:
        raise InvalidCacheError(f"the cache entry for {name!r} has a malformed lastAccess")
    return CachedEntry(secret=secret, versions=versions, last_access=last_access)


def _fold(raw: dict[str, Any]) -> dict[str, Any]:
    # Go's decoder matches member names case-insensitively.
    return {key.lower(): value for key, value in raw.items()}


def _version(raw: Any, name: str) -> int:
    if type(raw) is not int or not 0 < raw <= MAX_VERSION:
        raise InvalidCacheError(f"the cache entry for {name!r} has an invalid version")
    return raw


def _b64(value: bytes) -> str:
    return encode_base64(value)


def _unb64(raw: Any, name: str) -> bytes:
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise InvalidCacheError(f"the cache entry for {name!r} has a malformed value")
    try:
        return decode_base64(raw)
    except ValueError:
        raise InvalidCacheError(f"the cache entry for {name!r} has a malformed value") from None
