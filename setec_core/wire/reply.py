"""The reply bodies of the setec API, both ways: each :class:`Reply` kind says how the
server encodes it and how a client decodes it.

The server writes compact JSON, byte-identical to Go's (docs/api.md §3.2): struct fields
in declaration order, ``<``, ``>``, ``&``, U+2028 and U+2029 escaped, other non-ASCII as
raw UTF-8. A client reads a reply as Go setec's client does (``json.Unmarshal``, with the
key rules of :mod:`setec_core.wire.decoding`); a reply it cannot read is a
:class:`~setec_core.errors.ResponseError` (``unmarshaling response: ...``) that never
quotes the body.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from setec_core.encoding import decode_base64
from setec_core.errors import ResponseError
from setec_core.model import MAX_VERSION, SecretInfo, SecretValue
from setec_core.wire.decoding import Field, JsonObject, assign, by_fold, parse, uint

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Extensions:
    """The reply of ``/api/extensions``: the names of what the server offers beyond Go
    setec's API (:mod:`setec_core.wire.extensions`)."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Reply(Generic[R]):
    """One kind of reply body.

    :param encode: the server's side: the body of an operation's result, compact JSON
        as UTF-8 without a trailing newline (docs/api.md §3.2).
    :param decode: a client's side: the result of a 200's body.
    """

    encode: Callable[[R], bytes]
    decode: Callable[[bytes], R]


# --- Encoding (the server) -----------------------------------------------------------------

_GO_ESCAPES = {
    "<": "\\u003c",
    ">": "\\u003e",
    "&": "\\u0026",
    "\u2028": "\\u2028",
    "\u2029": "\\u2029",
}
# A str may hold an unpaired surrogate where Go's string held invalid UTF-8; Go writes
# the escape \ufffd for it.
_GO_ESCAPE_RE = re.compile("[<>&\u2028\u2029\ud800-\udfff]")


def _go_escape(match: re.Match[str]) -> str:
    return _GO_ESCAPES.get(match.group(), "\\ufffd")


def go_escape(text: str) -> str:
    """Escape JSON ``text`` as Go's encoder does: ``<``, ``>``, ``&``, U+2028 and U+2029
    as ``\\u`` escapes, and a lone surrogate as ``\\ufffd``."""
    return _GO_ESCAPE_RE.sub(_go_escape, text)


def _document(result: object) -> object:
    if isinstance(result, SecretValue):
        return {"Value": base64.b64encode(result.value).decode("ascii"), "Version": result.version}
    if isinstance(result, SecretInfo):
        return {
            "Name": result.name,
            "Versions": sorted(result.versions),
            "ActiveVersion": result.active_version,
        }
    if isinstance(result, Extensions):
        return {"Extensions": list(result.names)}
    if isinstance(result, list | tuple):
        return [_document(item) for item in result] or None
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    raise TypeError(f"setec has no wire form for {type(result).__name__}")


def _encode_json(result: object) -> bytes:
    # Refuses (TypeError) what is not an API result: a programming error, not a reply.
    text = json.dumps(_document(result), ensure_ascii=False, separators=(",", ":"))
    return go_escape(text).encode("utf-8")


def _encode_value(result: SecretValue) -> bytes:
    # The answer to every get: base64 and a number need no escaping, so skip the JSON
    # encoder (9.6 us a get, against 0.8 us this way).
    return b'{"Value":"%s","Version":%d}' % (
        binascii.b2a_base64(result.value, newline=False),
        result.version,
    )


def _encode_empty(result: None) -> bytes:
    # An encoder's signature (Reply.encode); a void operation's result is None.
    return b"{}"


# --- Decoding (a client) -------------------------------------------------------------------


def _error(reason: str) -> ResponseError:
    return ResponseError(f"unmarshaling response: {reason}")


def _version_of(raw: object) -> int:
    number = uint(raw, MAX_VERSION)
    if number is None:
        raise _error("a version is not a uint32")
    return number


def _bytes_of(raw: object) -> bytes:
    if type(raw) is str:
        try:
            return decode_base64(raw)  # Go's rules (setec_core.encoding)
        except ValueError:
            pass
    raise _error("Value is not base64")


def _name_of(raw: object) -> str:
    if type(raw) is not str:
        raise _error("malformed secret info")
    return raw


def _versions_of(raw: object) -> tuple[int, ...]:
    if type(raw) is not list:
        raise _error("malformed secret info")
    return tuple(sorted(_version_of(v) for v in raw))


_VALUE_FIELDS = by_fold(
    (
        Field("value", "Value", _bytes_of, slice=True, zero=b""),
        Field("version", "Version", _version_of, zero=0),
    )
)
_INFO_FIELDS = by_fold(
    (
        Field("name", "Name", _name_of, zero=""),
        Field("versions", "Versions", _versions_of, slice=True, zero=()),
        Field("active_version", "ActiveVersion", _version_of, zero=0),
    )
)


def _object(doc: object, what: str) -> JsonObject:
    if type(doc) is not JsonObject:
        raise _error(f"expected {what}")
    return doc


def _value_of(doc: object) -> SecretValue:
    values = assign(_object(doc, "a secret value"), _VALUE_FIELDS)
    return SecretValue(
        value=cast(bytes, values.get("value", b"")),
        version=cast(int, values.get("version", 0)),
    )


def _info_of(doc: object) -> SecretInfo:
    values = assign(_object(doc, "secret info"), _INFO_FIELDS)
    return SecretInfo(
        name=cast(str, values.get("name", "")),
        versions=cast(tuple[int, ...], values.get("versions", ())),
        active_version=cast(int, values.get("active_version", 0)),
    )


def _decode_value(body: bytes) -> SecretValue:
    return _value_of(parse(body, _error, whole=True))


def _decode_info(body: bytes) -> SecretInfo:
    return _info_of(parse(body, _error, whole=True))


def _decode_infos(body: bytes) -> list[SecretInfo]:
    doc = parse(body, _error, whole=True)
    if doc is None:
        return []
    if type(doc) is not list:
        raise _error("expected a list of secrets")
    return [_info_of(item) for item in doc]


def _decode_extensions(body: bytes) -> Extensions:
    doc = parse(body, _error, whole=True)
    if type(doc) is not JsonObject:
        raise _error("expected a list of extensions")
    names: tuple[str, ...] = ()
    for key, value in doc:  # the last "Extensions" key wins, as in Go
        if key.lower() != "extensions":
            continue
        if value is None:
            names = ()
        elif type(value) is list and all(type(n) is str for n in value):
            names = tuple(value)
        else:
            raise _error('"Extensions" must be a list of strings')
    return Extensions(names)


def _decode_version(body: bytes) -> int:
    version = uint(parse(body, _error, whole=True), MAX_VERSION)
    if not version:  # None, or 0: put never makes version 0
        raise _error("expected a version number")
    return version


def _decode_empty(body: bytes) -> None:
    # Go's client reads a void reply into an empty struct: any JSON will do.
    parse(body, _error, whole=True)


#: The active version of a secret, or one version: ``{"Value", "Version"}``.
VALUE: Reply[SecretValue] = Reply(_encode_value, _decode_value)
#: A secret's versions: ``{"Name", "Versions", "ActiveVersion"}``.
INFO: Reply[SecretInfo] = Reply(_encode_json, _decode_info)
#: Every secret the caller may see: a list of :data:`INFO`, ``null`` when empty.
INFO_LIST: Reply[list[SecretInfo]] = Reply(_encode_json, _decode_infos)
#: The version put made or found: a bare number.
VERSION: Reply[int] = Reply(_encode_json, _decode_version)
#: What the server offers beyond Go's API: ``{"Extensions": [names]}``.
EXTENSION_LIST: Reply[Extensions] = Reply(_encode_json, _decode_extensions)
#: The reply of an operation that returns nothing: ``{}``.
EMPTY: Reply[None] = Reply(_encode_empty, _decode_empty)
