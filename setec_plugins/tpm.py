"""The ``tpm://`` key provider: the key-encryption key is sealed to a TPM 2.0.

``tpm:///PATH`` names the file holding the sealed key (absolute path, e.g.
``tpm:///var/lib/setec/kek.tpm``). The first :meth:`~TpmKeyProvider.wrap` (creating a
store, or ``rotate-kek --to tpm:///PATH``) seals a new random 32-byte key to the TPM
and writes the file (mode 0600, atomically) if it does not exist, and never overwrites
one that does; opening a store only unseals it, so a missing file is refused rather
than replaced by a key that cannot open the store.

The TPM is reached through a TCTI: ``--tpm-tcti`` (e.g. ``swtpm:host=127.0.0.1,port=2321``
for a software TPM), else ``--tpm-device PATH`` (``device:PATH``), else the
``TPM2TOOLS_TCTI`` variable, else ``/dev/tpmrm0`` (the kernel's resource manager).

The sealed object is a TPM keyed-hash object holding the key, with an empty
authorization value and no policy (see docs/keys.md for why, and for binding to PCRs),
created under a primary key that the TPM derives afresh at every start from its owner
seed and a fixed template, so nothing but the sealed object needs keeping. It is
driven through tpm2-tools (``tpm2_createprimary``, ``tpm2_create``, ``tpm2_load``,
``tpm2_unseal``) rather than a Python binding, which builds only from source against
the TSS headers. The key crosses from ``tpm2_unseal`` on a pipe and is never written
to disk.

Wrapping is done here with the unsealed key: ``b"setec-tpm-v1:" || nonce (12) ||
AES-256-GCM(dek, ad=context)``.

The sealed-key file is ``b"setec-tpm-sealed-v1\\n"`` followed by the object's
TPM2B_PUBLIC and TPM2B_PRIVATE as tpm2-tools writes them, each after its length as
two big-endian bytes.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from setec_core.errors import ConfigError, KeyMismatchError, KeyProviderError
from setec_core.hookspecs import hookimpl
from setec_core.keys import KeyProvider
from setec_core.options import Option

DEFAULT_DEVICE = "/dev/tpmrm0"
TCTI_ENV = "TPM2TOOLS_TCTI"
KEY_SIZE = 32
TOOLS = ("tpm2_createprimary", "tpm2_create", "tpm2_load", "tpm2_unseal", "tpm2_flushcontext")
_FORM = (
    "tpm:///PATH, the absolute path of the sealed key's file (e.g. tpm:///var/lib/setec/kek.tpm)"
)
_MAGIC = b"setec-tpm-v1:"
_SEALED_MAGIC = b"setec-tpm-sealed-v1\n"
_NONCE = 12
_TIMEOUT = 30.0
# The primary key's template. It must never change: the primary is recreated from it at
# every start, and another template gives another key, under which the sealed object
# does not load. This is the TCG's storage root key shape (ECC P-256, AES-128-CFB).
_PRIMARY = (
    "-C", "o", "-g", "sha256", "-G", "ecc256:aes128cfb",
    "-a", "restricted|decrypt|fixedtpm|fixedparent|sensitivedataorigin|userwithauth|noda",
)  # fmt: skip
# The sealed object: bound to this TPM and this parent, usable with its (empty)
# authorization value, and outside dictionary-attack lockout (no password to guess).
_SEALED_ATTRIBUTES = "fixedtpm|fixedparent|userwithauth|noda"
# tpm2-tss prefixes its log lines with "LEVEL:module:file:line:function() ".
_TSS_PREFIX = re.compile(r"^(?:WARNING|ERROR):\w+:\S+:\d+:\w+\(\)\s*")


def parse_uri(uri: str) -> Path:
    """Return the sealed key's file named by ``tpm:///PATH``.

    :raises ConfigError: if ``uri`` is not of that form.
    """
    parts = urlsplit(uri)
    if (
        parts.scheme != "tpm"
        or parts.netloc
        or parts.query
        or parts.fragment
        or not parts.path.startswith("/")
        or parts.path.endswith("/")
    ):
        raise ConfigError(f"not a tpm key name: {uri!r}; expected {_FORM}")
    return Path(parts.path)


def resolve_tcti(tcti: str | None, device: str | os.PathLike[str] | None) -> str:
    """The TCTI to reach the TPM with: ``tcti``, else ``device:DEVICE``, else
    ``$TPM2TOOLS_TCTI``, else ``device:/dev/tpmrm0``.

    :raises ConfigError: if both ``tcti`` and ``device`` are given.
    """
    if tcti and device:
        raise ConfigError(
            "give --tpm-tcti or --tpm-device, not both (--tpm-device PATH means "
            "--tpm-tcti device:PATH)"
        )
    if tcti:
        return tcti
    if device:
        return f"device:{device}"
    return os.environ.get(TCTI_ENV) or f"device:{DEFAULT_DEVICE}"


class TpmKeyProvider(KeyProvider):
    """Wraps the data key with a random key sealed to a TPM 2.0 (a chip or a vTPM)."""

    name = "tpm"
    schemes = ("tpm",)
    options = (
        Option(
            "--tpm-device",
            f"The TPM device of a tpm:// key (default {DEFAULT_DEVICE}, the kernel's "
            "resource manager; $TPM2TOOLS_TCTI is used instead when set).",
            type=Path,
            metavar="PATH",
        ),
        Option(
            "--tpm-tcti",
            "The TPM of a tpm:// key as a tpm2-tss TCTI instead of a device, e.g. "
            "swtpm:host=127.0.0.1,port=2321 for a software TPM.",
            metavar="TCTI",
        ),
    )

    def __init__(self, sealed_key: Path, *, tcti: str) -> None:
        self._path, self._tcti = sealed_key, tcti
        self._aead: AESGCM | None = None
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise ConfigError(
                f"the tpm:// key provider needs tpm2-tools, and {', '.join(missing)} "
                "is not on PATH: install it (Debian, Ubuntu: apt-get install tpm2-tools)"
            )

    @classmethod
    def from_uri(cls, uri: str, *, options: Mapping[str, Any] | None = None) -> TpmKeyProvider:
        """Build from ``tpm:///PATH``; ``options`` holds ``tpm_device`` and ``tpm_tcti``
        (``--tpm-device``, ``--tpm-tcti``)."""
        flags = options or {}
        return cls(
            parse_uri(uri), tcti=resolve_tcti(flags.get("tpm_tcti"), flags.get("tpm_device"))
        )

    @property
    def uri(self) -> str:
        return f"tpm://{self._path}"

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        nonce = os.urandom(_NONCE)
        return _MAGIC + nonce + self._key(create=True).encrypt(nonce, plaintext, context)

    def unwrap(self, blob: bytes, context: bytes) -> bytes:
        if not blob.startswith(_MAGIC):
            raise KeyMismatchError(
                f"the wrapped key was not made by a tpm:// key ({self.uri}): it was "
                "wrapped by another key provider"
            )
        body = blob[len(_MAGIC) :]
        aead = self._key(create=False)
        try:
            return aead.decrypt(body[:_NONCE], body[_NONCE:], context)
        except InvalidTag:
            raise KeyMismatchError(
                f"the wrapped key does not open with the TPM-sealed key {self.uri}: it was "
                "made with another sealed key or context, or it was altered"
            ) from None

    # --- the sealed key ------------------------------------------------------------

    def _key(self, *, create: bool) -> AESGCM:
        """The unsealed key, unsealed once; sealed and saved first if ``create`` and the
        file does not exist yet."""
        if self._aead is None:
            self._check_device()
            if not self._path.exists():
                if not create:
                    raise KeyProviderError(
                        f"the TPM-sealed key file {self._path} does not exist: restore it "
                        f"(the store was wrapped with {self.uri}), or give the path it is at"
                    )
                self._seal_new()
            self._aead = AESGCM(self._unseal())
        return self._aead

    def _check_device(self) -> None:
        """Refuse a device TCTI whose device is missing, before tpm2-tools says it less
        plainly."""
        kind, _, config = self._tcti.partition(":")
        device = config or DEFAULT_DEVICE
        if kind == "device" and not os.path.exists(device):
            raise KeyProviderError(
                f"there is no TPM device {device} (for {self.uri}): give the TPM with "
                "--tpm-device PATH or --tpm-tcti TCTI, or enable the machine's TPM (a "
                "VM's vTPM)"
            )

    def _seal_new(self) -> None:
        """Seal a new random key and write its file, without replacing one that another
        process wrote meanwhile."""
        parent = self._path.parent
        if not parent.is_dir():
            raise KeyProviderError(
                f"cannot create the TPM-sealed key file {self._path}: the directory "
                f"{parent} does not exist; create it (mode 0700)"
            )
        with tempfile.TemporaryDirectory(prefix="setec-tpm-") as work:
            pub, priv = Path(work, "sealed.pub"), Path(work, "sealed.priv")
            self._primary(work)
            self._tool(
                "tpm2_create",
                "-Q", "-C", str(Path(work, "primary.ctx")), "-g", "sha256",
                "-a", _SEALED_ATTRIBUTES, "-i", "-", "-u", str(pub), "-r", str(priv),
                stdin=os.urandom(KEY_SIZE),
            )  # fmt: skip
            sealed = _SEALED_MAGIC + _sized(pub.read_bytes()) + _sized(priv.read_bytes())
        fd, temp = tempfile.mkstemp(prefix=f".{self._path.name}.", dir=parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(sealed)
                f.flush()
                os.fsync(f.fileno())
            # link() fails if the name exists: a file sealed meanwhile is kept.
            os.link(temp, self._path)
        except FileExistsError:
            pass
        except OSError as e:
            raise KeyProviderError(
                f"cannot write the TPM-sealed key file {self._path}: {e.strerror}"
            ) from None
        finally:
            os.unlink(temp)

    def _unseal(self) -> bytes:
        """Load the sealed object under a fresh primary and unseal the key."""
        pub, priv = self._read_sealed()
        with tempfile.TemporaryDirectory(prefix="setec-tpm-") as work:
            Path(work, "sealed.pub").write_bytes(pub)
            Path(work, "sealed.priv").write_bytes(priv)
            self._primary(work)
            self._tool(
                "tpm2_load",
                "-Q", "-C", str(Path(work, "primary.ctx")), "-u", str(Path(work, "sealed.pub")),
                "-r", str(Path(work, "sealed.priv")), "-c", str(Path(work, "sealed.ctx")),
            )  # fmt: skip
            key = self._tool("tpm2_unseal", "-c", str(Path(work, "sealed.ctx")))
        if len(key) != KEY_SIZE:
            raise KeyMismatchError(
                f"the TPM-sealed key file {self._path} holds no setec key: it unsealed to "
                f"{len(key)} bytes, not {KEY_SIZE}"
            )
        return key

    def _read_sealed(self) -> tuple[bytes, bytes]:
        """The public and private parts from the sealed key's file."""
        try:
            data = self._path.read_bytes()
        except OSError as e:
            raise KeyProviderError(
                f"cannot read the TPM-sealed key file {self._path}: {e.strerror}"
            ) from None
        try:
            if not data.startswith(_SEALED_MAGIC):
                raise ValueError("no magic")
            rest = data[len(_SEALED_MAGIC) :]
            parts = []
            for _ in range(2):
                (size,) = struct.unpack(">H", rest[:2])
                if size == 0 or len(rest) < 2 + size:
                    raise ValueError("short")
                parts.append(rest[2 : 2 + size])
                rest = rest[2 + size :]
            if rest:
                raise ValueError("trailing bytes")
        except (ValueError, struct.error):
            raise KeyMismatchError(
                f"{self._path} is not a TPM-sealed key file made by setec (for {self.uri})"
            ) from None
        return parts[0], parts[1]

    def _primary(self, work: str) -> None:
        """Recreate the primary key (the same one each time) as ``WORK/primary.ctx``."""
        self._tool("tpm2_createprimary", "-Q", *_PRIMARY, "-c", str(Path(work, "primary.ctx")))

    def _tool(self, tool: str, *args: str, stdin: bytes | None = None) -> bytes:
        """Run a tpm2-tools command against this TPM; return its standard output.

        Transient objects are flushed after each command: without a resource manager
        (a swtpm socket, ``/dev/tpm0``) they would outlive the command and fill the
        TPM's few slots. Under ``/dev/tpmrm0`` the flush touches only its own
        connection's, so nothing of another program's.
        """
        env = {**os.environ, TCTI_ENV: self._tcti}
        try:
            done = _run([tool, *args], env=env, stdin=stdin)
        finally:
            _run(["tpm2_flushcontext", "-t"], env=env, stdin=None)
        if done.returncode != 0:
            raise self._refusal(tool, done.stderr.decode("utf-8", "replace"))
        return done.stdout

    def _refusal(self, tool: str, stderr: str) -> KeyProviderError:
        """One line saying why ``tool`` failed and what to do."""
        lines = [_TSS_PREFIX.sub("", line).strip() for line in stderr.splitlines()]
        lines = [line.removeprefix("ERROR: ") for line in lines if line]
        said = "; ".join(dict.fromkeys(lines[:3])) or "no reason given"
        if "Could not load tcti" in stderr or "Failed to instantiate TCTI" in stderr:
            return KeyProviderError(
                f"cannot reach the TPM at {self._tcti} (for {self.uri}): "
                f"{lines[0] if lines else said}; "
                "check --tpm-device or --tpm-tcti, and that the TPM (or swtpm) is running"
            )
        if tool == "tpm2_load" and ("integrity" in stderr or "0x1DF" in stderr.upper()):
            return KeyMismatchError(
                f"the TPM-sealed key file {self._path} was not sealed by this TPM "
                f"({self._tcti}), or the TPM has been cleared since: use the TPM that "
                "sealed it, or restore a backup wrapped with another key"
            )
        return KeyProviderError(f"{tool} failed with the TPM at {self._tcti} ({self.uri}): {said}")


def _sized(part: bytes) -> bytes:
    return struct.pack(">H", len(part)) + part


def _run(
    command: Sequence[str], *, env: Mapping[str, str], stdin: bytes | None
) -> subprocess.CompletedProcess[bytes]:
    """Run a tpm2-tools command with a deadline; a hung TPM is a refusal, not a hang."""
    try:
        feed: dict[str, Any] = (
            {"input": stdin} if stdin is not None else {"stdin": subprocess.DEVNULL}
        )
        return subprocess.run(  # noqa: S603 - tpm2-tools by name, no shell
            list(command),
            **feed,
            capture_output=True,
            env=dict(env),
            timeout=_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KeyProviderError(
            f"{command[0]} got no answer from the TPM at {env.get(TCTI_ENV)} within "
            f"{_TIMEOUT:.0f} s"
        ) from None
    except OSError as e:
        raise KeyProviderError(f"cannot run {command[0]}: {e.strerror}") from None


@hookimpl
def setec_register_key_providers(register: Any) -> None:
    """Register the ``tpm://`` key provider."""
    register(TpmKeyProvider)
