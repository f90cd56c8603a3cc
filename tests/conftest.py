"""Shared fixtures: an in-memory database, and a throwaway PostgreSQL server for the
session with a fresh database on it for each test that asks for one."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from go_like_server import GoLikeServer
from hypothesis import settings
from peers.postgres_server import PostgresMissingError, PostgresServer

from setec_core import Database
from setec_core.testing import new_database

# No per-example deadline: the suite runs beside servers and subprocesses, and a slow
# example on a loaded machine says nothing about correctness (hypothesis's 200 ms
# default made the wire fuzz test fail once in a full run).
settings.register_profile("setec", deadline=None)
settings.load_profile("setec")


@pytest.fixture
def db() -> Iterator[Database]:
    """A fresh in-memory database (memory storage, dev key, audit in memory)."""
    with new_database() as database:
        yield database


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


@pytest.fixture
def go_like_server() -> Iterator[GoLikeServer]:
    """A loopback stand-in for a Go setec server with no secrets: every request is 404,
    and what was sent is recorded (:class:`go_like_server.GoLikeServer`)."""
    with GoLikeServer() as server:
        yield server
