"""The dev:// key provider: the contract, plus its warning and its names."""

from __future__ import annotations

import logging

import pytest

from setec_core import KeyMismatchError, KeyProvider
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.testing import KeyProviderContract


class TestDevKeyContract(KeyProviderContract):
    """dev:// meets the KeyProvider contract."""

    @pytest.fixture
    def provider(self) -> KeyProvider:
        return DevKeyProvider.from_uri("dev://contract")

    @pytest.fixture
    def other_provider(self) -> KeyProvider:
        return DevKeyProvider.from_uri("dev://another")


def test_warns_loudly(caplog: pytest.LogCaptureFixture) -> None:
    """Building a dev key logs a warning saying it is not safe for production."""
    with caplog.at_level(logging.WARNING, logger="setec"):
        DevKeyProvider.from_uri("dev://")
    assert "NOT SAFE FOR PRODUCTION" in caplog.text


def test_uri_round_trip() -> None:
    """dev:// and dev://NAME keep their name in .uri."""
    assert DevKeyProvider.from_uri("dev://").uri == "dev://"
    assert DevKeyProvider.from_uri("dev://x").uri == "dev://x"


def test_foreign_blob_is_a_mismatch() -> None:
    """A blob not made by a dev key is a key mismatch naming the key."""
    with pytest.raises(KeyMismatchError, match="dev://"):
        DevKeyProvider().unwrap(b"something else entirely", b"ctx")
