"""The plugin system: loading, registries, selection by URI scheme (docs/plugins.md)."""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any, ClassVar

import click
import pytest

from setec_core import (
    Authorizer,
    BackupSink,
    Caller,
    ConfigError,
    KeyProvider,
    PluginError,
    Plugins,
    Principal,
    Rule,
    StorageError,
    get_plugin_manager,
    hookimpl,
    hookspecs,
)
from setec_plugins.dev_key import DevKeyProvider
from setec_plugins.memory_storage import MemoryStorage
from setec_plugins.sqlite_storage import SqliteStorage


class RotKeyProvider(DevKeyProvider):
    """A third-party key provider for these tests (a dev key under another scheme)."""

    name = "rot"
    schemes = ("rot",)


def plugin(**hooks: Any) -> types.SimpleNamespace:
    """A plugin object whose hook implementations are the given functions."""
    ns = types.SimpleNamespace()
    for hook_name, fn in hooks.items():
        setattr(ns, hook_name, hookimpl(fn))
    return ns


def test_defaults_come_from_entry_points() -> None:
    """The default plugins are found through the 'setec' entry-point group."""
    plugins = Plugins.load()
    assert plugins.key_providers.by_name("dev") is DevKeyProvider
    assert plugins.storage_backends.by_name("sqlite") is SqliteStorage
    assert plugins.storage_backends.by_name("memory") is MemoryStorage
    owners = {reg.plugin for reg in plugins.storage_backends.registrations()}
    assert owners == {"sqlite", "memory"}
    authorizers = {reg.cls.name: reg.plugin for reg in plugins.authorizers.registrations()}
    assert authorizers == {
        "dev": "dev-authz",
        "tailscale": "tailscale-authz",
        "tailscale-serve": "tailscale-authz",
        "policy": "policy-authz",
    }


def test_no_entry_points_means_no_plugins() -> None:
    """load_entrypoints=False loads nothing but what is passed."""
    plugins = Plugins.load(load_entrypoints=False)
    assert plugins.key_providers.names() == []
    with pytest.raises(PluginError, match=r"\(none installed\)"):
        plugins.key_provider("dev://")


def test_third_party_plugin_registers() -> None:
    """A plugin passed in registers next to the defaults and is selected by scheme."""
    extra = plugin(setec_register_key_providers=lambda register: register(RotKeyProvider))
    plugins = Plugins.load([extra])
    provider = plugins.key_provider("rot://x")
    assert isinstance(provider, RotKeyProvider)
    assert plugins.key_providers.names() == ["aws-kms", "dev", "gcp-kms", "rot", "vault-transit"]


def test_duplicate_name_names_both_plugins() -> None:
    """A second provider claiming 'dev' is refused, naming both plugins."""

    class Impostor(DevKeyProvider):
        name = "dev"
        schemes = ("dev2",)

    evil = plugin(setec_register_key_providers=lambda register: register(Impostor))
    with pytest.raises(PluginError) as info:
        Plugins.load([evil])
    message = str(info.value)
    assert "registered twice" in message
    assert "'dev-key'" in message  # the entry point that registered the real one
    assert "Impostor" in message


def test_duplicate_scheme_is_refused() -> None:
    """Two classes claiming one URI scheme is an error, not a silent override."""

    class Shadow(DevKeyProvider):
        name = "shadow"
        schemes = ("dev",)

    with pytest.raises(PluginError, match="URI scheme 'dev' is registered twice"):
        Plugins.load([plugin(setec_register_key_providers=lambda register: register(Shadow))])


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        (
            "awskms://arn",
            r"unknown key provider 'awskms' in 'awskms://arn'; available: aws-kms://, dev://, "
            r"gcp-kms://, vault-transit://",
        ),
        ("arn:aws:kms:us-east-1:1:key/", r"not an AWS KMS key ARN: 'arn:aws:kms:us-east-1:1:key/'"),
        (
            "just-a-name",
            r"is not a URI; expected SCHEME://\.\.\., where SCHEME is one of: aws-kms://, "
            r"dev://, gcp-kms://, vault-transit://",
        ),
    ],
)
def test_unknown_key_provider_lists_available(uri: str, message: str) -> None:
    """An unknown scheme says what is available; a bare ARN means aws-kms."""
    with pytest.raises(ConfigError, match=message):
        Plugins.load().key_provider(uri)


def test_unknown_storage_lists_available() -> None:
    """An unknown storage scheme lists the installed ones."""
    with pytest.raises(PluginError, match=r"available: memory://, sqlite://"):
        Plugins.load().storage("mysql://db")


def test_unknown_authorizer_lists_available() -> None:
    """An unknown authorizer name lists the available names."""
    with pytest.raises(
        PluginError,
        match="unknown authorizer 'tailscal'; available: dev, policy, tailscale, tailscale-serve;",
    ):
        Plugins.load().authorizer("tailscal", {})


def test_registering_a_non_subclass_is_refused() -> None:
    """Registering something that is not a KeyProvider names the plugin and class."""
    bad = plugin(setec_register_key_providers=lambda register: register(dict))
    with pytest.raises(PluginError, match="not a subclass of KeyProvider"):
        Plugins.load([bad])


def test_misspelled_hook_is_caught() -> None:
    """A plugin implementing a hook that does not exist fails at start-up."""
    typo = plugin(setec_register_key_provider=lambda register: None)
    with pytest.raises(PluginError, match="hook setec does not define"):
        get_plugin_manager([typo])


def test_plugin_constructor_failure_is_one_clear_error() -> None:
    """A plugin whose from_uri crashes is reported as a PluginError naming the URI."""

    class Broken(DevKeyProvider):
        name = "broken"
        schemes = ("broken",)

        @classmethod
        def from_uri(cls, uri: str) -> KeyProvider:
            raise RuntimeError("boom")

    plugins = Plugins.load([plugin(setec_register_key_providers=lambda register: register(Broken))])
    with pytest.raises(
        PluginError, match=r"key provider for 'broken://x' failed: RuntimeError: boom"
    ):
        plugins.key_provider("broken://x")


def test_describe_lists_everything() -> None:
    """describe() lists kind, name, plugin and schemes for `setec-serve plugins`."""
    rows = Plugins.load().describe()
    assert ("key provider", "dev", "dev-key", ("dev",)) in rows
    assert ("storage backend", "sqlite", "sqlite", ("sqlite",)) in rows


def test_add_commands_calls_every_plugin() -> None:
    """setec_register_commands reaches each plugin with the CLI group; the default
    policy plugin adds ``new-token`` to setec-serve only."""
    seen: list[object] = []
    serve, client = click.Group(name="setec-serve"), click.Group(name="setec")
    plugins = Plugins.load([plugin(setec_register_commands=lambda cli: seen.append(cli))])
    plugins.add_commands(serve)
    plugins.add_commands(client)
    assert seen == [serve, client]
    assert "new-token" in serve.commands
    assert "new-token" not in client.commands


def test_every_hook_is_documented_and_tested() -> None:
    """Each hookspec has a section in docs/plugins.md and a test in this suite."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    docs = (root / "docs" / "plugins.md").read_text()
    tests = "".join(p.read_text() for p in (root / "tests").rglob("test_*.py"))
    hooks = [n for n in dir(hookspecs) if n.startswith("setec_")]
    assert len(hooks) == 5
    for name in hooks:
        assert f"### `{name}`" in docs, f"{name} has no section in docs/plugins.md"
        assert f"{name}=" in tests, f"{name} is not exercised by any test"


class HeaderAuthorizer(Authorizer):
    """A toy authorizer: the caller's login is in a dict 'request'."""

    name = "header"

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> HeaderAuthorizer:
        if "secret" not in options:
            raise ConfigError("header authorizer needs option 'secret'")
        return cls((Rule(["get"], [options["secret"]]),))

    def identify(self, request: Any) -> Caller:
        return Caller(Principal(user=request["login"]), self.rules)


def test_authorizer_hook() -> None:
    """setec_register_authorizers: an authorizer is selected by name and built from options."""
    extra = plugin(setec_register_authorizers=lambda register: register(HeaderAuthorizer))
    plugins = Plugins.load([extra])
    authz = plugins.authorizer("header", {"secret": "app/*"})
    caller = authz.identify({"login": "alice@example.com"})
    assert caller.principal.user == "alice@example.com"
    assert caller.allows("get", "app/db")
    assert not caller.allows("get", "other")
    with pytest.raises(ConfigError, match="needs option 'secret'"):
        plugins.authorizer("header", {})


class MemorySink(BackupSink):
    """A toy backup sink keeping blobs in a class-level dict."""

    name = "mem-sink"
    schemes = ("mem-sink",)
    blobs: ClassVar[dict[str, bytes]] = {}

    @classmethod
    def from_uri(cls, uri: str) -> MemorySink:  # the original signature, no read_only
        return cls()

    def put(self, name: str, data: bytes) -> None:
        self.blobs[name] = data

    def list(self) -> list[str]:
        return sorted(self.blobs)

    def get(self, name: str) -> bytes:
        return self.blobs[name]


def test_backup_sink_hook() -> None:
    """setec_register_backup_sinks: a sink is selected by URI scheme; delete refuses by default."""
    extra = plugin(setec_register_backup_sinks=lambda register: register(MemorySink))
    sink = Plugins.load([extra]).backup_sink("mem-sink://x")
    sink.put("b1", b"snapshot")
    assert sink.list() == ["b1"]
    assert sink.get("b1") == b"snapshot"
    with pytest.raises(StorageError, match="cannot delete"):
        sink.delete("b1")


def test_backup_sink_without_read_only_still_builds() -> None:
    """A sink written before read_only existed (from_uri(uri) only) is still built for
    the read-only commands; one that takes read_only gets it."""
    seen: list[bool] = []

    class Newer(MemorySink):
        name = "newer-sink"
        schemes = ("newer-sink",)

        @classmethod
        def from_uri(cls, uri: str, *, read_only: bool = False) -> Newer:
            seen.append(read_only)
            return cls()

    extra = plugin(
        setec_register_backup_sinks=lambda register: [register(MemorySink), register(Newer)]
    )
    plugins = Plugins.load([extra])
    assert isinstance(plugins.backup_sink("mem-sink://x", read_only=True), MemorySink)
    plugins.backup_sink("newer-sink://x", read_only=True)
    plugins.backup_sink("newer-sink://x")
    assert seen == [True, False]


class LabelledMemoryStorage(MemoryStorage):
    """A third-party storage backend under its own scheme."""

    name = "labelled"
    schemes = ("labelled",)

    @classmethod
    def from_uri(cls, uri: str) -> LabelledMemoryStorage:
        return cls(uri.partition("://")[2])


def test_storage_backend_hook() -> None:
    """setec_register_storage_backends: a third-party backend opens by its scheme."""
    extra = plugin(setec_register_storage_backends=lambda register: register(LabelledMemoryStorage))
    storage = Plugins.load([extra]).storage("labelled://x")
    assert isinstance(storage, LabelledMemoryStorage)
    storage.close()
