"""A throwaway software TPM 2.0 (swtpm) on loopback, for the ``tpm://`` key provider's
tests.

``swtpm socket --tpm2`` serves the TPM command channel and its control channel on two
ports; ``--flags not-need-init,startup-clear`` makes it usable at once, and its state
(the owner seed the sealed keys hang off) lives in a directory of its own, so two
instances are two different TPMs. tpm2-tools reaches it with the TCTI
``swtpm:host=127.0.0.1,port=PORT``. swtpm comes from Debian's ``swtpm`` package
(tests/peers/provision.py installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path


class SwtpmMissingError(RuntimeError):
    """swtpm is not installed (tests/peers/provision.py installs it)."""


def _free_port_pair() -> int:
    """A port P such that P and P + 1 are both free on loopback right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("found no two adjacent free loopback ports for swtpm")


class SwtpmServer:
    """One swtpm process with its state in ``state_dir``.

    :param state_dir: the TPM's state directory (created if missing); keep it to
        restart the same TPM, use another for a different TPM.
    """

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def tcti(self) -> str:
        """The TCTI string tpm2-tools and ``--tpm-tcti`` take."""
        return f"swtpm:host=127.0.0.1,port={self.port}"

    def start(self) -> SwtpmServer:
        """Start swtpm on two free ports and wait until it accepts connections.

        :raises SwtpmMissingError: if swtpm is not on PATH.
        """
        swtpm = shutil.which("swtpm")
        if swtpm is None:
            raise SwtpmMissingError(
                "swtpm is not installed: run python tests/peers/provision.py "
                "(or apt-get install swtpm)"
            )
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port_pair()
        self._proc = subprocess.Popen(
            [
                swtpm, "socket", "--tpm2",
                "--server", f"type=tcp,port={self.port},bindaddr=127.0.0.1",
                "--ctrl", f"type=tcp,port={self.port + 1},bindaddr=127.0.0.1",
                "--flags", "not-need-init,startup-clear",
                "--tpmstate", f"dir={self.state_dir}",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"swtpm exited at start: {err.strip()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"swtpm did not listen on port {self.port} within 10 s")

    def stop(self) -> None:
        """Stop swtpm (its state stays in :attr:`state_dir`)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self._proc is not None and self._proc.stderr:
            self._proc.stderr.close()
        self._proc = None

    def __enter__(self) -> SwtpmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
