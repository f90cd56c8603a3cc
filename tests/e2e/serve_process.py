"""Run ``setec-serve`` as a real subprocess through its console script, for end-to-end
tests: start it, wait for its "listening on URL" line, talk HTTP to it, stop it with a
signal and collect what it printed."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import requests
from console_scripts import console_script

LISTENING = re.compile(r"listening on (\S+)")


class ServeProcess:
    """A ``setec-serve`` subprocess. Use as a context manager; :attr:`url` is set once it
    listens; :meth:`stop` sends SIGTERM and returns the exit code."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.args = [console_script("setec-serve"), *args]
        self.cwd = cwd
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self._lines: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    @property
    def output(self) -> str:
        """Everything the server wrote to stderr and stdout so far."""
        return "".join(self._lines)

    def start(self, timeout: float = 30) -> ServeProcess:
        self.proc = subprocess.Popen(
            self.args,
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        while not self._ready.wait(0.05):
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"setec-serve exited {self.proc.returncode}:\n{self.output}")
            if time.monotonic() > deadline:
                self.stop(signal.SIGKILL)
                raise RuntimeError(f"setec-serve did not start in {timeout} s:\n{self.output}")
        return self

    def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.append(line)
            m = LISTENING.search(line)
            if m and not self._ready.is_set():
                self.url = m.group(1)
                self._ready.set()

    def send(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 20) -> int:
        """Signal the server and wait for it to exit; return its exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        if self._reader is not None:
            self._reader.join(5)  # it ends at EOF, once the server has exited
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.stop()


def run_serve(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run ``setec-serve ARGS`` to completion (for commands and startup errors), in
    ``env`` if given, else this process's environment.

    Where neither ``ARGS`` nor ``env`` says where to listen, ``SETEC_LISTEN`` picks a
    free port: setec-serve binds before it opens the store or builds the authorizer, so
    on the default port 8080 a test of a later error would fail whenever something
    else on the machine listens there."""
    env = dict(os.environ if env is None else env)
    env.setdefault("SETEC_LISTEN", "127.0.0.1:0")
    return subprocess.run(
        [console_script("setec-serve"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def refused(
    *args: str,
    cwd: Path,
    env: dict[str, str] | None,
    error_lines: Callable[[str], list[str]],
    naming: Iterable[str] = (),
    timeout: float = 30,
) -> subprocess.CompletedProcess[str]:
    """Run ``setec-serve ARGS`` and check that it refused: exit status 1, exactly one
    error line (as ``error_lines`` picks them out of stderr) holding every string of
    ``naming``, and no traceback. Returns the finished process."""
    result = run_serve(*args, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 1, result.stderr
    for text in naming:
        assert text in errors[0], (text, errors[0])
    assert "Traceback" not in result.stderr + result.stdout
    return result


def free_port() -> int:
    """A loopback port nothing listens on (for "unreachable" peers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}


def call(url: str, method: str, body: dict[str, Any]) -> requests.Response:
    """POST ``body`` to ``/api/METHOD`` of the server at ``url``, as a Go client does."""
    return requests.post(f"{url}/api/{method}", json=body, headers=GUARD, timeout=10)


def kms_serve_args(state: Path, key: str) -> tuple[str, ...]:
    """Arguments serving ``state`` under the KMS ``key`` on a free loopback port; --dev
    only for its loopback superuser authorizer."""
    return ("--dev", "--state-dir", str(state), "--listen", "127.0.0.1:0", "--kms-key-name", key)


def state_files(state: Path) -> dict[str, bytes]:
    """Every file under ``state`` and its bytes (to show that nothing changed)."""
    return {str(p.relative_to(state)): p.read_bytes() for p in state.rglob("*") if p.is_file()}
