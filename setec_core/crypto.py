"""Envelope encryption of records and of the store's secret metadata.

A random 256-bit data key (DEK) is wrapped by the key provider under the context
``setec DEK v1`` and kept, wrapped, in the store's metadata. Keys are derived from the
DEK with HKDF-SHA256, each under its own label:

* the record key, for AES-256-GCM. Each record is ``nonce (12 bytes) || ciphertext ||
  tag``, sealed with associated data ``setec record v1 \\0 || storage key``, so a record
  moved to another key, swapped with another record, or altered fails to open;
* the name key, for HMAC-SHA256 of the secret name, which gives the storage key. The
  name itself lives only inside the ciphertext, so storage learns how many secrets
  there are and their sizes, and nothing else;
* the metadata key, for AES-256-GCM of metadata entries that must stay secret (the
  audit key), with associated data ``setec meta v1 \\0 || entry name``;
* any other purpose's key, through :meth:`DataKey.derive` (the store's integrity
  entry and backups use it).

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
_META_AD = b"setec meta v1\x00"


def _derive(dek: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(dek)


class Mac:
    """HMAC-SHA256 under one key, with the key's inner and outer hash states computed
    once: the same output as :func:`hmac.digest`, at about half the cost per message
    (what matters for one MAC per audit line and per record at open).

    It never shows its key in its ``repr``.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        padded = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(padded.translate(_IPAD))
        self._outer = hashlib.sha256(padded.translate(_OPAD))

    def digest(self, message: bytes) -> bytes:
        """Return HMAC-SHA256(key, ``message``), 32 bytes."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def hexdigest(self, message: bytes) -> str:
        """Return HMAC-SHA256(key, ``message``) as 64 lower-case hex digits."""
        inner = self._inner.copy()
        inner.update(message)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.hexdigest()

    def __repr__(self) -> str:
        return "Mac(<redacted>)"


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


class DataKey:
    """The unwrapped data key and the keys derived from it.

    It never shows key material in its ``repr``; :attr:`material` is for re-wrapping
    under a new key-encryption key only.
    """

    __slots__ = ("_aead", "_dek", "_meta_aead", "_name_key")

    def __init__(self, dek: bytes) -> None:
        if len(dek) != DEK_SIZE:
            raise CorruptStoreError(
                f"the unwrapped data key is {len(dek)} bytes, not {DEK_SIZE}; "
                "the store's metadata is damaged: restore it from a backup"
            )
        self._dek = bytes(dek)
        self._aead = AESGCM(_derive(dek, b"setec record encryption v1"))
        self._name_key = _derive(dek, b"setec record name v1")
        self._meta_aead = AESGCM(_derive(dek, b"setec metadata encryption v1"))

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

    def seal_meta(self, name: str, plaintext: bytes) -> bytes:
        """Encrypt ``plaintext`` as the value of the metadata entry ``name`` (for
        metadata that must stay secret, such as the audit key)."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._meta_aead.encrypt(nonce, plaintext, _META_AD + name.encode())

    def open_meta(self, name: str, data: bytes) -> bytes:
        """Decrypt the value of the metadata entry ``name`` made by :meth:`seal_meta`.

        :raises CorruptStoreError: if it was altered, copied from another entry, or
            sealed under another data key.
        """
        try:
            return self._meta_aead.decrypt(
                data[:NONCE_SIZE], data[NONCE_SIZE:], _META_AD + name.encode()
            )
        except (InvalidTag, ValueError):
            raise CorruptStoreError(
                f"the store's {name!r} metadata entry fails authentication: it was altered "
                "or comes from another store; restore the store from a backup"
            ) from None
