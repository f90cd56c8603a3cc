"""Fixtures shared by the ``setec`` CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from setec_core.testing.server import LocalServer, new_server


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServer]:
    """One in-process server for the module; every caller is a superuser."""
    with new_server() as s:
        yield s
