"""The ``dev://`` key provider: a fixed, public, INSECURE key for development and tests.

The key-encryption key is SHA-256 of ``"setec dev key, NOT SECRET: " + NAME``, where
NAME is whatever follows ``dev://`` (empty by default). Anyone can compute it, so a
store under ``dev://`` is only obscured, not protected. Different names give different
keys, which is what tests use to open a store with the wrong key (like Go setec's
``DummyAEAD{Name}``).

Wrapped blobs are ``b"setec-dev-v1:" || nonce (12) || AES-256-GCM(dek, ad=context)``.
"""

from __future__ import annotations

import hashlib
import logging
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from setec_core.errors import KeyMismatchError
from setec_core.keys import KeyProvider

log = logging.getLogger("setec.keys.dev")

_MAGIC = b"setec-dev-v1:"
_NONCE = 12


class DevKeyProvider(KeyProvider):
    """A key provider whose key is public. Never use it for real secrets."""

    name = "dev"
    schemes = ("dev",)

    def __init__(self, label: str = "") -> None:
        self._label = label
        self._aead = AESGCM(
            hashlib.sha256(b"setec dev key, NOT SECRET: " + label.encode()).digest()
        )
        log.warning(
            "dev://%s key provider: the data key is wrapped with a fixed, PUBLIC key. "
            "NOT SAFE FOR PRODUCTION USE",
            label,
        )

    @classmethod
    def from_uri(cls, uri: str) -> DevKeyProvider:
        """Build from ``dev://`` or ``dev://NAME``."""
        return cls(uri.partition("://")[2])

    @property
    def uri(self) -> str:
        return f"dev://{self._label}"

    def __repr__(self) -> str:
        return f"DevKeyProvider({self.uri!r})"

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _MAGIC + nonce + self._aead.encrypt(nonce, plaintext, context)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        if not blob.startswith(_MAGIC):
            raise KeyMismatchError(f"the wrapped key was not made by a dev:// key ({self.uri})")
        body = blob[len(_MAGIC) :]
        try:
            return self._aead.decrypt(body[:_NONCE], body[_NONCE:], context)
        except InvalidTag:
            raise KeyMismatchError(
                f"the wrapped key does not open with {self.uri}: it was made with "
                "another dev:// name or context, or it was altered"
            ) from None
