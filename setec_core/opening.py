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
import re
import secrets
import socket
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

REPLICA_FILE = "replica"
"""The file holding a state directory's replica name (docs/replicas.md)."""

_REPLICA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


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
    unsaved = ""
    state: Path | None = None
    try:
        if state_dir is not None:
            state = prepare_state_dir(state_dir)
            if storage is None:
                storage = default_storage_uri(state)
            if audit is None:
                audit = AuditLog.open(state / AUDIT_FILE)
                opened.append(audit)
                # The log is this state directory's: its entries name the replica. A
                # new name is saved only once the database has opened, so that a
                # refused start leaves nothing behind but an empty audit.log.
                name = replica_name(state, create=False)
                if not name:
                    unsaved = name = _unsaved_replica_name(audit)
                audit.name_replica(name)
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
        if unsaved:
            assert state is not None
            try:
                save_replica_name(state, unsaved)
            except ConfigError as e:
                # Not fatal: the log's lines carry the name, and the next start reads it
                # from there.
                log.warning("%s", e)
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


def replica_name(state: Path, *, create: bool = True) -> str:
    """Return the replica name of the state directory ``state``: the name its audit
    log's entries carry and under which the store records where that log ends. Several
    server processes over one store each have their own state directory, so their own
    name (docs/replicas.md).

    The name is kept in :data:`REPLICA_FILE`. The first start makes one from the host's
    name and a random suffix (``db1-3f9a``, :func:`new_replica_name`); an operator may
    write another name there before that start.

    :param create: make the file if it is missing (otherwise return ``""``, the name
        of a state directory from before replicas).
    :raises ConfigError: if the file holds no valid name or cannot be read or written.
    """
    name = _read_replica_name(state)
    if name or not create:
        return name
    name = new_replica_name()
    if not save_replica_name(state, name):
        return _read_replica_name(state)  # another process made it a moment ago
    return name


def new_replica_name() -> str:
    """A new replica name: this host's short name and four random hex digits."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:40]
    return f"{host.strip('-') or 'setec'}-{secrets.token_hex(2)}"


def save_replica_name(state: Path, name: str) -> bool:
    """Write ``name`` to the state directory's :data:`REPLICA_FILE` (mode 0600) unless
    the file exists; return whether it was written.

    :raises ConfigError: if it cannot be written.
    """
    path = state / REPLICA_FILE
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise ConfigError(
            f"cannot create {str(path)!r}: {e.strerror}; make the state directory writable"
        ) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(name + "\n")
    return True


def _read_replica_name(state: Path) -> str:
    path = state / REPLICA_FILE
    try:
        name = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read the replica name in {str(path)!r}: {e}") from None
    if not _REPLICA_NAME.fullmatch(name):
        raise ConfigError(
            f"{str(path)!r} holds {name[:80]!r}, which is not a replica name: use 1 to 64 "
            "letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def _unsaved_replica_name(audit: AuditLog) -> str:
    # A state directory without a name file: the name its log's last line carries (a
    # start that wrote lines and stopped before saving the name), else a new one.
    last = audit.last_replica
    return last if _REPLICA_NAME.fullmatch(last) else new_replica_name()


class _Closeable(Protocol):
    def close(self) -> None: ...


def close_quietly(thing: _Closeable) -> None:
    """Close ``thing``, logging rather than raising what that raises (for closing many
    things in turn, where one failure must not leave the others open)."""
    try:
        thing.close()
    except Exception:
        log.exception("error while closing %r", thing)
