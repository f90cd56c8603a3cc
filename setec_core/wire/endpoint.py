"""The endpoints of the setec API, each described once: its path, its request and its
reply (docs/api.md §4). The server routes and decodes by this table, and the client
encodes and decodes by it; adding an endpoint starts with adding it here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from setec_core.model import SecretInfo, SecretValue
from setec_core.wire import reply
from setec_core.wire.extensions import EXTENSIONS as EXTENSIONS_NAME
from setec_core.wire.reply import Extensions, Reply
from setec_core.wire.request import (
    CreateVersionRequest,
    ExtensionsRequest,
    GetRequest,
    ListRequest,
    NameRequest,
    PutRequest,
    VersionRequest,
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
    :param extension: for an endpoint Go setec does not have, the name of the
        extension it belongs to, which ``/api/extensions`` lists and a client checks
        before calling it (:mod:`setec_core.wire.extensions`); ``None`` for Go's.
    """

    name: str
    request: type[Q]
    reply: Reply[R]
    read_only: bool = False
    carries_value: bool = False
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
DELETE: Endpoint[NameRequest, None] = Endpoint("delete", NameRequest, reply.EMPTY)

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
)
