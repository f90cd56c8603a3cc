"""One-way layering: setec_core loads no HTTP framework, SDK or plugin."""

from __future__ import annotations

import subprocess
import sys

import pytest

FORBIDDEN = [
    "werkzeug",
    "boto3",
    "botocore",
    "google",
    "hvac",
    "psycopg",
    "setec_plugins",
    "setec_cli",
]


@pytest.mark.parametrize("module", ["setec_core", "setec_core.testing"])
def test_import_loads_nothing_forbidden(module: str) -> None:
    """Importing the library (or its testing helpers) loads none of the optional parts."""
    code = f"import sys, {module}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    for name in FORBIDDEN:
        assert not any(m == name or m.startswith(name + ".") for m in loaded), (
            f"{module} loaded {name}"
        )


def test_core_source_never_imports_plugins() -> None:
    """No module of setec_core imports setec_plugins or setec_cli, even lazily (inside a
    function) or only for type checking."""
    import ast
    from pathlib import Path

    import setec_core

    root = Path(setec_core.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [node.module or ""]
            else:
                continue
            for module in modules:
                if module.split(".")[0] in ("setec_plugins", "setec_cli"):
                    offenders.append(f"{path.relative_to(root)}: {module}")
    assert offenders == []
