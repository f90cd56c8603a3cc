"""A loopback fake of ``google.cloud.kms.v1.KeyManagementService`` (Encrypt and Decrypt)
for tests, driven by the real google-cloud-kms client over real gRPC.

google-cloud-kms ships no generated servicer, so the fake registers a generic handler
and reuses the proto-plus message classes' serialize/deserialize. Each key version is a
real AES-256-GCM key, so a wrong key, a wrong AAD or a flipped bit really fails; the
CRC32C fields are computed honestly (with a CRC32C written here, independent of the
google-crc32c package the provider uses) and checked on requests, as KMS does. Faults:
disabled versions, injected status codes and forged response fields.
"""

from __future__ import annotations

import os
import struct
import threading
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.cloud import kms_v1

SERVICE = "google.cloud.kms.v1.KeyManagementService"


def crc32c(data: bytes) -> int:
    """CRC32C (Castagnoli), bit by bit: slow, obviously right, enough for test data."""
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def key_name(key: str, *, project: str = "p", location: str = "global", ring: str = "r") -> str:
    """The full CryptoKey name of ``key`` in a test project."""
    return f"projects/{project}/locations/{location}/keyRings/{ring}/cryptoKeys/{key}"


@dataclass
class _Key:
    versions: dict[int, bytes] = field(default_factory=dict)
    disabled: set[int] = field(default_factory=set)
    primary: int = 1


class FakeKms:
    """The service's state: keys and their versions, recorded calls, queued faults."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every key, call and fault."""
        self.keys: dict[str, _Key] = {}
        self.calls: list[tuple[str, str]] = []
        self.requests: list[Any] = []
        self._faults: dict[str, list[tuple[grpc.StatusCode, str]]] = {}
        self._forever: dict[str, tuple[grpc.StatusCode, str]] = {}
        self._forged: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()

    def add_key(self, name: str) -> str:
        """Create CryptoKey ``name`` with one enabled version; return ``name``."""
        with self._lock:
            self.keys[name] = _Key(versions={1: AESGCM.generate_key(256)})
        return name

    def rotate(self, name: str) -> int:
        """Add a version to ``name`` and make it primary; return its number."""
        with self._lock:
            key = self.keys[name]
            key.primary = max(key.versions) + 1
            key.versions[key.primary] = AESGCM.generate_key(256)
            return key.primary

    def disable(self, name: str, version: int | None = None) -> None:
        """Disable a version of ``name`` (its primary by default)."""
        with self._lock:
            key = self.keys[name]
            key.disabled.add(key.primary if version is None else version)

    def fail(
        self, method: str, code: grpc.StatusCode, message: str = "", *, times: int | None = None
    ) -> None:
        """Answer ``method`` ("Encrypt" or "Decrypt") with ``code``: the next ``times``
        calls, or every call from now on."""
        with self._lock:
            if times is None:
                self._forever[method] = (code, message)
            else:
                self._faults.setdefault(method, []).extend([(code, message)] * times)

    def forge(self, method: str, **fields: Any) -> None:
        """Overwrite ``fields`` of the next successful ``method`` response (say, a CRC)."""
        with self._lock:
            self._forged.setdefault(method, []).append(fields)

    # --- the RPCs ------------------------------------------------------------------

    def _enter(self, method: str, req: Any, ctx: grpc.ServicerContext) -> _Key:
        name = req.name
        with self._lock:
            self.calls.append((method, name))
            self.requests.append(req)
            queued = self._faults.get(method)
            fault = queued.pop(0) if queued else self._forever.get(method)
            key = self.keys.get(name)
        if fault is not None:
            ctx.abort(*fault)
        if key is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"{name} not found.")
        return key  # type: ignore[return-value]  # abort raises

    def _forgery(self, method: str, response: Any) -> Any:
        with self._lock:
            queued = self._forged.get(method)
            fields = queued.pop(0) if queued else {}
        for name, value in fields.items():
            setattr(response, name, value)
        return response

    @staticmethod
    def _check_crc(req: Any, data: bytes, field_name: str, ctx: grpc.ServicerContext) -> bool:
        if field_name not in req:
            return False
        if crc32c(data) != getattr(req, field_name):
            ctx.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"The checksum in field {field_name} did not match the data in the request.",
            )
        return True

    def Encrypt(self, req: kms_v1.EncryptRequest, ctx: grpc.ServicerContext) -> Any:  # noqa: N802 - the RPC's name
        key = self._enter("Encrypt", req, ctx)
        aad = req.additional_authenticated_data
        verified_pt = self._check_crc(req, req.plaintext, "plaintext_crc32c", ctx)
        verified_aad = self._check_crc(req, aad, "additional_authenticated_data_crc32c", ctx)
        v = key.primary
        version = f"{req.name}/cryptoKeyVersions/{v}"
        if v in key.disabled:
            ctx.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{version} is not enabled, current state is: DISABLED.",
            )
        nonce = os.urandom(12)
        ct = (
            struct.pack(">I", v)
            + nonce
            + AESGCM(key.versions[v]).encrypt(nonce, req.plaintext, aad)
        )
        response = kms_v1.EncryptResponse(
            name=version,
            ciphertext=ct,
            ciphertext_crc32c=crc32c(ct),
            verified_plaintext_crc32c=verified_pt,
            verified_additional_authenticated_data_crc32c=verified_aad,
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )
        return self._forgery("Encrypt", response)

    def Decrypt(self, req: kms_v1.DecryptRequest, ctx: grpc.ServicerContext) -> Any:  # noqa: N802 - the RPC's name
        key = self._enter("Decrypt", req, ctx)
        aad = req.additional_authenticated_data
        self._check_crc(req, req.ciphertext, "ciphertext_crc32c", ctx)
        self._check_crc(req, aad, "additional_authenticated_data_crc32c", ctx)
        invalid = "Decryption failed: the ciphertext is invalid."
        if len(req.ciphertext) < 16 + 16:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, invalid)
        (v,) = struct.unpack(">I", req.ciphertext[:4])
        if v not in key.versions:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, invalid)
        if v in key.disabled:
            ctx.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"{req.name}/cryptoKeyVersions/{v} is not enabled, current state is: DISABLED.",
            )
        try:
            pt = AESGCM(key.versions[v]).decrypt(req.ciphertext[4:16], req.ciphertext[16:], aad)
        except Exception:  # broad: any failure to open is KMS's INVALID_ARGUMENT
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, invalid)
        response = kms_v1.DecryptResponse(
            plaintext=pt,
            plaintext_crc32c=crc32c(pt),
            used_primary=(v == key.primary),
            protection_level=kms_v1.ProtectionLevel.SOFTWARE,
        )
        return self._forgery("Decrypt", response)


class FakeKmsServer:
    """:class:`FakeKms` served over insecure gRPC on 127.0.0.1; :attr:`endpoint` is the
    ``HOST:PORT`` for ``SETEC_GCP_KMS_ENDPOINT``. A context manager."""

    def __init__(self, kms: FakeKms | None = None) -> None:
        self.kms = kms or FakeKms()
        handlers = {
            "Encrypt": grpc.unary_unary_rpc_method_handler(
                self.kms.Encrypt,
                request_deserializer=kms_v1.EncryptRequest.deserialize,
                response_serializer=kms_v1.EncryptResponse.serialize,
            ),
            "Decrypt": grpc.unary_unary_rpc_method_handler(
                self.kms.Decrypt,
                request_deserializer=kms_v1.DecryptRequest.deserialize,
                response_serializer=kms_v1.DecryptResponse.serialize,
            ),
        }
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE, handlers),)
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"127.0.0.1:{port}"
        self.server.start()

    def stop(self) -> None:
        self.server.stop(grace=None).wait()

    def __enter__(self) -> FakeKmsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
