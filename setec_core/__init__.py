"""setec_core: the setec library (docs/library.md, docs/architecture.md).

Open a database, act on secrets as a caller, plug in key providers, storage backends,
authorizers and backup sinks. Importing this package loads no HTTP framework, no cloud
SDK and no plugin; plugins are loaded when a :class:`Plugins` facade is built.
"""

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
    PluginError,
    SetecError,
    StorageError,
    StorageUnavailable,
    UnavailableError,
    ValueNotChanged,
    VersionClaimed,
)
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.model import MAX_VERSION, SecretInfo, SecretValue
from setec_core.peer import Peer
from setec_core.plugins import Plugins, Registry, get_plugin_manager
from setec_core.storage import MetaWrite, Record, RecordWrite, Snapshot, StorageBackend

__all__ = [
    # the database and its values
    "Database",
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
    "PluginError",
    "SetecError",
    "StorageError",
    "StorageUnavailable",
    "UnavailableError",
    "ValueNotChanged",
    "VersionClaimed",
]
