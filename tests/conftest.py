"""Shared fixtures: an in-memory database and the superuser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hypothesis import settings

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
