"""The client tests' server and client: the pytest plugin's own fixtures
(setec_core/testing/pytest_plugin.py) under shorter names."""

from __future__ import annotations

import pytest

from setec_core.client import Client
from setec_core.testing.server import LocalServer


@pytest.fixture
def server(setec_server: LocalServer) -> LocalServer:
    """A real server on loopback over a fresh in-memory database; superuser callers."""
    return setec_server


@pytest.fixture
def client(setec_client: Client) -> Client:
    """A Client of ``server``."""
    return setec_client
