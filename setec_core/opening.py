"""Opening a database: the state directory, and turning URIs into the parts of one.

A state directory holds a database's default store, :data:`STORE_FILE` (SQLite), and
its audit log, :data:`AUDIT_FILE`. :func:`prepare_state_dir` creates it with mode 0700.
:func:`open_parts` turns the arguments of :meth:`Database.open
<setec_core.Database.open>` into a storage backend, a key provider and an audit log, and
closes what it opened if the database then fails to open.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from setec_core.audit import AuditLog
from setec_core.errors import ConfigError
from setec_core.keys import KeyProvider
from setec_core.storage import StorageBackend

if TYPE_CHECKING:
    from setec_core.plugins import Plugins

# The Database's logger: this is part of opening one.
log = logging.getLogger("setec.database")

STORE_FILE = "secrets.db"
"""The default store's file in a state directory."""

AUDIT_FILE = "audit.log"
"""The audit log's file in a state directory."""


@dataclass(frozen=True)
class DatabaseParts:
    """What a :class:`~setec_core.Database` is made of, ready to open."""

    storage: StorageBackend
    key: KeyProvider
    audit: AuditLog


def default_storage_uri(state: Path) -> str:
    """Return the URI of the default store of the state directory ``state``: its
    :data:`STORE_FILE`, by absolute path, in the built-in ``sqlite://`` backend."""
    return f"sqlite://{(state / STORE_FILE).resolve()}"


@contextmanager
def open_parts(
    state_dir: str | os.PathLike[str] | None,
    *,
    key: str | KeyProvider,
    storage: str | StorageBackend | None,
    audit: AuditLog | None,
    plugins: Plugins | None,
) -> Iterator[DatabaseParts]:
    """Resolve the arguments of :meth:`Database.open <setec_core.Database.open>` (which
    documents them) into the parts of a database, and yield them. If the body of the
    ``with`` raises, everything this opened is closed; what the caller passed in as an
    object is left alone.

    :raises ConfigError: if the state directory is unusable, a URI names no installed
        plugin, or neither ``state_dir`` nor both ``storage`` and ``audit`` are given.
    """
    if state_dir is None and (storage is None or audit is None):
        raise ConfigError("no state directory: give state_dir, or both storage and audit")
    if plugins is None and (isinstance(key, str) or not isinstance(storage, StorageBackend)):
        from setec_core.plugins import Plugins

        plugins = Plugins.load()
    opened: list[_Closeable] = []
    try:
        if state_dir is not None:
            state = prepare_state_dir(state_dir)
            if storage is None:
                storage = default_storage_uri(state)
            if audit is None:
                audit = AuditLog.open(state / AUDIT_FILE)
                opened.append(audit)
        # Settled above: without a state directory, storage and audit were given; and
        # plugins were loaded if a URI is left to resolve.
        assert audit is not None
        assert storage is not None
        if isinstance(key, str):
            assert plugins is not None
            key = plugins.key_provider(key)
            opened.append(key)
        if isinstance(storage, str):
            assert plugins is not None
            storage = plugins.storage(storage)
            opened.append(storage)
        yield DatabaseParts(storage, key, audit)
    except BaseException:
        for thing in reversed(opened):
            close_quietly(thing)
        raise


def prepare_state_dir(path: str | os.PathLike[str]) -> Path:
    """Create the state directory (mode 0700) or tighten an existing one to 0700.

    :raises ConfigError: if it cannot be created or is not a directory.
    """
    state = Path(path)
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = state.stat()
        if not stat.S_ISDIR(st.st_mode):
            raise ConfigError(f"state directory {str(state)!r} is not a directory")
        if st.st_mode & 0o077:
            log.warning("state directory %s was readable by others; setting mode 0700", state)
            state.chmod(0o700)
    except FileExistsError:
        raise ConfigError(
            f"state directory {str(state)!r} exists and is not a directory; choose another path"
        ) from None
    except OSError as e:
        raise ConfigError(
            f"cannot create state directory {str(state)!r}: {e.strerror}; "
            "choose a writable location"
        ) from None
    return state


class _Closeable(Protocol):
    def close(self) -> None: ...


def close_quietly(thing: _Closeable) -> None:
    """Close ``thing``, logging rather than raising what that raises (for closing many
    things in turn, where one failure must not leave the others open)."""
    try:
        thing.close()
    except Exception:
        log.exception("error while closing %r", thing)
