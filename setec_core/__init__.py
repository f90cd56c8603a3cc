"""setec_core: the setec library (docs/library.md, docs/architecture.md).

Open a database, act on secrets as a caller, plug in key providers, storage backends,
authorizers and backup sinks. Importing this package loads no HTTP framework, no cloud
SDK and no plugin; plugins are loaded when a :class:`Plugins` facade is built.

The names below are imported on first use (PEP 562), so that a program which needs only
a small part (the ``setec`` command's client, :mod:`setec_core.client`, the wire
format) does not pay for the database, the audit log and the cryptography.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Each public name and the module of setec_core that defines it.
_EXPORTS = {
    "ALL_ACTIONS": "acl",
    "Action": "acl",
    "Rule": "acl",
    "match": "acl",
    "AuditEntry": "audit",
    "AuditLog": "audit",
    "AuditSink": "audit",
    "FileAuditSink": "audit",
    "MemoryAuditSink": "audit",
    "Outcome": "audit",
    "Authorizer": "authz",
    "Caller": "authz",
    "Principal": "authz",
    "make_caller": "authz",
    "BackupSink": "backup",
    "Database": "database",
    "AccessDenied": "errors",
    "AuditError": "errors",
    "ConfigError": "errors",
    "ConflictError": "errors",
    "CorruptStoreError": "errors",
    "IntegrityCheckError": "errors",
    "InvalidRequestError": "errors",
    "InvalidVersionError": "errors",
    "KeyMismatchError": "errors",
    "KeyProviderError": "errors",
    "NotFound": "errors",
    "PendingDeletionError": "errors",
    "PluginError": "errors",
    "ServerBusyError": "errors",
    "SetecError": "errors",
    "StorageError": "errors",
    "StorageUnavailable": "errors",
    "UnavailableError": "errors",
    "UnsupportedError": "errors",
    "ValueNotChanged": "errors",
    "VersionClaimed": "errors",
    "VersionConflict": "errors",
    "hookimpl": "hookspecs",
    "KeyProvider": "keys",
    "MAX_VERSION": "model",
    "DeletedSecret": "model",
    "SecretInfo": "model",
    "SecretValue": "model",
    "Peer": "peer",
    "Plugins": "plugins",
    "Registry": "plugins",
    "get_plugin_manager": "plugins",
    "MetaWrite": "storage",
    "Record": "storage",
    "RecordWrite": "storage",
    "Snapshot": "storage",
    "StorageBackend": "storage",
}

__all__ = [
    # the database and its values
    "Database",
    "DeletedSecret",
    "MAX_VERSION",
    "SecretInfo",
    "SecretValue",
    # callers and rules
    "ALL_ACTIONS",
    "Action",
    "Caller",
    "Peer",
    "Principal",
    "Rule",
    "make_caller",
    "match",
    # audit
    "AuditEntry",
    "AuditLog",
    "AuditSink",
    "FileAuditSink",
    "MemoryAuditSink",
    "Outcome",
    # interfaces
    "Authorizer",
    "BackupSink",
    "KeyProvider",
    "MetaWrite",
    "Record",
    "RecordWrite",
    "Snapshot",
    "StorageBackend",
    # plugins
    "Plugins",
    "Registry",
    "get_plugin_manager",
    "hookimpl",
    # errors
    "AccessDenied",
    "AuditError",
    "ConfigError",
    "ConflictError",
    "CorruptStoreError",
    "IntegrityCheckError",
    "InvalidRequestError",
    "InvalidVersionError",
    "KeyMismatchError",
    "KeyProviderError",
    "NotFound",
    "PendingDeletionError",
    "PluginError",
    "ServerBusyError",
    "SetecError",
    "StorageError",
    "StorageUnavailable",
    "UnavailableError",
    "UnsupportedError",
    "ValueNotChanged",
    "VersionClaimed",
    "VersionConflict",
]


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from setec_core.acl import ALL_ACTIONS, Action, Rule, match
    from setec_core.audit import (
        AuditEntry,
        AuditLog,
        AuditSink,
        FileAuditSink,
        MemoryAuditSink,
        Outcome,
    )
    from setec_core.authz import Authorizer, Caller, Principal, make_caller
    from setec_core.backup import BackupSink
    from setec_core.database import Database
    from setec_core.errors import (
        AccessDenied,
        AuditError,
        ConfigError,
        ConflictError,
        CorruptStoreError,
        IntegrityCheckError,
        InvalidRequestError,
        InvalidVersionError,
        KeyMismatchError,
        KeyProviderError,
        NotFound,
        PendingDeletionError,
        PluginError,
        ServerBusyError,
        SetecError,
        StorageError,
        StorageUnavailable,
        UnavailableError,
        UnsupportedError,
        ValueNotChanged,
        VersionClaimed,
        VersionConflict,
    )
    from setec_core.hookspecs import hookimpl
    from setec_core.keys import KeyProvider
    from setec_core.model import MAX_VERSION, DeletedSecret, SecretInfo, SecretValue
    from setec_core.peer import Peer
    from setec_core.plugins import Plugins, Registry, get_plugin_manager
    from setec_core.storage import MetaWrite, Record, RecordWrite, Snapshot, StorageBackend
else:
    # Hidden from type checkers, which would take any attribute of a module with a
    # __getattr__ (a misspelt import included) as valid; they read the imports above.

    def __getattr__(name: str) -> Any:
        module = _EXPORTS.get(name)
        if module is None:
            raise AttributeError(f"module 'setec_core' has no attribute {name!r}")
        value = getattr(importlib.import_module(f"setec_core.{module}"), name)
        globals()[name] = value  # the next access does not come here
        return value
