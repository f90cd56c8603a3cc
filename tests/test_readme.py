"""The README's promises: .ci/run runs the README's test command verbatim, and the
README's library example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command() -> None:
    """.ci/run contains the README's test command, verbatim."""
    test_command = _blocks("sh")[1].strip()
    assert "tox" in test_command
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_library_example_runs(tmp_path: Path) -> None:
    """The README's library example runs and prints no secret value."""
    code = _blocks("python")[0]
    result = subprocess.run(
        [sys.executable, "-c", code + "\nprint(repr(SUPERUSER))\n"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "state" / "audit.log").stat().st_size > 0
    assert "hunter2" not in result.stdout + result.stderr


def test_readme_store_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Store example runs against a real server holding the secret the
    README's `setec put` line stores."""
    from setec_core.testing import SUPERUSER
    from setec_core.testing.server import new_server

    code = _blocks("python")[1]
    assert "http://127.0.0.1:8080" in code
    with new_server() as server:
        server.db.put(SUPERUSER, "prod/app/db-pass", b"hunter2")
        monkeypatch.chdir(tmp_path)
        exec(code.replace("http://127.0.0.1:8080", server.url), {})  # noqa: S102
    assert (tmp_path / "secrets.cache").stat().st_mode & 0o777 == 0o600
