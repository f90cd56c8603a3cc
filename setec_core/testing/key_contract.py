"""The contract every :class:`~setec_core.keys.KeyProvider` must meet, as pytest tests.

Subclass :class:`KeyProviderContract` in your plugin's tests and override the
``provider`` fixture (and ``other_provider``, to check that a different key cannot
unwrap)::

    class TestMyKms(KeyProviderContract):
        @pytest.fixture
        def provider(self):
            return MyKmsKeyProvider.from_uri("mykms://test-key")
"""

from __future__ import annotations

import os

import pytest

from setec_core.errors import KeyMismatchError
from setec_core.keys import KeyProvider

CONTEXT = b"setec DEK v1"


class KeyProviderContract:
    """Wrap/unwrap round trip, context binding and tamper detection."""

    @pytest.fixture
    def provider(self) -> KeyProvider:
        """Return the provider under test. Override this fixture."""
        raise NotImplementedError("override the 'provider' fixture")

    @pytest.fixture
    def other_provider(self) -> KeyProvider | None:
        """Return a provider with a different key, or None to skip that test."""
        return None

    def test_round_trip(self, provider: KeyProvider) -> None:
        """A wrapped data key unwraps to the same bytes with the same context."""
        dek = os.urandom(32)
        assert provider.unwrap(provider.wrap(dek, CONTEXT), CONTEXT) == dek

    def test_blob_hides_the_key(self, provider: KeyProvider) -> None:
        """The wrapped blob does not contain the data key in clear."""
        dek = os.urandom(32)
        assert dek not in provider.wrap(dek, CONTEXT)

    def test_wrong_context_fails(self, provider: KeyProvider) -> None:
        """A blob wrapped under one context does not unwrap under another."""
        blob = provider.wrap(os.urandom(32), CONTEXT)
        with pytest.raises(KeyMismatchError):
            provider.unwrap(blob, b"setec DEK v2")

    @pytest.mark.parametrize("where", ["first", "middle", "last"])
    def test_tampered_blob_fails(self, provider: KeyProvider, where: str) -> None:
        """Flipping one bit anywhere in the blob makes unwrap fail."""
        blob = bytearray(provider.wrap(os.urandom(32), CONTEXT))
        index = {"first": 0, "middle": len(blob) // 2, "last": len(blob) - 1}[where]
        blob[index] ^= 0x01
        with pytest.raises(KeyMismatchError):
            provider.unwrap(bytes(blob), CONTEXT)

    def test_truncated_blob_fails(self, provider: KeyProvider) -> None:
        """A blob cut short does not unwrap."""
        blob = provider.wrap(os.urandom(32), CONTEXT)
        with pytest.raises(KeyMismatchError):
            provider.unwrap(blob[: len(blob) // 2], CONTEXT)

    def test_uri_reopens_the_same_key(self, provider: KeyProvider) -> None:
        """A provider rebuilt from ``provider.uri`` unwraps what the first wrapped."""
        dek = os.urandom(32)
        blob = provider.wrap(dek, CONTEXT)
        again = type(provider).from_uri(provider.uri)
        try:
            assert again.unwrap(blob, CONTEXT) == dek
        finally:
            again.close()

    def test_other_key_fails(
        self, provider: KeyProvider, other_provider: KeyProvider | None
    ) -> None:
        """A provider with a different key cannot unwrap the blob."""
        if other_provider is None:
            pytest.skip("no other_provider fixture given")
        blob = provider.wrap(os.urandom(32), CONTEXT)
        with pytest.raises(KeyMismatchError):
            other_provider.unwrap(blob, CONTEXT)
