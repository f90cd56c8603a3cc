"""A store's data key: made when the store is created, unwrapped whenever it is opened.

Every record of a store is sealed with one data key (:class:`~setec_core.crypto.DataKey`),
kept in the store's metadata wrapped by the key provider's key-encryption key
(``dek``), next to the URI of that key (``kek``, to name it when another key is tried),
a check value that tells the key apart from a rotated one (``dek-check``) and the
layout version (``schema``, :data:`SCHEMA_VERSION`).

:func:`open_data_key` is how a :class:`~setec_core.Database` gets it, creating it for a
new store; :func:`unwrap_data_key` is the unwrapping alone, shared with the offline
maintenance commands (:mod:`setec_core.maintenance`, :mod:`setec_core.store_check`).
"""

from __future__ import annotations

import contextlib
import hmac
import logging

from setec_core.audit import AuditLog
from setec_core.crypto import DEK_CONTEXT, DataKey
from setec_core.errors import ConflictError, CorruptStoreError, KeyMismatchError
from setec_core.integrity_keeper import check_new_store, new_store_meta
from setec_core.keys import KeyProvider
from setec_core.storage import MetaWrite, StorageBackend

# The Database's logger: this is part of opening one.
log = logging.getLogger("setec.database")

SCHEMA_VERSION = b"1"
"""The store layout this code reads and writes (metadata entry ``schema``)."""


def open_data_key(storage: StorageBackend, key: KeyProvider, audit: AuditLog) -> DataKey:
    """Return the data key of ``storage``, unwrapped with ``key``. A new, empty store
    gets one: generated, wrapped with ``key`` and committed with the store's first
    metadata (a store another process initialises meanwhile is unwrapped instead).

    :param audit: the audit log the store is opened with; a new store refuses a log
        that already holds keyed lines (it belongs to another store).
    :raises KeyMismatchError: if ``key`` cannot unwrap the data key; the message names
        the key the store was made with.
    :raises CorruptStoreError: if the store's schema version is not this code's, it has
        records but no data key, or the unwrapped key does not match its check value.
    :raises IntegrityCheckError: if ``audit`` does not belong with a new store.
    :raises StorageError: if the store cannot be read or written.
    """
    wrapped = storage.get_meta("dek")
    if wrapped is None:
        return _initialise(storage, key, audit)
    dek = unwrap_data_key(storage, key, wrapped)
    check = storage.get_meta("dek-check")
    if check is None:
        # A store made before the check value existed: add it, so that a later
        # rotate-kek cannot be mistaken for a rotate-dek (see Database.backup). A
        # conflict means another process added it a moment ago.
        with contextlib.suppress(ConflictError):
            storage.commit(meta=[MetaWrite("dek-check", dek.check_value, None)])
    elif not hmac.compare_digest(check, dek.check_value):
        raise CorruptStoreError(
            f"store {storage.uri}: the unwrapped data key does not match the "
            "store's check value; its metadata is damaged: restore it from a backup"
        )
    return dek


def _initialise(storage: StorageBackend, key: KeyProvider, audit: AuditLog) -> DataKey:
    if storage.revision() != 0:
        raise CorruptStoreError(
            f"store {storage.uri} has records but no data key; its metadata "
            "was lost: restore it from a backup"
        )
    check_new_store(storage.uri, audit)
    dek = DataKey.generate()
    wrapped = key.wrap(dek.material, DEK_CONTEXT)
    try:
        storage.commit(
            meta=[
                MetaWrite("schema", SCHEMA_VERSION, None),
                MetaWrite("dek", wrapped, None),
                MetaWrite("dek-check", dek.check_value, None),
                MetaWrite("kek", key.uri.encode(), None),
                *new_store_meta(dek),
            ]
        )
    except ConflictError:
        # Another process initialised the same store a moment ago: use its key.
        return open_data_key(storage, key, audit)
    log.info("created a new store %s under key %s", storage.uri, key.uri)
    return dek


def unwrap_data_key(storage: StorageBackend, key: KeyProvider, wrapped: bytes) -> DataKey:
    """Unwrap ``wrapped``, the data key of ``storage``, with ``key`` (for the Database
    and the offline maintenance commands alike).

    :raises CorruptStoreError: if the store's schema version is not the one this code
        reads.
    :raises KeyMismatchError: if ``key`` cannot unwrap it; the message names the key the
        store was made with.
    """
    schema = storage.get_meta("schema")
    if schema != SCHEMA_VERSION:
        raise CorruptStoreError(
            f"store {storage.uri} has schema version {schema!r}, this setec "
            f"reads {SCHEMA_VERSION.decode()}; upgrade setec or restore a backup"
        )
    try:
        return DataKey(key.unwrap(wrapped, DEK_CONTEXT))
    except KeyMismatchError as e:
        made_with = (storage.get_meta("kek") or b"an unknown key").decode(errors="replace")
        raise KeyMismatchError(
            f"cannot unlock store {storage.uri} with key {key.uri}: it was "
            f"created with {made_with} ({e}); open it with that key. Nothing was changed."
        ) from None
