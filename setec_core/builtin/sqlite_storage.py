"""The ``sqlite`` storage backend: one SQLite file in WAL mode.

Select it with ``--storage sqlite:///absolute/path/setec.db`` (``sqlite://rel/path.db``
is relative to the working directory). The file is created with mode 0600 and missing
parent directories with mode 0700. An existing file is never re-initialised: it must be
a setec store that passes ``PRAGMA quick_check``, or opening it raises
:class:`~setec_core.errors.CorruptStoreError`.

Layout (sqlite schema version 1)::

    meta(name TEXT PRIMARY KEY, value BLOB NOT NULL)
    records(key BLOB PRIMARY KEY, data BLOB, revision INTEGER NOT NULL) WITHOUT ROWID
    records_by_revision ON records(revision)
    revision_counter(id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL)
    leases(name TEXT PRIMARY KEY, holder TEXT NOT NULL, fence INTEGER NOT NULL,
           expires REAL NOT NULL)

``leases`` came later than the rest of version 1: opening a file without it adds it.
Lease writes touch nothing else (no revision, record or meta), and their times are this
host's clock (seconds since the epoch), which every process on the file shares.

The layout version is kept in ``meta`` under the name ``sqlite_schema``
(:data:`SCHEMA_META_NAME`). That name is reserved by this backend: :meth:`get_meta`
and :meth:`export` do not show it and a :class:`MetaWrite` to it is refused. Every
other meta name belongs to the caller.

Several processes may open the same file: writers are serialised by SQLite's write lock
(``BEGIN IMMEDIATE``, waiting up to :data:`BUSY_TIMEOUT_SECONDS`), and every CAS check
runs inside the writing transaction. :meth:`SqliteStorage.wait_for_change` notices
another connection's commit through ``PRAGMA data_version`` on a connection of its own.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

from setec_core import errors
from setec_core.errors import ConfigError, CorruptStoreError, StorageError
from setec_core.storage import (
    Lease,
    MetaWrite,
    Record,
    RecordWrite,
    Snapshot,
    StorageBackend,
    check_expected,
    check_ttl,
    check_unique,
)
from setec_core.uris import redact

SCHEMA_META_NAME = "sqlite_schema"
SCHEMA_VERSION = b"1"
BUSY_TIMEOUT_SECONDS = 5.0
POLL_SECONDS = 0.015
"""How often :meth:`SqliteStorage.wait_for_change` asks whether another connection
committed (one ``PRAGMA data_version``, a cheap question)."""

_MAGIC = b"SQLite format 3\x00"
_EXPECTED = "expected sqlite:///ABSOLUTE/PATH/TO/FILE.db or sqlite://PATH/RELATIVE/TO/CWD.db"
_RESCUE = "restore it from a backup, or move the file aside to start a new store"
_TABLES = frozenset({"meta", "records", "revision_counter"})
_LEASES = (
    "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL,"
    " fence INTEGER NOT NULL, expires REAL NOT NULL)"
)
_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL)",
    "CREATE TABLE records (key BLOB PRIMARY KEY, data BLOB, revision INTEGER NOT NULL)"
    " WITHOUT ROWID",
    "CREATE INDEX records_by_revision ON records (revision)",
    "CREATE TABLE revision_counter"
    " (id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL)",
    "INSERT INTO revision_counter (id, revision) VALUES (0, 0)",
    _LEASES,
)
_REVISION = "SELECT revision FROM revision_counter WHERE id = 0"
# One statement, so one atomic step under SQLite's write lock: take a free, expired or
# released lease (a new fence), or renew one the holder still has (the same fence).
# In SET and WHERE, bare column names are the row as it was. ?3 is now, ?4 the ttl.
_ACQUIRE = (
    "INSERT INTO leases (name, holder, fence, expires) VALUES (?1, ?2, 1, ?3 + ?4)"
    " ON CONFLICT (name) DO UPDATE SET"
    " fence = CASE WHEN holder = excluded.holder AND expires > ?3 THEN fence ELSE fence + 1 END,"
    " holder = excluded.holder, expires = excluded.expires"
    " WHERE holder = excluded.holder OR expires <= ?3"
    " RETURNING fence, expires"
)
_UNUSABLE = {sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY}
_CORRUPT = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}


class SqliteStorage(StorageBackend):
    """A store in one SQLite file (WAL mode, ``synchronous=FULL``).

    :param path: the database file; created if missing.
    :param uri: the URI to report as :attr:`uri` (default: built from ``path``).
    :raises ConfigError: if the location cannot be used (a parent that is a file, an
        unwritable directory).
    :raises CorruptStoreError: if the file exists but is empty, is not an SQLite
        database, fails its integrity check, or is not a setec store of a known
        schema version.
    """

    name = "sqlite"
    schemes = ("sqlite",)

    def __init__(self, path: str | os.PathLike[str], *, uri: str | None = None) -> None:
        self._path = os.path.abspath(os.fspath(path))
        self._uri = uri if uri is not None else "sqlite://" + self._path
        self._lock = threading.Lock()
        # wait_for_change's own connection, opened on first use, and what close() sets
        # to stop a waiter at once.
        self._watch_lock = threading.Lock()
        self._watch: sqlite3.Connection | None = None
        self._closing = threading.Event()
        self._sidecars_secured = False
        _ensure_directory(os.path.dirname(self._path))
        created = _create_file(self._path)
        if not created:
            _check_existing_file(self._path)
        try:
            self._conn: sqlite3.Connection | None = self._open(created)
        except BaseException:
            if created:
                _remove_new_store(self._path)
            raise
        self._secure_sidecars()

    @classmethod
    def from_uri(cls, uri: str) -> SqliteStorage:
        """Open (creating if needed) the store at ``sqlite:///ABSOLUTE/PATH`` or
        ``sqlite://RELATIVE/PATH``.

        :raises ConfigError: if the URI is malformed or the location is unusable.
        :raises CorruptStoreError: if the file is not a readable setec store.
        """
        return cls(_path_from_uri(uri), uri=uri)

    def __repr__(self) -> str:
        return f"SqliteStorage({self._path!r})"

    @property
    def uri(self) -> str:
        """The URI this store was opened with."""
        return self._uri

    @property
    def path(self) -> str:
        """The absolute path of the database file."""
        return self._path

    # --- opening -----------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        target = "file:" + urllib.parse.quote(self._path) + "?mode=rw"
        conn = sqlite3.connect(
            target,
            uri=True,
            timeout=BUSY_TIMEOUT_SECONDS,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute("PRAGMA trusted_schema = OFF")
        except BaseException:
            conn.close()
            raise
        return conn

    def _open(self, created: bool) -> sqlite3.Connection:
        try:
            conn = self._connect()
        except sqlite3.Error as e:
            raise self._error("open", e, opening=True) from e
        try:
            conn.execute("PRAGMA synchronous = FULL")
            # Overwrite freed space with zeros: a record replaced or deleted (every
            # record, on rotate-dek) must not linger in free pages, readable by anyone
            # holding the file and the old data key.
            conn.execute("PRAGMA secure_delete = ON")
            if created:
                # Create the schema under the default rollback journal, in one
                # transaction, so a crash leaves either an empty file or a whole store.
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?)",
                    (SCHEMA_META_NAME, SCHEMA_VERSION),
                )
                conn.execute("COMMIT")
            else:
                # Check before switching to WAL: never modify a file that is not ours.
                self._check_integrity(conn)
                self._check_schema(conn)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ConfigError(
                    f"sqlite store {self._path}: cannot use WAL mode (got {mode!r}); "
                    "put the store on a local filesystem"
                )
            if not created and not _has_table(conn, "leases"):
                # IF NOT EXISTS: two processes may open an older file at the same moment.
                conn.execute(_LEASES)
        except sqlite3.Error as e:
            conn.close()
            raise self._error("open", e, opening=True) from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _check_integrity(self, conn: sqlite3.Connection) -> None:
        rows = conn.execute("PRAGMA quick_check").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            first = str(rows[0][0]).splitlines()[0] if rows else "no result"
            raise CorruptStoreError(
                f"sqlite store {self._path} is corrupt: its integrity check failed "
                f"({first}); {_RESCUE}"
            )

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = sorted(_TABLES - tables)
        if missing:
            raise CorruptStoreError(
                f"{self._path} is an SQLite database but not a setec store (missing "
                f"tables: {', '.join(missing)}); check the --storage path, or move the "
                "file aside to start a new store"
            )
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (SCHEMA_META_NAME,)).fetchone()
        if row is None or row[0] != SCHEMA_VERSION:
            found = "none" if row is None else repr(row[0])
            raise CorruptStoreError(
                f"sqlite store {self._path} has schema version {found}, but this setec "
                f"reads version 1; use a matching setec release, or {_RESCUE}"
            )
        if conn.execute("SELECT count(*) FROM revision_counter").fetchone()[0] != 1:
            raise CorruptStoreError(f"sqlite store {self._path} has no revision; {_RESCUE}")

    def _secure_sidecars(self) -> None:
        # SQLite gives -wal/-shm the database file's mode; this is a second line of
        # defence, best effort, because a failure here leaves nothing less safe.
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(OSError):
                os.chmod(self._path + suffix, 0o600)

    # --- errors and locking ------------------------------------------------------

    def _error(self, what: str, e: sqlite3.Error, *, opening: bool = False) -> errors.SetecError:
        code = getattr(e, "sqlite_errorcode", 0) & 0xFF
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        if code in _CORRUPT:
            return CorruptStoreError(
                f"sqlite store {self._path} is corrupt ({what} failed: {reason}); {_RESCUE}"
            )
        if opening and code in _UNUSABLE:
            return ConfigError(
                f"cannot open sqlite store {self._path}: {reason}; check its permissions "
                "or choose a writable location"
            )
        return StorageError(f"sqlite store {self._path}: {what} failed: {reason}")

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StorageError(f"sqlite store {self._path} is closed")
        return self._conn

    def _query(self, what: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock:
            conn = self._live()
            try:
                return conn.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise self._error(what, e) from e

    # --- reading -----------------------------------------------------------------

    def read_all(self) -> Iterator[Record]:
        """Return an iterator over every live record (no tombstones), read at once.

        :raises StorageError: if the store cannot be read.
        """
        rows = self._query(
            "read_all", "SELECT key, data, revision FROM records WHERE data NOT NULL"
        )
        return iter([Record(k, d, r) for k, d, r in rows])

    def read(self, key: bytes) -> Record | None:
        """Return the live record at ``key``, or ``None`` if it is absent or deleted.

        :raises StorageError: if the store cannot be read.
        """
        rows = self._query(
            "read", "SELECT data, revision FROM records WHERE key = ? AND data NOT NULL", (key,)
        )
        return Record(key, rows[0][0], rows[0][1]) if rows else None

    def get_meta(self, name: str) -> bytes | None:
        """Return the metadata entry ``name``, or ``None`` if it was never set (always
        ``None`` for the reserved name ``sqlite_schema``).

        :raises StorageError: if the store cannot be read.
        """
        if name == SCHEMA_META_NAME:
            return None
        rows = self._query("get_meta", "SELECT value FROM meta WHERE name = ?", (name,))
        return bytes(rows[0][0]) if rows else None

    def revision(self) -> int:
        """Return the global revision: 0 for a new store, then one more per commit.

        :raises StorageError: if the store cannot be read.
        """
        rows = self._query("revision", _REVISION)
        return int(rows[0][0])

    def changes_since(self, revision: int) -> Iterator[Record]:
        """Return an iterator over every record, tombstones included, whose revision is
        greater than ``revision``, in increasing revision order (then by key).

        :raises StorageError: if the store cannot be read.
        """
        rows = self._query(
            "changes_since",
            "SELECT key, data, revision FROM records WHERE revision > ? ORDER BY revision, key",
            (revision,),
        )
        return iter([Record(k, d, r) for k, d, r in rows])

    def export(self) -> Snapshot:
        """Return a consistent snapshot, read in one transaction (without the reserved
        ``sqlite_schema`` meta entry).

        :raises StorageError: if the store cannot be read.
        """
        with self._lock:
            conn = self._live()
            try:
                conn.execute("BEGIN")
                try:
                    rev = conn.execute("SELECT revision FROM revision_counter").fetchone()[0]
                    meta = conn.execute(
                        "SELECT name, value FROM meta WHERE name != ?", (SCHEMA_META_NAME,)
                    ).fetchall()
                    rows = conn.execute(
                        "SELECT key, data, revision FROM records WHERE data NOT NULL"
                    ).fetchall()
                finally:
                    _rollback(conn)
            except sqlite3.Error as e:
                raise self._error("export", e) from e
        return Snapshot(
            revision=int(rev),
            meta={n: bytes(v) for n, v in meta},
            records=[Record(k, d, r) for k, d, r in rows],
        )

    # --- writing -----------------------------------------------------------------

    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        """Apply ``writes`` and ``meta`` atomically and durably (fsynced before this
        returns); return the new global revision, which every written record carries.

        A commit with no writes and no meta changes nothing and returns the current
        revision. Deleting an absent record with ``expect=0`` writes a tombstone.

        :raises ConflictError: if any ``expect`` does not match; nothing is changed.
        :raises StorageError: if a key or meta name appears twice, a meta write names
            the reserved ``sqlite_schema``, or the commit fails; nothing is changed.
        """
        check_unique(writes, meta)
        if any(m.name == SCHEMA_META_NAME for m in meta):
            raise StorageError(
                f"meta name {SCHEMA_META_NAME!r} is reserved by the sqlite storage backend"
            )
        with self._lock:
            conn = self._live()
            try:
                if not writes and not meta:
                    row = conn.execute("SELECT revision FROM revision_counter").fetchone()
                    return int(row[0])
                conn.execute("BEGIN IMMEDIATE")
                try:
                    new = self._apply(conn, writes, meta)
                    conn.execute("COMMIT")
                except BaseException:
                    _rollback(conn)
                    raise
            except sqlite3.Error as e:
                raise self._error("commit", e) from e
        if not self._sidecars_secured:
            self._secure_sidecars()
            self._sidecars_secured = True
        return new

    def _apply(
        self, conn: sqlite3.Connection, writes: Sequence[RecordWrite], meta: Sequence[MetaWrite]
    ) -> int:
        def revision_of(key: bytes) -> int:
            row = conn.execute(
                "SELECT revision, data IS NULL FROM records WHERE key = ?", (key,)
            ).fetchone()
            return 0 if row is None or row[1] else int(row[0])

        def meta_of(name: str) -> bytes | None:
            row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
            return None if row is None else bytes(row[0])

        check_expected(writes, meta, revision_of=revision_of, meta_of=meta_of)
        new = int(conn.execute("SELECT revision FROM revision_counter").fetchone()[0]) + 1
        conn.executemany(
            "INSERT INTO records (key, data, revision) VALUES (?, ?, ?) ON CONFLICT (key) "
            "DO UPDATE SET data = excluded.data, revision = excluded.revision",
            [(w.key, w.data, new) for w in writes],
        )
        conn.executemany(
            "INSERT INTO meta (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            [(m.name, m.value) for m in meta],
        )
        conn.execute("UPDATE revision_counter SET revision = ? WHERE id = 0", (new,))
        return new

    def compact(self) -> None:
        """``VACUUM``: rebuild the file so that freed pages and the free space inside
        pages hold nothing of deleted records (``secure_delete`` alone leaves a few).
        SQLite makes it atomic; it needs free disk space about the file's size.

        :raises StorageError: if it fails; the store is unchanged.
        """
        with self._lock:
            conn = self._live()
            try:
                conn.execute("VACUUM")
            except sqlite3.Error as e:
                raise self._error("compact", e) from e

    # --- replicas ----------------------------------------------------------------

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        """Block until the revision differs from ``revision``, or ``timeout`` seconds
        pass. Every :data:`POLL_SECONDS` a connection of this handle's own asks SQLite
        whether another connection has committed (``PRAGMA data_version``); only then
        does it read the revision, so lease writes wake nobody.

        :returns: True if the revision differs, False on timeout.
        :raises StorageError: if the store is closed (before or while waiting), or
            cannot be read.
        """
        deadline = time.monotonic() + timeout
        # data_version before the revision: a commit between the two reads changes the
        # former, so the loop below sees it.
        seen = self._watch_read("PRAGMA data_version")
        if self._watch_read(_REVISION) != revision:
            return True
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if self._closing.wait(min(POLL_SECONDS, remaining)):
                raise StorageError(f"sqlite store {self._path} is closed")
            version = self._watch_read("PRAGMA data_version")
            if version != seen:
                seen = version
                if self._watch_read(_REVISION) != revision:
                    return True

    def _watch_read(self, sql: str) -> int:
        with self._watch_lock:
            if self._closing.is_set():
                raise StorageError(f"sqlite store {self._path} is closed")
            try:
                if self._watch is None:
                    self._watch = self._connect()
                # fetchall, not fetchone: a statement left unfinished would keep its
                # read snapshot, and with it the WAL, from being checkpointed.
                return int(self._watch.execute(sql).fetchall()[0][0])
            except sqlite3.Error as e:
                raise self._error("wait_for_change", e) from e

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``holder`` for ``ttl`` seconds if it is free,
        expired or released, or renew it if ``holder`` has it; one statement under
        SQLite's write lock, so one winner among every process on the file. Times are
        this host's clock.

        :returns: the lease as ``holder`` now holds it, or ``None`` if another has it.
        :raises ValueError: if ``ttl`` is not more than 0.
        :raises StorageError: if the store cannot be written.
        """
        check_ttl(ttl)
        rows = self._query("acquire_lease", _ACQUIRE, (name, holder, time.time(), ttl))
        if not rows:
            return None
        fence, expires = rows[0]
        return Lease(name, holder, int(fence), float(expires) - time.time())

    def release_lease(self, name: str, holder: str) -> None:
        """Give up the lease ``name`` if ``holder`` has it; its fence is kept.

        :raises StorageError: if the store cannot be written.
        """
        self._query(
            "release_lease",
            "UPDATE leases SET expires = 0 WHERE name = ? AND holder = ?",
            (name, holder),
        )

    def leases(self, prefix: str = "") -> list[Lease]:
        """Return the unexpired leases whose names start with ``prefix``, by name.

        :raises StorageError: if the store cannot be read.
        """
        now = time.time()
        rows = self._query(
            "leases",
            "SELECT name, holder, fence, expires FROM leases"
            " WHERE substr(name, 1, length(?1)) = ?1 AND expires > ?2 ORDER BY name",
            (prefix, now),
        )
        return [Lease(n, h, int(f), float(e) - now) for n, h, f, e in rows]

    def close(self) -> None:
        """Close the database connections, stopping a :meth:`wait_for_change` blocked
        in another thread (it raises :class:`StorageError`). Calling it twice is
        harmless.

        :raises StorageError: if SQLite fails to close the file.
        """
        self._closing.set()
        with self._watch_lock:
            watch, self._watch = self._watch, None
        with self._lock:
            conn, self._conn = self._conn, None
        try:
            for c in (watch, conn):
                if c is not None:
                    c.close()
        except sqlite3.Error as e:
            raise self._error("close", e) from e


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
    ).fetchone()
    return bool(row[0])


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _path_from_uri(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if scheme.lower() != "sqlite" or not sep:
        raise ConfigError(f"storage URI {redact(uri)!r} is not an sqlite URI; {_EXPECTED}")
    if not rest.strip("/"):
        raise ConfigError(f"storage URI {redact(uri)!r} names no file; {_EXPECTED}")
    if rest.endswith("/"):
        raise ConfigError(f"storage URI {redact(uri)!r} names a directory, not a file; {_EXPECTED}")
    if rest.startswith("~") or any(c in rest for c in "?#\x00"):
        raise ConfigError(
            f"storage URI {redact(uri)!r} has a ~, ?, # or NUL in its path; {_EXPECTED}"
        )
    return os.path.abspath(rest)


def _ensure_directory(directory: str) -> None:
    missing: list[str] = []
    d = directory
    while not os.path.exists(d) and os.path.dirname(d) != d:
        missing.append(d)
        d = os.path.dirname(d)
    if not os.path.isdir(d):
        raise ConfigError(
            f"cannot use {directory} for the sqlite store: {d} is not a directory; "
            "choose a writable location"
        )
    for d in reversed(missing):
        try:
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)
        except FileExistsError:
            if not os.path.isdir(d):
                raise ConfigError(f"cannot create directory {d}: a file is in the way") from None
        except OSError as e:
            raise ConfigError(
                f"cannot create directory {d} for the sqlite store: {e.strerror}; "
                "choose a writable location"
            ) from e


def _create_file(path: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as e:
        raise ConfigError(
            f"cannot create sqlite store {path}: {e.strerror}; choose a writable location"
        ) from e
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    return True


def _check_existing_file(path: str) -> None:
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"sqlite store {path} is not a regular file; {_EXPECTED}")
        with open(path, "rb") as f:
            head = f.read(len(_MAGIC))
    except OSError as e:
        raise ConfigError(
            f"cannot read sqlite store {path}: {e.strerror}; check its permissions"
        ) from e
    if st.st_size == 0:
        raise CorruptStoreError(
            f"sqlite store {path} is empty (0 bytes), so setec will not open it; if this "
            "is meant to be a new store, delete the file; otherwise restore it from a backup"
        )
    if head != _MAGIC:
        raise CorruptStoreError(f"{path} is not an SQLite database; {_RESCUE}")


def _remove_new_store(path: str) -> None:
    # Only called for a file this process just created and never committed data to.
    for suffix in ("", "-journal", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path + suffix)
