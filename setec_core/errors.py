"""The errors setec raises.

Every error a caller can act on is a :class:`SetecError` subclass. The four wire
sentinels keep the names and messages of Go setec's client; the rest end
in ``Error``. Status codes are not decided here: one table at the HTTP edge maps these
classes to the wire.

Messages never contain a secret value. They may name a secret, a version, a path or a
plugin, and when an operator can fix the problem they say how.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from setec_core.quoting import go_quote

if TYPE_CHECKING:
    from setec_core.model import SecretInfo


class SetecError(Exception):
    """Base class of every error setec raises on purpose."""


# --- The wire sentinels (docs/api.md §2) ----------------------------------------


class NotFound(SetecError):  # noqa: N818 - the wire sentinel names are Go setec's
    """The secret, or the requested version of it, does not exist."""

    def __init__(self, message: str = "not found") -> None:
        super().__init__(message)


class AccessDenied(SetecError):  # noqa: N818 - wire sentinel
    """The caller's rules do not allow this action on this secret name."""

    def __init__(self, message: str = "access denied") -> None:
        super().__init__(message)


class ValueNotChanged(SetecError):  # noqa: N818 - wire sentinel
    """A conditional get found that the active version is the one the caller has."""

    def __init__(self, message: str = "value not changed") -> None:
        super().__init__(message)


class VersionClaimed(SetecError):  # noqa: N818 - wire sentinel
    """create-version named a version that exists or was deleted (claimed forever)."""

    def __init__(self, message: str = "version is already claimed") -> None:
        super().__init__(message)


class VersionConflict(SetecError):  # noqa: N818 - named as the sentinels it stands beside
    """A guarded write (``if_active_version=``, ``if_versions=``) found the secret not
    as its caller expected, and changed nothing (409 on the wire, docs/api.md §9.4).

    :attr:`current` is the secret's :class:`~setec_core.SecretInfo` as ``info`` shows
    it, or ``None`` when the secret does not exist or the caller may not ``info`` it
    (the message then says which only to a caller who may). The message names the
    secret and, for a caller who may ``info`` it, what differed.
    """

    def __init__(self, message: str, current: SecretInfo | None = None) -> None:
        super().__init__(message)
        self.current = current


class PendingDeletionError(SetecError):
    """A write named a secret that a delete put aside (recoverable delete, docs/api.md
    "Recoverable delete"): its name stays reserved until it is undeleted or purged (409
    on the wire). Raised only for a caller who may ``delete`` the secret; the message
    says until when, and how to undelete or purge it."""


# --- Client mistakes (400 on the wire) ------------------------------------------------


class InvalidRequestError(SetecError):
    """The request cannot be carried out as asked: an empty name, a version out of range,
    a reserved name, deleting the active version, a value that is not bytes."""


class InvalidVersionError(InvalidRequestError):
    """A version of 0 was given where a specific version is required."""


# --- Operator and environment errors --------------------------------------------------


class ConfigError(SetecError):
    """The configuration cannot work: a bad URI, an unusable state directory."""


class UnavailableError(SetecError):
    """A service setec depends on for this request (tailscaled, a KMS) could not be
    reached or answered nonsense; the request may succeed later (503 on the wire)."""


class PluginError(ConfigError):
    """A plugin name is unknown, registered twice, or a plugin is broken."""


class KeyProviderError(SetecError):
    """The key provider failed to wrap or unwrap the data key."""


class KeyMismatchError(KeyProviderError):
    """The data key could not be unwrapped: the store was created under another key,
    or the wrapped key was tampered with."""


class StorageError(SetecError):
    """The storage backend failed to read or write."""


class StorageUnavailable(StorageError):  # noqa: N818 - names a state of the store, as UnavailableError does a service's
    """The store cannot be reached right now (its server is down or unreachable); the
    same call may succeed later (503 on the wire). Nothing was changed, or, for a commit
    cut off while it was being written, the message says its outcome is unknown."""


class CorruptStoreError(StorageError):
    """The store exists but cannot be read as a setec store: a corrupt or truncated
    file, a record that fails authentication, or an unknown schema version."""


class IntegrityCheckError(CorruptStoreError):
    """The store or its audit log is not what setec last recorded under the data key: a
    record was rolled back, put back, added or removed, the integrity entry was altered
    or replayed, or audit lines were cut, edited or replaced. Something other than setec
    wrote to the state directory; ``setec-serve check`` and ``setec-serve audit verify``
    show the details."""


class ConflictError(StorageError):
    """A compare-and-swap write lost: another writer changed the record first."""


class AuditError(SetecError):
    """The audit log could not be written durably, so the operation was refused."""


# --- The client side ------------------------------------------------------------------


class RequestError(SetecError):
    """The server answered with a status the API does not map to a sentinel (Go's
    ``request returned status <code>: "<body>"``, the body quoted as Go's ``%q`` does,
    so a control character in it is an escape, never sent to a terminal as it is).
    :attr:`status` holds the code and :attr:`reason` the body as the server sent it."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"request returned status {status}: {go_quote(reason)}")
        self.status = status
        self.reason = reason


class ServerBusyError(RequestError):
    """The server answered 503 with ``Retry-After``: it holds as many of something as
    it allows (watches, docs/api.md §9.2) and asks the client to come back later.
    :attr:`retry_after` is the seconds it asked for, or ``None`` if the header was not
    a number of seconds."""

    def __init__(self, status: int, reason: str, retry_after: float | None) -> None:
        super().__init__(status, reason)
        self.retry_after = retry_after


class UnsupportedError(SetecError):
    """The server does not offer what was asked of it beyond Go setec's API (a Go setec
    server, or an older setec for Python): the client refused to send the request
    rather than have it ignored or half-applied."""


class ResponseError(SetecError):
    """The server's answer could not be decoded (Go's ``unmarshaling response``)."""


class PollError(SetecError):
    """A Store's poll could not refresh some secrets; their last good values are kept.

    :attr:`errors` maps each secret name to its error; :attr:`updated` is how many
    secrets the same poll did refresh (a partial failure still applies those).
    """

    def __init__(self, message: str, errors: dict[str, SetecError], updated: int) -> None:
        super().__init__(message)
        self.errors = errors
        self.updated = updated
