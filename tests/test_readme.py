"""The README's promises: .ci/run runs the README's test command verbatim, and the
README's library example runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

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
