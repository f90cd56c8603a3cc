"""The ``postgresql`` storage backend: the store in tables of a PostgreSQL database.

Select it with ``--storage postgresql://USER@HOST[:PORT]/DATABASE[?PARAM=VALUE&...]``
(``postgres://`` works too): a libpq connection URI, so every libpq parameter
(``sslmode``, ``sslrootcert``, ``connect_timeout``, ``options``, several hosts with
``target_session_attrs``...) and every libpq environment variable (``PGPASSWORD``,
``PGPASSFILE``...) applies. The password is best kept out of the URI, in ``PGPASSWORD``
or a ``.pgpass`` file; where it is in the URI, no repr, :attr:`~PostgresStorage.uri`,
log line or error shows it (docs/server.md, "The store on PostgreSQL").

Like SQLite, PostgreSQL sees only what the storage interface gives it: keyed hashes of
names and ciphertext. The tables are created on first use, in the first schema of the
connection's ``search_path``, in one transaction under an advisory lock, so two
processes opening a new database at once create them once. Layout (postgresql schema
version 1)::

    setec_schema(id smallint PRIMARY KEY CHECK (id = 0), version integer NOT NULL)
    setec_meta(name text PRIMARY KEY, value bytea NOT NULL)
    setec_records(key bytea PRIMARY KEY, data bytea, revision bigint NOT NULL)
    setec_records_by_revision ON setec_records(revision)
    setec_revision(id smallint PRIMARY KEY CHECK (id = 0), revision bigint NOT NULL)
    setec_leases(name text PRIMARY KEY, holder text NOT NULL, fence bigint NOT NULL,
                 expires timestamptz NOT NULL)

``setec_leases`` came later than the rest of version 1: opening a database without it
adds it. Lease times are the server's clock (``clock_timestamp()``), so the replicas'
clocks need not agree, and lease writes touch nothing else.

A deleted record stays as a row whose ``data`` is NULL (a tombstone), so that
:meth:`~PostgresStorage.changes_since` reports the deletion. Every commit is one
READ COMMITTED transaction that first locks the one ``setec_revision`` row (``SELECT ...
FOR UPDATE``): commits serialise on it, so the revision order is the commit order, and
the compare-and-swap checks, made after the lock is granted, see every earlier commit.
:meth:`~PostgresStorage.export` reads from one REPEATABLE READ snapshot.

Every commit also sends ``pg_notify`` on a channel named for the store (its schema), in
its transaction, so it is delivered when, and only if, the commit is.
:meth:`~PostgresStorage.wait_for_change` LISTENs on a connection of its own (not one of
the pool's) and treats a notification as a hint to read the revision, never as the
truth.

Connections come from a small pool (psycopg_pool) in autocommit mode, so a read is one
statement and one round trip; a commit is two round trips in pipeline mode. When the
server cannot be reached, a call raises :class:`~setec_core.errors.StorageUnavailable`
at once (a 503, not a 500), and the first call after the server is back replaces the
pool, rather than wait out its reconnection back-off. psycopg and psycopg_pool are
imported when a store is opened: ``pip install 'pysetec[postgres]'``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import unquote

from setec_core.errors import ConfigError, CorruptStoreError, StorageError, StorageUnavailable
from setec_core.hookspecs import hookimpl
from setec_core.sdk import import_sdk
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
from setec_core.uris import SECRET_PARAMETERS, redact

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

    Connection = psycopg.Connection[tuple[Any, ...]]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1
POOL_SIZE = 4
"""The most connections one store holds open at once (one is kept open while idle)."""
POOL_TIMEOUT_SECONDS = 10.0
"""How long a call waits for a pooled connection before it fails."""
CONNECT_TIMEOUT_SECONDS = 10
"""libpq's ``connect_timeout`` when the URI sets none (libpq's own default is forever)."""
STREAM_ROWS = 1000
"""Rows per chunk when reading many records (libpq 17 and later; row by row before)."""
WAKE_SECONDS = 0.25
"""How long :meth:`PostgresStorage.wait_for_change` listens at a time before it looks
whether :meth:`PostgresStorage.close` was called."""

_FORM = "postgresql://USER@HOST[:PORT]/DATABASE[?PARAM=VALUE&...]"
# A fixed key for pg_advisory_xact_lock ("setec" in ASCII): it serialises the creation
# of the tables between processes opening one new database at once.
_SCHEMA_LOCK = 0x7365746563
_SCHEMA = (
    "CREATE TABLE setec_schema (id smallint PRIMARY KEY CHECK (id = 0), version integer NOT NULL)",
    "CREATE TABLE setec_meta (name text PRIMARY KEY, value bytea NOT NULL)",
    "CREATE TABLE setec_records (key bytea PRIMARY KEY, data bytea, revision bigint NOT NULL)",
    # Ciphertext does not compress: store it out of line without trying to.
    "ALTER TABLE setec_records ALTER COLUMN data SET STORAGE EXTERNAL",
    "CREATE INDEX setec_records_by_revision ON setec_records (revision)",
    "CREATE TABLE setec_revision"
    " (id smallint PRIMARY KEY CHECK (id = 0), revision bigint NOT NULL)",
    "INSERT INTO setec_revision (id, revision) VALUES (0, 0)",
)
_LEASES = (
    "CREATE TABLE setec_leases (name text PRIMARY KEY, holder text NOT NULL,"
    " fence bigint NOT NULL, expires timestamptz NOT NULL)"
)
# One statement: take a free, expired or released lease (a new fence), or renew one the
# holder still has (the same fence). ON CONFLICT locks the row, so racing holders
# serialise, and the WHERE sees the winner's row.
_ACQUIRE = (
    "INSERT INTO setec_leases AS l (name, holder, fence, expires)"
    " VALUES (%(name)s, %(holder)s, 1, clock_timestamp() + make_interval(secs => %(ttl)s))"
    " ON CONFLICT (name) DO UPDATE SET"
    " fence = CASE WHEN l.holder = excluded.holder AND l.expires > clock_timestamp()"
    " THEN l.fence ELSE l.fence + 1 END,"
    " holder = excluded.holder, expires = excluded.expires"
    " WHERE l.holder = excluded.holder OR l.expires <= clock_timestamp()"
    " RETURNING l.fence, extract(epoch FROM l.expires - clock_timestamp())"
)
_INSUFFICIENT_PRIVILEGE = "42501"
_REVISION = "SELECT revision FROM setec_revision WHERE id = 0"
_LIVE = "SELECT key, data, revision FROM setec_records WHERE data IS NOT NULL"


class PostgresStorage(StorageBackend):
    """A store in a PostgreSQL database, reached through a small connection pool.

    :param uri: a libpq URI, ``postgresql://...`` or ``postgres://...``.
    :param pool_size: the most connections to hold open at once.
    :raises ConfigError: if the URI is malformed, or psycopg is not installed.
    :raises StorageError: if the server cannot be reached or refuses the connection
        (one line naming the host and database, never the password), or the tables
        cannot be created.
    :raises CorruptStoreError: if the database holds setec tables of an unknown
        schema version, or without their revision row.
    """

    name = "postgresql"
    schemes = ("postgresql", "postgres")

    def __init__(self, uri: str, *, pool_size: int = POOL_SIZE) -> None:
        self._shown = redact(uri)
        self._secrets = _credentials(uri)
        _check_form(uri, self._shown)
        import_sdk(
            ["psycopg", "psycopg_pool"],
            user="the postgresql storage backend",
            packages=["psycopg", "psycopg-pool"],
            install="pysetec[postgres]",
        )
        import psycopg

        try:
            params = psycopg.conninfo.conninfo_to_dict(uri)
        except psycopg.Error as e:
            raise ConfigError(
                f"storage URI {self._shown!r} is not a valid PostgreSQL URI "
                f"({self._scrub(_first_line(e))}); expected {_FORM}"
            ) from None
        parsed = [str(params[p]) for p in SECRET_PARAMETERS if params.get(p)]
        self._secrets = sorted({*self._secrets, *parsed}, key=len, reverse=True)
        defaults: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "application_name": "setec",
        }
        # Kept (never shown) to open the pool again after an outage, and the listening
        # connection of wait_for_change.
        self._conninfo = uri
        self._kwargs = {k: v for k, v in defaults.items() if k not in params}
        self._pool_size = pool_size
        self._chunk = STREAM_ROWS if psycopg.pq.version() >= 170000 else 1
        self._pipelines = psycopg.Pipeline.is_supported()
        self._lock = threading.Lock()
        # Set when a call found the server unreachable: the next call checks it is back,
        # then replaces the pool, whose reconnection back-off grows with the outage.
        self._down = False
        self._recovering = threading.Lock()
        # wait_for_change's listening connection, used by one waiter at a time.
        self._waiting = threading.Lock()
        self._listener: Connection | None = None
        self._channel = self._prepare()
        self._pool: psycopg_pool.ConnectionPool[Connection] | None = self._new_pool()

    @classmethod
    def from_uri(cls, uri: str) -> PostgresStorage:
        """Open the store in the database ``postgresql://USER@HOST[:PORT]/DATABASE``,
        creating its tables if they are missing.

        :raises ConfigError: if the URI is malformed, or psycopg is not installed.
        :raises StorageError: if the database cannot be reached or used.
        :raises CorruptStoreError: if its setec tables are of an unknown version.
        """
        return cls(uri)

    def __repr__(self) -> str:
        return f"PostgresStorage({self._shown!r})"

    @property
    def uri(self) -> str:
        """The URI this store was opened with, its credentials replaced by ``***``."""
        return self._shown

    @property
    def channel(self) -> str:
        """The channel every commit notifies (``pg_notify``) with its new revision:
        ``setec_changes_`` and a hash of the schema that holds the tables."""
        return self._channel

    # --- opening -----------------------------------------------------------------

    def _new_pool(self) -> psycopg_pool.ConnectionPool[Connection]:
        import psycopg_pool

        return psycopg_pool.ConnectionPool(
            self._conninfo,
            kwargs={**self._kwargs, "autocommit": True},
            min_size=1,
            max_size=self._pool_size,
            open=True,
            name="setec-storage",
            timeout=POOL_TIMEOUT_SECONDS,
        )

    def _prepare(self) -> str:
        """Create the tables if they are missing and check their version; return the
        channel the store's commits notify."""
        # One plain connection, not yet the pool: its failure carries libpq's reason
        # (a pool only says it timed out), and it creates the tables.
        import psycopg

        try:
            with psycopg.connect(self._conninfo, **self._kwargs) as conn, conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                row = conn.execute("SELECT to_regclass('setec_schema') IS NOT NULL").fetchone()
                if not (row and row[0]):
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO setec_schema (id, version) VALUES (0, %s)", (SCHEMA_VERSION,)
                    )
                    log.info("created the setec tables in PostgreSQL store %s", self._shown)
                found = conn.execute("SELECT to_regclass('setec_leases') IS NOT NULL").fetchone()
                if not (found and found[0]):
                    conn.execute(_LEASES)
                schema = conn.execute("SELECT current_schema()").fetchone()
                row = conn.execute(
                    "SELECT (SELECT version FROM setec_schema WHERE id = 0),"
                    " (SELECT count(*) FROM setec_revision)"
                ).fetchone()
        except psycopg.OperationalError as e:
            failure = StorageUnavailable if _unreachable(e) else StorageError
            raise failure(
                f"cannot connect to PostgreSQL store {self._shown}: "
                f"{self._scrub(_all_lines(e))}; {_advice(e)}"
            ) from None
        except psycopg.Error as e:
            advice = (
                "the first start needs the CREATE privilege on the schema: make the user "
                "the database's owner, or grant it"
                if e.sqlstate == _INSUFFICIENT_PRIVILEGE
                else "check that its setec_* tables are setec's"
            )
            raise StorageError(
                f"cannot set up PostgreSQL store {self._shown}: "
                f"{self._scrub(_first_line(e))}; {advice}"
            ) from None
        version, counters = row if row else (None, 0)
        if version != SCHEMA_VERSION:
            raise CorruptStoreError(
                f"PostgreSQL store {self._shown} has schema version {version}, but this "
                f"setec reads version {SCHEMA_VERSION}; use a matching setec release"
            )
        if counters != 1:
            raise CorruptStoreError(
                f"PostgreSQL store {self._shown} has no revision (its setec_revision table "
                "was emptied); restore it from a backup into a new database"
            )
        return _channel(str(schema[0]) if schema else "")

    # --- running statements --------------------------------------------------------

    def _scrub(self, text: str) -> str:
        # libpq quotes what it could not parse, which may be a password.
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _live(self) -> psycopg_pool.ConnectionPool[Connection]:
        pool = self._pool
        if pool is None:
            raise StorageError(f"PostgreSQL store {self._shown} is closed")
        return pool

    def _run(
        self,
        what: str,
        work: Callable[[Connection], T],
        *,
        again: Callable[[], bool] = lambda: True,
    ) -> T:
        """Run ``work`` on a pooled connection; a database failure becomes one
        :class:`StorageError` line.

        A pooled connection may have died since its last use (the server restarted,
        or a firewall dropped it while idle). When ``work`` fails because its
        connection is lost and ``again()`` says that nothing can have been written
        through it, ``work`` runs again on another connection, until the pool has
        replaced every connection it held.
        """
        import psycopg
        import psycopg_pool

        lost = 0
        while True:
            pool = self._usable_pool(what)
            conn: Connection | None = None
            try:
                with pool.connection() as conn:
                    return work(conn)
            except psycopg_pool.PoolClosed:
                if self._pool is not None and self._pool is not pool:
                    continue  # replaced by a new pool after an outage: run on that
                raise StorageError(f"PostgreSQL store {self._shown} is closed") from None
            except psycopg_pool.PoolTimeout as e:
                self._probe(what, outcome_known=again())
                raise StorageUnavailable(
                    f"PostgreSQL store {self._shown}: {what} failed: no connection within "
                    f"{POOL_TIMEOUT_SECONDS:g} s (all {pool.max_size} connections are busy)"
                ) from e
            except psycopg.Error as e:
                reason = self._scrub(_first_line(e))
                if conn is not None and conn.broken:
                    # Lost: if the server is down, say so now rather than wait for the
                    # pool to fail to replace the connection.
                    self._probe(what, outcome_known=again())
                if conn is not None and conn.broken and again() and lost < pool.max_size:
                    lost += 1
                    log.info(
                        "PostgreSQL store %s: a pooled connection was lost (%s); running "
                        "%s again on another",
                        self._shown,
                        reason,
                        what,
                    )
                    continue
                raise StorageError(
                    f"PostgreSQL store {self._shown}: {what} failed: {reason}"
                ) from e

    def _usable_pool(self, what: str) -> psycopg_pool.ConnectionPool[Connection]:
        """The pool, or a new one if an earlier call found the server down and it is
        back (a pool's reconnection back-off can outlast the outage by minutes).

        :raises StorageUnavailable: if the server is still unreachable.
        :raises StorageError: if the store is closed.
        """
        pool = self._live()
        if not self._down:
            return pool
        with self._recovering:
            if not self._down:
                return self._live()
            self._probe(what)
            fresh = self._new_pool()
            with self._lock:
                old = self._pool
                if old is not None:
                    self._pool, self._down = fresh, False
            if old is None:
                fresh.close()
                raise StorageError(f"PostgreSQL store {self._shown} is closed")
            log.info("PostgreSQL store %s is reachable again", self._shown)
            old.close(timeout=1.0)
            return fresh

    def _probe(self, what: str, *, outcome_known: bool = True) -> None:
        """Connect once, outside the pool, to tell an outage from a lost connection.

        :param what: the call that failed, for the message.
        :param outcome_known: False for a commit cut off while it was being written,
            whose outcome the message then says is unknown.
        :raises StorageUnavailable: if the server cannot be reached (the next call
            checks again first).
        """
        import psycopg

        try:
            psycopg.connect(self._conninfo, **self._kwargs).close()
        except psycopg.Error as e:
            if not _unreachable(e):
                return  # the server answered: the caller reports its own failure
            self._down = True
            unknown = "" if outcome_known else "; the commit may or may not have been applied"
            raise StorageUnavailable(
                f"PostgreSQL store {self._shown}: {what} failed: cannot reach the server "
                f"({self._scrub(_all_lines(e))}){unknown}; {_advice(e)}"
            ) from None

    def _read_revision(self, conn: Connection) -> int:
        row = conn.execute(_REVISION).fetchone()
        if row is None:
            raise CorruptStoreError(f"PostgreSQL store {self._shown} has no revision")
        return int(row[0])

    def _stream(self, conn: Connection, sql: str, params: Sequence[Any] = ()) -> list[Record]:
        # Rows arrive in chunks rather than as one result holding them all; they are
        # collected here so that a failure is raised by the call, not while iterating.
        cursor = conn.cursor(binary=True)
        return [Record(k, d, r) for k, d, r in cursor.stream(sql, params, size=self._chunk)]

    # --- reading -----------------------------------------------------------------

    def read_all(self) -> Iterator[Record]:
        """Return an iterator over every live record (no tombstones), read at once.

        :raises StorageError: if the store cannot be read.
        """
        return iter(self._run("read_all", lambda conn: self._stream(conn, _LIVE)))

    def read(self, key: bytes) -> Record | None:
        """Return the live record at ``key``, or ``None`` if it is absent or deleted.

        :raises StorageError: if the store cannot be read.
        """

        def work(conn: Connection) -> Record | None:
            row = conn.execute(
                "SELECT data, revision FROM setec_records WHERE key = %s AND data IS NOT NULL",
                (key,),
                binary=True,
            ).fetchone()
            return None if row is None else Record(key, row[0], row[1])

        return self._run("read", work)

    def get_meta(self, name: str) -> bytes | None:
        """Return the metadata entry ``name``, or ``None`` if it was never set.

        :raises StorageError: if the store cannot be read.
        """

        def work(conn: Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM setec_meta WHERE name = %s", (name,), binary=True
            ).fetchone()
            return None if row is None else bytes(row[0])

        return self._run("get_meta", work)

    def revision(self) -> int:
        """Return the global revision: 0 for a new store, then one more per commit.

        :raises StorageError: if the store cannot be read.
        """
        return self._run("revision", self._read_revision)

    def changes_since(self, revision: int) -> Iterator[Record]:
        """Return an iterator over every record, tombstones included, whose revision is
        greater than ``revision``, in increasing revision order (then by key).

        :raises StorageError: if the store cannot be read.
        """
        sql = (
            "SELECT key, data, revision FROM setec_records WHERE revision > %s"
            " ORDER BY revision, key"
        )
        return iter(self._run("changes_since", lambda conn: self._stream(conn, sql, (revision,))))

    def export(self) -> Snapshot:
        """Return a consistent snapshot, read in one REPEATABLE READ transaction.

        :raises StorageError: if the store cannot be read.
        """

        def work(conn: Connection) -> Snapshot:
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                revision = self._read_revision(conn)
                meta = conn.execute("SELECT name, value FROM setec_meta", binary=True).fetchall()
                records = self._stream(conn, _LIVE)
            return Snapshot(revision=revision, meta={n: bytes(v) for n, v in meta}, records=records)

        return self._run("export", work)

    # --- writing -----------------------------------------------------------------

    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        """Apply ``writes`` and ``meta`` in one transaction, durable when this returns;
        return the new global revision, which every written record carries.

        A commit with no writes and no meta changes nothing and returns the current
        revision. Deleting an absent record with ``expect=0`` writes a tombstone.

        :raises ConflictError: if any ``expect`` does not match; nothing is changed.
        :raises StorageError: if a key or meta name appears twice, or the commit fails;
            nothing is changed.
        """
        check_unique(writes, meta)
        if not writes and not meta:
            return self.revision()
        attempt = _Attempt()
        return self._run(
            "commit",
            lambda conn: self._apply(conn, writes, meta, attempt),
            again=lambda: not attempt.writing,
        )

    def _apply(
        self,
        conn: Connection,
        writes: Sequence[RecordWrite],
        meta: Sequence[MetaWrite],
        attempt: _Attempt,
    ) -> int:
        # Pipelined, the lock and the reads it guards are one round trip, and the writes
        # with the COMMIT another.
        pipeline = conn.pipeline() if self._pipelines else contextlib.nullcontext()
        with pipeline, conn.transaction():
            counter = conn.execute(_REVISION + " FOR UPDATE")
            found = conn.execute(
                "SELECT key, revision, data IS NULL FROM setec_records WHERE key = ANY(%s)",
                ([w.key for w in writes],),
                binary=True,
            )
            values = conn.execute(
                "SELECT name, value FROM setec_meta WHERE name = ANY(%s)",
                ([m.name for m in meta],),
                binary=True,
            )
            row = counter.fetchone()
            if row is None:
                raise CorruptStoreError(f"PostgreSQL store {self._shown} has no revision")
            revisions = {bytes(k): 0 if dead else int(r) for k, r, dead in found.fetchall()}
            current = {str(n): bytes(v) for n, v in values.fetchall()}
            check_expected(
                writes,
                meta,
                revision_of=lambda key: revisions.get(key, 0),
                meta_of=current.get,
            )
            new = int(row[0]) + 1
            attempt.writing = True
            cursor = conn.cursor()
            if writes:
                cursor.executemany(
                    "INSERT INTO setec_records (key, data, revision) VALUES (%s, %s, %s)"
                    " ON CONFLICT (key) DO UPDATE"
                    " SET data = excluded.data, revision = excluded.revision",
                    [(w.key, w.data, new) for w in writes],
                )
            if meta:
                cursor.executemany(
                    "INSERT INTO setec_meta (name, value) VALUES (%s, %s)"
                    " ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    [(m.name, m.value) for m in meta],
                )
            conn.execute("UPDATE setec_revision SET revision = %s WHERE id = 0", (new,))
            # Delivered when the transaction commits, and only if it does.
            conn.execute("SELECT pg_notify(%s, %s)", (self._channel, str(new)))
        return new

    def compact(self) -> None:
        """``VACUUM FULL`` of the records and meta tables: rewrite them, so that no
        replaced or deleted record stays in their files. (PostgreSQL's write-ahead log,
        its archive, replicas and base backups keep old rows until they are recycled.)
        Readers and writers wait while it runs.

        :raises StorageError: if it fails (the user must own the tables); the store is
            unchanged.
        """
        self._run("compact", lambda conn: conn.execute("VACUUM FULL setec_records, setec_meta"))

    # --- replicas ----------------------------------------------------------------

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        """Block until the revision differs from ``revision``, or ``timeout`` seconds
        pass: LISTEN on a connection of this handle's own (connected on first use, and
        again after it is lost), then read the revision, so a commit made before the
        LISTEN is seen by the read and one made after by a notification.

        One thread at a time listens; another waiting on the same handle meanwhile
        reads the revision every few hundredths of a second instead.

        :returns: True if the revision differs or a commit was notified, or if the
            listening connection was lost (a notification may have been missed);
            False on timeout.
        :raises StorageUnavailable: if the server cannot be reached.
        :raises StorageError: if the store is closed (before or while waiting).
        """
        import psycopg

        deadline = time.monotonic() + timeout
        if not self._waiting.acquire(blocking=False):
            return super().wait_for_change(revision, timeout)
        try:
            listener = self._listen()
            if self._run("wait_for_change", self._read_revision) != revision:
                return True
            while True:
                self._live()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                try:
                    for _ in listener.notifies(timeout=min(remaining, WAKE_SECONDS), stop_after=1):
                        return True
                except psycopg.Error as e:
                    log.info(
                        "PostgreSQL store %s: the listening connection was lost (%s)",
                        self._shown,
                        self._scrub(_first_line(e)),
                    )
                    self._unlisten()
                    return True
        finally:
            if self._pool is None:
                self._unlisten()
            self._waiting.release()

    def _listen(self) -> Connection:
        """The listening connection, with every notification it got before now read
        and dropped (the caller's revision read covers them). Called with
        ``_waiting`` held."""
        import psycopg
        from psycopg import sql

        listener = self._listener
        if listener is not None:
            try:
                # Not timeout=0, which reads nothing: a moment's wait reads what the
                # socket holds, and so finds a connection the server has closed.
                for _ in listener.notifies(timeout=0.001):
                    pass
            except psycopg.Error:
                self._unlisten()
            else:
                return listener
        self._live()
        try:
            listener = psycopg.connect(self._conninfo, **self._kwargs, autocommit=True)
        except psycopg.Error as e:
            reason = f"({self._scrub(_all_lines(e))}); {_advice(e)}"
            what = f"PostgreSQL store {self._shown}: wait_for_change failed"
            if not _unreachable(e):
                raise StorageError(f"{what}: cannot connect {reason}") from None
            self._down = True  # the pool's connections are as dead: replace it
            raise StorageUnavailable(f"{what}: cannot reach the server {reason}") from None
        try:
            listener.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
        except psycopg.Error as e:
            listener.close()
            raise StorageError(
                f"PostgreSQL store {self._shown}: wait_for_change failed: "
                f"{self._scrub(_first_line(e))}"
            ) from None
        self._listener = listener
        return listener

    def _unlisten(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take the lease ``name`` for ``holder`` for ``ttl`` seconds if it is free,
        expired or released, or renew it if ``holder`` has it; one statement, timed by
        the server's clock.

        :returns: the lease as ``holder`` now holds it, or ``None`` if another has it.
        :raises ValueError: if ``ttl`` is not more than 0.
        :raises StorageUnavailable: if the server cannot be reached.
        :raises StorageError: if the statement fails.
        """
        check_ttl(ttl)
        params = {"name": name, "holder": holder, "ttl": float(ttl)}
        row = self._run("acquire_lease", lambda conn: conn.execute(_ACQUIRE, params).fetchone())
        return None if row is None else Lease(name, holder, int(row[0]), float(row[1]))

    def release_lease(self, name: str, holder: str) -> None:
        """Give up the lease ``name`` if ``holder`` has it; its fence is kept.

        :raises StorageUnavailable: if the server cannot be reached.
        :raises StorageError: if the statement fails.
        """
        self._run(
            "release_lease",
            lambda conn: conn.execute(
                "UPDATE setec_leases SET expires = '-infinity' WHERE name = %s AND holder = %s",
                (name, holder),
            ),
        )

    def leases(self, prefix: str = "") -> list[Lease]:
        """Return the unexpired leases whose names start with ``prefix``, by name.

        :raises StorageUnavailable: if the server cannot be reached.
        :raises StorageError: if the statement fails.
        """
        rows = self._run(
            "leases",
            lambda conn: conn.execute(
                "SELECT name, holder, fence, extract(epoch FROM expires - clock_timestamp())"
                " FROM setec_leases WHERE starts_with(name, %s)"
                ' AND expires > clock_timestamp() ORDER BY name COLLATE "C"',
                (prefix,),
            ).fetchall(),
        )
        return [Lease(str(n), str(h), int(f), float(e)) for n, h, f, e in rows]

    def close(self) -> None:
        """Close the pool and its connections, stopping a :meth:`wait_for_change`
        blocked in another thread within :data:`WAKE_SECONDS` (it raises
        :class:`StorageError`). Calling it twice is harmless."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        # A waiter lets go of the listening connection within WAKE_SECONDS of seeing
        # the pool gone, and closes it itself if this gives up first.
        if self._waiting.acquire(timeout=2 * WAKE_SECONDS):
            try:
                self._unlisten()
            finally:
                self._waiting.release()


@dataclass
class _Attempt:
    """How far a commit got: until it sends its writes, a lost connection has changed
    nothing and the commit may run again on another; after, its outcome is unknown."""

    writing: bool = False


def _check_form(uri: str, shown: str) -> None:
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme.lower() not in PostgresStorage.schemes:
        raise ConfigError(f"storage URI {shown!r} is not a PostgreSQL URI; expected {_FORM}")


def _credentials(uri: str) -> list[str]:
    """The password and sslpassword written in ``uri``, as written and decoded, for
    scrubbing them out of messages that quote parts of the URI."""
    found: list[str] = []
    rest = uri.partition("://")[2]
    userinfo = rest.rpartition("@")[0] if "@" in rest else ""
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    for item in rest.partition("?")[2].split("&"):
        name, _, value = item.partition("=")
        if unquote(name).lower() in SECRET_PARAMETERS:
            found.append(value)
    found += [unquote(v) for v in found]
    return sorted({v for v in found if v}, key=len, reverse=True)


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0].strip()


def _all_lines(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return " ".join(lines) or type(e).__name__


def _channel(schema: str) -> str:
    # Per schema, as the tables are; hashed, because a channel name is at most 63 bytes.
    return "setec_changes_" + hashlib.sha256(schema.encode()).hexdigest()[:16]


def _unreachable(e: Exception) -> bool:
    """Whether a connection failure is the server being out of reach (down, starting,
    unreachable), rather than a refusal a retry will not change (a wrong password, a
    missing database)."""
    said = str(e)
    refused = ("does not exist" in said and "database" in said) or (
        "authentication failed" in said or "password" in said
    )
    return not refused


def _advice(e: Exception) -> str:
    said = str(e)
    if "does not exist" in said and "database" in said:
        return "create the database first (createdb, or CREATE DATABASE), or fix its name"
    if "authentication failed" in said or "password" in said:
        return "check the user and password (PGPASSWORD or ~/.pgpass)"
    return "check that the server is running and reachable at that host and port"


@hookimpl
def setec_register_storage_backends(register: Callable[[type[Any]], None]) -> None:
    """Register :class:`PostgresStorage` (``postgresql://``, ``postgres://``)."""
    register(PostgresStorage)
