"""Conventions the test suite keeps, so that it reads as a specification."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def test_every_test_says_what_it_checks() -> None:
    """Every ``test_*`` function and method under tests/ has a docstring saying what
    behaviour it checks."""
    bare = []
    for path in sorted(TESTS.rglob("*.py")):
        rel = path.relative_to(TESTS.parent).as_posix()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), rel)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("test_") and not ast.get_docstring(node):
                bare.append(f"{rel}:{node.lineno}: {node.name}")
    assert not bare, f"{len(bare)} tests without a docstring:\n" + "\n".join(bare)
