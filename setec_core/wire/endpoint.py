"""The endpoints of the setec API, each described once: its path, its request and its
reply (docs/api.md §4). The server routes and decodes by this table, and the client
encodes and decodes by it; adding an endpoint starts with adding it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from setec_core.model import MAX_GET_MANY, MAX_NAME_BYTES, DeletedSecret, SecretInfo, SecretValue
from setec_core.wire import reply
from setec_core.wire.deleted import DELETED_LIST
from setec_core.wire.extensions import EXTENSIONS as EXTENSIONS_NAME
from setec_core.wire.extensions import RECOVERABLE_DELETE
from setec_core.wire.reply import Changes, Extensions, ManyValues, Reply
from setec_core.wire.request import (
    CreateVersionRequest,
    DeleteRequest,
    ExtensionsRequest,
    GetManyRequest,
    GetRequest,
    ListRequest,
    NameRequest,
    PutRequest,
    SetInfoRequest,
    VersionRequest,
    WatchRequest,
)

Q = TypeVar("Q")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Endpoint(Generic[Q, R]):
    """One API endpoint.

    :param name: its name, the last part of its path (``"create-version"``).
    :param request: the class of its request body.
    :param reply: the kind of its reply body.
    :param read_only: whether it only reads (list, get, info): a server may send its
        answer before its audit entry is durable, so long as it holds the answer back
        until then.
    :param carries_value: whether its request carries a secret value (put,
        create-version): the server takes a body as large as it allows
        (``--max-request-bytes``) rather than a few kilobytes. A security limit, so
        set here for each endpoint, not inferred from the request's fields.
    :param many_names: whether its request names many secrets (a watch names up to
        1,000): the server takes a body as large as ``--max-request-bytes`` allows,
        as for a value.
    :param body_bytes: the largest body of a request that carries no value but may
        need more than the few kilobytes of a single name (a batch get): set to what
        the request's most names, at their longest, take, and no more. ``None`` for
        the others.
    :param extension: for an endpoint Go setec does not have, the name of the
        extension it belongs to, which ``/api/extensions`` lists and a client checks
        before calling it (:mod:`setec_core.wire.extensions`); ``None`` for Go's.
    """

    name: str
    request: type[Q]
    reply: Reply[R]
    read_only: bool = False
    carries_value: bool = False
    many_names: bool = False
    body_bytes: int | None = None
    extension: str | None = None
    #: ``/api/`` and the name.
    path: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", f"/api/{self.name}")


LIST: Endpoint[ListRequest, list[SecretInfo]] = Endpoint(
    "list", ListRequest, reply.INFO_LIST, read_only=True
)
GET: Endpoint[GetRequest, SecretValue] = Endpoint("get", GetRequest, reply.VALUE, read_only=True)
INFO: Endpoint[NameRequest, SecretInfo] = Endpoint("info", NameRequest, reply.INFO, read_only=True)
PUT: Endpoint[PutRequest, int] = Endpoint("put", PutRequest, reply.VERSION, carries_value=True)
CREATE_VERSION: Endpoint[CreateVersionRequest, None] = Endpoint(
    "create-version", CreateVersionRequest, reply.EMPTY, carries_value=True
)
ACTIVATE: Endpoint[VersionRequest, None] = Endpoint("activate", VersionRequest, reply.EMPTY)
DELETE_VERSION: Endpoint[VersionRequest, None] = Endpoint(
    "delete-version", VersionRequest, reply.EMPTY
)
DELETE: Endpoint[DeleteRequest, None] = Endpoint("delete", DeleteRequest, reply.EMPTY)

# --- Beyond Go setec (docs/api.md §9) ------------------------------------------------------

#: What the server offers beyond Go's API. Neither audited nor granted: it names no
#: secret. Read-only, so it never waits for an audit fsync.
EXTENSIONS: Endpoint[ExtensionsRequest, Extensions] = Endpoint(
    EXTENSIONS_NAME,
    ExtensionsRequest,
    reply.EXTENSION_LIST,
    read_only=True,
    extension=EXTENSIONS_NAME,
)

#: Waits until one of the named secrets' active version changes (docs/api.md §9.2).
#: Read-only, and writes no audit entry: a watch answers no more than info would.
WATCH: Endpoint[WatchRequest, Changes] = Endpoint(
    "watch", WatchRequest, reply.CHANGES, read_only=True, many_names=True, extension="watch"
)

#: The largest body of a batch get: MAX_GET_MANY entries, each a name of MAX_NAME_BYTES
#: bytes that JSON escapes at worst to six characters a byte (a control character as
#: \u001f), between its quotes and ``{"Name":``, ``,"Version":4294967295},``, with
#: a few bytes to spare in each entry and around the list. 101 such names do not fit.
GET_MANY_BODY_BYTES = MAX_GET_MANY * (6 * MAX_NAME_BYTES + 40) + 32

#: The values of several secrets in one round trip (docs/api.md §9.3). Read-only, so
#: its audit entries (one per secret, as a get of each would write) are made durable
#: as a get's are.
GET_MANY: Endpoint[GetManyRequest, ManyValues] = Endpoint(
    "get-many",
    GetManyRequest,
    reply.GET_MANY,
    read_only=True,
    body_bytes=GET_MANY_BODY_BYTES,
    extension="get-many",
)

#: Brings back a secret a delete put aside (docs/api.md, "Recoverable delete"): the
#: ``delete`` right grants it; audited as ``undelete``.
UNDELETE: Endpoint[NameRequest, None] = Endpoint(
    "undelete", NameRequest, reply.EMPTY, extension=RECOVERABLE_DELETE
)
#: The secrets pending deletion the caller may ``delete``, and when each goes. One
#: audit entry, as list writes; read-only, so it may wait for that entry's fsync as
#: list does.
LIST_DELETED: Endpoint[ListRequest, list[DeletedSecret]] = Endpoint(
    "list-deleted", ListRequest, DELETED_LIST, read_only=True, extension=RECOVERABLE_DELETE
)

#: Sets a secret's description (docs/api.md §9.5), under the ``set-info`` right;
#: audited as ``set-info`` with the description's length, never its text.
SET_INFO: Endpoint[SetInfoRequest, None] = Endpoint(
    "set-info", SetInfoRequest, reply.EMPTY, extension="set-info"
)

#: Every endpoint: Go's in the order docs/api.md §4 lists them, then ours (§9).
ENDPOINTS: tuple[Endpoint[Any, Any], ...] = (
    LIST,
    GET,
    INFO,
    PUT,
    CREATE_VERSION,
    ACTIVATE,
    DELETE_VERSION,
    DELETE,
    EXTENSIONS,
    WATCH,
    GET_MANY,
    UNDELETE,
    LIST_DELETED,
    SET_INFO,
)
