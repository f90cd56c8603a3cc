"""The ``gcp-kms://`` key provider: the data key wrapped by a Google Cloud KMS key.

``gcp-kms://projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY`` names a
symmetric ``ENCRYPT_DECRYPT`` CryptoKey; KMS picks its primary version to encrypt and
finds the version from the ciphertext to decrypt. Credentials are Application Default
Credentials (``GOOGLE_APPLICATION_CREDENTIALS``, ``gcloud auth application-default
login``, or the metadata server of GCE, GKE and Cloud Run).

``wrap`` is KMS ``Encrypt`` and ``unwrap`` is ``Decrypt``, both with the context as
additional authenticated data (as tink's gcpkms AEAD does) and with the CRC32C integrity
fields Google recommends: setec sends the checksums of what it sends, and checks that
KMS verified them and that what came back matches its checksum. A mismatch means the
data was corrupted in transit and is an error, never retried silently.

KMS being unreachable (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``), throttling or failing on
its side is retried with backoff for a bounded time (``SETEC_KMS_RETRY_SECONDS``, 30 s by
default), then :class:`UnavailableError`; a refusal (disabled or destroyed version,
missing key, no permission) is raised at once.

``SETEC_GCP_KMS_ENDPOINT=HOST:PORT`` is for tests only: it sends the calls to a plain,
unauthenticated gRPC server on that address (no TLS, no credentials).

google-cloud-kms is imported only when a key is built, so setec works without it until
one is asked for.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from setec_core.errors import ConfigError, KeyMismatchError, KeyProviderError
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.kms import KmsRetry, key_name_from_uri
from setec_core.sdk import import_sdk

log = logging.getLogger("setec.keys.gcp_kms")

ENDPOINT_ENV = "SETEC_GCP_KMS_ENDPOINT"
_FORM = "gcp-kms://projects/PROJECT/locations/LOCATION/keyRings/RING/cryptoKeys/KEY"
_NAME = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")

# Worth another try: KMS is unreachable, busy or briefly broken (gRPC status names).
_TRANSIENT = frozenset(
    {"ServiceUnavailable", "DeadlineExceeded", "ResourceExhausted", "InternalServerError"}
)


class GcpKmsKeyProvider(KeyProvider):
    """Wraps the data key with a Google Cloud KMS symmetric CryptoKey."""

    name = "gcp-kms"
    schemes = ("gcp-kms",)

    def __init__(self, key_name: str, *, retry_seconds: float | None = None) -> None:
        if not _NAME.fullmatch(key_name):
            raise ConfigError(f"not a GCP KMS CryptoKey name: {key_name!r}; expected {_FORM}")
        self._key = key_name
        self._kms = KmsRetry(
            service="GCP KMS",
            key=key_name,
            reach="the network path to cloudkms.googleapis.com",
            classify=self._classify,
            seconds=retry_seconds,
        )
        kms_v1, self._errors, self._auth_errors, self._crc, grpc = import_sdk(
            [
                "google.cloud.kms_v1",
                "google.api_core.exceptions",
                "google.auth.exceptions",
                "google_crc32c",
                "grpc",
            ],
            user="the gcp-kms key provider",
            packages=["google-cloud-kms", "google-crc32c"],
            install="pysetec[gcp]",
        )
        # One attempt per call and a bounded timeout: self._kms retries against its own
        # deadline, which google-api-core's default retry (up to 60 s) would overrun.
        self._timeout = self._kms.attempt_timeout
        endpoint = os.environ.get(ENDPOINT_ENV)
        if endpoint:
            from google.cloud.kms_v1.services.key_management_service.transports import (
                KeyManagementServiceGrpcTransport,
            )

            log.warning(
                "%s=%s: GCP KMS calls go to that address without TLS or credentials; "
                "for tests only",
                ENDPOINT_ENV,
                endpoint,
            )
            channel = grpc.insecure_channel(endpoint)
            self._client = kms_v1.KeyManagementServiceClient(
                transport=KeyManagementServiceGrpcTransport(channel=channel, host=endpoint)
            )
            return
        try:
            self._client = kms_v1.KeyManagementServiceClient()
        except self._auth_errors.DefaultCredentialsError:
            raise self._no_credentials() from None

    @classmethod
    def from_uri(cls, uri: str) -> GcpKmsKeyProvider:
        """Build from ``gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K``."""
        return cls(key_name_from_uri(uri, "gcp-kms", _FORM))

    @property
    def uri(self) -> str:
        return f"gcp-kms://{self._key}"

    def _checksum(self, data: bytes) -> int:
        return int(self._crc.value(data))

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        request = {
            "name": self._key,
            "plaintext": plaintext,
            "plaintext_crc32c": self._checksum(plaintext),
            "additional_authenticated_data": context,
            "additional_authenticated_data_crc32c": self._checksum(context),
        }
        out = self._kms.call(
            "Encrypt",
            lambda: self._client.encrypt(request=request, retry=None, timeout=self._timeout),
        )
        if not out.verified_plaintext_crc32c:
            raise self._corrupted("Encrypt", "KMS did not verify the plaintext checksum")
        if not out.verified_additional_authenticated_data_crc32c:
            raise self._corrupted("Encrypt", "KMS did not verify the context checksum")
        if "ciphertext_crc32c" not in out or self._checksum(out.ciphertext) != int(
            out.ciphertext_crc32c
        ):
            raise self._corrupted("Encrypt", "the ciphertext does not match its checksum")
        if not str(out.name).startswith(f"{self._key}/cryptoKeyVersions/"):
            raise KeyProviderError(
                f"GCP KMS encrypted with {out.name!r}, not a version of the configured key "
                f"{self._key}"
            )
        return bytes(out.ciphertext)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        request = {
            "name": self._key,
            "ciphertext": blob,
            "ciphertext_crc32c": self._checksum(blob),
            "additional_authenticated_data": context,
            "additional_authenticated_data_crc32c": self._checksum(context),
        }
        out = self._kms.call(
            "Decrypt",
            lambda: self._client.decrypt(request=request, retry=None, timeout=self._timeout),
        )
        if "plaintext_crc32c" not in out or self._checksum(out.plaintext) != int(
            out.plaintext_crc32c
        ):
            raise self._corrupted("Decrypt", "the plaintext does not match its checksum")
        return bytes(out.plaintext)

    def close(self) -> None:
        self._client.transport.close()

    # --- calling KMS -------------------------------------------------------------

    def _classify(self, operation: str, e: Exception) -> str | KeyProviderError | None:
        """What a failed call means, for :class:`KmsRetry`: a transient failure's text,
        a refusal to raise, or None for an exception the Google client did not raise."""
        if isinstance(e, self._errors.GoogleAPICallError):
            kind = type(e).__name__
            message = str(e.message or "").strip()
            if kind not in _TRANSIENT:
                return self._refusal(operation, kind, message)
            return f"{kind}: {message}" if message else kind
        if isinstance(e, self._auth_errors.TransportError):
            # Fetching a token failed on the network (the metadata server, oauth2).
            return f"{type(e).__name__}: {e}"
        if isinstance(
            e, (self._auth_errors.DefaultCredentialsError, self._auth_errors.RefreshError)
        ):
            return self._no_credentials()
        return None

    def _refusal(self, operation: str, kind: str, message: str) -> KeyProviderError:
        said = f" (GCP: {kind}: {message})" if message else f" (GCP: {kind})"
        key = self._key
        # INVALID_ARGUMENT over gRPC, a bare 400 over REST. Not isinstance(BadRequest):
        # FailedPrecondition and OutOfRange are BadRequests too.
        if kind in ("InvalidArgument", "BadRequest") and operation == "Decrypt":
            return KeyMismatchError(
                f"the wrapped key does not open with GCP KMS key {key}: it was made with "
                f"another key or context, or it was altered{said}"
            )
        grant = (
            "grant these credentials roles/cloudkms.cryptoKeyEncrypterDecrypter on the key "
            f"(it holds cloudkms.cryptoKeyVersions.useTo{operation}; see docs/keys.md)"
        )
        advice = {
            "PermissionDenied": grant,
            "Forbidden": grant,
            "NotFound": "check the name: the key must exist in that project, location and key ring",
            "FailedPrecondition": "the key version is disabled or destroyed; enable it "
            "(gcloud kms keys versions enable), restore it if it is scheduled for "
            "destruction (gcloud kms keys versions restore), or configure another key",
            "Unauthenticated": "the credentials were rejected; renew them (gcloud auth "
            "application-default login, or check GOOGLE_APPLICATION_CREDENTIALS)",
            "InvalidArgument": "use a symmetric ENCRYPT_DECRYPT key",
            "BadRequest": "use a symmetric ENCRYPT_DECRYPT key",
        }.get(kind, "check the key and these credentials")
        return KeyProviderError(f"GCP KMS {operation} with key {key} was refused{said}; {advice}")

    def _corrupted(self, operation: str, what: str) -> KeyProviderError:
        return KeyProviderError(
            f"GCP KMS {operation} with key {self._key}: data corrupted in transit ({what}); "
            "try again, and check the network path to KMS if it persists"
        )

    def _no_credentials(self) -> KeyProviderError:
        return KeyProviderError(
            f"no usable Google Cloud credentials for KMS key {self._key}: configure "
            "Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, gcloud auth "
            "application-default login, or a service account attached to the VM or pod)"
        )


@hookimpl
def setec_register_key_providers(register: Any) -> None:
    """Register the ``gcp-kms://`` key provider."""
    register(GcpKmsKeyProvider)
