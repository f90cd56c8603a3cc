"""The ``aws-kms://`` key provider: the data key wrapped by an AWS KMS key.

``aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID`` (or ``...:alias/NAME``); a bare
``arn:aws:kms:...`` means the same (see :meth:`setec_core.plugins.Plugins.key_provider`).
The region comes from the ARN, credentials from the standard AWS chain (environment,
shared config and credentials files, SSO, container and instance roles), and the
endpoint from boto3's own settings, so ``AWS_ENDPOINT_URL_KMS`` points it at LocalStack
or moto.

``wrap`` is KMS ``Encrypt`` and ``unwrap`` is ``Decrypt`` with ``KeyId`` pinned, both
with the encryption context ``{"associatedData": hex(context)}``: the convention of
tink-go-awskms, which Go setec uses, so IAM conditions written for Go setec still hold.

KMS being unreachable or throttling is retried with backoff for a bounded time
(``SETEC_KMS_RETRY_SECONDS``, 30 s by default), then :class:`UnavailableError`; a
refusal (disabled, deleted, wrong or forbidden key) is raised at once. boto3 is
imported only when a key is built, so setec works without it until one is asked for.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from setec_core.errors import (
    ConfigError,
    KeyMismatchError,
    KeyProviderError,
    UnavailableError,
)
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.uris import redact
from setec_plugins.kms_retry import RETRY_ENV, Backoff, retry_budget

log = logging.getLogger("setec.keys.aws_kms")

T = TypeVar("T")

CONTEXT_KEY = "associatedData"
_FORM = "aws-kms://arn:aws:kms:REGION:ACCOUNT:key/ID (or ...:alias/NAME)"

# Worth another try: KMS is busy or briefly broken. Every other error code is a refusal.
_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "RequestLimitExceeded",
        "KMSInternalException",
        "DependencyTimeoutException",
        "KeyUnavailableException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)
_MISMATCH_CODES = frozenset({"InvalidCiphertextException", "IncorrectKeyException"})


def _import_aws() -> tuple[Any, Any, Any]:
    """Return ``(boto3, botocore.config, botocore.exceptions)``, or say how to get them."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as e:
        raise ConfigError(
            f"the aws-kms key provider needs boto3, which is not installed ({e}); "
            "install it with: pip install 'pysetec[aws]'"
        ) from None
    return boto3, botocore.config, botocore.exceptions


def parse_arn(arn: str) -> tuple[str, str]:
    """Split a KMS key or alias ARN into ``(region, resource)``.

    :raises ConfigError: if ``arn`` is not a KMS key or alias ARN.
    """
    parts = arn.split(":", 5)
    ok = (
        len(parts) == 6
        and parts[0] == "arn"
        and parts[1].startswith("aws")
        and parts[2] == "kms"
        and parts[3] != ""
        and parts[4] != ""
        and any(
            parts[5].startswith(kind) and len(parts[5]) > len(kind) for kind in ("key/", "alias/")
        )
    )
    if not ok:
        raise ConfigError(f"not an AWS KMS key ARN: {arn!r}; expected {_FORM}")
    return parts[3], parts[5]


class AwsKmsKeyProvider(KeyProvider):
    """Wraps the data key with an AWS KMS symmetric key named by its ARN."""

    name = "aws-kms"
    schemes = ("aws-kms",)

    def __init__(self, arn: str, *, retry_seconds: float | None = None) -> None:
        self._region, resource = parse_arn(arn)
        self._arn = arn
        self._is_key_arn = resource.startswith("key/")
        self._retry_seconds = retry_budget() if retry_seconds is None else retry_seconds
        boto3, config, self._errors = _import_aws()
        # One attempt per call and short timeouts: _call retries against its own
        # deadline, which botocore's retries and default 60 s timeouts would overrun.
        cap = max(1.0, self._retry_seconds)
        self._client = boto3.session.Session().client(
            "kms",
            region_name=self._region,
            config=config.Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=min(5.0, cap),
                read_timeout=min(20.0, cap),
            ),
        )

    @classmethod
    def from_uri(cls, uri: str) -> AwsKmsKeyProvider:
        """Build from ``aws-kms://ARN`` (a key or alias ARN)."""
        scheme, sep, arn = uri.partition("://")
        if scheme != "aws-kms" or not sep:
            raise ConfigError(f"not an aws-kms URI: {redact(uri)!r}; expected {_FORM}")
        return cls(arn)

    @property
    def uri(self) -> str:
        return f"aws-kms://{self._arn}"

    def __repr__(self) -> str:
        return f"AwsKmsKeyProvider({self.uri!r})"

    def _context(self, context: bytes) -> dict[str, str]:
        return {CONTEXT_KEY: context.hex()}

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        out = self._call(
            "Encrypt",
            lambda: self._client.encrypt(
                KeyId=self._arn, Plaintext=plaintext, EncryptionContext=self._context(context)
            ),
        )
        return bytes(out["CiphertextBlob"])

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        out = self._call(
            "Decrypt",
            lambda: self._client.decrypt(
                KeyId=self._arn, CiphertextBlob=blob, EncryptionContext=self._context(context)
            ),
        )
        # As tink-go-awskms does: a key ARN must be the key that actually decrypted.
        if self._is_key_arn and out.get("KeyId") != self._arn:
            raise KeyMismatchError(
                f"AWS KMS decrypted the wrapped key with {out.get('KeyId')!r}, "
                f"not the configured key {self._arn}"
            )
        return bytes(out["Plaintext"])

    def close(self) -> None:
        self._client.close()

    # --- calling KMS -------------------------------------------------------------

    def _call(self, operation: str, call: Callable[[], T]) -> T:
        backoff = Backoff(self._retry_seconds)
        while True:
            try:
                return call()
            except self._errors.ClientError as e:
                error = e.response.get("Error", {})
                code = str(error.get("Code", "Unknown"))
                message = str(error.get("Message") or "").strip()
                status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if code not in _TRANSIENT_CODES and status < 500:
                    raise self._refusal(operation, code, message) from None
                last = f"{code}: {message}" if message else code
            except self._errors.NoCredentialsError:
                raise KeyProviderError(
                    f"no AWS credentials found for KMS key {self._arn}: configure the "
                    "standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
                    "AWS_SECRET_ACCESS_KEY, an instance or task role)"
                ) from None
            except (self._errors.ConnectionError, self._errors.HTTPClientError) as e:
                last = f"{type(e).__name__}: {e}"
            except self._errors.BotoCoreError as e:
                raise KeyProviderError(
                    f"AWS KMS {operation} with key {self._arn} failed: {type(e).__name__}: {e}"
                ) from None
            if not backoff.pause(f"AWS KMS {operation} with key {self._arn}", last):
                raise UnavailableError(
                    f"AWS KMS key {self._arn} could not be reached in {self._retry_seconds:g} s "
                    f"({operation}); last error: {last}. Check the network path to KMS in "
                    f"{self._region}, or raise {RETRY_ENV}"
                )

    def _refusal(self, operation: str, code: str, message: str) -> KeyProviderError:
        said = f" (AWS: {code}: {message})" if message else f" (AWS: {code})"
        key = self._arn
        if code in _MISMATCH_CODES:
            return KeyMismatchError(
                f"the wrapped key does not open with AWS KMS key {key}: it was made with "
                f"another key or context, or it was altered{said}"
            )
        if code == "AccessDeniedException" and operation == "Decrypt":
            # KMS answers AccessDenied both when the blob belongs to a key this region or
            # account cannot see and when the caller lacks kms:Decrypt: say both.
            return KeyMismatchError(
                f"AWS KMS refused to decrypt with key {key}: the wrapped key was made with "
                f"another key (or region, or account), or these credentials lack "
                f"kms:Decrypt on it{said}"
            )
        advice = {
            "AccessDeniedException": f"grant these credentials kms:{operation} on the key "
            "(see docs/keys.md for the policy)",
            "DisabledException": "enable it (aws kms enable-key) or configure another key",
            "KMSInvalidStateException": "it is pending deletion or not yet usable; cancel "
            "the deletion (aws kms cancel-key-deletion) and enable it, or configure "
            "another key",
            "NotFoundException": f"check the ARN: the key or alias must exist in "
            f"{self._region} in that account",
            "InvalidKeyUsageException": "use a symmetric ENCRYPT_DECRYPT key",
        }.get(code, "check the key and these credentials")
        return KeyProviderError(f"AWS KMS {operation} with key {key} was refused{said}; {advice}")


@hookimpl
def setec_register_key_providers(register: Any) -> None:
    """Register the ``aws-kms://`` key provider."""
    register(AwsKmsKeyProvider)
