"""The documentation's examples run (docs/plugins.md's KMS plugin passes the contract)."""

from __future__ import annotations

import os
import re
import types
from pathlib import Path

import pytest

from setec_core import ConfigError, Database, KeyProvider, Plugins
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.testing import SUPERUSER, KeyProviderContract

DOCS = Path(__file__).resolve().parents[1] / "docs"


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
