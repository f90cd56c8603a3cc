"""Fixtures for the plugin tests: a throwaway PostgreSQL server for the session, and a
fresh database on it for each test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from peers.postgres_server import PostgresMissingError, PostgresServer


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL cluster on loopback for the whole session, started on first use.
    Without PostgreSQL installed the tests that need it fail (CI installs it); they
    are never skipped."""
    try:
        server = PostgresServer.start()
    except PostgresMissingError as e:
        pytest.fail(str(e))
    with server:
        yield server


@pytest.fixture
def postgres_uri(postgres: PostgresServer) -> Iterator[str]:
    """The URI (password included) of a new, empty database of its own, dropped after
    the test."""
    uri = postgres.new_database()
    yield uri
    postgres.drop_database(uri)
