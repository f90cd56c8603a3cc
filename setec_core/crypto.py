"""Envelope encryption of records (ARCHITECTURE.md §4).

A random 256-bit data key (DEK) is wrapped by the key provider under the context
``setec DEK v1`` and kept, wrapped, in the store's metadata. Two keys are derived from
the DEK with HKDF-SHA256:

* the record key, for AES-256-GCM. Each record is ``nonce (12 bytes) || ciphertext ||
  tag``, sealed with associated data ``setec record v1 \\0 || storage key``, so a record
  moved to another key, swapped with another record, or altered fails to open;
* the name key, for HMAC-SHA256 of the secret name, which gives the storage key. The
  name itself lives only inside the ciphertext, so storage learns how many secrets
  there are and their sizes, and nothing else.

A random 96-bit nonce per seal is safe far beyond any realistic number of writes under
one DEK (the NIST bound is 2^32 messages); ``rotate-dek`` starts a fresh key anyway.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from setec_core.errors import CorruptStoreError

DEK_SIZE = 32
NONCE_SIZE = 12
DEK_CONTEXT = b"setec DEK v1"
_RECORD_AD = b"setec record v1\x00"


def _derive(dek: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(dek)


class DataKey:
    """The unwrapped data key and the two keys derived from it.

    It never shows key material in its ``repr``; :attr:`material` is for re-wrapping
    under a new key-encryption key only.
    """

    __slots__ = ("_aead", "_dek", "_name_key")

    def __init__(self, dek: bytes) -> None:
        if len(dek) != DEK_SIZE:
            raise CorruptStoreError(
                f"the unwrapped data key is {len(dek)} bytes, not {DEK_SIZE}; "
                "the store's metadata is damaged: restore it from a backup"
            )
        self._dek = bytes(dek)
        self._aead = AESGCM(_derive(dek, b"setec record encryption v1"))
        self._name_key = _derive(dek, b"setec record name v1")

    @classmethod
    def generate(cls) -> DataKey:
        """Return a new random data key."""
        return cls(os.urandom(DEK_SIZE))

    @property
    def material(self) -> bytes:
        """The raw DEK, to be wrapped by a key provider. Never log or store it."""
        return self._dek

    def __repr__(self) -> str:
        return "DataKey(<redacted>)"

    @property
    def check_value(self) -> bytes:
        """16 bytes that identify this data key without revealing it (HKDF output under
        its own label), kept in the store's ``dek-check`` metadata: a process holding
        a data key can tell whether the store still uses it."""
        return _derive(self._dek, b"setec dek check v1")[:16]

    def derive(self, info: bytes) -> bytes:
        """Return a 256-bit key derived from the DEK for the purpose named by ``info``
        (HKDF-SHA256; each purpose has its own label, so keys never repeat)."""
        return _derive(self._dek, info)

    def storage_key(self, name: str) -> bytes:
        """Return the storage key of the secret ``name``: HMAC-SHA256 under the name key."""
        return hmac.new(self._name_key, name.encode("utf-8"), hashlib.sha256).digest()

    def seal(self, storage_key: bytes, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` as the record at ``storage_key``."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aead.encrypt(nonce, plaintext, _RECORD_AD + storage_key)

    def open(self, storage_key: bytes, data: bytes) -> bytes:
        """Decrypt the record at ``storage_key``.

        :raises CorruptStoreError: if the record was altered, moved from another key,
            or sealed under another data key.
        """
        if len(data) < NONCE_SIZE + 16:
            raise CorruptStoreError(
                f"record {storage_key.hex()[:16]}... is truncated ({len(data)} bytes); "
                "restore the store from a backup"
            )
        try:
            return self._aead.decrypt(
                data[:NONCE_SIZE], data[NONCE_SIZE:], _RECORD_AD + storage_key
            )
        except InvalidTag:
            raise CorruptStoreError(
                f"record {storage_key.hex()[:16]}... fails authentication: it was altered "
                "or moved; restore the store from a backup"
            ) from None
