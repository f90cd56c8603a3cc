"""The JSON of the setec API, both ways, as Go's ``encoding/json`` reads and writes it.

One description serves the server and the client:

* :mod:`~setec_core.wire.endpoint`: every endpoint once, with its path, request and
  reply (:data:`ENDPOINTS`);
* :mod:`~setec_core.wire.request`: the request bodies; the server decodes them
  (:func:`decode`, docs/api.md §3.1), a client encodes them (:func:`encode_request`);
* :mod:`~setec_core.wire.reply`: the reply bodies, one :class:`Reply` kind per shape;
  the server encodes them (``endpoint.reply.encode``, docs/api.md §3.2), a client
  decodes them (``endpoint.reply.decode``);
* :mod:`~setec_core.wire.decoding`: Go's rules for reading a body (key folding, the last
  key wins, ``null``), shared by both sides;
* :mod:`~setec_core.wire.extensions`: what the server offers beyond Go's API, which a
  client asks before using it;
* :mod:`~setec_core.wire.sentinel`: the four statuses that carry the wire sentinels,
  which the server sends and a client turns back into errors.
"""

from __future__ import annotations

from setec_core.wire.endpoint import ENDPOINTS, Endpoint
from setec_core.wire.reply import Change, Changes, Extensions, ManyValues, Reply, go_escape
from setec_core.wire.request import (
    AskedSecret,
    BadRequestError,
    CreateVersionRequest,
    DeleteRequest,
    ExtensionsRequest,
    GetManyRequest,
    GetRequest,
    ListRequest,
    NameRequest,
    PutRequest,
    Request,
    SetInfoRequest,
    VersionRequest,
    WatchedSecret,
    WatchRequest,
    decode,
    encode_request,
)
from setec_core.wire.sentinel import SENTINELS, Sentinel, sentinel_error

__all__ = [
    "ENDPOINTS",
    "SENTINELS",
    "AskedSecret",
    "BadRequestError",
    "Change",
    "Changes",
    "CreateVersionRequest",
    "DeleteRequest",
    "Endpoint",
    "Extensions",
    "ExtensionsRequest",
    "GetManyRequest",
    "GetRequest",
    "ListRequest",
    "ManyValues",
    "NameRequest",
    "PutRequest",
    "Reply",
    "Request",
    "Sentinel",
    "SetInfoRequest",
    "VersionRequest",
    "WatchRequest",
    "WatchedSecret",
    "decode",
    "encode_request",
    "go_escape",
    "sentinel_error",
]
