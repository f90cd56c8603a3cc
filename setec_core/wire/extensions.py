"""What this server offers beyond Go setec's API, and how a client asks.

Go setec's server reads request bodies leniently: a field it does not know is ignored,
not refused. So a guarded write (a put with an expected version) sent to a Go server
would be applied unguarded, and a new endpoint would answer 404. Before a client uses
any addition it asks ``POST /api/extensions`` (the usual API checks, no access rule, no
audit entry: it says nothing about any secret) and gets ``{"Extensions": [...]}``, the
sorted names of what the server offers. A Go server, or one of ours from before this
endpoint, answers 404, which a client reads as "nothing beyond Go's API".

An addition that is an endpoint names its extension on its
:class:`~setec_core.wire.Endpoint` (``extension=...``); an addition that is a field of
an existing endpoint (such as an expected version) is listed in :data:`FIELD_EXTENSIONS`.
:func:`offered` is the union, which the server answers with.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: The name of the extensions endpoint itself: a client that gets a 200 from it knows
#: the server speaks this protocol.
EXTENSIONS = "extensions"
#: Recoverable delete: the endpoints ``/api/undelete`` and ``/api/list-deleted``, and
#: the ``Purge`` field of ``/api/delete``, which a client sends only to a server that
#: lists it (a Go server would ignore it).
RECOVERABLE_DELETE = "recoverable-delete"

#: Additions carried by fields of endpoints that Go setec also has, by name. Each is
#: listed only once the server honours the field.
FIELD_EXTENSIONS: tuple[str, ...] = (
    # IfActiveVersion and IfVersions on the writes: guarded writes (docs/api.md §9.4).
    "cas",
)


def offered(endpoints: Iterable[Any]) -> tuple[str, ...]:
    """The sorted names of every extension the ``endpoints`` (routed by the server)
    and :data:`FIELD_EXTENSIONS` provide."""
    names = {e.extension for e in endpoints if e.extension is not None}
    names.update(FIELD_EXTENSIONS)
    return tuple(sorted(names))
