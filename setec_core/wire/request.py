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
    """The body of ``/api/list`` and ``/api/list-deleted``: any JSON object (its keys
    are ignored) or ``null``."""


@dataclass(frozen=True, slots=True)
class ExtensionsRequest:
    """The body of ``/api/extensions`` (not in Go setec): any JSON object (its keys are
    ignored) or ``null``."""


@dataclass(frozen=True, slots=True)
class NameRequest:
    """The body of ``/api/info`` and ``/api/undelete``: ``{"Name": ...}``."""

    name: str = ""


@dataclass(frozen=True, slots=True)
class GetRequest:
    """The body of ``/api/get``: ``{"Name", "Version", "UpdateIfChanged"}``."""

    name: str = ""
    version: int = 0
    update_if_changed: bool = False


@dataclass(frozen=True, slots=True)
class PutRequest:
    """The body of ``/api/put``: ``{"Name", "Value"}``, and the optional guards
    ``IfActiveVersion`` and ``IfVersions`` (not in Go setec: docs/api.md §9.4; ``None``
    when absent, and then not sent). Its repr never shows the value."""

    name: str = ""
    value: bytes = field(default=b"", repr=False)
    if_active_version: int | None = None
    if_versions: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class VersionRequest:
    """The body of ``/api/activate`` and ``/api/delete-version``: ``{"Name", "Version"}``,
    and the optional guards of :class:`PutRequest`."""

    name: str = ""
    version: int = 0
    if_active_version: int | None = None
    if_versions: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class CreateVersionRequest:
    """The body of ``/api/create-version``: ``{"Name", "Version", "Value"}``, and the
    optional guards of :class:`PutRequest`.

    Its repr never shows the value.
    """

    name: str = ""
    version: int = 0
    value: bytes = field(default=b"", repr=False)
    if_active_version: int | None = None
    if_versions: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    """The body of ``/api/delete``: ``{"Name"}``, and the optional guards of
    :class:`PutRequest`. (Info shares no class with it, so that an info request's
    guard-named keys stay unknown keys, ignored as Go ignores them.) ``Purge``
    (recoverable delete, not in Go setec) removes the secret for good at once, even
    with a recovery window; ``None`` when absent, and then not sent."""

    name: str = ""
    if_active_version: int | None = None
    if_versions: tuple[int, ...] | None = None
    purge: bool | None = None


@dataclass(frozen=True, slots=True)
class WatchedSecret:
    """One secret of a watch request: its name and the active version the caller holds
    (0: it holds none)."""

    name: str = ""
    version: int = 0


@dataclass(frozen=True, slots=True)
class WatchRequest:
    """The body of ``/api/watch`` (not in Go setec): ``{"Secrets": [{"Name", "Version"},
    ...], "Timeout": seconds}`` (docs/api.md §9.2). The server checks the count of
    names and duplicates; this class only carries them."""

    secrets: tuple[WatchedSecret, ...] = ()
    timeout: int = 0


@dataclass(frozen=True, slots=True)
class AskedSecret:
    """One secret a batch get asks for: its name and the version wanted (0: the active
    one)."""

    name: str = ""
    version: int = 0


@dataclass(frozen=True, slots=True)
class GetManyRequest:
    """The body of ``/api/get-many`` (not in Go setec): ``{"Secrets": [{"Name",
    "Version"}, ...]}`` (docs/api.md §9.3). The Database checks the count and
    duplicates; this class only carries them."""

    asked: tuple[AskedSecret, ...] = ()


@dataclass(frozen=True, slots=True)
class SetInfoRequest:
    """The body of ``/api/set-info`` (not in Go setec): ``{"Name", "Description"}``
    (docs/api.md §9.5). The Database checks the description's rules."""

    name: str = ""
    description: str = ""


#: Every request class.
Request = (
    ListRequest
    | ExtensionsRequest
    | NameRequest
    | GetRequest
    | PutRequest
    | VersionRequest
    | CreateVersionRequest
    | DeleteRequest
    | WatchRequest
    | GetManyRequest
    | SetInfoRequest
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


def _description(raw: object) -> str:
    if type(raw) is not str:
        raise BadRequestError('"Description" must be a string')
    if not is_unicode(raw):
        raise BadRequestError('"Description" contains an unpaired surrogate escape')
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


def _purge(raw: object) -> bool:
    if type(raw) is not bool:
        raise BadRequestError('"Purge" must be true or false')
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


_IF_ACTIVE_RULE = '"IfActiveVersion" must be an integer from 0 to 4294967295'
_IF_VERSIONS_RULE = '"IfVersions" must be a list of integers from 1 to 4294967295'


def _if_active_version(raw: object) -> int:
    number = uint(raw, MAX_VERSION)
    if number is None:
        raise BadRequestError(_IF_ACTIVE_RULE)
    return number


def _if_versions(raw: object) -> tuple[int, ...]:
    # Stricter than Go would read a []uint32 (a null element as 0): a guard that could
    # never hold, or names a version twice, is a mistake worth saying so.
    if type(raw) is not list:
        raise BadRequestError(_IF_VERSIONS_RULE)
    versions: dict[int, None] = {}  # ordered, and a duplicate found in one pass
    for item in raw:
        number = uint(item, MAX_VERSION)
        if not number:  # None, or 0: no version is 0
            raise BadRequestError(_IF_VERSIONS_RULE)
        if number in versions:
            raise BadRequestError(f'"IfVersions" lists version {number} more than once')
        versions[number] = None
    return tuple(versions)


def _dump_versions(value: object) -> object:
    versions: tuple[int, ...] = value  # type: ignore[assignment]
    return list(versions)


#: The largest ``Timeout`` Go's ``int`` holds; larger is clamped to the server's cap.
_MAX_TIMEOUT = 2**63 - 1
_SECRETS_RULE = '"Secrets" must be a list of {"Name", "Version"} objects'
_WATCHED_FIELDS = by_fold(
    (
        Field("name", "Name", _name, zero=""),
        Field("version", "Version", _version, zero=0),
    )
)


#: The most names one watch may carry (checked here, before a long list is turned
#: into objects, and again by the server's watches).
MAX_WATCHED_NAMES = 1000


def _watched(raw: object) -> tuple[WatchedSecret, ...]:
    if type(raw) is not list:
        raise BadRequestError(_SECRETS_RULE)
    if len(raw) > MAX_WATCHED_NAMES:
        # A 1 MiB body can hold 340,000 empty objects: refused before they are built.
        # The same reason the server's watches give for a list too long to wait on.
        raise InvalidRequestError(
            f"a watch names 1 to {MAX_WATCHED_NAMES} secrets; this one names {len(raw)}"
        )
    watched = []
    for item in raw:
        # Go fills a []struct element from null as the zero struct.
        if item is None:
            watched.append(WatchedSecret())
        elif type(item) is JsonObject:
            watched.append(WatchedSecret(**assign(item, _WATCHED_FIELDS)))  # type: ignore[arg-type]
        else:
            raise BadRequestError(_SECRETS_RULE)
    return tuple(watched)


def _timeout(raw: object) -> int:
    number = uint(raw, _MAX_TIMEOUT)
    if number is None:
        raise BadRequestError('"Timeout" must be a whole number of seconds, 0 or more')
    return number


def _dump_watched(value: object) -> object:
    secrets: tuple[WatchedSecret, ...] = value  # type: ignore[assignment]
    return [{"Name": s.name, "Version": s.version} for s in secrets]


_ASKED_RULE = '"Secrets" must be a list of {"Name", "Version"} objects'
_ASKED_FIELDS = by_fold(
    (
        Field("name", "Name", _name, zero=""),
        Field("version", "Version", _version, zero=0),
    )
)


def _asked(raw: object) -> tuple[AskedSecret, ...]:
    if type(raw) is not list:
        raise BadRequestError(_ASKED_RULE)
    asked = []
    for item in raw:
        if item is None:  # Go fills a []struct element from null as the zero struct
            asked.append(AskedSecret())
        elif type(item) is JsonObject:
            asked.append(AskedSecret(**assign(item, _ASKED_FIELDS)))  # type: ignore[arg-type]
        else:
            raise BadRequestError(_ASKED_RULE)
    return tuple(asked)


def _dump_asked(value: object) -> object:
    asked: tuple[AskedSecret, ...] = value  # type: ignore[assignment]
    return [{"Name": s.name, "Version": s.version} for s in asked]


#: attribute -> field, for every field a request class may have.
FIELDS: dict[str, Field] = {
    f.attr: f
    for f in (
        Field("name", "Name", _name, zero=""),
        Field("version", "Version", _version, zero=0),
        Field("update_if_changed", "UpdateIfChanged", _flag, zero=False),
        # Optional, as the guards: absent (or null) is None, and None is not sent.
        Field("purge", "Purge", _purge),
        Field("value", "Value", _value, dump=_base64, slice=True, zero=b""),
        # Optional: absent (or null, as Go leaves a pointer nil) is None, not 0.
        Field("if_active_version", "IfActiveVersion", _if_active_version, slice=True),
        Field("if_versions", "IfVersions", _if_versions, dump=_dump_versions, slice=True),
        Field("secrets", "Secrets", _watched, dump=_dump_watched, slice=True, zero=()),
        Field("timeout", "Timeout", _timeout, zero=0),
        Field("asked", "Secrets", _asked, dump=_dump_asked, slice=True, zero=()),
        Field("description", "Description", _description, zero=""),
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
    declaration order, non-ASCII as raw UTF-8 and the value as padded base64. An
    optional field that is ``None`` (a guard not given) is left out, so a request
    without one is byte for byte what Go's client sends.

    :raises UnicodeEncodeError: if the name holds a lone surrogate (no UTF-8 form).
    """
    doc: dict[str, object] = {}
    for f in _dumps_of(type(request)):  # type: ignore[arg-type]  # classes are hashable
        value = getattr(request, f.attr)
        if value is None:
            continue
        doc[f.wire] = value if f.dump is None else f.dump(value)
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
