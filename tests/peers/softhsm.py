"""A throwaway SoftHSM2 token directory for the ``pkcs11://`` key provider's tests.

SoftHSM2 (Debian's ``softhsm2``, installed by tests/peers/provision.py) is a real
PKCS#11 module that keeps its tokens as files in the directory its configuration file
names; ``SOFTHSM2_CONF`` points the module at that file. Tokens are made with
``softhsm2-util`` and keys with python-pkcs11, as an operator would with pkcs11-tool.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
"""Where Debian's softhsm2 package puts the PKCS#11 module."""


class SoftHsm:
    """A SoftHSM2 configuration whose tokens live under ``root``.

    :param root: an empty directory for the configuration file and the tokens.
    """

    def __init__(self, root: Path) -> None:
        self.tokens = root / "tokens"
        self.tokens.mkdir(parents=True)
        self.conf = root / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.tokens}\nobjectstore.backend = file\nlog.level = ERROR\n"
        )
        self.module = MODULE

    @property
    def env(self) -> dict[str, str]:
        """The variables that point the module (in any process) at these tokens."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    def init_token(self, label: str, pin: str, so_pin: str = "so-pin-4242") -> None:
        """Initialise a token in the next free slot, as an operator would."""
        subprocess.run(
            [
                "softhsm2-util",
                "--init-token",
                "--free",
                "--label",
                label,
                "--pin",
                pin,
                "--so-pin",
                so_pin,
            ],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
        )

    def generate_key(
        self,
        token_label: str,
        pin: str,
        key_label: str,
        *,
        kind: str = "AES:32",
        extractable: bool = False,
    ) -> None:
        """Make a key in a token with OpenSC's pkcs11-tool, as docs/keys.md tells an
        operator to: sensitive, and extractable only if asked.

        :param kind: pkcs11-tool's ``--key-type`` (``AES:32``, ``AES:16``,
            ``GENERIC:32``), or ``rsa:2048`` for a key pair.
        """
        verb = "--keypairgen" if kind.startswith("rsa") else "--keygen"
        flags = ["--extractable"] if extractable else []
        self.pkcs11_tool(
            token_label,
            pin,
            verb,
            "--key-type",
            kind,
            "--label",
            key_label,
            "--sensitive",
            *flags,
        )

    def pkcs11_tool(self, token_label: str, pin: str, *args: str) -> str:
        """Run pkcs11-tool logged in to a token; return what it printed."""
        done = subprocess.run(
            [
                "pkcs11-tool",
                "--module",
                self.module,
                "--token-label",
                token_label,
                "--login",
                "--pin",
                pin,
                *args,
            ],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            text=True,
        )
        return done.stdout
