"""One-way layering: setec_core loads no HTTP framework, SDK or plugin, and needs none
to work: the defaults it names are its own."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

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
    # The built-in plugins load when plugins do (a Plugins facade is built), not before.
    "setec_core.builtin",
    "sqlite3",
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


# --- defaults: core names only what core provides ---------------------------------------


def test_every_default_uri_core_names_resolves_without_entry_points(tmp_path: Path) -> None:
    """The URIs core uses by default (Database.open's sqlite:// store, new_database's
    memory:// and dev:// key) resolve with no entry point loaded: the built-in plugin
    provides them."""
    from setec_core.opening import default_storage_uri
    from setec_core.plugins import Plugins
    from setec_core.testing import TEST_KEY, new_database

    defaults = inspect.signature(new_database).parameters
    assert defaults["key"].default == TEST_KEY
    plugins = Plugins.load(load_entrypoints=False)
    for uri in (defaults["storage"].default, default_storage_uri(tmp_path)):
        plugins.storage(uri).close()
    plugins.key_provider(defaults["key"].default).close()


# Run with importlib.metadata seeing no entry point at all, as in a checkout of
# setec_core that was never installed.
NO_ENTRY_POINTS = """
import importlib.metadata, sys
importlib.metadata.entry_points = lambda **_: importlib.metadata.EntryPoints(())

from setec_core import Database
from setec_core.testing import SUPERUSER, new_database

with new_database() as db:
    db.put(SUPERUSER, "a", b"1")
    assert db.get(SUPERUSER, "a").value == b"1"
with Database.open(sys.argv[1], key="dev://") as db:
    db.put(SUPERUSER, "b", b"2")
with Database.open(sys.argv[1], key="dev://") as db:
    assert db.get(SUPERUSER, "b").value == b"2"
print(" ".join(sorted(sys.modules)))
"""


def test_core_works_with_no_entry_points(tmp_path: Path) -> None:
    """new_database() and Database.open(state_dir, key='dev://') work where no setec
    entry point is installed, and load no plugin package."""
    out = subprocess.run(
        [sys.executable, "-c", NO_ENTRY_POINTS, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    loaded = set(out.stdout.split())
    assert "setec_core.builtin.sqlite_storage" in loaded
    assert not any(m.split(".")[0] in ("setec_plugins", "setec_cli") for m in loaded)


def test_no_entry_point_points_into_core() -> None:
    """setec_core registers its own plugin; no 'setec' entry point in pyproject.toml
    names a setec_core module, which would register it twice."""
    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    targets = project["entry-points"]["setec"].values()
    assert targets
    assert [t for t in targets if t.split(":")[0].split(".")[0] == "setec_core"] == []
