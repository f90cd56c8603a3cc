"""Shared fixtures: an in-memory database and the superuser."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from setec_core import Database
from setec_core.testing import new_database


@pytest.fixture
def db() -> Iterator[Database]:
    """A fresh in-memory database (memory storage, dev key, audit in memory)."""
    with new_database() as database:
        yield database
