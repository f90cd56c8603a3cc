"""The ``vault-transit://`` key provider: the data key wrapped by a Vault Transit key.

``vault-transit://HOST[:PORT]/MOUNT/KEY`` names the Transit key ``KEY`` of the secrets
engine mounted at ``MOUNT`` (which may itself have slashes, e.g. ``team/transit``) on
the Vault server at ``HOST`` (port 8200 by default), spoken to over https. The one
query option, ``?tls=false``, speaks plain http instead: for a Vault dev server or a
test fake on loopback, never for production.

The token comes from ``VAULT_TOKEN``; ``VAULT_CACERT`` (a CA bundle to verify the
server with) and ``VAULT_NAMESPACE`` (Vault Enterprise / HCP namespaces) are honoured
when set. ``VAULT_ADDR`` is not read: the key name says where Vault is.

``wrap`` is Transit ``encrypt`` and ``unwrap`` is Transit ``decrypt``, both with the
wrap context bound as ``associated_data`` (base64 of the context bytes), which Vault
authenticates with AEAD key types such as the default ``aes256-gcm96``. The key must
not be ``derived`` (a derived key would need a ``context`` instead). The wrapped blob is
Vault's ciphertext string (``vault:vN:...``) as ASCII bytes, so a rotated Transit key
still opens it while ``min_decryption_version`` allows.

Vault being unreachable, sealed, rate-limiting or failing on its side is retried with
backoff for a bounded time (``SETEC_KMS_RETRY_SECONDS``, 30 s by default), then
:class:`UnavailableError`; a refusal (permission denied, a missing or unsuitable key) is
raised at once; a blob that does not open (another key, another context, altered) is
a :class:`KeyMismatchError`. hvac is imported only when a key is built.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from setec_core.errors import ConfigError, KeyMismatchError, KeyProviderError
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.kms import KmsRetry, key_name_from_uri
from setec_core.sdk import import_sdk
from setec_core.uris import redact

TOKEN_ENV = "VAULT_TOKEN"  # noqa: S105 - the name of the variable, not a token
CACERT_ENV = "VAULT_CACERT"
NAMESPACE_ENV = "VAULT_NAMESPACE"
DEFAULT_PORT = 8200
_FORM = "vault-transit://HOST[:PORT]/MOUNT/KEY (add ?tls=false for plain http)"


def parse_uri(uri: str) -> tuple[str, int, str, str, bool]:
    """Split ``vault-transit://HOST[:PORT]/MOUNT/KEY[?tls=false]`` into
    ``(host, port, mount, key, tls)``.

    :raises ConfigError: if ``uri`` is not of that form.
    """
    bad = ConfigError(f"not a vault-transit key name: {redact(uri)!r}; expected {_FORM}")
    parts = urlsplit("//" + key_name_from_uri(uri, "vault-transit", _FORM))
    if parts.fragment or parts.username or parts.password:
        raise bad
    try:
        host, port = parts.hostname, parts.port or DEFAULT_PORT
    except ValueError:
        raise bad from None
    segments = parts.path.strip("/").split("/")
    if not host or len(segments) < 2 or "" in segments:
        raise bad
    tls = True
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name != "tls" or value not in ("true", "false"):
            raise ConfigError(
                f"unknown option {name}={value!r} in {redact(uri)!r}; the only option is "
                "tls=true|false (false speaks plain http, for tests and dev servers)"
            )
        tls = value == "true"
    return host, port, "/".join(segments[:-1]), segments[-1], tls


class VaultTransitKeyProvider(KeyProvider):
    """Wraps the data key with a Vault Transit key (type ``aes256-gcm96``, not derived)."""

    name = "vault-transit"
    schemes = ("vault-transit",)

    def __init__(
        self,
        host: str,
        port: int,
        mount: str,
        key: str,
        *,
        tls: bool = True,
        retry_seconds: float | None = None,
    ) -> None:
        self._host, self._port, self._mount, self._key, self._tls = host, port, mount, key, tls
        self._kms = KmsRetry(
            service="Vault Transit",
            key=self.uri,
            reach="the network path to Vault and that it is unsealed",
            classify=self._classify,
            seconds=retry_seconds,
        )
        token = os.environ.get(TOKEN_ENV, "")
        if not token:
            raise ConfigError(
                f"{TOKEN_ENV} is not set: the vault-transit key {self.uri} needs a Vault "
                f"token allowed to encrypt and decrypt with it (see docs/keys.md)"
            )
        hvac, self._errors, self._net_errors = import_sdk(
            ["hvac", "hvac.exceptions", "requests.exceptions"],
            user="the vault-transit key provider",
            packages=["hvac"],
            install="pysetec[vault]",
        )
        netloc = f"[{host}]" if ":" in host else host
        cacert = os.environ.get(CACERT_ENV) or None
        # One attempt per call and a short timeout: self._kms retries against its own
        # deadline.
        self._client = hvac.Client(
            url=f"{'https' if tls else 'http'}://{netloc}:{port}",
            token=token,
            verify=cacert if (tls and cacert) else True,
            namespace=os.environ.get(NAMESPACE_ENV) or None,
            timeout=self._kms.attempt_timeout,
        )

    @classmethod
    def from_uri(cls, uri: str) -> VaultTransitKeyProvider:
        """Build from ``vault-transit://HOST[:PORT]/MOUNT/KEY[?tls=false]``."""
        host, port, mount, key, tls = parse_uri(uri)
        return cls(host, port, mount, key, tls=tls)

    @property
    def uri(self) -> str:
        netloc = f"[{self._host}]" if ":" in self._host else self._host
        query = "" if self._tls else "?tls=false"
        return f"vault-transit://{netloc}:{self._port}/{self._mount}/{self._key}{query}"

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        out = self._kms.call(
            "encrypt",
            lambda: self._client.secrets.transit.encrypt_data(
                name=self._key,
                mount_point=self._mount,
                plaintext=_b64(plaintext),
                associated_data=_b64(context),
            ),
        )
        self._check_bound(out, "encrypt")
        return str(out["data"]["ciphertext"]).encode("ascii")

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        try:
            ciphertext = blob.decode("ascii")
        except UnicodeDecodeError:
            raise self._mismatch("it is not a Vault ciphertext") from None
        if not ciphertext.startswith("vault:"):
            raise self._mismatch("it is not a Vault ciphertext")
        out = self._kms.call(
            "decrypt",
            lambda: self._client.secrets.transit.decrypt_data(
                name=self._key,
                mount_point=self._mount,
                ciphertext=ciphertext,
                associated_data=_b64(context),
            ),
        )
        self._check_bound(out, "decrypt")
        try:
            return base64.b64decode(out["data"]["plaintext"], validate=True)
        except (KeyError, TypeError, binascii.Error):
            raise KeyProviderError(
                f"Vault Transit decrypt with key {self.uri} answered without a plaintext"
            ) from None

    def close(self) -> None:
        self._client.adapter.close()

    # --- calling Vault -----------------------------------------------------------

    def _check_bound(self, out: Any, operation: str) -> None:
        """Refuse an answer from a Vault that ignored ``associated_data`` (before 1.13
        it warns "Endpoint ignored these unrecognized parameters" and goes on), since
        the context would then not be bound."""
        warnings = (out or {}).get("warnings") or []
        if any("associated_data" in str(w) for w in warnings):
            raise KeyProviderError(
                f"Vault Transit {operation} with key {self.uri} ignored associated_data, "
                f"so the context would not be bound (Vault: {'; '.join(map(str, warnings))}); "
                f"upgrade Vault to 1.13 or later and use an aes256-gcm96 key"
            )

    def _mismatch(self, said: str) -> KeyMismatchError:
        return KeyMismatchError(
            f"the wrapped key does not open with Vault Transit key {self.uri}: it was made "
            f"with another key or context, or it was altered ({said})"
        )

    def _classify(self, operation: str, e: Exception) -> str | KeyProviderError | None:
        """What a failed call means, for :class:`KmsRetry`: a transient failure's text,
        a refusal to raise, or None for an exception hvac and requests did not raise."""
        errors, net = self._errors, self._net_errors
        transient = (
            errors.VaultDown,
            errors.InternalServerError,
            errors.BadGateway,
            errors.RateLimitExceeded,
            errors.VaultNotInitialized,
        )
        if isinstance(e, transient):
            return f"{type(e).__name__}: {_said(e)}"
        if isinstance(e, errors.VaultError):
            return self._refusal(operation, e)
        if isinstance(e, net.SSLError):
            return KeyProviderError(
                f"Vault at {self.uri} failed the TLS handshake ({operation}): {e}. "
                f"Set {CACERT_ENV} to the CA that signed Vault's certificate"
            )
        if isinstance(e, (net.ConnectionError, net.Timeout)):
            return f"{type(e).__name__}: {e}"
        return None

    def _refusal(self, operation: str, e: Exception) -> KeyProviderError:
        errors = self._errors
        message = _said(e)
        said = f" (Vault: {type(e).__name__}: {message})"
        key = self.uri
        lowered = message.lower()
        if isinstance(e, errors.Forbidden):
            return KeyProviderError(
                f"Vault Transit {operation} with key {key} was refused{said}; give the "
                f'token in {TOKEN_ENV} a policy with capabilities ["update"] on '
                f'path "{self._mount}/{operation}/{self._key}" (see docs/keys.md), and '
                f"check that the token has not expired"
            )
        if isinstance(e, errors.InvalidRequest):
            if "not found" in lowered:
                return KeyProviderError(
                    f"Vault Transit {operation} with key {key} was refused{said}; create "
                    f"the key (vault write -f {self._mount}/keys/{self._key} "
                    f"type=aes256-gcm96) or fix the key name"
                )
            if "context" in lowered or "derivation" in lowered or "associated" in lowered:
                return KeyProviderError(
                    f"Vault Transit {operation} with key {key} was refused{said}; use a "
                    f"key that is not derived and of an AEAD type such as aes256-gcm96"
                )
            if operation == "decrypt":
                return self._mismatch(f"Vault: {message}")
        advice = {
            "InvalidPath": f"check that a Transit engine is mounted at {self._mount}/",
            "Unauthorized": f"check the token in {TOKEN_ENV}",
        }.get(type(e).__name__, "check the key and the token")
        return KeyProviderError(
            f"Vault Transit {operation} with key {key} was refused{said}; {advice}"
        )


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _said(e: Exception) -> str:
    """Vault's own error text, without the URL hvac appends."""
    errors = getattr(e, "errors", None)
    if errors:
        return "; ".join(str(x) for x in errors)
    return str(e.args[0]) if e.args and e.args[0] else type(e).__name__


@hookimpl
def setec_register_key_providers(register: Any) -> None:
    """Register the ``vault-transit://`` key provider."""
    register(VaultTransitKeyProvider)
