"""Plugins own their options: a third-party plugin's declared option becomes a
setec-serve flag with a SETEC_* variable and help, its value reaches that plugin, and
a flag claimed twice is refused (docs/plugins.md, "Plugin options")."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner, Result

from setec_cli import logs
from setec_cli.serve import cli
from setec_core import Authorizer, Caller, ConfigError, Plugins, Principal, hookimpl
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.options import Option
from setec_core.server_info import DEFAULT_SERVER, ServerInfo


class StopHereError(ConfigError):
    """Raised by the plugins below once they have seen their options, so that
    setec-serve stops (with one error line) before it serves anything."""


class BadgeAuthorizer(Authorizer):
    """A third-party authorizer with a flag of its own (and a Path-typed, repeatable
    one)."""

    name = "badge"
    options = (
        Option("--badge-realm", "The realm badges are issued in.", default="office"),
        Option("--badge-reader", "A badge reader's device.", type=Path, multiple=True),
    )
    seen: ClassVar[list[tuple[dict[str, Any], ServerInfo]]] = []

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> BadgeAuthorizer:
        cls.seen.append((dict(options), server))
        raise StopHereError("badge authorizer built; stopping here")

    def identify(self, request: Any) -> Caller:
        return Caller(Principal(user="badge"))


class VaultishKeyProvider(DevKeyProvider):
    """A third-party key provider with a flag of its own."""

    name = "vaultish"
    schemes = ("vaultish",)
    options = (Option("--vaultish-namespace", "The namespace of the key."),)
    seen: ClassVar[list[dict[str, Any]]] = []

    @classmethod
    def from_uri(cls, uri: str, *, options: Mapping[str, Any] | None = None) -> DevKeyProvider:
        cls.seen.append(dict(options or {}))
        raise StopHereError("vaultish key provider built; stopping here")


class BadgePlugin:
    """The third-party plugin: registers both classes."""

    @hookimpl
    def setec_register_authorizers(self, register: Any) -> None:
        register(BadgeAuthorizer)

    @hookimpl
    def setec_register_key_providers(self, register: Any) -> None:
        register(VaultishKeyProvider)


@pytest.fixture
def plugins() -> Plugins:
    """The installed plugins and the badge plugin."""
    BadgeAuthorizer.seen.clear()
    VaultishKeyProvider.seen.clear()
    return Plugins.load([BadgePlugin()])


@pytest.fixture(autouse=True)
def quiet_logging(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """setec-serve would take over the process's logging; the tests run it in process,
    in a directory of their own."""
    monkeypatch.setattr(logs, "configure", lambda level: None)
    monkeypatch.chdir(tmp_path)


def serve(plugins: Plugins, *args: str, env: Mapping[str, str] | None = None) -> Result:
    """Run setec-serve in process with ``plugins``, as main() does with the installed
    ones."""
    return CliRunner().invoke(cli, list(args), obj=plugins, env=dict(env or {}))


def test_the_flag_and_its_variable_are_in_help(plugins: Plugins) -> None:
    """A third-party authorizer's option is a flag of setec-serve, with its SETEC_*
    variable, its help, and what it applies to, under the plugins' options."""
    result = serve(plugins, "--help")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    plugin_name = plugins.pm.get_name(
        next(p for p in plugins.pm.get_plugins() if isinstance(p, BadgePlugin))
    )
    assert "Options of the installed plugins:" in text
    assert "--badge-realm TEXT The realm badges are issued in." in text
    assert f"For --authorizer badge (plugin {plugin_name})." in text
    assert "[env var: SETEC_BADGE_REALM; default: office]" in text
    assert "--badge-reader PATH" in text
    assert (
        "--vaultish-namespace TEXT The namespace of the key. For --kms-key-name vaultish://" in text
    )
    assert "SETEC_VAULTISH_NAMESPACE" in text
    # The lists of choices come from what is registered.
    assert "vaultish://..." in text
    assert "one of badge, dev, policy, tailscale, tailscale-serve" in text


def test_the_flag_value_reaches_the_authorizer(plugins: Plugins) -> None:
    """The value of --badge-realm (and the repeated --badge-reader) reach the badge
    authorizer, with the facts of the server, and nothing of other plugins."""
    result = serve(
        plugins,
        "--dev",
        "--authorizer", "badge",
        "--listen", "[::1]:9443",
        "--badge-realm", "lab",
        "--badge-reader", "/dev/r1",
        "--badge-reader", "/dev/r2",
        "--policy-file", "ignored.json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "badge authorizer built; stopping here" in result.stderr
    assert BadgeAuthorizer.seen == [
        (
            {"badge_realm": "lab", "badge_reader": (Path("/dev/r1"), Path("/dev/r2"))},
            ServerInfo(host="::1", port=9443, dev=True),
        )
    ]


def test_the_variable_sets_the_flag(plugins: Plugins) -> None:
    """SETEC_BADGE_REALM sets --badge-realm; without either the default is given."""
    # Port 0, as everywhere here: the address is bound before the authorizer is built.
    args = ("--dev", "--authorizer", "badge", "--listen", "127.0.0.1:0")
    serve(plugins, *args, env={"SETEC_BADGE_REALM": "from-env"})
    serve(plugins, *args)
    assert [options["badge_realm"] for options, _ in BadgeAuthorizer.seen] == [
        "from-env",
        "office",
    ]


def test_the_flag_value_reaches_the_key_provider(plugins: Plugins) -> None:
    """A key provider's option reaches it when the server opens its store."""
    result = serve(
        plugins,
        "--dev",
        "--listen", "127.0.0.1:0",
        "--kms-key-name", "vaultish://k",
        "--vaultish-namespace", "team-a",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "vaultish key provider built" in result.stderr
    assert VaultishKeyProvider.seen == [{"vaultish_namespace": "team-a"}]


def test_a_plugin_flag_clashing_with_a_server_flag_is_refused() -> None:
    """A plugin option that takes one of setec-serve's own flags is refused, naming
    setec-serve and the plugin's class."""

    class Greedy(BadgeAuthorizer):
        name = "greedy"
        options = (Option("--listen", "Where to listen, says the plugin."),)

    class GreedyPlugin:
        @hookimpl
        def setec_register_authorizers(self, register: Any) -> None:
            register(Greedy)

    result = serve(Plugins.load([GreedyPlugin()]), "--help")
    assert result.exit_code == 1
    assert "option --listen is claimed twice: by setec-serve itself and by plugin" in result.stderr
    assert "Greedy" in result.stderr


def test_two_plugins_claiming_one_flag_are_refused() -> None:
    """Two plugins declaring the same flag cannot both load: the error names both."""

    class Copycat(BadgeAuthorizer):
        name = "copycat"
        options = (Option("--badge-realm", "The realm, again."),)

    class CopycatPlugin:
        @hookimpl
        def setec_register_authorizers(self, register: Any) -> None:
            register(Copycat)

    with pytest.raises(ConfigError) as info:
        Plugins.load([BadgePlugin(), CopycatPlugin()])
    message = str(info.value)
    assert "option --badge-realm is claimed twice" in message
    assert "(BadgeAuthorizer)" in message
    assert "(test_two_plugins_claiming_one_flag_are_refused.<locals>.Copycat)" in message


def test_admin_commands_take_the_sink_options(plugins: Plugins) -> None:
    """An admin command that takes --backup takes the backup sinks' options too (after
    the command, without their variables), and checks them against the --backup given."""
    help_text = serve(plugins, "backup", "list", "--help").output
    assert "--backup-region, --backup-bucket-region REGION" in help_text
    assert "SETEC_BACKUP_REGION" not in help_text
    assert "--badge-realm" not in help_text
    result = serve(
        plugins, "backup", "list", "--backup", "dir:///nowhere", "--backup-bucket-region", "x"
    )
    assert result.exit_code == 1
    assert "--backup-region and --backup-role apply to s3:// backups, not 'dir:///nowhere'" in (
        result.stderr
    )
