"""Running this project's console scripts as subprocesses, for the CLI and end-to-end
tests (tests/ is on sys.path: import as ``from console_scripts import ...``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path


def console_script(name: str) -> str:
    """The path of an installed console script of this project (next to the python
    running the tests, so the tests use the checkout's install)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    assert found, f"console script {name!r} is not installed; run pip install -e ."
    return found


def default_sigint() -> None:
    """For ``preexec_fn``: give the child the default SIGINT, for tests that interrupt
    it. A test run started with SIGINT ignored (``&`` in a script, ``nohup``) passes
    that on to every child, whose Ctrl-C would then do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def clean_env(server: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without any ``SETEC_*`` variable, plus
    ``SETEC_SERVER=server`` (if given) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETEC_")}
    if server is not None:
        env["SETEC_SERVER"] = server
    env.update(extra)
    return env


def run_setec(
    *args: str,
    server: str | None = None,
    stdin: bytes = b"",
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    stdout: int | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``setec ARGS`` with stdin a pipe holding ``stdin`` and ``SETEC_SERVER`` set to
    ``server``; assert it printed no traceback."""
    proc = subprocess.run(
        [console_script("setec"), *args],
        input=stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_env(server, **(env or {})),
        cwd=cwd,
        timeout=30,
        check=False,
    )
    assert b"Traceback" not in proc.stderr, proc.stderr.decode(errors="replace")
    return proc
