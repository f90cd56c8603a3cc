"""The backup-sink interface: where encrypted snapshots of the store go.

A sink stores and returns opaque blobs by name. It never sees anything in clear: a
backup is a :class:`~setec_core.storage.Snapshot` serialised with its wrapped data key,
as encrypted as the store itself.

Backup names are relative, slash-separated paths such as
``2026/11/23/db-2026-11-23T10:54:35.123Z.json``: one or more segments of
``[A-Za-z0-9._:-]``, none of them empty, ``.`` or ``..``. :func:`check_name` is the rule;
every sink applies it to every name it is given.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from setec_core.errors import StorageError
from setec_core.options import Option

_SEGMENT = re.compile(r"[A-Za-z0-9._:-]+")
MAX_NAME_LENGTH = 1000
"""The longest backup name accepted (S3 keys are at most 1024 bytes, prefix included)."""


def is_valid_name(name: str) -> bool:
    """Report whether ``name`` is a valid backup name (see the module docstring); sinks
    use it to skip other objects when listing."""
    return (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME_LENGTH
        and all(
            _SEGMENT.fullmatch(segment) is not None and segment not in (".", "..")
            for segment in name.split("/")
        )
    )


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid backup name (see the module docstring).

    :raises StorageError: naming the offending name, if it is not.
    """
    if not is_valid_name(name):
        raise StorageError(
            f"invalid backup name {name!r}: expected a relative path of segments made of "
            "A-Z a-z 0-9 . _ : - (no empty, '.' or '..' segment), such as "
            "2026/11/23/db-2026-11-23T10:54:35.123Z.json"
        )
    return name


class BackupSink(ABC):
    """A place to keep backups, selected by URI scheme (``s3://``, ``dir://``).

    Subclasses set :attr:`name` and :attr:`schemes` and implement every abstract method,
    and override :attr:`uri` and, if they hold connections, :meth:`close`. Override
    :meth:`get_head` and :meth:`list_stamps` too where the storage can do better than
    the defaults (reading whole backups, remembering nothing): retention calls them
    after every backup.

    A sink stores what it is given and vouches for nothing: whoever can write where
    the backups are can add, rename or replace them. The core authenticates what it
    reads (:mod:`setec_core.backup.snapshot`).

    Every method that takes a backup name refuses an invalid one (see
    :func:`check_name`) with :class:`StorageError`, before touching the storage.
    """

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    #: The ``setec-serve`` options this sink takes (docs/plugins.md, "Plugin options").
    #: A sink that declares any is built as ``from_uri(uri, read_only=...,
    #: options=VALUES)``, ``VALUES`` holding each option's value by its ``dest``.
    options: ClassVar[Sequence[Option]] = ()

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str, *, read_only: bool = False) -> BackupSink:
        """Build the sink for ``uri``. A sink that declares :attr:`options` takes them
        as a keyword argument too.

        :param read_only: the caller only lists and reads backups (``backup list``,
            ``verify``, ``restore``): create nothing, do not require write access, and
            treat a missing location as an error.
        :raises ConfigError: if the URI is malformed or the location is unusable.
        """

    @property
    def uri(self) -> str:
        """The URI that rebuilds this sink through :meth:`from_uri`, without credentials
        (the server prints it). The default is the bare scheme; override it."""
        return f"{self.schemes[0]}://" if self.schemes else f"{self.name}://"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"

    @abstractmethod
    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``. A stored backup is never replaced: if ``name``
        exists, the call fails and the stored blob is left as it was.

        :raises StorageError: if ``name`` exists (the message names it and says
            "already exists"), is invalid, or the backup could not be stored.
        """

    @abstractmethod
    def list(self) -> list[str]:
        """Return the names of the stored backups, sorted lexicographically.

        The names the core makes are zero-padded UTC timestamps, so this order is oldest
        first.

        :raises StorageError: if the sink cannot be listed.
        """

    @abstractmethod
    def get(self, name: str) -> bytes:
        """Return the backup stored under ``name``.

        :raises NotFound: if there is no such backup.
        :raises StorageError: if ``name`` is invalid or the backup cannot be read.
        """

    def get_head(self, name: str, size: int) -> bytes:
        """Return the first ``size`` bytes of the backup ``name`` (all of it if it is
        shorter). Retention and ``latest`` call this to authenticate a backup's header
        without reading it whole; override it to read only those bytes (a ranged
        read). The default reads the whole backup with :meth:`get`.

        :param size: how many bytes, at least 1.
        :raises NotFound: if there is no such backup.
        :raises StorageError: if ``name`` is invalid or the backup cannot be read.
        """
        if size < 1:
            raise ValueError("size must be at least 1")
        return self.get(name)[:size]

    def list_stamps(self) -> dict[str, str]:
        """Return the names :meth:`list` returns, each with its stamp: a string that
        stays the same while the blob stored under the name does, and changes if it is
        replaced (deleted and stored again, or rewritten behind the sink's back).
        Retention remembers what it learnt about a backup while its stamp is
        unchanged, instead of reading it again after every backup. Override it when
        listing gives such a stamp for free (S3: ETag, size and modification time).
        The default gives every name the stamp ``""``, meaning "unknown": nothing is
        remembered.

        :raises StorageError: if the sink cannot be listed.
        """
        return dict.fromkeys(self.list(), "")

    def delete(self, name: str) -> None:
        """Remove the backup ``name`` (used for retention). Deleting a name that does not
        exist is harmless.

        :raises StorageError: if ``name`` is invalid or the backup cannot be removed.
            The default refuses every deletion.
        """
        raise StorageError(f"backup sink {self.name!r} cannot delete backups")

    def close(self) -> None:  # noqa: B027 - optional hook, most sinks hold nothing
        """Release clients and connections. The default does nothing."""
