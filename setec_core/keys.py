"""The key-provider interface: where the key-encryption key (KEK) lives.

A key provider wraps and unwraps the database's data key (DEK) and nothing else. It
is called when a store is created, when it is opened and when keys are rotated,
never per request, so a remote KMS costs one round trip per start.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

from setec_core.options import Option
from setec_core.uris import redact


class KeyProvider(ABC):
    """Wraps the data key under a key-encryption key held elsewhere (a KMS).

    Subclasses set :attr:`name` (kebab-case, e.g. ``"aws-kms"``) and :attr:`schemes`
    (the URI schemes that select them, e.g. ``("aws-kms",)``), and implement
    :meth:`from_uri`, :meth:`wrap` and :meth:`unwrap`. They may declare
    :attr:`options` and :attr:`bare_prefixes`.

    ``context`` is associated data: a blob wrapped with one context must fail to
    unwrap with any other. Providers bind it with the KMS's own mechanism
    (encryption context, additional authenticated data, derivation context).
    """

    name: ClassVar[str]
    schemes: ClassVar[tuple[str, ...]]
    #: The ``setec-serve`` options this provider takes (docs/plugins.md, "Plugin
    #: options"). A provider that declares any is built as ``from_uri(uri,
    #: options=VALUES)``, ``VALUES`` holding each option's value by its ``dest``.
    options: ClassVar[Sequence[Option]] = ()
    #: Starts of a ``--kms-key-name`` value without a scheme that mean this provider:
    #: ``VALUE`` is read as ``SCHEME://VALUE`` with the first of :attr:`schemes` (the AWS
    #: KMS provider's ``"arn:"`` makes a bare ARN work, as in Go setec).
    bare_prefixes: ClassVar[tuple[str, ...]] = ()

    @classmethod
    @abstractmethod
    def from_uri(cls, uri: str) -> KeyProvider:
        """Build the provider for ``uri`` (e.g. ``dev://`` or ``aws-kms://arn:...``).

        A provider that declares :attr:`options` takes them as a keyword argument too:
        ``from_uri(uri, *, options)``.

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

    def __repr__(self) -> str:
        """``AwsKmsKeyProvider('aws-kms://arn:...')``: the class and :attr:`uri`, with any
        credentials in it redacted."""
        return f"{type(self).__name__}({redact(self.uri)!r})"

    def close(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing
        """Release clients and connections. The default does nothing."""
