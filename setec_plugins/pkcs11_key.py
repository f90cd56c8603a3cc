"""The ``pkcs11://`` key provider: the data key wrapped by an AES key inside an HSM.

``pkcs11://TOKEN/KEY`` names the secret key labelled ``KEY`` in the token labelled
``TOKEN`` (either percent-encoded where it holds ``/``, ``%`` or spaces), reached
through a PKCS#11 module: YubiHSM 2, Nitrokey HSM, AWS CloudHSM, Thales Luna and
SoftHSM2 all ship one. The module is named by ``--pkcs11-module PATH``
(``SETEC_PKCS11_MODULE``); the user PIN is read from the file named by
``--pkcs11-pin-file PATH`` (``SETEC_PKCS11_PIN_FILE``), else from the environment
variable ``SETEC_PKCS11_PIN``. The PIN never goes in the key name: the key name is
stored beside the wrapped key and printed in messages, so a name holding ``pin=`` or a
user-info part is refused.

The key must be a 256-bit AES key (``CKK_AES``, ``CKA_VALUE_LEN`` 32), sensitive and
not extractable, allowed to encrypt and decrypt. ``wrap`` is ``CKM_AES_GCM`` inside
the token with a fresh 96-bit nonce and the wrap context as additional authenticated
data (128-bit tag); the blob is ``b"setec-pkcs11-v1:" || nonce (12) || ciphertext ||
tag``. GCM is used rather than AES key wrap (``CKM_AES_KEY_WRAP_PAD``) because only
GCM binds the context, as every other provider does; a token that does not offer
``CKM_AES_GCM`` is refused when the key is opened.

PKCS#11 keeps one login per process and token, shared by all of its sessions, so
every operation opens a session, logs in, works and logs out under one lock per
process: providers for the same token (a rotation's old and new key, say) and threads
never log each other out. The PIN is therefore kept in memory for the provider's
lifetime; it is never in a message, a log line or the repr. python-pkcs11 is imported
only when a key is built.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from setec_core.errors import ConfigError, KeyMismatchError, KeyProviderError
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.options import Option
from setec_core.sdk import import_sdk
from setec_core.uris import redact

MODULE_ENV = "SETEC_PKCS11_MODULE"
PIN_FILE_ENV = "SETEC_PKCS11_PIN_FILE"
PIN_ENV = "SETEC_PKCS11_PIN"
_FORM = "pkcs11://TOKEN-LABEL/KEY-LABEL"
_MAGIC = b"setec-pkcs11-v1:"
_NONCE = 12
_TAG_BITS = 128
_WHERE_THE_PIN_GOES = (
    f"the PIN goes in a file named by --pkcs11-pin-file or in {PIN_ENV}, never in the key name"
)

#: PKCS#11 login state belongs to the process, so one lock serialises every operation
#: of every pkcs11:// provider in it.
_LOCK = threading.Lock()

_T = TypeVar("_T")


def parse_uri(uri: str) -> tuple[str, str]:
    """Split ``pkcs11://TOKEN-LABEL/KEY-LABEL`` into ``(token_label, key_label)``,
    percent-decoded.

    :raises ConfigError: if ``uri`` is not of that form, or tries to carry a PIN (that
        message does not repeat the URI).
    """
    lowered = uri.lower()
    if "pin=" in lowered or "pin-value=" in lowered or "pin-source=" in lowered:
        raise ConfigError(f"the pkcs11 key name holds a PIN; {_WHERE_THE_PIN_GOES}")
    if not lowered.startswith("pkcs11://"):
        raise ConfigError(f"not a pkcs11 key name: {redact(uri)!r}; expected {_FORM}")
    rest = uri[len("pkcs11://") :]
    authority = rest.split("/", 1)[0]
    if "@" in authority:
        raise ConfigError(
            f"the pkcs11 key name has a user-info part (before '@'); {_WHERE_THE_PIN_GOES}"
        )
    bad = ConfigError(
        f"not a pkcs11 key name: {redact(uri)!r}; expected {_FORM} (labels "
        "percent-encoded where they hold '/', '%', '?' or '#')"
    )
    if "?" in rest or "#" in rest:
        raise bad
    parts = rest.split("/")
    if len(parts) != 2 or not all(parts):
        raise bad
    try:
        token, key = (unquote(part, errors="strict") for part in parts)
    except UnicodeDecodeError:
        raise bad from None
    return token, key


def key_uri(token_label: str, key_label: str) -> str:
    """The canonical ``pkcs11://`` name of a key: each label percent-encoded."""
    return f"pkcs11://{quote(token_label, safe='')}/{quote(key_label, safe='')}"


def read_pin(pin_file: Path | None) -> str:
    """The user PIN: the content of ``pin_file`` (one trailing newline dropped) if
    given, else :data:`PIN_ENV`.

    :raises ConfigError: if the file is missing, unreadable, readable by every user or
        empty, or there is neither file nor variable. The PIN is in no message.
    """
    if pin_file is not None:
        try:
            mode = pin_file.stat().st_mode
            if mode & stat.S_IROTH:
                raise ConfigError(
                    f"the PKCS#11 PIN file {pin_file} is readable by every user; "
                    f"restrict it (chmod 600 {pin_file}) and start again"
                )
            pin = pin_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(
                f"cannot read the PKCS#11 PIN file {pin_file} "
                f"({getattr(e, 'strerror', None) or 'not UTF-8 text'}); fix --pkcs11-pin-file"
            ) from None
        pin = pin.removesuffix("\n").removesuffix("\r")
        if not pin:
            raise ConfigError(f"the PKCS#11 PIN file {pin_file} is empty; write the PIN in it")
        return pin
    env = os.environ.get(PIN_ENV, "")
    if not env:
        raise ConfigError(
            f"no PKCS#11 PIN: name a file holding the token's user PIN with "
            f"--pkcs11-pin-file (or {PIN_FILE_ENV}), or set {PIN_ENV}"
        )
    return env


class Pkcs11KeyProvider(KeyProvider):
    """Wraps the data key with a non-extractable AES-256 key in a PKCS#11 token, by
    ``CKM_AES_GCM`` with the context as additional authenticated data."""

    name = "pkcs11"
    schemes = ("pkcs11",)
    options = (
        Option(
            "--pkcs11-module",
            "The PKCS#11 module (shared library) of the HSM holding a pkcs11:// key, "
            "e.g. /usr/lib/softhsm/libsofthsm2.so.",
            type=Path,
        ),
        Option(
            "--pkcs11-pin-file",
            "A file holding the user PIN of the token of a pkcs11:// key (mode 600); "
            f"without it the PIN is read from {PIN_ENV}.",
            type=Path,
        ),
    )

    def __init__(self, token_label: str, key_label: str, *, module: Path, pin: str) -> None:
        self._token_label, self._key_label, self._module = token_label, key_label, module
        self._pin = pin
        self._p11, self._errors = import_sdk(
            ["pkcs11", "pkcs11.exceptions"],
            user="the pkcs11 key provider",
            packages=["python-pkcs11"],
            install="pysetec[pkcs11]",
        )
        self._lib = self._load_module()
        # Opening the key once now refuses a wrong PIN, token or key at start-up, before
        # anything is written.
        with _LOCK, self._session() as session:
            self._find_key(session)

    @classmethod
    def from_uri(cls, uri: str, *, options: Mapping[str, Any] | None = None) -> Pkcs11KeyProvider:
        """Build from ``pkcs11://TOKEN-LABEL/KEY-LABEL``, the module and PIN file from
        ``options`` (``pkcs11_module``, ``pkcs11_pin_file``) or, when not given there,
        from :data:`MODULE_ENV`, :data:`PIN_FILE_ENV` and :data:`PIN_ENV`."""
        token, key = parse_uri(uri)
        options = options or {}
        module = options.get("pkcs11_module") or os.environ.get(MODULE_ENV) or None
        if module is None:
            raise ConfigError(
                f"no PKCS#11 module for {key_uri(token, key)}: name the HSM's module with "
                f"--pkcs11-module PATH or {MODULE_ENV} (SoftHSM2: "
                "/usr/lib/softhsm/libsofthsm2.so)"
            )
        pin_file = options.get("pkcs11_pin_file") or os.environ.get(PIN_FILE_ENV) or None
        pin = read_pin(Path(pin_file) if pin_file else None)
        return cls(token, key, module=Path(module), pin=pin)

    @property
    def uri(self) -> str:
        return key_uri(self._token_label, self._key_label)

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        def encrypt(session: Any) -> bytes:
            key = self._find_key(session)
            nonce = bytes(session.generate_random(_NONCE * 8))
            params = self._p11.GCMParams(nonce, context, _TAG_BITS)
            return (
                _MAGIC
                + nonce
                + bytes(
                    key.encrypt(
                        plaintext, mechanism=self._p11.Mechanism.AES_GCM, mechanism_param=params
                    )
                )
            )

        return self._call("encrypt", encrypt)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        if not blob.startswith(_MAGIC) or len(blob) < len(_MAGIC) + _NONCE + _TAG_BITS // 8:
            raise self._mismatch()
        body = blob[len(_MAGIC) :]

        def decrypt(session: Any) -> bytes:
            key = self._find_key(session)
            params = self._p11.GCMParams(body[:_NONCE], context, _TAG_BITS)
            try:
                return bytes(
                    key.decrypt(
                        body[_NONCE:], mechanism=self._p11.Mechanism.AES_GCM, mechanism_param=params
                    )
                )
            except (
                self._errors.EncryptedDataInvalid,
                self._errors.EncryptedDataLenRange,
                self._errors.FunctionFailed,
                self._errors.GeneralError,
            ):
                # Tokens report a failed GCM tag check as any of these.
                raise self._mismatch() from None

        return self._call("decrypt", decrypt)

    # --- talking to the token ----------------------------------------------------

    def _load_module(self) -> Any:
        module = self._module
        if not module.is_file():
            raise ConfigError(
                f"the PKCS#11 module {module} does not exist; fix --pkcs11-module "
                f"({MODULE_ENV}) to name the HSM's module, e.g. "
                "/usr/lib/softhsm/libsofthsm2.so"
            )
        try:
            return self._p11.lib(str(module))
        except self._errors.PKCS11Error:
            raise ConfigError(
                f"{module} is not a PKCS#11 module (it cannot be loaded or has no "
                "C_GetFunctionList); fix --pkcs11-module to name the HSM's module"
            ) from None

    @contextmanager
    def _session(self) -> Iterator[Any]:
        """A logged-in session, closed (and logged out) on exit. Hold :data:`_LOCK`."""
        errors = self._errors
        try:
            token = self._lib.get_token(token_label=self._token_label)
        except errors.NoSuchToken:
            raise ConfigError(
                f"no token labelled {self._token_label!r} in the PKCS#11 module "
                f"{self._module}; check the token label of {self.uri} (pkcs11-tool "
                f"--module {self._module} --list-token-slots)"
            ) from None
        except errors.MultipleTokensReturned:
            raise ConfigError(
                f"several tokens are labelled {self._token_label!r} in {self._module}; "
                "relabel one so that the key name is unambiguous"
            ) from None
        try:
            session = token.open(user_pin=self._pin)
        except errors.PinIncorrect:
            raise ConfigError(
                f"the PIN for token {self._token_label!r} is wrong (CKR_PIN_INCORRECT); "
                f"fix the PIN file or {PIN_ENV} (the token locks after a few failures)"
            ) from None
        except errors.PinLocked:
            raise ConfigError(
                f"the user PIN of token {self._token_label!r} is locked (CKR_PIN_LOCKED); "
                "the security officer must reset it (e.g. pkcs11-tool --init-pin)"
            ) from None
        except errors.PinLenRange:
            raise ConfigError(
                f"the PIN for token {self._token_label!r} has a length the token does "
                f"not accept; fix the PIN file or {PIN_ENV}"
            ) from None
        try:
            yield session
        finally:
            # The work is done; a failed logout changes nothing for it.
            with suppress(errors.PKCS11Error):
                session.close()

    def _call(self, operation: str, work: Callable[[Any], _T]) -> _T:
        with _LOCK:
            try:
                with self._session() as session:
                    return work(session)
            except self._errors.PKCS11Error as e:
                raise KeyProviderError(
                    f"PKCS#11 {operation} with key {self.uri} failed: {type(e).__name__} "
                    f"{_said(e)}; check the token in {self._module}"
                ) from None

    def _find_key(self, session: Any) -> Any:
        p11 = self._p11
        attr = p11.Attribute
        found = list(session.get_objects({attr.LABEL: self._key_label}))
        where = f"labelled {self._key_label!r} in token {self._token_label!r}"
        if not found:
            raise ConfigError(
                f"no key {where}; create it (pkcs11-tool --module {self._module} --login "
                f"--token-label {self._token_label} --keygen --key-type AES:32 --label "
                f"{self._key_label} --sensitive) or fix the key label of {self.uri}"
            )
        secret = [o for o in found if o[attr.CLASS] == p11.ObjectClass.SECRET_KEY]
        if len(secret) > 1:
            raise ConfigError(f"several keys are {where}; give the key a label of its own")
        if not secret or secret[0][attr.KEY_TYPE] != p11.KeyType.AES:
            if secret:
                what = f"a {getattr(secret[0][attr.KEY_TYPE], 'name', '?')} key"
            else:
                # A key pair is two objects (private and public) under one label.
                what = " and ".join(sorted({str(o[attr.CLASS].name) for o in found}))
            raise ConfigError(
                f"the object {where} is {what}, not an AES key; label a 256-bit AES key "
                "(pkcs11-tool --keygen --key-type AES:32) and name that"
            )
        key = secret[0]
        problems = []
        if key[attr.VALUE_LEN] != 32:
            problems.append(f"is AES-{8 * int(key[attr.VALUE_LEN])}, not AES-256")
        if not key[attr.SENSITIVE] or key[attr.EXTRACTABLE]:
            problems.append("can leave the token (it must be sensitive and not extractable)")
        if not key[attr.ENCRYPT] or not key[attr.DECRYPT]:
            problems.append("is not allowed to encrypt and decrypt")
        if problems:
            raise ConfigError(
                f"the key {where} {' and '.join(problems)}; generate one with pkcs11-tool "
                "--keygen --key-type AES:32 --sensitive"
            )
        if p11.Mechanism.AES_GCM not in session.token.slot.get_mechanisms():
            raise ConfigError(
                f"token {self._token_label!r} does not offer CKM_AES_GCM, which the "
                "pkcs11 key provider needs to bind the wrap context"
            )
        return key

    def _mismatch(self) -> KeyMismatchError:
        return KeyMismatchError(
            f"the wrapped key does not open with PKCS#11 key {self.uri}: that key is not "
            "the one that wrapped the store (or the context differs, or the blob was "
            "altered)"
        )


def _said(e: Exception) -> str:
    return f"({e.args[0]})" if e.args and e.args[0] else ""


@hookimpl
def setec_register_key_providers(register: Any) -> None:
    """Register the ``pkcs11://`` key provider."""
    register(Pkcs11KeyProvider)
