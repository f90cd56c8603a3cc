"""Helpers for testing programs and plugins that use setec (the Python ``setectest``).

* :func:`new_database`: an in-memory database (``memory://`` storage, a ``dev://`` key,
  audit lines kept in memory), ready in milliseconds. Both are built into setec_core
  (:mod:`setec_core.builtin`), so it needs no plugin installed.
* :data:`SUPERUSER` and :func:`make_caller`: callers with all or chosen rights.
* :func:`audit_entries`: the decoded audit lines of a database from :func:`new_database`.
* Fakes that subclass the real interfaces: :class:`FaultyStorage` and
  :class:`FailingAuditSink` inject faults; :class:`FixedAuthorizer` (one caller for
  every request) and :class:`HeaderAuthorizer` (callers chosen by a test header) stand
  in for an identity service in HTTP tests; :class:`MemoryBackupSink` keeps backups in
  memory and can fail puts on purpose.
* :mod:`setec_core.testing.server`: :func:`~setec_core.testing.server.new_server`, a
  real setec server on a loopback port over an in-memory database (imports cheroot and
  werkzeug, so import it by name).
* :mod:`setec_core.testing.clock`: :class:`~setec_core.testing.clock.FakeTicker` and
  :class:`~setec_core.testing.clock.FakeClock`, for deterministic Store polling.
* A pytest plugin with the fixtures ``setec_db``, ``setec_server``, ``setec_client``,
  ``setec_ticker`` and ``setec_clock`` (docs/testing.md).
* Contract test classes for plugin authors: :class:`StorageBackendContract`,
  :class:`PersistentStorageContract`, :class:`SharedStorageContract`,
  :class:`KeyProviderContract`, :class:`BackupSinkContract` and
  :class:`AuthorizerContract` (they need pytest, and are imported on first use).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from setec_core.acl import ALL_ACTIONS, Rule
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.authz import Caller, Principal, make_caller
from setec_core.database import Database
from setec_core.testing.fakes import (
    FailingAuditSink,
    FaultyStorage,
    FixedAuthorizer,
    HeaderAuthorizer,
    MemoryBackupSink,
)

if TYPE_CHECKING:
    from setec_core.plugins import Plugins

# The contract classes are left out of __all__ so that a star import does not
# need pytest; import them by name.
__all__ = [
    "SUPERUSER",
    "FailingAuditSink",
    "FaultyStorage",
    "FixedAuthorizer",
    "HeaderAuthorizer",
    "MemoryBackupSink",
    "audit_entries",
    "make_caller",
    "new_database",
]

SUPERUSER = Caller(
    Principal(hostname="mcp", ip="1.2.3.4", user="flynn"),
    (Rule(ALL_ACTIONS, ["*"]),),
)
"""A caller allowed every action on every secret (Go setectest's ``Superuser``)."""

TEST_KEY = "dev://setec-testing"
"""The key :func:`new_database` uses: public and insecure, like every ``dev://`` key."""


def new_database(
    *,
    key: str = TEST_KEY,
    storage: str = "memory://",
    audit_sink: MemoryAuditSink | None = None,
    plugins: Plugins | None = None,
) -> Database:
    """Return a new, empty, in-memory database. Use it as a context manager or close it.

    :param key: the key-provider URI (the insecure ``dev://setec-testing`` by default).
    :param storage: the storage URI (``memory://`` by default).
    :param audit_sink: where audit lines go; a fresh :class:`MemoryAuditSink` by
        default. Read them back with :func:`audit_entries`.
    :param plugins: a :class:`~setec_core.plugins.Plugins` facade, to test with your
        own plugins registered; by default the installed plugins (the built-in
        ``memory://`` and ``dev://`` among them).
    """
    sink = audit_sink if audit_sink is not None else MemoryAuditSink()
    return Database.open(key=key, storage=storage, audit=AuditLog(sink), plugins=plugins)


def audit_entries(db: Database) -> list[dict[str, Any]]:
    """Return the decoded audit lines written so far by ``db``, whose audit log must
    write to a :class:`MemoryAuditSink` (as :func:`new_database` sets up).

    :raises TypeError: if the database's audit log is not in memory.
    """
    sink = db.audit_log.sink
    if not isinstance(sink, MemoryAuditSink):
        raise TypeError(f"the audit log writes to {type(sink).__name__}, not memory")
    return sink.entries()


def __getattr__(name: str) -> Any:
    # The contract classes import pytest; load them only when asked for, so that
    # importing setec_core.testing in a program does not need pytest.
    if name in ("StorageBackendContract", "PersistentStorageContract", "SharedStorageContract"):
        from setec_core.testing import storage_contract

        return getattr(storage_contract, name)
    if name == "KeyProviderContract":
        from setec_core.testing.key_contract import KeyProviderContract

        return KeyProviderContract
    if name == "BackupSinkContract":
        from setec_core.testing.backup_contract import BackupSinkContract

        return BackupSinkContract
    if name == "AuthorizerContract":
        from setec_core.testing.authorizer_contract import AuthorizerContract

        return AuthorizerContract
    raise AttributeError(name)
