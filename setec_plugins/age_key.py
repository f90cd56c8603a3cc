"""The ``age://`` key provider: the data key encrypted to age recipients, decrypted at
start with an age identity file (for operators who already keep age keys, as SOPS
users do).

There is no key-encryption key held by a service here: the data key itself is encrypted
with age (https://age-encryption.org/v1) to one or more recipients, and whoever holds
a matching identity (private key) decrypts it. The provider wraps the data key directly,
which is what :class:`~setec_core.keys.KeyProvider` asks of it.

``age://`` takes its recipients from the URI, comma-separated and percent-encoded
(``age://age1...``, ``age://age1...,ssh-ed25519%20AAAA...``), and from the repeatable
``--age-recipient`` option (an ``age1...`` X25519 recipient or an ``ssh-ed25519`` /
``ssh-rsa`` public key line), each one more way to decrypt (a break-glass key); the
identity file's own public keys always come first, so ``age://`` alone encrypts to the
server's own key. The identity comes from ``--age-identity-file PATH``
(``SETEC_AGE_IDENTITY_FILE``) and never from the URI or an option value; that it
decrypts what is wrapped is checked when the provider is built, so that a store is
never written under keys this server cannot open again.

The wrapped blob is a binary age file, which ``age -d -i IDENTITY`` decrypts to
``b"setec-age-v1\\n" || SHA-256(context) || data key``: age has no associated data, so
the context is bound inside the encrypted payload and checked after decryption.
pyrage (bindings to rage, the Rust age implementation) is imported only when a key is
built.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote, unquote

from setec_core.errors import ConfigError, KeyMismatchError, KeyProviderError
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.kms import key_name_from_uri
from setec_core.options import Option
from setec_core.sdk import import_sdk

log = logging.getLogger("setec.keys.age")

IDENTITY_ENV = "SETEC_AGE_IDENTITY_FILE"
MAGIC = b"setec-age-v1\n"
"""The start of the payload inside the age file, before SHA-256 of the context."""
_DIGEST = hashlib.sha256().digest_size
_FORM = "age:// or age://RECIPIENT[,RECIPIENT...] (age1... or a percent-encoded SSH key)"
_SSH_TYPES = ("ssh-ed25519", "ssh-rsa")
_UNENCRYPTED = (
    "setec cannot ask for a passphrase at start: use an unencrypted identity file "
    "readable only by setec's user (chmod 600), kept off the database's disk"
)


def _pyrage() -> ModuleType:
    (pyrage,) = import_sdk(
        ["pyrage"], user="the age key provider", packages=["pyrage"], install="pysetec[age]"
    )
    return pyrage


def _looks_private(text: str) -> bool:
    """Whether ``text`` is a private key someone put where a recipient belongs."""
    upper = text.upper()
    return "AGE-SECRET-KEY-" in upper or "PRIVATE KEY" in upper or "AGE-PLUGIN-" in upper


def parse_recipients(values: Sequence[str], pyrage: ModuleType) -> list[tuple[str, Any]]:
    """Parse recipients: each value an ``age1...`` X25519 recipient or an SSH public key
    line (``ssh-ed25519 AAAA... [comment]``; the comment is dropped). Values split on
    whitespace by the environment are joined again (``ssh-ed25519``, ``AAAA...``).

    :returns: ``(text, recipient)`` pairs; ``text`` is the canonical form (no comment).
    :raises ConfigError: if a value is not a recipient, naming it, or is a private key,
        without showing it.
    """
    out: list[tuple[str, Any]] = []
    for value in values:
        if _looks_private(value):
            raise ConfigError(
                "an age recipient was given a private key (an identity): never put one in "
                "the URI or an option; give its public key (age-keygen -y FILE, or the SSH "
                "key's .pub) as the recipient and the private key in --age-identity-file"
            )
        words = value.split()
        while words:
            word = words.pop(0)
            if word in _SSH_TYPES and words:
                text = f"{word} {words.pop(0)}"
                words = []  # the rest of an SSH key line is its comment
                make = pyrage.ssh.Recipient.from_str
            elif word.startswith("age1"):
                text, make = word, pyrage.x25519.Recipient.from_str
            else:
                raise ConfigError(
                    f"malformed age recipient {word!r}: give an age1... X25519 recipient "
                    "(age-keygen -y IDENTITY) or an ssh-ed25519/ssh-rsa public key line; "
                    "age plugin recipients are not supported"
                )
            try:
                recipient = make(text)
            except (pyrage.RecipientError, ValueError) as e:
                raise ConfigError(
                    f"malformed age recipient {text!r} ({e}): check that it was copied whole"
                ) from None
            if text not in (t for t, _ in out):
                out.append((text, recipient))
    return out


class AgeKeyProvider(KeyProvider):
    """Encrypts the data key to age recipients; decrypts it with an age identity file."""

    name = "age"
    schemes = ("age",)
    options = (
        Option(
            "--age-identity-file",
            "The age identity file (age-keygen output, or an unencrypted ssh-ed25519 or "
            "ssh-rsa private key) that decrypts the store's data key.",
            type=Path,
        ),
        Option(
            "--age-recipient",
            "Also encrypt the data key to this age1... recipient or SSH public key line "
            "(repeatable: each is one more way to decrypt, such as a break-glass key).",
            multiple=True,
            metavar="RECIPIENT",
        ),
    )

    def __init__(self, identity_file: Path, recipients: Sequence[str] = ()) -> None:
        self._pyrage = pyrage = _pyrage()
        self._identity_file = identity_file
        self._identities, self._own = _read_identity_file(identity_file, pyrage)
        # The identity's own public keys always come first: the server must be able
        # to open what it wraps; the others are further ways to decrypt (break-glass).
        parsed = parse_recipients([*self._own, *recipients], pyrage)
        if not parsed:
            raise ConfigError(
                f"the age key provider has no recipient to encrypt to: the identity file "
                f"{identity_file}'s public key could not be derived; give --age-recipient"
            )
        self._recipients = parsed
        self._check_identity_decrypts()

    @classmethod
    def from_uri(cls, uri: str, *, options: Mapping[str, Any] | None = None) -> AgeKeyProvider:
        """Build from ``age://`` or ``age://RECIPIENT[,RECIPIENT...]``.

        :param options: ``age_identity_file`` and ``age_recipient`` (``--age-identity-file``,
            ``--age-recipient``); without them (library use) the identity file is
            ``SETEC_AGE_IDENTITY_FILE``.
        :raises ConfigError: if the URI or a recipient is malformed, or the identity file
            is missing, unreadable, not an age identity, passphrase-protected or cannot
            decrypt what is wrapped to the recipients.
        """
        rest = key_name_from_uri(uri, "age", _FORM)
        if _looks_private(unquote(rest)):
            raise ConfigError(
                "the age:// key name holds a private key (an identity): never put one in a "
                "URI; name its public key (age-keygen -y FILE) and give the private key in "
                "--age-identity-file"
            )
        if any(c in rest for c in "?#/@"):
            raise ConfigError(f"not an age key name: {uri!r}; expected {_FORM}")
        in_uri = [unquote(piece) for piece in rest.split(",") if piece]
        values = dict(options or {})
        identity = values.get("age_identity_file") or os.environ.get(IDENTITY_ENV)
        if not identity:
            raise ConfigError(
                "the age key provider needs the identity file that decrypts the store's "
                f"key: give --age-identity-file PATH (or {IDENTITY_ENV}); the identity "
                "itself never goes in the URI or an option"
            )
        return cls(Path(identity), [*in_uri, *values.get("age_recipient", ())])

    @property
    def uri(self) -> str:
        return "age://" + ",".join(quote(text, safe="") for text, _ in self._recipients)

    @property
    def recipients(self) -> list[str]:
        """The recipients the data key is encrypted to, in canonical form."""
        return [text for text, _ in self._recipients]

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        payload = MAGIC + hashlib.sha256(context).digest() + plaintext
        try:
            return bytes(self._pyrage.encrypt(payload, [r for _, r in self._recipients]))
        except self._pyrage.EncryptError as e:
            raise KeyProviderError(f"age could not encrypt to {self.uri}: {e}") from None

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        pyrage = self._pyrage
        try:
            payload = bytes(pyrage.decrypt(blob, self._identities))
        except pyrage.DecryptError as e:
            if "no matching keys" in str(e).lower():
                raise KeyMismatchError(
                    f"this identity ({self._identity_file}, public key "
                    f"{', '.join(self._own) or 'not derivable'}) cannot decrypt the store's "
                    "key: it was encrypted to other recipients"
                ) from None
            raise KeyMismatchError(
                f"the wrapped key is not an intact age file (age: {e}): it was altered, "
                "cut short or made by another key provider"
            ) from None
        head, body = payload[: len(MAGIC) + _DIGEST], payload[len(MAGIC) + _DIGEST :]
        expected = MAGIC + hashlib.sha256(context).digest()
        if not hmac.compare_digest(head, expected):
            raise KeyMismatchError(
                "the age file decrypts, but not to a setec data key for this context "
                "(another context or not made by setec)"
            )
        return body

    def _check_identity_decrypts(self) -> None:
        """Refuse recipients this server's identity cannot decrypt for: a store wrapped
        to them would not open again."""
        probe = os.urandom(16)
        pyrage = self._pyrage
        blob = pyrage.encrypt(probe, [r for _, r in self._recipients])
        try:
            pyrage.decrypt(blob, self._identities)
        except pyrage.DecryptError:
            raise ConfigError(
                f"the age identity file {self._identity_file} cannot decrypt what is "
                f"encrypted to {', '.join(self.recipients)}: add its own public key "
                f"({', '.join(self._own) or 'age-keygen -y FILE'}) to the recipients, or "
                "give the identity that matches them"
            ) from None


def _read_identity_file(path: Path, pyrage: ModuleType) -> tuple[list[Any], list[str]]:
    """Read the identities in ``path`` and their public keys (where derivable). Nothing
    of the file's content is ever put in a message.

    :raises ConfigError: one line naming the file and what to do.
    """
    try:
        data = path.read_bytes()
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(
            f"the age identity file {path} does not exist: give --age-identity-file the "
            "path of the private key (age-keygen -o FILE makes one)"
        ) from None
    except OSError as e:
        raise ConfigError(
            f"cannot read the age identity file {path} ({e.strerror}): let setec's user "
            "read it (and no one else: chmod 600)"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "the age identity file %s is readable by other users (mode %o); anyone who "
            "reads it decrypts the store's key: chmod 600 it",
            path,
            stat.S_IMODE(mode),
        )
    text = data.decode("utf-8", errors="replace")
    if text.lstrip().startswith(("age-encryption.org/", "-----BEGIN AGE ENCRYPTED FILE")):
        raise ConfigError(f"the age identity file {path} is passphrase-protected; {_UNENCRYPTED}")
    if "-----BEGIN" in text and "PRIVATE KEY-----" in text:
        return _ssh_identity(path, data, pyrage)
    identities, own = [], []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("AGE-PLUGIN-"):
            raise ConfigError(
                f"line {number} of the age identity file {path} is a plugin identity, "
                "which setec does not support: use an X25519 or SSH identity"
            )
        if line.startswith(("age1", *_SSH_TYPES)):
            raise ConfigError(
                f"the age identity file {path} holds a public key (line {number}), not an "
                "identity: give the private key file (age-keygen -o FILE makes one)"
            )
        if not line.startswith("AGE-SECRET-KEY-1"):
            raise ConfigError(
                f"{path} is not an age identity file (line {number} is not an "
                "AGE-SECRET-KEY-1... line): give the file age-keygen -o wrote"
            )
        try:
            identity = pyrage.x25519.Identity.from_str(line)
        except (pyrage.IdentityError, ValueError):
            raise ConfigError(
                f"line {number} of the age identity file {path} is not a valid age "
                "identity (damaged or cut short)"
            ) from None
        identities.append(identity)
        own.append(str(identity.to_public()))
    if not identities:
        raise ConfigError(
            f"the age identity file {path} holds no identity: give the file age-keygen -o wrote"
        )
    return identities, own


def _ssh_identity(path: Path, data: bytes, pyrage: ModuleType) -> tuple[list[Any], list[str]]:
    """An unencrypted ssh-ed25519 or ssh-rsa private key, and its public key line."""
    from cryptography.hazmat.primitives import serialization

    try:
        identity = pyrage.ssh.Identity.from_buffer(data)
    except (pyrage.IdentityError, ValueError) as e:
        if "decrypt" in str(e).lower() or "passphrase" in str(e).lower():
            raise ConfigError(
                f"the SSH identity file {path} is passphrase-protected; {_UNENCRYPTED}"
            ) from None
        raise ConfigError(
            f"{path} is not an age identity: not an ssh-ed25519 or ssh-rsa private key age can use"
        ) from None
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: Any = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
        public = key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        own = [public.decode("ascii")]
    except (ValueError, TypeError, AttributeError):
        own = []  # pyrage can use it; the recipient must then be given explicitly
    return [identity], own


@hookimpl
def setec_register_key_providers(register: Any) -> None:
    """Register the ``age://`` key provider."""
    register(AgeKeyProvider)
