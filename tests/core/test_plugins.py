"""The plugin system: loading, registries, selection by URI scheme (docs/plugins.md)."""

from __future__ import annotations

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
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.options import Option
from setec_core.peer import Peer
from setec_core.server_info import DEFAULT_SERVER, ServerInfo


class RotKeyProvider(DevKeyProvider):
    """A third-party key provider for these tests (a dev key under another scheme)."""

    name = "rot"
    schemes = ("rot",)


class FakePlugin:
    """A plugin object for these tests (hashable, as pluggy needs its plugins to be)."""


def plugin(**hooks: Any) -> FakePlugin:
    """A plugin object whose hook implementations are the given functions."""
    obj = FakePlugin()
    for hook_name, fn in hooks.items():
        setattr(obj, hook_name, hookimpl(fn))
    return obj


def test_defaults_come_from_entry_points() -> None:
    """The default plugins are found through the 'setec' entry-point group, next to the
    built-in plugin, which registers itself."""
    plugins = Plugins.load()
    assert plugins.key_providers.by_name("dev") is DevKeyProvider
    assert plugins.storage_backends.by_name("sqlite") is SqliteStorage
    assert plugins.storage_backends.by_name("memory") is MemoryStorage
    owners = {reg.cls.name: reg.plugin for reg in plugins.storage_backends.registrations()}
    assert owners == {"memory": "builtin", "sqlite": "builtin", "postgresql": "postgres-storage"}
    authorizers = {reg.cls.name: reg.plugin for reg in plugins.authorizers.registrations()}
    assert authorizers == {
        "dev": "dev-authz",
        "tailscale": "tailscale-authz",
        "tailscale-serve": "tailscale-authz",
        "policy": "policy-authz",
    }


def test_no_entry_points_means_only_the_builtin_plugin() -> None:
    """load_entrypoints=False loads nothing but the built-in plugin and what is passed."""
    plugins = Plugins.load(load_entrypoints=False)
    assert plugins.key_providers.names() == ["dev"]
    assert plugins.storage_backends.names() == ["memory", "sqlite"]
    with pytest.raises(PluginError, match=r"\(none installed\)"):
        plugins.backup_sink("dir:///nowhere")


def test_third_party_plugin_registers() -> None:
    """A plugin passed in registers next to the defaults and is selected by scheme."""
    extra = plugin(setec_register_key_providers=lambda register: register(RotKeyProvider))
    plugins = Plugins.load([extra])
    provider = plugins.key_provider("rot://x")
    assert isinstance(provider, RotKeyProvider)
    assert plugins.key_providers.names() == [
        "age",
        "aws-kms",
        "dev",
        "gcp-kms",
        "pkcs11",
        "rot",
        "tpm",
        "vault-transit",
    ]


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
    assert "'builtin'" in message  # the plugin that registered the real one
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
            r"unknown key provider 'awskms' in 'awskms://arn'; available: age://, aws-kms://, "
            r"dev://, gcp-kms://, pkcs11://, tpm://, vault-transit://",
        ),
        ("arn:aws:kms:us-east-1:1:key/", r"not an AWS KMS key ARN: 'arn:aws:kms:us-east-1:1:key/'"),
        (
            "just-a-name",
            r"is not a URI; expected SCHEME://\.\.\., where SCHEME is one of: age://, "
            r"aws-kms://, dev://, gcp-kms://, pkcs11://, tpm://, vault-transit://",
        ),
    ],
)
def test_unknown_key_provider_lists_available(uri: str, message: str) -> None:
    """An unknown scheme says what is available; a bare ARN means aws-kms."""
    with pytest.raises(ConfigError, match=message):
        Plugins.load().key_provider(uri)


def test_unknown_storage_lists_available() -> None:
    """An unknown storage scheme lists the installed ones."""
    with pytest.raises(
        PluginError, match=r"available: memory://, postgres://, postgresql://, sqlite://"
    ):
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
    assert ("key provider", "dev", "builtin", ("dev",)) in rows
    assert ("storage backend", "sqlite", "builtin", ("sqlite",)) in rows


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
    """A toy authorizer: the caller's login is the peer's ``Login`` header."""

    name = "header"
    options = (Option("--secret", "The pattern of the secrets every caller may get."),)

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> HeaderAuthorizer:
        if not options.get("secret"):
            raise ConfigError("header authorizer needs option 'secret'")
        return cls((Rule(["get"], [options["secret"]]),))

    def identify(self, peer: Peer) -> Caller:
        return Caller(Principal(user=peer.headers["Login"]), self.rules)


def test_authorizer_hook() -> None:
    """setec_register_authorizers: an authorizer is selected by name and built from options."""
    extra = plugin(setec_register_authorizers=lambda register: register(HeaderAuthorizer))
    plugins = Plugins.load([extra])
    authz = plugins.authorizer("header", {"secret": "app/*"})
    caller = authz.identify(Peer("127.0.0.1", 5000, headers={"Login": "alice@example.com"}))
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


# --- calling hooks through pluggy -------------------------------------------------------


def test_registration_hooks_are_called_through_pluggy() -> None:
    """The register hooks go through pluggy's hook callers, once per plugin: hook-call
    monitoring sees each plugin's call, and a hook wrapper wraps each one."""
    seen: list[str] = []

    class Wrapper(FakePlugin):
        @hookimpl(wrapper=True)
        def setec_register_key_providers(self, register: Any) -> Any:
            seen.append("before")
            result = yield
            seen.append("after")
            return result

    rot = plugin(
        setec_register_key_providers=lambda register: [seen.append("rot"), register(RotKeyProvider)]
    )
    pm = get_plugin_manager([rot, Wrapper()], load_entrypoints=False)
    calls: list[list[str]] = []
    pm.add_hookcall_monitoring(
        lambda name, impls, kwargs: (
            calls.append([i.plugin_name for i in impls])
            if name == "setec_register_key_providers"
            else None
        ),
        lambda outcome, name, impls, kwargs: None,
    )
    plugins = Plugins(pm)
    assert plugins.key_providers.by_name("rot") is RotKeyProvider
    implementers = [
        impl.plugin_name
        for impl in pm.hook.setec_register_key_providers.get_hookimpls()
        if not impl.wrapper
    ]
    assert len(calls) == len(implementers) >= 2
    # Each call holds one plugin's implementation, and the wrapper.
    assert sorted(name for call in calls for name in call if name in implementers) == sorted(
        implementers
    )
    assert all(len(call) == 2 for call in calls)
    assert seen.count("before") == seen.count("after") == len(implementers)
    at = seen.index("rot")
    assert seen[at - 1 : at + 2] == ["before", "rot", "after"]


def test_an_unhashable_plugin_is_refused() -> None:
    """A plugin object pluggy cannot keep in a set is refused at registration, with a
    message saying what to pass instead."""
    with pytest.raises(PluginError, match="not hashable; pass a module"):
        get_plugin_manager([{"setec_register_key_providers": None}])


# --- options ----------------------------------------------------------------------------


class OptionKeyProvider(DevKeyProvider):
    """A key provider that declares an option and keeps what it was given."""

    name = "opt-key"
    schemes = ("opt-key",)
    options = (
        Option("--opt-key-label", "A label for the key.", default="plain"),
        Option("--opt-key-retries", "Attempts per call.", type=int, default=3),
    )
    given: ClassVar[list[Mapping[str, Any]]] = []

    @classmethod
    def from_uri(cls, uri: str, *, options: Mapping[str, Any] | None = None) -> DevKeyProvider:
        cls.given.append(dict(options or {}))
        return super().from_uri("dev://")


def test_a_key_provider_gets_its_own_option_values() -> None:
    """A provider that declares options is built with their values from with_options
    (defaults for those not given), and nothing else; one that declares none is built
    from its URI alone."""
    OptionKeyProvider.given.clear()
    extra = plugin(setec_register_key_providers=lambda register: register(OptionKeyProvider))
    plugins = Plugins.load([extra])
    plugins.key_provider("opt-key://x")
    plugins.with_options({"opt_key_label": "blue", "listen": "x", "policy_file": "p"}).key_provider(
        "opt-key://x"
    )
    assert OptionKeyProvider.given == [
        {"opt_key_label": "plain", "opt_key_retries": 3},
        {"opt_key_label": "blue", "opt_key_retries": 3},
    ]
    assert isinstance(
        plugins.with_options({"opt_key_label": "x"}).key_provider("dev://"), DevKeyProvider
    )


def test_declared_options_say_whose_they_are() -> None:
    """declared_options() lists each option once, with its plugin and the classes it
    applies to; by kind, only that kind's."""
    extra = plugin(setec_register_key_providers=lambda register: register(OptionKeyProvider))
    plugins = Plugins.load([extra])
    declared = {d.option.flag: d for d in plugins.declared_options()}
    label = declared["--opt-key-label"]
    assert label.plugin == plugins.pm.get_name(extra)
    assert label.owners == (("key provider", OptionKeyProvider),)
    assert label.applies_to(OptionKeyProvider)
    assert not label.applies_to(DevKeyProvider)
    assert "--policy-file" in declared
    assert declared["--policy-file"].plugin == "policy-authz"
    assert [d.option.flag for d in plugins.declared_options("backup sink")] == [
        "--backup-region",
        "--backup-role",
    ]


def test_an_option_claimed_by_two_plugins_names_both() -> None:
    """Two plugins declaring one flag (or one's flag as the other's alias) is refused,
    naming both plugins and classes, as a name claimed twice is."""

    class Rival(DevKeyProvider):
        name = "rival"
        schemes = ("rival",)
        options = (Option("--rival-path", "A path.", aliases=("--policy-file",)),)

    rival = plugin(setec_register_key_providers=lambda register: register(Rival))
    with pytest.raises(PluginError) as info:
        Plugins.load([rival])
    message = str(info.value)
    assert "option --policy-file is claimed twice" in message
    assert "'policy-authz' (PolicyAuthorizer)" in message
    assert "Rival" in message


def test_classes_of_one_plugin_may_share_an_option() -> None:
    """One plugin's key provider and sink declaring the same option share one flag."""
    shared = Option("--acme-profile", "The ACME profile.")

    class AcmeKey(DevKeyProvider):
        name = "acme"
        schemes = ("acme",)
        options = (shared,)

    class AcmeSink(MemorySink):
        name = "acme-sink"
        schemes = ("acme-sink",)
        options = (shared,)

    acme = plugin(
        setec_register_key_providers=lambda register: register(AcmeKey),
        setec_register_backup_sinks=lambda register: register(AcmeSink),
    )
    declared = [d for d in Plugins.load([acme]).declared_options() if d.option is shared]
    assert len(declared) == 1
    assert declared[0].owners == (("key provider", AcmeKey), ("backup sink", AcmeSink))


def test_an_option_clashing_with_a_program_flag_is_refused() -> None:
    """check_flags refuses a plugin option that uses one of the program's own flags,
    naming the program and the plugin; options of other kinds are not checked when
    kinds are given."""
    plugins = Plugins.load()
    with pytest.raises(PluginError, match=r"--policy-file is claimed twice: by setec-serve"):
        plugins.check_flags({"--policy-file"}, program="setec-serve")
    plugins.check_flags({"--policy-file"}, program="setec-serve", kinds=["backup sink"])
    plugins.check_flags({"--listen", "listen"}, program="setec-serve")


def test_a_declared_option_must_be_an_option() -> None:
    """A class whose options are not Option objects is refused, naming the plugin."""

    class Sloppy(DevKeyProvider):
        name = "sloppy"
        schemes = ("sloppy",)
        options = ("--sloppy",)  # type: ignore[assignment]

    with pytest.raises(PluginError, match=r"declares '--sloppy' in .*Sloppy\.options"):
        Plugins.load([plugin(setec_register_key_providers=lambda register: register(Sloppy))])


def test_a_bare_prefix_is_owned_by_its_provider() -> None:
    """A bare prefix stands for its provider's scheme; two providers claiming one prefix
    are refused, naming both; the 'not a URI' message lists the prefix."""
    plugins = Plugins.load()
    assert plugins.key_providers.expand("arn:aws:kms:x") == "aws-kms://arn:aws:kms:x"
    assert plugins.key_providers.expand("dev://") == "dev://"
    assert plugins.key_providers.bare_prefixes() == [("arn:", "aws-kms")]
    with pytest.raises(ConfigError, match=r"or a value starting arn: \(aws-kms\)"):
        plugins.key_provider("just-a-name")

    class Arnold(RotKeyProvider):
        name = "arnold"
        schemes = ("arnold",)
        bare_prefixes = ("arn:",)

    with pytest.raises(PluginError, match=r"bare prefix 'arn:' is registered twice") as info:
        Plugins.load([plugin(setec_register_key_providers=lambda register: register(Arnold))])
    assert "'aws-kms' (AwsKmsKeyProvider)" in str(info.value)
    assert "Arnold" in str(info.value)


def test_the_authorizer_gets_the_server_facts() -> None:
    """Plugins.authorizer passes the ServerInfo it is given to from_options."""
    got: list[ServerInfo] = []

    class Seeing(HeaderAuthorizer):
        name = "seeing"

        @classmethod
        def from_options(
            cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
        ) -> HeaderAuthorizer:
            got.append(server)
            return super().from_options(options, server)

    extra = plugin(setec_register_authorizers=lambda register: register(Seeing))
    server = ServerInfo(host="::1", port=9, tls=True)
    Plugins.load([extra]).with_options({"secret": "a/*"}).authorizer("seeing", server=server)
    assert got == [server]


def _installed(monkeypatch: pytest.MonkeyPatch, *entries: tuple[str, str]) -> None:
    """Make the ``setec`` entry-point group list exactly ``entries`` (name, target)."""
    import importlib.metadata as metadata

    points = metadata.EntryPoints(
        metadata.EntryPoint(name, value, "setec") for name, value in entries
    )
    real = metadata.entry_points

    def entry_points(**params: Any) -> Any:
        if params.get("group") == "setec":
            return points
        return real(**params)

    monkeypatch.setattr(metadata, "entry_points", entry_points)


def test_an_entry_point_named_like_the_builtin_plugin_is_refused_plainly(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An installed plugin whose entry point takes the built-in plugin's name is a
    PluginError naming it and saying what to do, not pluggy's bare ValueError."""
    _installed(monkeypatch, ("builtin", "setec_plugins.dir_backup"))
    with pytest.raises(
        PluginError,
        match=r"'builtin' \(setec_plugins.dir_backup\): the name 'builtin' is taken; rename",
    ):
        get_plugin_manager()


def test_two_entry_points_with_one_name_and_a_broken_one_are_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two installed plugins under one name would shadow one: refused naming both; a
    plugin whose module fails to import is refused naming it."""
    _installed(
        monkeypatch,
        ("dir-backup", "setec_plugins.dir_backup"),
        ("dir-backup", "setec_plugins.s3_backup"),
    )
    with pytest.raises(PluginError, match=r"both named 'dir-backup'.*s3_backup"):
        get_plugin_manager()
    _installed(monkeypatch, ("gone", "setec_plugins.no_such_module"))
    with pytest.raises(PluginError, match=r"plugin 'gone'.* failed to load: ModuleNotFoundError"):
        get_plugin_manager()


class ArnAwsKeyProvider(DevKeyProvider):
    """A third-party provider that wants the bare ARNs the AWS KMS provider reads."""

    name = "arn-grabber"
    schemes = ("grab",)
    bare_prefixes = ("arn:aws:kms:",)


def test_a_bare_prefix_overlapping_another_is_refused() -> None:
    """A plugin cannot take over some of another provider's bare values with a longer
    (or shorter) prefix: aws-kms reads every arn:, so arn:aws:kms: is refused, naming
    both plugins, and a bare ARN keeps meaning AWS KMS."""
    grabber = plugin(setec_register_key_providers=lambda register: register(ArnAwsKeyProvider))
    with pytest.raises(PluginError, match="overlaps") as refused:
        Plugins.load([grabber])
    message = str(refused.value)
    for named in ("'arn:aws:kms:'", "'arn:'", "ArnAwsKeyProvider", "'aws-kms'"):
        assert named in message


def test_old_style_authorizer_options_are_refused_not_ignored() -> None:
    """The listen address, TLS and dev mode are server facts now; given the old way, as
    options, they would be ignored and a check that depends on them would pass: they
    are refused, naming them and where they go."""
    with pytest.raises(ConfigError, match=r"takes no option 'listen' .*server=ServerInfo"):
        Plugins.load().authorizer("tailscale-serve", {"listen": "0.0.0.0:8080"})
    from setec_plugins.policy_authz import PolicyAuthorizer

    with pytest.raises(ConfigError, match=r"'policy' takes no option 'tls'"):
        PolicyAuthorizer.from_options({"policy_file": "/nonexistent", "tls": True})
