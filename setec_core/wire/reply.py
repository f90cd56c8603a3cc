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
import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

from setec_core.encoding import decode_base64
from setec_core.errors import ResponseError, SetecError
from setec_core.model import MAX_VERSION, SecretInfo, SecretValue
from setec_core.wire.decoding import Field, JsonObject, assign, by_fold, fold, parse, uint
from setec_core.wire.gotime import format_time, parse_time
from setec_core.wire.sentinel import SENTINELS, sentinel_error

R = TypeVar("R")
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Extensions:
    """The reply of ``/api/extensions``: the names of what the server offers beyond Go
    setec's API (:mod:`setec_core.wire.extensions`)."""

    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Change:
    """One secret in the reply of ``/api/watch``: its name and its active version now
    (0 if it no longer exists); or, with ``error`` set (``"access denied"``), a name
    the caller may not learn about, version 0."""

    name: str
    version: int
    error: str = ""


@dataclass(frozen=True, slots=True)
class Changes:
    """The reply of ``/api/watch`` (docs/api.md §9.2): the watched secrets whose active
    version differs from the one the caller holds; empty when the watch timed out."""

    changed: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class ManyValues:
    """The reply of ``/api/get-many`` (docs/api.md §9.3): one ``(name, version,
    result)`` per secret asked, in the order asked. ``result`` is the
    :class:`~setec_core.model.SecretValue` (whose version is the one served), or the
    :class:`~setec_core.errors.NotFound` or :class:`~setec_core.errors.AccessDenied`
    a get of it would raise; ``version`` is the one asked (0: the active one). A client
    reads back, for an answer with a value, the version served."""

    items: tuple[tuple[str, int, SecretValue | SetecError], ...]


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
        info: dict[str, object] = {
            "Name": result.name,
            "Versions": sorted(result.versions),
            "ActiveVersion": result.active_version,
        }
        # Ours (docs/api.md §9.5), after Go's and omitted when empty, so a secret
        # without them is the bytes Go writes.
        if result.description:
            info["Description"] = result.description
        if result.last_access is not None:
            info["LastAccess"] = format_time(result.last_access)
        return info
    if isinstance(result, Extensions):
        return {"Extensions": list(result.names)}
    if isinstance(result, Changes):
        return {"Changed": [_change(c) for c in result.changed] or None}
    if isinstance(result, list | tuple):
        return [_document(item) for item in result] or None
    if isinstance(result, int) and not isinstance(result, bool):
        return result
    raise TypeError(f"setec has no wire form for {type(result).__name__}")


def _change(change: Change) -> dict[str, object]:
    doc: dict[str, object] = {"Name": change.name, "Version": change.version}
    if change.error:  # omitted when empty, as Go's omitempty
        doc["Error"] = change.error
    return doc


def _many_value(name: str, version: int, result: SecretValue | SetecError) -> dict[str, object]:
    if isinstance(result, SecretValue):
        value = base64.b64encode(result.value).decode("ascii")
        return {"Name": name, "Version": result.version, "Value": value}
    # Only the sentinels a get raises for one secret (403, 404) have a place here; any
    # other error fails the whole request, and passing one in is a bug.
    sentinel = next((s for s in SENTINELS if isinstance(result, s.error)), None)
    if sentinel is None or sentinel.status not in (403, 404):
        raise TypeError(f"get-many has no wire form for {type(result).__name__}")
    return {"Name": name, "Version": version, "Status": sentinel.status, "Error": sentinel.body}


def _encode_many(result: ManyValues) -> bytes:
    text = json.dumps(
        {"Secrets": [_many_value(*item) for item in result.items]},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return go_escape(text).encode("utf-8")


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


def _description_of(raw: object) -> str:
    if type(raw) is not str:
        raise _error("malformed secret info")
    return raw


def _time_of(raw: object) -> datetime.datetime | None:
    if type(raw) is str:
        try:
            return parse_time(raw)
        except ValueError:
            pass
    raise _error("LastAccess is not an RFC 3339 time")


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
        # Ours (docs/api.md §9.5); a Go server sends neither.
        Field("description", "Description", _description_of, zero=""),
        Field("last_access", "LastAccess", _time_of, zero=None),
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
        description=cast(str, values.get("description", "")),
        last_access=cast("datetime.datetime | None", values.get("last_access")),
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
    return Extensions(
        _list_under(
            body,
            "Extensions",
            "a list of extensions",
            '"Extensions" must be a list of strings',
            _extension_name,
        )
    )


def _extension_name(raw: object) -> str:
    if type(raw) is not str:
        raise _error('"Extensions" must be a list of strings')
    return raw


def _list_under(
    body: bytes, key: str, what: str, rule: str, item: Callable[[object], T]
) -> tuple[T, ...]:
    """The items of the list under ``key`` in a reply object, read as Go's client reads
    a slice field: the key matched folded, the last one winning, ``null`` empty.

    :param what: what the body should be, for the error when it is not an object.
    :param rule: the error when the value under ``key`` is not a list (or ``null``).
    :param item: reads one element (raising the reply's error if it cannot).
    """
    doc = parse(body, _error, whole=True)
    if type(doc) is not JsonObject:
        raise _error(f"expected {what}")
    wanted = fold(key)
    items: tuple[T, ...] = ()
    for name, value in doc:
        if fold(name) != wanted:
            continue
        if value is None:
            items = ()
        elif type(value) is list:
            items = tuple(item(element) for element in value)
        else:
            raise _error(rule)
    return items


def _error_of(raw: object) -> str:
    if type(raw) is not str:
        raise _error("malformed change")
    return raw


_CHANGE_FIELDS = by_fold(
    (
        Field("name", "Name", _name_of, zero=""),
        Field("version", "Version", _version_of, zero=0),
        Field("error", "Error", _error_of, zero=""),
    )
)


def _decode_changes(body: bytes) -> Changes:
    return Changes(
        _list_under(
            body, "Changed", "a list of changes", '"Changed" must be a list of changes', _change_of
        )
    )


def _change_of(doc: object) -> Change:
    values = assign(_object(doc, "a change"), _CHANGE_FIELDS)
    return Change(
        name=cast(str, values.get("name", "")),
        version=cast(int, values.get("version", 0)),
        error=cast(str, values.get("error", "")),
    )


def _status_of(raw: object) -> int:
    number = uint(raw, 999)
    if number is None:
        raise _error('"Status" is not a status code')
    return number


def _text_of(raw: object) -> str:
    if type(raw) is not str:
        raise _error('"Error" is not a string')
    return raw


_MANY_FIELDS = by_fold(
    (
        Field("name", "Name", _name_of, zero=""),
        Field("version", "Version", _version_of, zero=0),
        Field("value", "Value", _bytes_of, slice=True, zero=b""),
        Field("status", "Status", _status_of, zero=0),
        Field("error", "Error", _text_of, zero=""),
    )
)


def _many_item(doc: object) -> tuple[str, int, SecretValue | SetecError]:
    values = assign(_object(doc, "a secret of a batch"), _MANY_FIELDS)
    name = cast(str, values.get("name", ""))
    version = cast(int, values.get("version", 0))
    status = cast(int, values.get("status", 0))
    if not status:
        return name, version, SecretValue(cast(bytes, values.get("value", b"")), version)
    error = sentinel_error(status, cast(str, values.get("error", "")))
    if error is None or status not in (403, 404):
        raise _error(f"a secret of a batch has status {status}, which is not 403 or 404")
    return name, version, error


def _decode_many(body: bytes) -> ManyValues:
    return ManyValues(
        _list_under(
            body, "Secrets", "a list of secrets", '"Secrets" must be a list of secrets', _many_item
        )
    )


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
#: A secret's versions: ``{"Name", "Versions", "ActiveVersion"}``, then ours when set:
#: ``"Description"`` and ``"LastAccess"`` (docs/api.md §9.5).
INFO: Reply[SecretInfo] = Reply(_encode_json, _decode_info)
#: Every secret the caller may see: a list of :data:`INFO`, ``null`` when empty.
INFO_LIST: Reply[list[SecretInfo]] = Reply(_encode_json, _decode_infos)
#: The version put made or found: a bare number.
VERSION: Reply[int] = Reply(_encode_json, _decode_version)
#: What the server offers beyond Go's API: ``{"Extensions": [names]}``.
EXTENSION_LIST: Reply[Extensions] = Reply(_encode_json, _decode_extensions)
#: What a watch saw change: ``{"Changed": [{"Name", "Version"[, "Error"]}, ...]}``, or
#: ``{"Changed": null}`` when it timed out.
CHANGES: Reply[Changes] = Reply(_encode_json, _decode_changes)
#: Several secrets' values, or why not: ``{"Secrets": [{"Name", "Version", "Value"} or
#: {"Name", "Version", "Status", "Error"}, ...]}``.
GET_MANY: Reply[ManyValues] = Reply(_encode_many, _decode_many)
#: The reply of an operation that returns nothing: ``{}``.
EMPTY: Reply[None] = Reply(_encode_empty, _decode_empty)
