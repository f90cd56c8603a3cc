"""Recoverable delete (docs/api.md, "Recoverable delete"): the pieces the Database,
the wire and the purge job share.

With a recovery window (``setec-serve --recovery-window``), a delete puts a secret aside
instead of removing it: its record stays, encrypted as ever, with the time it was put
aside and the time it goes (:class:`~setec_core.model.SecretState` ``deleted_at`` and
``purge_at``). Reads treat it as missing, writes to its name are refused, and undelete
brings it back whole; :class:`~setec_core.purge.PurgeLoop` removes it once its time
comes. Times are kept as nanoseconds since the epoch and travel as Go's ``time.Time``
marshals them (RFC 3339 with nanoseconds, UTC; :mod:`setec_core.wire.gotime`).
"""

from __future__ import annotations

import datetime as dt
import enum

from setec_core.model import DeletedSecret, SecretState
from setec_core.wire.gotime import format_time

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class RecoveryAction(enum.StrEnum):
    """The audit actions of recoverable delete, beside the rule actions (all of them are
    granted by ``delete``; a rule cannot name them)."""

    UNDELETE = "undelete"
    """A pending secret brought back."""
    PURGE = "purge"
    """A secret removed for good: a delete with ``Purge``, or the purge job."""
    LIST_DELETED = "list-deleted"
    """The pending secrets listed (one entry, no secret, as list writes)."""


def nanoseconds(seconds: float) -> int:
    """Unix ``seconds`` as whole microseconds, in nanoseconds: what a record keeps.
    Microseconds, so that a :class:`datetime.datetime` holds the time exactly."""
    return round(seconds * 1_000_000) * 1000


def to_datetime(ns: int) -> dt.datetime:
    """Nanoseconds since the epoch as an aware UTC datetime (to the microsecond)."""
    return _EPOCH + dt.timedelta(microseconds=ns // 1000)


def deleted_secret(state: SecretState) -> DeletedSecret:
    """What ``/api/list-deleted`` says of the pending secret ``state``."""
    info = state.info()
    return DeletedSecret(
        info.name,
        info.versions,
        info.active_version,
        to_datetime(state.deleted_at),
        to_datetime(state.purge_at),
    )


def pending_reason(name: str, purge_at: int) -> str:
    """The one-line reason of the ``409`` a write to the pending secret ``name`` gets
    (only a caller who may ``delete`` it is told)."""
    return (
        f"secret {name!r} is pending deletion until {format_time(to_datetime(purge_at))}; "
        "undelete it to use it again ('setec undelete'), or purge it to free the name "
        "now ('setec delete --purge')"
    )
