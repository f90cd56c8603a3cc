"""docs/library.md's examples run, in order, in one interpreter (as the page says)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "library.md"


def test_library_examples_run(tmp_path: Path) -> None:
    """Every ```python block of docs/library.md runs, and no example value reaches the
    logs (stderr); values appear on stdout only where an example prints one."""
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 10
    script = tmp_path / "examples.py"
    script.write_text("\n\n".join(blocks))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hunter2" not in result.stderr
