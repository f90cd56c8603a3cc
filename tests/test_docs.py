"""The documentation's examples run (docs/plugins.md's KMS plugin passes the contract),
and the product cites only its own documentation."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import pytest

from setec_core import ConfigError, Database, KeyProvider, Plugins
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.testing import SUPERUSER, KeyProviderContract

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"


def _plugin_module() -> types.ModuleType:
    text = (DOCS / "plugins.md").read_text()
    section = text.split("## Example: a custom KMS plugin", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    module = types.ModuleType("setec_keyfile")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


KEYFILE = _plugin_module()


def _key_file(tmp_path: Path, name: str = "kek") -> Path:
    path = tmp_path / name
    path.write_text(os.urandom(32).hex())
    path.chmod(0o600)
    return path


class TestDocsKeyFilePlugin(KeyProviderContract):
    """The example plugin in docs/plugins.md meets the KeyProvider contract."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> KeyProvider:
        return KEYFILE.KeyFileKeyProvider.from_uri(f"keyfile://{_key_file(tmp_path)}")  # type: ignore[no-any-return]

    @pytest.fixture
    def other_provider(self, tmp_path: Path) -> KeyProvider:
        return KEYFILE.KeyFileKeyProvider.from_uri(f"keyfile://{_key_file(tmp_path, 'other')}")  # type: ignore[no-any-return]


def test_docs_plugin_opens_a_database(tmp_path: Path) -> None:
    """Registered as a plugin, the example is selected by its scheme and holds a database."""
    plugins = Plugins.load([KEYFILE])
    uri = f"keyfile://{_key_file(tmp_path)}"
    state = tmp_path / "state"
    with Database.open(state, key=uri, plugins=plugins) as db:
        db.put(SUPERUSER, "a", b"1")
    with Database.open(state, key=uri, plugins=plugins) as db:
        assert db.get(SUPERUSER, "a").value == b"1"


def test_docs_plugin_refuses_loose_key_file(tmp_path: Path) -> None:
    """The example refuses a key file others can read, saying what to do."""
    path = _key_file(tmp_path)
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        Plugins.load([KEYFILE]).key_provider(f"keyfile://{path}")


def test_docs_plugin_with_memory_audit(tmp_path: Path) -> None:
    """The example works with any storage, e.g. memory."""
    plugins = Plugins.load([KEYFILE])
    key = plugins.key_provider(f"keyfile://{_key_file(tmp_path)}")
    with Database(plugins.storage("memory://"), key, AuditLog(MemoryAuditSink())) as db:
        assert db.put(SUPERUSER, "x", b"y") == 1


# --- the product stands alone ---------------------------------------------------------

#: What the product is made of: every file here must make sense without the team's
#: working material, which lives outside the repository.
PRODUCT = ("README.md", "docs", "setec_core", "setec_plugins", "setec_cli", "tests", "bench")
_SKIPPED_DIRS = {"__pycache__", ".pytest_cache", ".hypothesis", ".mypy_cache", ".ruff_cache"}
# Built from pieces so that this file does not cite what it forbids.
_SECTION = "\u00a7"
_WORKING_MATERIAL = re.compile(
    "|".join(
        [
            r"\.\./" + "shared",
            "shared/" + r"(SPEC|ARCHITECTURE|STYLE|TESTING|PERF)",
            r"\b(" + "SPEC|ARCHITECTURE|PERF-BASELINE|STYLE|TESTING" + r")\.md",
            r"\b[Ii]" + r"ssue [0-9]+\b",
        ]
    )
)
_SECTION_NUMBER = re.compile(_SECTION + r"\s?[0-9]")
_PROTOCOL = "api" + ".md"
_PROTOCOL_CITE = re.compile(_SECTION + r"([0-9]+(?:\.[0-9]+)*)(?:-([0-9]+(?:\.[0-9]+)*))?")


def _product_lines() -> list[tuple[str, int, str]]:
    found = []
    for top in PRODUCT:
        base = ROOT / top
        paths = [base] if base.is_file() else sorted(base.rglob("*"))
        for path in paths:
            if not path.is_file() or _SKIPPED_DIRS & set(path.parts):
                continue
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary: no prose in it
            rel = path.relative_to(ROOT).as_posix()
            found += [(rel, n, line) for n, line in enumerate(text.splitlines(), 1)]
    return found


def test_the_product_cites_no_working_material() -> None:
    """Code, docs, tests and benchmarks never point at the team's working material (its
    files, their section numbers, issue numbers): where a rule matters, the product
    states it or cites its own documentation, e.g. docs/api.md's numbered sections."""
    bad = []
    for rel, n, line in _product_lines():
        if _WORKING_MATERIAL.search(line):
            bad.append(f"{rel}:{n}: {line.strip()}")
        elif _SECTION_NUMBER.search(line) and rel != f"docs/{_PROTOCOL}" and _PROTOCOL not in line:
            bad.append(f"{rel}:{n}: {line.strip()} (a section number, but of what?)")
    assert not bad, "cite the product's own docs instead:\n" + "\n".join(bad)


def test_protocol_citations_name_real_sections() -> None:
    """Every section a line cites next to docs/api.md exists there."""
    text = (DOCS / _PROTOCOL).read_text()
    sections = set(re.findall(r"^#{2,4} ([0-9]+(?:\.[0-9]+)*) ", text, re.M))
    assert {"1", "2", "3", "4", "8"} <= sections
    bad = []
    for rel, n, line in _product_lines():
        if _PROTOCOL not in line or rel == f"docs/{_PROTOCOL}":
            continue
        for start, end in _PROTOCOL_CITE.findall(line):
            missing = {start, end} - sections - {""}
            if missing:
                bad.append(f"{rel}:{n}: no section {', '.join(sorted(missing))}")
    assert not bad, "\n".join(bad)
