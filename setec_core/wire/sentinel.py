"""The four statuses that carry Go setec's wire sentinels, one table for both ways.

The server answers these errors with these statuses and bodies (Go's texts; a 304 is
empty), and a client turns these statuses back into the errors, whatever the body says,
as Go's client does (docs/api.md §2); for a 404 or 403, a body that says more than the
sentinel's text (the server's reason) becomes the error's message. Every other error
and status is the server's status table's business (:mod:`setec_core.http.status`) or,
on the client, a :class:`~setec_core.errors.RequestError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from setec_core.errors import AccessDenied, NotFound, SetecError, ValueNotChanged, VersionClaimed
from setec_core.quoting import escape_unprintable


@dataclass(frozen=True, slots=True)
class Sentinel:
    """A wire sentinel: the error, its status and the body the server sends with it.

    :param reasoned: whether a body that says more than :attr:`body` (the server's
        reason) becomes the client's error message (see :func:`sentinel_error`).
    """

    error: type[SetecError]
    status: int
    body: str
    reasoned: bool = False


#: Subclasses before their bases, as the server matches errors in order.
SENTINELS: tuple[Sentinel, ...] = (
    Sentinel(ValueNotChanged, 304, ""),
    Sentinel(NotFound, 404, "not found", reasoned=True),
    Sentinel(AccessDenied, 403, "access denied", reasoned=True),
    Sentinel(VersionClaimed, 412, "version already set"),
)

_BY_STATUS = {s.status: s for s in SENTINELS}

#: The most of a server's reason a sentinel error carries.
MAX_REASON = 300


def sentinel_error(status: int, reason: str = "") -> SetecError | None:
    """Return the sentinel error a client raises for ``status``, or ``None`` if the
    status carries none.

    :param reason: the body the server sent. For a 404 or 403 whose body says more
        than the sentinel's (a policy server's ``access denied: missing or unknown
        bearer token``), the error's message is that reason (after the sentinel's text
        if it does not start with it), on one line, with every character that is not
        printable written as an escape (ESC as ``\\x1b``: see
        :func:`~setec_core.quoting.escape_unprintable`), and at most :data:`MAX_REASON`
        characters; otherwise the message is the error's usual one. The error's type
        is the same either way, and is what callers match on. A markup body (a
        proxy's HTML page) is not a reason and is left out.
    """
    sentinel = _BY_STATUS.get(status)
    if sentinel is None:
        return None
    reason = " ".join(reason.split())
    if not sentinel.reasoned or not reason or reason == sentinel.body or reason[0] == "<":
        return sentinel.error()
    if not reason.startswith(sentinel.body + ":"):
        reason = f"{sentinel.body}: {reason}"
    # The message reaches terminals and logs: a server's ESC ] 0; ... BEL would retitle
    # the window, ESC [ 2J clear the screen.
    return sentinel.error(escape_unprintable(reason)[:MAX_REASON])
