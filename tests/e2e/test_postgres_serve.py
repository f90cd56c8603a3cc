"""setec-serve on a PostgreSQL store, as a user runs it: secrets kept in PostgreSQL
across restarts, and a database that cannot be used refused at start with one line that
never shows the password."""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path

from console_scripts import clean_env
from peers.postgres_server import PostgresServer
from serve_process import ServeProcess, call, free_port, refused, run_serve

from setec_plugins.postgres_storage import PostgresStorage


def error_lines(stderr: str) -> list[str]:
    """The error lines of setec-serve's stderr (``setec-serve: error: ...``)."""
    return [line for line in stderr.splitlines() if re.search(r"\berror\b", line, re.I)]


def password_of(uri: str) -> str:
    """The password in a test database's URI."""
    password = urllib.parse.urlsplit(uri).password
    assert password, uri
    return password


def test_secrets_live_in_postgresql_across_restarts(tmp_path: Path, postgres_uri: str) -> None:
    """A put through setec-serve on a PostgreSQL store is served after a restart; the
    state directory holds the audit log but no store, and the server's output never
    shows the database password."""
    state = tmp_path / "state"
    args = ("--dev", "--state-dir", str(state), "--storage", postgres_uri)
    with ServeProcess(*args, "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        assert call(server.url, "put", {"Name": "app/db", "Value": "cGc="}).json() == 1
    first_output = server.output
    assert not (state / "secrets.db").exists()
    assert (state / "audit.log").stat().st_size > 0
    with ServeProcess(*args, "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        got = call(server.url, "get", {"Name": "app/db"}).json()
    output = first_output + server.output
    assert got == {"Value": "cGc=", "Version": 1}
    assert password_of(postgres_uri) not in output
    assert "postgresql://" in output  # the store is named, its credentials masked


def test_an_unreachable_database_refuses_to_start(tmp_path: Path) -> None:
    """Nobody listening at the URI's address: exit 1, one line naming the store, no
    traceback, no password."""
    uri = f"postgresql://setec:unreachable-pw-7c1e@127.0.0.1:{free_port()}/setec"
    result = refused(
        "--dev",
        "--state-dir",
        str(tmp_path / "state"),
        "--listen",
        "127.0.0.1:0",
        "--storage",
        uri,
        cwd=tmp_path,
        env=None,
        error_lines=error_lines,
        naming=["PostgreSQL", "127.0.0.1"],
    )
    assert "unreachable-pw-7c1e" not in result.stderr + result.stdout


def test_a_wrong_password_refuses_to_start(tmp_path: Path, postgres_uri: str) -> None:
    """A real server that refuses the password: exit 1, one line, neither password."""
    right = password_of(postgres_uri)
    wrong_uri = postgres_uri.replace(f":{right}@", ":wrong-pw-91d2@")
    result = refused(
        "--dev",
        "--state-dir",
        str(tmp_path / "state"),
        "--listen",
        "127.0.0.1:0",
        "--storage",
        wrong_uri,
        cwd=tmp_path,
        env=None,
        error_lines=error_lines,
        naming=["PostgreSQL"],
    )
    assert "wrong-pw-91d2" not in result.stderr + result.stdout
    assert right not in result.stderr + result.stdout


def test_another_deployments_database_is_refused_and_left_alone(
    tmp_path: Path, postgres_uri: str, postgres: PostgresServer
) -> None:
    """A database made by a setec under another key is refused at start, naming that
    key, and its rows are exactly as they were."""
    args = ("--storage", postgres_uri, "--listen", "127.0.0.1:0")
    with ServeProcess(
        "--dev",
        "--state-dir",
        str(tmp_path / "a"),
        "--kms-key-name",
        "dev://a",
        *args,
        cwd=tmp_path,
    ) as server:
        call(server.url, "put", {"Name": "app/db", "Value": "YQ=="})
    with PostgresStorage(postgres_uri) as store:
        before = store.export()
    refused(
        "--dev",
        "--state-dir",
        str(tmp_path / "b"),
        "--kms-key-name",
        "dev://b",
        "--storage",
        postgres_uri,
        cwd=tmp_path,
        env=None,
        error_lines=error_lines,
        naming=["dev://b"],
    )
    with PostgresStorage(postgres_uri) as store:
        after = store.export()
    assert (after.revision, after.records, after.meta) == (
        before.revision,
        before.records,
        before.meta,
    )


def test_a_backup_restores_into_an_empty_postgresql_database(
    tmp_path: Path, postgres: PostgresServer, postgres_uri: str
) -> None:
    """`backup now` beside a running replica, then `restore` into another, empty
    PostgreSQL database with a new state directory: a server started there serves the
    secrets, and a restore into the non-empty database is refused, writing nothing."""
    sink = f"dir://{tmp_path / 'backups'}"
    key = ("--kms-key-name", "dev://")
    source = ("--dev", "--state-dir", str(tmp_path / "a"), "--storage", postgres_uri)
    with ServeProcess(*source, "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
        assert call(server.url, "put", {"Name": "app/db", "Value": "cmVzdG9yZWQ="}).json() == 1
        taken = run_serve(
            "backup",
            "now",
            "--storage",
            postgres_uri,
            *key,
            "--backup",
            sink,
            cwd=tmp_path,
            env=clean_env(),
        )
        assert taken.returncode == 0, taken.stderr
    target = postgres.new_database()
    try:
        restore = ("restore", "latest", *key, "--backup", sink, "--storage", target)
        done = run_serve(
            *restore, "--state-dir", str(tmp_path / "b"), cwd=tmp_path, env=clean_env()
        )
        assert done.returncode == 0, done.stderr
        again = run_serve(
            *restore, "--state-dir", str(tmp_path / "c"), cwd=tmp_path, env=clean_env()
        )
        assert again.returncode != 0
        assert "not empty" in again.stderr
        args = ("--dev", "--state-dir", str(tmp_path / "b"), "--storage", target)
        with ServeProcess(*args, "--listen", "127.0.0.1:0", cwd=tmp_path) as server:
            got = call(server.url, "get", {"Name": "app/db"}).json()
        assert got == {"Value": "cmVzdG9yZWQ=", "Version": 1}
    finally:
        postgres.drop_database(target)
