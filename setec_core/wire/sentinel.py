"""The four statuses that carry Go setec's wire sentinels, one table for both ways.

The server answers these errors with these statuses and bodies (Go's texts; a 304 is
empty), and a client turns these statuses back into the errors, whatever the body says,
as Go's client does (docs/api.md §2). Every other error and status is the server's
status table's business (:mod:`setec_core.http.status`) or, on the client, a
:class:`~setec_core.errors.RequestError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from setec_core.errors import AccessDenied, NotFound, SetecError, ValueNotChanged, VersionClaimed


@dataclass(frozen=True, slots=True)
class Sentinel:
    """A wire sentinel: the error, its status and the body the server sends with it."""

    error: type[SetecError]
    status: int
    body: str


#: Subclasses before their bases, as the server matches errors in order.
SENTINELS: tuple[Sentinel, ...] = (
    Sentinel(ValueNotChanged, 304, ""),
    Sentinel(NotFound, 404, "not found"),
    Sentinel(AccessDenied, 403, "access denied"),
    Sentinel(VersionClaimed, 412, "version already set"),
)

_BY_STATUS = {s.status: s.error for s in SENTINELS}


def sentinel_error(status: int) -> SetecError | None:
    """Return the sentinel error a client raises for ``status``, or ``None`` if the
    status carries none."""
    error = _BY_STATUS.get(status)
    return None if error is None else error()
