"""The built-in plugin: registered by setec_core itself, and never shadowed."""

from __future__ import annotations

import types

import pytest

from setec_core import PluginError, Plugins, hookimpl
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.builtin.sqlite_storage import SqliteStorage


class ShadowKey(DevKeyProvider):
    """A third-party key provider claiming dev://."""

    name = "shadow-key"
    schemes = ("dev",)


class ShadowSqlite(MemoryStorage):
    """A third-party storage backend claiming sqlite://."""

    name = "shadow-sqlite"
    schemes = ("sqlite",)


class ShadowMemory(MemoryStorage):
    """A third-party storage backend claiming memory://."""

    name = "shadow-memory"
    schemes = ("memory",)


def _register(hook: str, cls: type) -> types.ModuleType:
    # A module, not a SimpleNamespace: pluggy needs its plugins to be hashable.
    plugin = types.ModuleType(f"shadow_{cls.__name__}")
    setattr(plugin, hook, hookimpl(lambda register: register(cls)))
    return plugin


@pytest.mark.parametrize(
    ("hook", "cls", "scheme", "real"),
    [
        ("setec_register_key_providers", ShadowKey, "dev", DevKeyProvider),
        ("setec_register_storage_backends", ShadowSqlite, "sqlite", SqliteStorage),
        ("setec_register_storage_backends", ShadowMemory, "memory", MemoryStorage),
    ],
)
@pytest.mark.parametrize("load_entrypoints", [True, False])
def test_a_third_party_plugin_cannot_shadow_a_builtin_scheme(
    hook: str, cls: type, scheme: str, real: type, load_entrypoints: bool
) -> None:
    """A plugin claiming dev://, sqlite:// or memory:// is refused, naming the built-in
    plugin and class and the intruder, with or without entry points."""
    with pytest.raises(PluginError) as info:
        Plugins.load([_register(hook, cls)], load_entrypoints=load_entrypoints)
    message = str(info.value)
    assert f"URI scheme {scheme!r} is registered twice" in message
    assert f"by plugin 'builtin' ({real.__qualname__})" in message
    assert cls.__qualname__ in message


def test_builtins_are_listed_under_their_plugin() -> None:
    """describe() (what `setec-serve plugins` prints) names the built-in plugin."""
    rows = Plugins.load(load_entrypoints=False).describe()
    assert sorted(rows) == [
        ("key provider", "dev", "builtin", ("dev",)),
        ("storage backend", "memory", "builtin", ("memory",)),
        ("storage backend", "sqlite", "builtin", ("sqlite",)),
    ]
