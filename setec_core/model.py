"""The values the Database returns, and the state it keeps per secret.

:class:`SecretValue` and :class:`SecretInfo` are public. :class:`SecretState` is the
per-secret record the Database keeps in memory and, encrypted, in storage; it is
immutable, so readers never need a lock to look at one.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from setec_core.errors import CorruptStoreError

MAX_VERSION = 2**32 - 1
#: The longest secret name, in UTF-8 bytes (Go setec has no limit; see docs/server.md).
MAX_NAME_BYTES = 1024


@dataclass(frozen=True, slots=True, repr=False)
class SecretValue:
    """One version of a secret. Its ``repr`` shows the size, never the value."""

    value: bytes
    version: int

    def __repr__(self) -> str:
        return f"SecretValue(value=<{len(self.value)} bytes redacted>, version={self.version})"


@dataclass(frozen=True, slots=True)
class SecretInfo:
    """A secret's name, its versions in ascending order, and which one is active."""

    name: str
    versions: tuple[int, ...]
    active_version: int


@dataclass(frozen=True, slots=True, repr=False)
class SecretState:
    """Everything the Database knows about one secret (docs/api.md §4).

    :param versions: version -> value; never mutated once built.
    :param latest: the highest version ever assigned, even if deleted since.
    :param deleted: versions deleted one by one; claimed until the secret is deleted.
    :param revision: the storage revision of this secret's record (0: not stored).
    """

    name: str
    versions: Mapping[int, bytes]
    active: int
    latest: int
    deleted: frozenset[int]
    revision: int = 0

    def __repr__(self) -> str:
        return (
            f"SecretState(name={self.name!r}, versions={sorted(self.versions)}, "
            f"active={self.active}, latest={self.latest}, revision={self.revision})"
        )

    def info(self) -> SecretInfo:
        """Return the public metadata of this secret."""
        return SecretInfo(self.name, tuple(sorted(self.versions)), self.active)

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
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @classmethod
    def decode(cls, data: bytes, revision: int) -> SecretState:
        """Parse a record plaintext made by :meth:`encode`.

        :raises CorruptStoreError: if it is not a well-formed record.
        """
        try:
            doc = json.loads(data)
            versions = {
                int(v): base64.b64decode(b, validate=True) for v, b in doc["versions"].items()
            }
            state = cls(
                name=doc["name"],
                versions=versions,
                active=int(doc["active"]),
                latest=int(doc["latest"]),
                deleted=frozenset(int(v) for v in doc.get("deleted", ())),
                revision=revision,
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
