"""The reply of ``/api/list-deleted`` (recoverable delete, not in Go setec), both ways.

A JSON array with one object per secret pending deletion, sorted by name, in the key
order of a Go struct::

    [{"Name":"a","Versions":[1,2],"ActiveVersion":2,
      "DeletedAt":"2026-05-05T12:34:56.123456Z","PurgeAt":"2026-05-12T12:34:56.123456Z"}]

``null`` when there is none, as ``/api/list`` answers. Times are as Go's ``time.Time``
marshals them in UTC (RFC 3339 with up to nine digits of fraction, trailing zeros
trimmed). A client reads them with the rules of the rest of the API (keys folded, the
last one wins, unknown keys ignored).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import cast

from setec_core.errors import ResponseError
from setec_core.model import DeletedSecret
from setec_core.wire.decoding import Field, JsonObject, assign, by_fold, parse, uint
from setec_core.wire.gotime import format_time, parse_time
from setec_core.wire.reply import Reply, go_escape

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _error(reason: str) -> ResponseError:
    return ResponseError(f"unmarshaling response: {reason}")


def _document(secret: DeletedSecret) -> dict[str, object]:
    return {
        "Name": secret.name,
        "Versions": sorted(secret.versions),
        "ActiveVersion": secret.active_version,
        "DeletedAt": format_time(secret.deleted_at),
        "PurgeAt": format_time(secret.purge_at),
    }


def _encode(result: list[DeletedSecret]) -> bytes:
    text = json.dumps(
        [_document(s) for s in result] or None, ensure_ascii=False, separators=(",", ":")
    )
    return go_escape(text).encode("utf-8")


def _name_of(raw: object) -> str:
    if type(raw) is not str:
        raise _error("malformed deleted secret")
    return raw


def _version_of(raw: object) -> int:
    number = uint(raw, 2**32 - 1)
    if number is None:
        raise _error("a version is not a uint32")
    return number


def _versions_of(raw: object) -> tuple[int, ...]:
    if type(raw) is not list:
        raise _error("malformed deleted secret")
    return tuple(sorted(_version_of(v) for v in raw))


def _time_of(raw: object) -> dt.datetime:
    if type(raw) is str:
        try:
            when = parse_time(raw)
        except ValueError:
            pass
        else:
            return _EPOCH if when is None else when  # Go's zero time: never set
    raise _error("a time is not RFC 3339")


_FIELDS = by_fold(
    (
        Field("name", "Name", _name_of, zero=""),
        Field("versions", "Versions", _versions_of, slice=True, zero=()),
        Field("active_version", "ActiveVersion", _version_of, zero=0),
        Field("deleted_at", "DeletedAt", _time_of, zero=_EPOCH),
        Field("purge_at", "PurgeAt", _time_of, zero=_EPOCH),
    )
)


def _secret_of(doc: object) -> DeletedSecret:
    if type(doc) is not JsonObject:
        raise _error("expected a deleted secret")
    values = assign(doc, _FIELDS)
    return DeletedSecret(
        name=cast(str, values.get("name", "")),
        versions=cast(tuple[int, ...], values.get("versions", ())),
        active_version=cast(int, values.get("active_version", 0)),
        deleted_at=cast(dt.datetime, values.get("deleted_at", _EPOCH)),
        purge_at=cast(dt.datetime, values.get("purge_at", _EPOCH)),
    )


def _decode(body: bytes) -> list[DeletedSecret]:
    doc = parse(body, _error, whole=True)
    if doc is None:
        return []
    if type(doc) is not list:
        raise _error("expected a list of deleted secrets")
    return [_secret_of(item) for item in doc]


#: The secrets pending deletion the caller may ``delete``: a list, ``null`` when empty.
DELETED_LIST: Reply[list[DeletedSecret]] = Reply(_encode, _decode)
