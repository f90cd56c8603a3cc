"""docs/client.md's examples run, in order, against the throwaway server they start."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"


def test_client_md_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every Python example of docs/client.md runs, in order, in one module."""
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 12
    # A real module: dataclasses (the fields example) look their module up by name.
    module = types.ModuleType("docs_client_examples")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, code in enumerate(blocks, 1):
        exec(compile(code, f"docs/client.md block {number}", "exec"), module.__dict__)  # noqa: S102
