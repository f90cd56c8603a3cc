"""The key-provider interface: where the key-encryption key (KEK) lives.

A key provider wraps and unwraps the database's data key (DEK) and nothing else. It
is called when a store is created, when it is opened and when keys are rotated,
never per request, so a remote KMS costs one round trip per start.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar


class KeyProvider(ABC):
    """Wraps the data key under a key-encryption key held elsewhere (a KMS).

    Subclasses set :attr:`name` (kebab-case, e.g. ``"aws-kms"``) and :attr:`schemes`
    (the URI schemes that select them, e.g. ``("aws-kms",)``), and implement
    :meth:`from_uri`, :meth:`wrap` and :meth:`unwrap`.

    ``context`` is associated data: a blob wrapped with one context must fail to
    unwrap with any other. Providers bind it with the KMS's own mechanism
    (encryption context, additional authenticated data, derivation context).
    """

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str) -> KeyProvider:
        """Build the provider for ``uri`` (e.g. ``dev://`` or ``aws-kms://arn:...``).

        :raises ConfigError: if the URI is malformed; the message shows the expected form.
        """

    @property
    @abstractmethod
    def uri(self) -> str:
        """The URI that selects this key (it names a key, never contains one). It is
        stored beside the wrapped data key so that a mismatch can be explained."""

    @abstractmethod
    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt ``plaintext`` (a data key) bound to ``context``; return an opaque blob.

        :raises KeyProviderError: if the KMS refuses or cannot be reached.
        """

    @abstractmethod
    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        """Decrypt a blob made by :meth:`wrap` with the same key and ``context``.

        :raises KeyMismatchError: if the blob was wrapped under another key or context,
            or was altered.
        :raises KeyProviderError: if the KMS refuses or cannot be reached.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release clients and connections. The default does nothing."""
