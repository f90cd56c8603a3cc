"""pytest fixtures for programs that use setec (docs/testing.md).

Installing setec registers this plugin with pytest (entry point ``pytest11``, name
``setec``), so a test only has to name a fixture:

- ``setec_db``: a new in-memory :class:`~setec_core.Database`
  (:func:`~setec_core.testing.new_database`), closed after the test.
- ``setec_server``: a :class:`~setec_core.testing.server.LocalServer` serving
  ``setec_db`` on a loopback port; every request is the superuser.
- ``setec_client``: a :class:`~setec_core.client.Client` of ``setec_server``.
- ``setec_ticker``: a :class:`~setec_core.testing.clock.FakeTicker`, to make a Store
  poll exactly when the test says.
- ``setec_clock``: a :class:`~setec_core.testing.clock.FakeClock` at Unix time 1.

Every fixture is function-scoped: each test starts with an empty database. The helpers
are imported when a test first asks for a fixture, so loading the plugin is cheap, and
only ``setec_server`` loads werkzeug, cheroot and requests. Disable the plugin with
``-p no:setec``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from setec_core.client import Client
    from setec_core.database import Database
    from setec_core.testing.clock import FakeClock, FakeTicker
    from setec_core.testing.server import LocalServer


@pytest.fixture
def setec_db() -> Iterator[Database]:
    """A new, empty in-memory database (dev key, audit lines in memory; read them with
    :func:`setec_core.testing.audit_entries`), closed after the test."""
    from setec_core.testing import new_database

    with new_database() as db:
        yield db


@pytest.fixture
def setec_server(setec_db: Database) -> Iterator[LocalServer]:
    """A real setec server on ``127.0.0.1`` serving ``setec_db``, where every request is
    :data:`~setec_core.testing.SUPERUSER`; stopped after the test."""
    from setec_core.testing.server import new_server

    with new_server(setec_db) as server:
        yield server


@pytest.fixture
def setec_client(setec_server: LocalServer) -> Client:
    """A :class:`~setec_core.client.Client` of ``setec_server``."""
    client: Client = setec_server.client()
    return client


@pytest.fixture
def setec_ticker() -> FakeTicker:
    """A :class:`~setec_core.testing.clock.FakeTicker`: pass it to a Store as
    ``ticker=``, then ``setec_ticker.poll()`` makes one poll and waits for it."""
    from setec_core.testing.clock import FakeTicker

    return FakeTicker()


@pytest.fixture
def setec_clock() -> FakeClock:
    """A :class:`~setec_core.testing.clock.FakeClock` standing at Unix time 1: pass it to
    a Store as ``time_now=``, and move it with ``setec_clock.advance(seconds)``."""
    from setec_core.testing.clock import FakeClock

    return FakeClock(1)
