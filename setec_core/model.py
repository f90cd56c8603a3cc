"""The values the Database returns, and the state it keeps per secret.

:class:`SecretValue` and :class:`SecretInfo` are public. :class:`SecretState` is the
per-secret record the Database keeps in memory and, encrypted, in storage; it is
immutable, so readers never need a lock to look at one.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from setec_core.errors import CorruptStoreError

MAX_VERSION = 2**32 - 1
#: The longest secret name, in UTF-8 bytes (Go setec has no limit; see docs/server.md).
MAX_NAME_BYTES = 1024
#: The most secrets one batch get asks for (``/api/get-many``, docs/api.md §9); a
#: client asking for more splits them into several requests.
MAX_GET_MANY = 100

_RAW_DECODE = json.JSONDecoder().raw_decode
_A2B = binascii.a2b_base64
_NONE_DELETED: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True, repr=False)
class SecretValue:
    """One version of a secret. Its ``repr`` shows the size, never the value."""

    value: bytes
    version: int

    def __repr__(self) -> str:
        return f"SecretValue(value=<{len(self.value)} bytes redacted>, version={self.version})"


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A secret's name, its versions in ascending order, and which one is active.

    :param description: what the secret is for, one line set by ``set-info``; ``""``
        when none (and always from a Go setec server; docs/api.md §9.5).
    :param last_access: when the secret was last read or written (an aware UTC
        datetime), by anything but ``info``; ``None`` when never, or not known (a Go
        setec server does not say). Not compared: two infos of a secret in the same
        state are equal whenever it was last read.
    """

    name: str
    versions: tuple[int, ...]
    active_version: int
    description: str = ""
    last_access: datetime.datetime | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True, repr=False)
class SecretState:
    """Everything the Database knows about one secret (docs/api.md §4).

    :param versions: version -> value; never mutated once built.
    :param latest: the highest version ever assigned, even if deleted since.
    :param deleted: versions deleted one by one; claimed until the secret is deleted.
    :param revision: the storage revision of this secret's record (0: not stored).
    :param deleted_at: when a delete put it aside, in nanoseconds since the epoch (0:
        not pending deletion; docs/api.md, "Recoverable delete").
    :param purge_at: when it goes for good, in nanoseconds since the epoch; 0 unless
        pending deletion. A pending secret is invisible to reads, and its name reserved.
    """

    name: str
    versions: Mapping[int, bytes]
    active: int
    latest: int
    deleted: frozenset[int]
    revision: int = 0
    deleted_at: int = 0
    purge_at: int = 0
    #: What the secret is for (``set-info``, docs/api.md §9.5); kept in the record, so
    #: encrypted with it. Not a secret value, but not shown in a repr either.
    description: str = ""

    def __repr__(self) -> str:
        return (
            f"SecretState(name={self.name!r}, versions={sorted(self.versions)}, "
            f"active={self.active}, latest={self.latest}, revision={self.revision})"
        )

    def info(self, last_access: datetime.datetime | None = None) -> SecretInfo:
        """Return the public metadata of this secret, with ``last_access`` (which the
        Database keeps apart from the record)."""
        return SecretInfo(
            self.name, tuple(sorted(self.versions)), self.active, self.description, last_access
        )

    def encode(self) -> bytes:
        """Serialise to the record plaintext (compact JSON, values in base64)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "versions": {
                str(v): base64.b64encode(b).decode("ascii") for v, b in self.versions.items()
            },
            "active": self.active,
            "latest": self.latest,
        }
        if self.deleted:
            doc["deleted"] = sorted(self.deleted)
        if self.purge_at:
            doc["deletedAt"] = self.deleted_at
            doc["purgeAt"] = self.purge_at
        if self.description:
            doc["description"] = self.description
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes, revision: int) -> SecretState:
        """Parse a record plaintext made by :meth:`encode`.

        :raises CorruptStoreError: if it is not a well-formed record.
        """
        # Every record passes through here when a store opens, so each step is the
        # cheapest that checks as much: json.loads would first guess the encoding of
        # the bytes (UTF-8 is the only one encode makes), and binascii's strict mode
        # refuses what base64.b64decode(validate=True) refuses without its regex.
        try:
            text = data.decode("utf-8")
            doc, end = _RAW_DECODE(text)
            if end != len(text):
                raise ValueError("data after the record")
            versions = {int(v): _A2B(b, strict_mode=True) for v, b in doc["versions"].items()}
            deleted = doc.get("deleted")
            state = cls(
                name=doc["name"],
                versions=versions,
                active=int(doc["active"]),
                latest=int(doc["latest"]),
                deleted=_NONE_DELETED if deleted is None else frozenset(int(v) for v in deleted),
                revision=revision,
                deleted_at=int(doc.get("deletedAt", 0)),
                purge_at=int(doc.get("purgeAt", 0)),
                # Records written before descriptions existed have none.
                description=_text(doc.get("description", "")),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            # The message carries the exception type only: its text could quote
            # the decrypted record, which holds secret values.
            raise CorruptStoreError(
                f"a record decrypted but is not a valid secret ({type(e).__name__}); "
                "restore the store from a backup"
            ) from None
        if not isinstance(state.name, str) or state.active not in state.versions:
            raise CorruptStoreError(
                "a record decrypted but its active version is missing; "
                "restore the store from a backup"
            )
        return state


def _text(value: object) -> str:
    if type(value) is not str:
        raise TypeError("not a string")
    return value


#: How every record plaintext :meth:`SecretState.encode` makes begins.
_NAME_PREFIX = b'{"name":"'


class LazyState:
    """A secret's record plaintext, decoded into its :class:`SecretState` on first use.

    Opening a store decodes no record: it reads each one's name (the start of the
    plaintext, see :func:`record_name`) to index it, and leaves the rest to the first
    request that needs that secret. The record was already authenticated by its
    decryption; a record that then fails to decode is reported when it is first used.
    Concurrent first uses may both decode it, to equal states; either is kept.
    """

    __slots__ = ("_data", "_revision", "_state")

    def __init__(self, data: bytes, revision: int) -> None:
        self._data: bytes | None = data
        self._revision = revision
        self._state: SecretState | None = None

    def __repr__(self) -> str:
        return f"LazyState(revision={self._revision}, decoded={self._state is not None})"

    def resolve(self) -> SecretState:
        """The decoded state (decoded now if it was not yet).

        :raises CorruptStoreError: if the record is not a well-formed secret.
        """
        state = self._state
        if state is None:
            data = self._data
            if data is None:
                # Another thread decoded it since: it kept the state before it dropped
                # the plaintext, so the state is there now.
                state = self._state
                assert state is not None
                return state
            state = SecretState.decode(data, self._revision)
            self._state = state  # first the state, then drop the plaintext (see above)
            self._data = None  # the plaintext holds the values: keep one copy only
        return state


def record_name(data: bytes) -> str | None:
    """The secret name at the start of a record plaintext, read without decoding the
    rest; ``None`` when that takes a full decode (a name with JSON escapes, or not the
    shape :meth:`SecretState.encode` makes)."""
    if not data.startswith(_NAME_PREFIX):
        return None
    end = data.find(b'"', len(_NAME_PREFIX))
    if end < 0:
        return None
    raw = data[len(_NAME_PREFIX) : end]
    # JSON escapes every quote and control character in a string with a backslash, so
    # without one the first quote ends the name and the bytes are the name's UTF-8.
    if b"\\" in raw:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


#: The key :meth:`SecretState.encode` writes only for a secret pending deletion. JSON
#: escapes every quote inside a string, so these bytes appear in a record plaintext
#: only as that key.
_PURGE_KEY = b'"purgeAt":'


def record_may_be_pending(data: bytes) -> bool:
    """Whether the record plaintext ``data`` may be of a secret pending deletion (then
    the index decodes it at once, to know when it goes); ``False`` for certain."""
    return _PURGE_KEY in data


@dataclass(frozen=True, slots=True)
class DeletedSecret:
    """A secret pending deletion (docs/api.md, "Recoverable delete"): what it held,
    when a delete put it aside, and when it goes for good unless undeleted. Times are
    aware UTC datetimes."""

    name: str
    versions: tuple[int, ...]
    active_version: int
    deleted_at: datetime.datetime
    purge_at: datetime.datetime
