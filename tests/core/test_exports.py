"""setec_core's top-level names are imported on first use: every one resolves, and
importing a small part of the library (the client, the wire format) loads none of the
rest (docs/performance.md, "CLI start-up")."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import setec_core

#: The server side of the library, and what only it needs.
SERVER_SIDE = (
    "cryptography",
    "pluggy",
    "sqlite3",
    "setec_core.database",
    "setec_core.audit",
    "setec_core.crypto",
    "setec_core.storage",
    "setec_core.plugins",
    "setec_core.authz",
    "setec_core.backup",
)


def test_every_public_name_resolves() -> None:
    """Each name of ``setec_core.__all__`` is the object of the module that defines it,
    and ``from setec_core import *`` gives them all."""
    exports = setec_core._EXPORTS
    assert sorted(exports) == sorted(setec_core.__all__)
    for name, module in exports.items():
        assert getattr(setec_core, name) is getattr(
            importlib.import_module(f"setec_core.{module}"), name
        )
    namespace: dict[str, object] = {}
    exec("from setec_core import *", namespace)  # noqa: S102 - a fixed statement
    assert set(setec_core.__all__) <= set(namespace)
    assert set(setec_core.__all__) <= set(dir(setec_core))


def test_unknown_name_is_an_attribute_error() -> None:
    """A name setec_core does not export raises AttributeError naming it."""
    with pytest.raises(AttributeError, match="'NoSuchThing'"):
        setec_core.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018


def test_type_checking_imports_match_the_exports() -> None:
    """The ``if TYPE_CHECKING:`` imports (what mypy sees) name the same module for
    each name as the table the imports at run time use."""
    tree = ast.parse(Path(setec_core.__file__).read_text())
    seen = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                module = (statement.module or "").removeprefix("setec_core.")
                seen.update({alias.name: module for alias in statement.names})
    assert seen == setec_core._EXPORTS


@pytest.mark.parametrize(
    "module", ["setec_core.client", "setec_core.client.api", "setec_core.wire", "setec_core.model"]
)
def test_client_side_loads_no_server_side(module: str) -> None:
    """Importing the client or the wire format (and using ``Client``) loads no
    database, audit log, storage, cryptography or plugin machinery."""
    code = (
        f"import sys, {module}; from setec_core.client import Client; "
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(out.stdout.split())
    assert "setec_core.client.api" in loaded
    assert sorted(m for m in loaded for p in SERVER_SIDE if m == p or m.startswith(p + ".")) == []
