"""The request bodies of the setec API (Go's ``api.*Request`` structs), both ways.

The server decodes them with :func:`decode`, leniently, exactly as Go setec's server
does (docs/api.md §3.1; the key rules are in :mod:`setec_core.wire.decoding`). Field
types are strict: a version is a JSON integer in uint32 range, a value is padded
standard base64 (or, as Go also takes, an array of octets). Two deliberate differences
from Go, neither reachable by a Go client (whose encoder never produces them): invalid
UTF-8 in the decoded value, and a ``Name`` holding an unpaired UTF-16 surrogate escape,
are rejected rather than turned into U+FFFD.

A client encodes them with :func:`encode_request`, as Go's client does: compact JSON,
every field present, in declaration order.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from dataclasses import dataclass, field
from typing import TypeVar

from setec_core.encoding import decode_base64, encode_base64
from setec_core.errors import InvalidRequestError
from setec_core.model import MAX_VERSION
from setec_core.wire.decoding import (
    Field,
    JsonInt,
    JsonObject,
    assign,
    by_fold,
    is_unicode,
    parse,
    uint,
)

T = TypeVar("T")


class BadRequestError(InvalidRequestError):
    """A request body Go setec would refuse with 400 ``bad request``.

    The message is one line, names the offending field, and never quotes the body
    (bodies carry secret values).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(f"bad request: {reason}")
        self.reason = reason


# --- The requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ListRequest:
    """The body of ``/api/list``: any JSON object (its keys are ignored) or ``null``."""


@dataclass(frozen=True, slots=True)
class ExtensionsRequest:
    """The body of ``/api/extensions`` (not in Go setec): any JSON object (its keys are
    ignored) or ``null``."""


@dataclass(frozen=True, slots=True)
class NameRequest:
    """The body of ``/api/info`` and ``/api/delete``: ``{"Name": ...}``."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class GetRequest:
    """The body of ``/api/get``: ``{"Name", "Version", "UpdateIfChanged"}``."""

    name: str = ""
    version: int = 0
    update_if_changed: bool = False


@dataclass(frozen=True, slots=True)
class PutRequest:
    """The body of ``/api/put``: ``{"Name", "Value"}``. Its repr never shows the value."""

    name: str = ""
    value: bytes = field(default=b"", repr=False)


@dataclass(frozen=True, slots=True)
class VersionRequest:
    """The body of ``/api/activate`` and ``/api/delete-version``: ``{"Name", "Version"}``."""

    name: str = ""
    version: int = 0


@dataclass(frozen=True, slots=True)
class CreateVersionRequest:
    """The body of ``/api/create-version``: ``{"Name", "Version", "Value"}``.

    Its repr never shows the value.
    """

    name: str = ""
    version: int = 0
    value: bytes = field(default=b"", repr=False)


#: Every request class.
Request = (
    ListRequest
    | ExtensionsRequest
    | NameRequest
    | GetRequest
    | PutRequest
    | VersionRequest
    | CreateVersionRequest
)

# --- Their fields, as the server reads them ----------------------------------------------

_VERSION_RULE = '"Version" must be an integer from 0 to 4294967295'
_BYTE_RULE = '"Value" must be a base64 string or an array of integers from 0 to 255'


def _name(raw: object) -> str:
    if type(raw) is not str:
        raise BadRequestError('"Name" must be a string')
    if not is_unicode(raw):
        raise BadRequestError('"Name" contains an unpaired surrogate escape')
    return raw


def _version(raw: object) -> int:
    number = uint(raw, MAX_VERSION)
    if number is None:
        raise BadRequestError(_VERSION_RULE)
    return number


def _flag(raw: object) -> bool:
    if type(raw) is not bool:
        raise BadRequestError('"UpdateIfChanged" must be true or false')
    return raw


_OCTETS = re.compile(r"(?:[0-9]{1,3}(?:,[0-9]{1,3})*)?")


def _value(raw: object) -> bytes:
    if type(raw) is str:
        # Exactly Go's padded StdEncoding, CR and LF skipped (setec_core.encoding).
        try:
            return decode_base64(raw)
        except ValueError:
            pass
        raise BadRequestError('"Value" must be standard base64 with padding')
    if type(raw) is list:
        # Go fills a []byte from an array of numbers too; a null element stays 0.
        if set(map(type, raw)) <= {JsonInt}:
            # Integers only, the common case: checked all at once rather than one by
            # one (a 1 MiB array took 0.95 s of CPU, now 0.72 s, most of it the scan).
            if _OCTETS.fullmatch(",".join(raw)):
                try:
                    return bytes(map(int, raw))
                except ValueError:  # a number over 255
                    pass
            raise BadRequestError(_BYTE_RULE)
        octets = []
        for item in raw:
            octet = 0 if item is None else uint(item, 255)
            if octet is None:
                raise BadRequestError(_BYTE_RULE)
            octets.append(octet)
        return bytes(octets)
    raise BadRequestError(_BYTE_RULE)


def _base64(value: object) -> object:
    return encode_base64(value) if isinstance(value, bytes) else value


#: attribute -> field, for every field a request class may have.
FIELDS: dict[str, Field] = {
    f.attr: f
    for f in (
        Field("name", "Name", _name, zero=""),
        Field("version", "Version", _version, zero=0),
        Field("update_if_changed", "UpdateIfChanged", _flag, zero=False),
        Field("value", "Value", _value, dump=_base64, slice=True, zero=b""),
    )
}


@functools.cache
def _fields_of(kind: type) -> dict[str, Field]:
    """Map each folded wire name of ``kind`` to its field (once per kind)."""
    return by_fold(FIELDS[f.name] for f in dataclasses.fields(kind))


# --- Both directions ---------------------------------------------------------------------


def decode(body: bytes, kind: type[T]) -> T:
    """Decode a request body as Go setec's server does (docs/api.md §3.1).

    :param body: the raw request body.
    :param kind: one of the request classes of this module.
    :returns: an instance of ``kind``; fields absent from the body keep their zero values.
    :raises BadRequestError: if Go setec would answer 400 ``bad request``.
    """
    top = parse(body, BadRequestError, whole=False)
    if top is None:
        return kind()
    if type(top) is not JsonObject:
        raise BadRequestError("body must be a JSON object")
    fields = _fields_of(kind)  # type: ignore[arg-type]  # classes are hashable
    return kind(**assign(top, fields))


@functools.cache
def _dumps_of(kind: type) -> tuple[Field, ...]:
    """The fields of ``kind`` in declaration order, which is Go's key order."""
    return tuple(FIELDS[f.name] for f in dataclasses.fields(kind))


def encode_request(request: Request) -> bytes:
    """Encode a request as Go setec's client does: compact JSON of every field, in
    declaration order, non-ASCII as raw UTF-8 and the value as padded base64.

    :raises UnicodeEncodeError: if the name holds a lone surrogate (no UTF-8 form).
    """
    doc: dict[str, object] = {}
    for f in _dumps_of(type(request)):  # type: ignore[arg-type]  # classes are hashable
        value = getattr(request, f.attr)
        doc[f.wire] = value if f.dump is None else f.dump(value)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
