"""The memory storage backend: the storage contract and its URI rules."""

from __future__ import annotations

import pytest

from setec_core import Plugins
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.errors import ConfigError, StorageError
from setec_core.storage import MetaWrite, RecordWrite, StorageBackend
from setec_core.testing.storage_contract import StorageBackendContract


class TestMemoryStorageContract(StorageBackendContract):
    """MemoryStorage passes the storage contract (it is not persistent)."""

    @pytest.fixture
    def storage(self) -> StorageBackend:
        return MemoryStorage.from_uri("memory://")


def test_label_is_kept_in_uri_and_repr() -> None:
    """memory://LABEL keeps the label in uri and repr."""
    store = MemoryStorage.from_uri("memory://tests")
    assert store.uri == "memory://tests"
    assert repr(store) == "MemoryStorage('tests')"


def test_each_uri_opens_a_new_store() -> None:
    """Two stores opened from the same URI share nothing."""
    a, b = MemoryStorage.from_uri("memory://x"), MemoryStorage.from_uri("memory://x")
    a.commit([RecordWrite(b"k", b"v", 0)])
    assert b.read(b"k") is None
    assert b.revision() == 0


@pytest.mark.parametrize("uri", ["memory:", "memory:/x", "sqlite://x", "memory"])
def test_malformed_uri_is_a_config_error(uri: str) -> None:
    """A URI that is not memory://[LABEL] raises ConfigError showing the expected form."""
    with pytest.raises(ConfigError, match="expected memory://"):
        MemoryStorage.from_uri(uri)


def test_closed_store_refuses_calls() -> None:
    """After close(), reads and commits raise StorageError rather than using stale data."""
    store = MemoryStorage.from_uri("memory://")
    store.close()
    with pytest.raises(StorageError, match="closed"):
        store.read_all()
    with pytest.raises(StorageError, match="closed"):
        store.commit([RecordWrite(b"k", b"v", 0)])


def test_duplicate_key_in_one_commit_is_refused() -> None:
    """A commit that writes one key or meta name twice raises StorageError and changes nothing."""
    store = MemoryStorage.from_uri("memory://")
    with pytest.raises(StorageError, match="twice"):
        store.commit([RecordWrite(b"k", b"a", 0), RecordWrite(b"k", b"b", 0)])
    with pytest.raises(StorageError, match="twice"):
        store.commit(meta=[MetaWrite("m", b"a", None), MetaWrite("m", b"b", None)])
    assert store.revision() == 0


def test_selected_through_plugins() -> None:
    """The built-in plugin registers MemoryStorage for memory:// URIs, with no entry
    point loaded."""
    plugins = Plugins.load(load_entrypoints=False)
    assert isinstance(plugins.storage("memory://"), MemoryStorage)
