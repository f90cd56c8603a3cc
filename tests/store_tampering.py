"""Changing a SQLite store behind setec's back, as someone who can write its file but
holds no key, for the integrity tests (tests/ is on sys.path: import as
``from store_tampering import ...``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.data_key import unwrap_data_key


def tamper(state: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    """Run SQL against ``state/secrets.db``, as someone who can write the directory."""
    conn = sqlite3.connect(state / "secrets.db")
    with conn:
        for sql, params in statements:
            conn.execute(sql, params)
    conn.close()


def key_of(state: Path, name: str) -> bytes:
    """The storage key of secret ``name`` in ``state/secrets.db`` (a dev-key store),
    from the store's data key."""
    storage = SqliteStorage(state / "secrets.db")
    try:
        wrapped = storage.get_meta("dek")
        assert wrapped is not None
        return unwrap_data_key(storage, DevKeyProvider(""), wrapped).storage_key(name)
    finally:
        storage.close()
