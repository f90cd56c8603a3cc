"""The backup-sink interface: where encrypted snapshots of the store go.

A sink stores and returns opaque blobs by name. It never sees anything in clear: a
backup is a :class:`~setec_core.storage.Snapshot` serialised with its wrapped data key,
as encrypted as the store itself.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from setec_core.errors import StorageError


class BackupSink(ABC):
    """A place to keep backups, selected by URI scheme (``s3://``, ``dir://``).

    Subclasses set :attr:`name` and :attr:`schemes` and implement every abstract method.
    """

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str) -> BackupSink:
        """Build the sink for ``uri``.

        :raises ConfigError: if the URI is malformed or the location is unusable.
        """

    @abstractmethod
    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing nothing: names are unique.

        :raises StorageError: if the backup could not be stored.
        """

    @abstractmethod
    def list(self) -> list[str]:
        """Return the names of the stored backups, oldest first.

        :raises StorageError: if the sink cannot be listed.
        """

    @abstractmethod
    def get(self, name: str) -> bytes:
        """Return the backup stored under ``name``.

        :raises NotFound: if there is no such backup.
        :raises StorageError: if it cannot be read.
        """

    def delete(self, name: str) -> None:
        """Remove the backup ``name`` (used for retention).

        :raises StorageError: if it cannot be removed. The default refuses.
        """
        raise StorageError(f"backup sink {self.name!r} cannot delete backups")
