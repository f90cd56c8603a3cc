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

from typing import Any

from setec_core.errors import ConfigError, KeyMismatchError, KeyProviderError
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.kms import KmsRetry, key_name_from_uri
from setec_core.sdk import import_sdk

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
    # Go setec's --kms-key-name takes a bare ARN: "arn:..." means "aws-kms://arn:...".
    bare_prefixes = ("arn:",)

    def __init__(self, arn: str, *, retry_seconds: float | None = None) -> None:
        self._region, resource = parse_arn(arn)
        self._arn = arn
        self._is_key_arn = resource.startswith("key/")
        self._kms = KmsRetry(
            service="AWS KMS",
            key=arn,
            reach=f"the network path to KMS in {self._region}",
            classify=self._classify,
            seconds=retry_seconds,
        )
        boto3, config, self._errors = import_sdk(
            ["boto3", "botocore.config", "botocore.exceptions"],
            user="the aws-kms key provider",
            packages=["boto3"],
            install="pysetec[aws]",
        )
        # One attempt per call and short timeouts: self._kms retries against its own
        # deadline, which botocore's retries and default 60 s timeouts would overrun.
        timeout = self._kms.attempt_timeout
        self._client = boto3.session.Session().client(
            "kms",
            region_name=self._region,
            config=config.Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=min(5.0, timeout),
                read_timeout=timeout,
            ),
        )

    @classmethod
    def from_uri(cls, uri: str) -> AwsKmsKeyProvider:
        """Build from ``aws-kms://ARN`` (a key or alias ARN)."""
        return cls(key_name_from_uri(uri, "aws-kms", _FORM))

    @property
    def uri(self) -> str:
        return f"aws-kms://{self._arn}"

    def _context(self, context: bytes) -> dict[str, str]:
        return {CONTEXT_KEY: context.hex()}

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        out = self._kms.call(
            "Encrypt",
            lambda: self._client.encrypt(
                KeyId=self._arn, Plaintext=plaintext, EncryptionContext=self._context(context)
            ),
        )
        return bytes(out["CiphertextBlob"])

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        out = self._kms.call(
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

    def _classify(self, operation: str, e: Exception) -> str | KeyProviderError | None:
        """What a failed call means, for :class:`KmsRetry`: a transient failure's text,
        a refusal to raise, or None for an exception botocore did not raise."""
        errors = self._errors
        if isinstance(e, errors.ClientError):
            error = e.response.get("Error", {})
            code = str(error.get("Code", "Unknown"))
            message = str(error.get("Message") or "").strip()
            status = int(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code not in _TRANSIENT_CODES and status < 500:
                return self._refusal(operation, code, message)
            return f"{code}: {message}" if message else code
        if isinstance(e, errors.NoCredentialsError):
            return KeyProviderError(
                f"no AWS credentials found for KMS key {self._arn}: configure the "
                "standard AWS chain (AWS_PROFILE, AWS_ACCESS_KEY_ID/"
                "AWS_SECRET_ACCESS_KEY, an instance or task role)"
            )
        if isinstance(e, (errors.ConnectionError, errors.HTTPClientError)):
            return f"{type(e).__name__}: {e}"
        if isinstance(e, errors.BotoCoreError):
            return KeyProviderError(
                f"AWS KMS {operation} with key {self._arn} failed: {type(e).__name__}: {e}"
            )
        return None

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
