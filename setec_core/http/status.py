"""The one table that maps setec errors to HTTP status codes and reasons.

Go setec's clients only look at the status code (docs/api.md §2): 403, 404, 304
and 412 carry the wire sentinels, so their bodies keep Go's texts; those four rows come
from :data:`setec_core.wire.SENTINELS`, the table a client reads them back by. Our deliberate
difference is that client mistakes Go answers with 500 get 400 with a one-line reason
(docs/api.md §8.2), and an identity service or a store that is down gets 503 instead of
500.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass

from setec_core.errors import (
    AuditError,
    ConflictError,
    InvalidRequestError,
    PendingDeletionError,
    SetecError,
    StorageError,
    StorageUnavailable,
    UnavailableError,
    VersionConflict,
)
from setec_core.wire import SENTINELS

#: The reason of a 503 for a store that cannot be reached: the server log has the
#: backend's message (its host, never its password), the client only needs to retry.
STORE_UNREACHABLE = "the store cannot be reached; try again later"


@dataclass(frozen=True, slots=True)
class Status:
    """What to send for an error.

    :param code: the HTTP status.
    :param reason: the body text, or ``None`` to send the error's own message (which
        setec keeps to one line and free of secret values).
    :param log: whether the server log should record the error (server faults).
    """

    code: int
    reason: str | None
    log: bool = False


#: First match wins, so subclasses come before their bases.
STATUS_TABLE: tuple[tuple[type[BaseException], Status], ...] = (
    *((s.error, Status(s.status, s.body)) for s in SENTINELS),
    (InvalidRequestError, Status(400, None)),
    # A guarded write whose guard failed (docs/api.md §9.4); the app sends its body
    # as JSON, with the secret's current state for a caller who may see it.
    (VersionConflict, Status(409, None)),
    # A write to a secret pending deletion, for a caller who may delete it (docs/api.md,
    # "Recoverable delete"): a one-line text saying until when, and how to undo it.
    (PendingDeletionError, Status(409, None)),
    (UnavailableError, Status(503, None, log=True)),
    (AuditError, Status(500, "internal error", log=True)),
    (StorageUnavailable, Status(503, STORE_UNREACHABLE, log=True)),
    # A write that kept losing races with other server processes' writes of the same
    # secret (docs/replicas.md): nothing was written, and a retry will go through.
    (ConflictError, Status(503, None, log=True)),
    (StorageError, Status(500, "internal error", log=True)),
    (SetecError, Status(500, "internal error", log=True)),
)

INTERNAL = Status(500, "internal error", log=True)


def status_for(error: BaseException) -> tuple[int, str, bool]:
    """Return ``(status code, one-line body text, log it?)`` for ``error``."""
    for cls, status in STATUS_TABLE:
        if isinstance(error, cls):
            reason = status.reason if status.reason is not None else one_line(str(error))
            return status.code, reason, status.log
    return INTERNAL.code, INTERNAL.reason or "", True


def one_line(text: str) -> str:
    """Collapse ``text`` to one line (a reason must never split a response body)."""
    return " ".join(text.split()) or "error"


def too_large(limit: int, *, carries_value: bool = False) -> str:
    """The reason of a 413: the body's limit, the same from the front and the app.

    :param carries_value: the body is a put or create-version request; the reason then
        also says about how large a value fits (docs/api.md §4.4), which is what the
        user chooses: ``... the limit is 1048576 bytes (about 768 KiB of secret value)``.
    """
    reason = f"request body too large: the limit is {limit} bytes"
    if carries_value:
        reason += f" (about {_size(value_capacity(limit))} of secret value)"
    return reason


def value_capacity(limit: int) -> int:
    """About how large a secret value fits in a request body of ``limit`` bytes: the
    value travels base64-encoded in the JSON, four bytes for every three, beside the
    name and a few dozen bytes of JSON, which a limit in the kilobytes leaves out."""
    return limit * 3 // 4


def _size(n: int) -> str:
    if n >= 10 << 20:
        return f"{n >> 20} MiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n >> 10} KiB"
    return f"{n} bytes"


def log_bug(logger: logging.Logger, what: str, error: BaseException) -> None:
    """Log an unexpected exception: its type and where it was raised, not its message.

    A bug's message may quote whatever it was handling, a secret value included, and so
    may the exceptions chained to it; the frames are enough to find the bug.
    """
    frames = "".join(traceback.format_tb(error.__traceback__)).rstrip()
    logger.error("%s: %s (message withheld)\n%s", what, type(error).__name__, frames)
