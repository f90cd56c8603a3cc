"""A fake of HashiCorp Vault's Transit secrets engine HTTP API on loopback, for tests
driven by the real hvac client.

It serves the subset hvac's ``client.secrets.transit`` uses for keys (create, read,
rotate, config) and ``encrypt``/``decrypt``, with real AES-256-GCM per key version, so a
wrong key, a wrong ``associated_data`` or an altered ciphertext really fail, as Vault
answers them: 400 ``{"errors": ["cipher: message authentication failed"]}``. Ciphertexts
are ``vault:vN:base64(nonce || ciphertext || tag)``, Vault's own layout for aes256-gcm96.
Every request needs ``X-Vault-Token`` (403 ``permission denied`` otherwise), and
:meth:`FakeVault.fail` makes chosen operations answer a chosen error. Not a security
boundary; no policies, leases or namespaces.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response


class VaultAnswer(Exception):  # noqa: N818 - an answer, not a failure of the fake
    """Raised by a handler to answer Vault's error body with ``status``."""

    def __init__(self, status: int, *errors: str) -> None:
        super().__init__(status, errors)
        self.status, self.errors = status, list(errors)


def _error(status: int, errors: Iterable[str]) -> Response:
    return Response(json.dumps({"errors": list(errors)}), status, content_type="application/json")


def _ok(data: dict[str, Any], warnings: list[str] | None = None) -> Response:
    body = {
        "request_id": "fake",
        "lease_id": "",
        "renewable": False,
        "lease_duration": 0,
        "data": data,
        "wrap_info": None,
        "warnings": warnings,
        "auth": None,
    }
    return Response(json.dumps(body), 200, content_type="application/json")


def _b64decode(value: Any, what: str) -> bytes:
    # Go's base64.StdEncoding: padding required, no stray characters.
    try:
        return base64.b64decode(str(value or ""), validate=True)
    except (binascii.Error, ValueError):
        raise VaultAnswer(400, f"failed to base64-decode {what}") from None


@dataclass
class TransitKey:
    """One Transit key: its versions (AES-256 keys) and policy knobs."""

    versions: dict[int, bytes] = field(default_factory=lambda: {1: AESGCM.generate_key(256)})
    min_decryption_version: int = 1

    @property
    def latest(self) -> int:
        return max(self.versions)


class FakeVault:
    """The WSGI app: ``FakeVault(token="root").start()`` serves it on 127.0.0.1."""

    def __init__(self, token: str = "root", mount: str = "transit") -> None:  # noqa: S107
        self.token, self.mount = token, mount
        self.keys: dict[str, TransitKey] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path), for assertions
        self._faults: dict[str, list[tuple[int, str]]] = {}
        self._forever: dict[str, tuple[int, str]] = {}
        self._lock = threading.Lock()
        # As Vault before 1.13 does: ignore associated_data, with a warning.
        self.ignore_associated_data = False
        m = mount
        self.url_map = Map(
            [
                Rule("/v1/sys/health", endpoint="health", methods=["GET", "HEAD"]),
                Rule(f"/v1/{m}/keys/<name>", endpoint="key", methods=["GET", "POST", "PUT"]),
                Rule(f"/v1/{m}/keys/<name>/config", endpoint="config", methods=["POST", "PUT"]),
                Rule(f"/v1/{m}/keys/<name>/rotate", endpoint="rotate", methods=["POST", "PUT"]),
                Rule(f"/v1/{m}/encrypt/<name>", endpoint="encrypt", methods=["POST", "PUT"]),
                Rule(f"/v1/{m}/decrypt/<name>", endpoint="decrypt", methods=["POST", "PUT"]),
            ]
        )
        self._server: Any = None
        self.url = ""

    # --- test controls ---------------------------------------------------------

    def create_key(self, name: str) -> str:
        """Make an aes256-gcm96 key (not derived); return its name."""
        with self._lock:
            self.keys.setdefault(name, TransitKey())
        return name

    def rotate(self, name: str) -> None:
        with self._lock:
            key = self.keys[name]
            key.versions[key.latest + 1] = AESGCM.generate_key(256)

    def fail(self, endpoint: str, status: int, message: str, *, times: int | None = None) -> None:
        """Answer ``endpoint`` ("encrypt", "decrypt", ...) with ``status`` and Vault's
        error body, ``times`` times or (None) until :meth:`heal`."""
        with self._lock:
            if times is None:
                self._forever[endpoint] = (status, message)
            else:
                self._faults.setdefault(endpoint, []).extend([(status, message)] * times)

    def heal(self) -> None:
        with self._lock:
            self._faults.clear()
            self._forever.clear()

    def calls(self, endpoint: str) -> int:
        """How many requests reached ``/v1/MOUNT/ENDPOINT/...``."""
        prefix = f"/v1/{self.mount}/{endpoint}/"
        return sum(1 for _, path in self.requests if path.startswith(prefix))

    def start(self) -> FakeVault:
        self._server = make_server("127.0.0.1", 0, self, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # --- WSGI ------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        req = Request(environ)
        self.requests.append((req.method, req.path))
        try:
            endpoint, args = self.url_map.bind_to_environ(environ).match()
        except HTTPException:
            return _error(404, ["no handler for route"])(environ, start_response)
        with self._lock:
            queued = self._faults.get(endpoint)
            fault = queued.pop(0) if queued else self._forever.get(endpoint)
        if fault is not None:
            return _error(fault[0], [fault[1]])(environ, start_response)
        if endpoint != "health" and req.headers.get("X-Vault-Token") != self.token:
            return _error(403, ["permission denied"])(environ, start_response)
        body = req.get_json(silent=True) or {}
        try:
            with self._lock:
                resp = getattr(self, "on_" + endpoint)(req, body, **args)
        except VaultAnswer as e:
            resp = _error(e.status, e.errors)
        return resp(environ, start_response)  # type: ignore[no-any-return]

    def _need(self, name: str) -> TransitKey:
        key = self.keys.get(name)
        if key is None:
            raise VaultAnswer(400, "encryption key not found")
        return key

    def _associated_data(self, body: dict[str, Any]) -> tuple[bytes | None, list[str] | None]:
        if self.ignore_associated_data and "associated_data" in body:
            return None, ["Endpoint ignored these unrecognized parameters: [associated_data]"]
        return _b64decode(body.get("associated_data"), "associated_data") or None, None

    def on_health(self, req: Request, body: dict[str, Any]) -> Response:
        return Response(
            json.dumps({"initialized": True, "sealed": False, "standby": False}),
            content_type="application/json",
        )

    def on_key(self, req: Request, body: dict[str, Any], name: str) -> Response:
        if req.method in ("POST", "PUT"):
            if body.get("derived") or body.get("type", "aes256-gcm96") != "aes256-gcm96":
                raise VaultAnswer(400, "the fake supports only aes256-gcm96 keys, not derived")
            self.keys.setdefault(name, TransitKey())
            return Response(status=204)
        key = self.keys.get(name)
        if key is None:
            return _error(404, [])
        return _ok(
            {
                "name": name,
                "type": "aes256-gcm96",
                "derived": False,
                "latest_version": key.latest,
                "min_decryption_version": key.min_decryption_version,
                "keys": {str(v): 0 for v in key.versions},
                "supports_encryption": True,
                "supports_decryption": True,
            }
        )

    def on_config(self, req: Request, body: dict[str, Any], name: str) -> Response:
        key = self._need(name)
        if "min_decryption_version" in body:
            key.min_decryption_version = int(body["min_decryption_version"])
        return Response(status=204)

    def on_rotate(self, req: Request, body: dict[str, Any], name: str) -> Response:
        key = self._need(name)
        key.versions[key.latest + 1] = AESGCM.generate_key(256)
        return Response(status=204)

    def on_encrypt(self, req: Request, body: dict[str, Any], name: str) -> Response:
        key = self._need(name)
        if "plaintext" not in body:
            raise VaultAnswer(400, "missing plaintext to encrypt")
        plaintext = _b64decode(body["plaintext"], "plaintext")
        ad, warnings = self._associated_data(body)
        version = key.latest
        nonce = os.urandom(12)
        sealed = AESGCM(key.versions[version]).encrypt(nonce, plaintext, ad)
        ciphertext = f"vault:v{version}:" + base64.b64encode(nonce + sealed).decode()
        return _ok({"ciphertext": ciphertext, "key_version": version}, warnings)

    def on_decrypt(self, req: Request, body: dict[str, Any], name: str) -> Response:
        key = self._need(name)
        ciphertext = str(body.get("ciphertext") or "")
        if not ciphertext:
            raise VaultAnswer(400, "missing ciphertext to decrypt")
        # Vault's own messages for each way a ciphertext string can be wrong.
        if not ciphertext.startswith("vault:"):
            raise VaultAnswer(400, "invalid ciphertext: no prefix")
        parts = ciphertext.split(":")
        if len(parts) != 3:
            raise VaultAnswer(400, "invalid ciphertext: wrong number of fields")
        if not parts[1].startswith("v") or not parts[1][1:].isdigit():
            raise VaultAnswer(400, "invalid ciphertext: version number could not be decoded")
        version = int(parts[1][1:])
        if version < key.min_decryption_version:
            raise VaultAnswer(
                400, "ciphertext or signature version is disallowed by policy (too old)"
            )
        if version not in key.versions:
            raise VaultAnswer(400, "invalid key version")
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except (binascii.Error, ValueError):
            raise VaultAnswer(400, "invalid ciphertext: could not decode base64") from None
        ad, warnings = self._associated_data(body)
        try:
            plaintext = AESGCM(key.versions[version]).decrypt(blob[:12], blob[12:], ad)
        except (InvalidTag, ValueError):
            raise VaultAnswer(400, "cipher: message authentication failed") from None
        return _ok({"plaintext": base64.b64encode(plaintext).decode()}, warnings)
