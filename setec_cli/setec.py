"""The ``setec`` command: the client commands, ``setec server``, ``help`` and ``version``.

``setec server`` is ``setec-serve`` under another name, as in Go setec, imported only
when it is used (a :class:`LazyCommand`), so that the client commands start without
loading the server. The client commands live in :mod:`setec_cli.commands` (one API call each),
:mod:`setec_cli.transfer` (import, export), :mod:`setec_cli.run` and
:mod:`setec_cli.inject`; docs/cli.md describes them all.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from setec_cli.commands import COMMANDS
from setec_cli.inject import inject_command
from setec_cli.options import global_options
from setec_cli.run import run_command
from setec_cli.say import fail
from setec_cli.transfer import export_command, import_command
from setec_cli.version import PACKAGE, package_version, version_flag, version_text
from setec_core.errors import SetecError

if TYPE_CHECKING:
    from setec_core.plugins import Plugins


class LazyCommand(click.Command):
    """Stands in for a command whose module is imported only when the command is used.

    It carries the real command's help (its first paragraph is enough), so that a
    listing of commands shows it without importing anything.
    """

    def __init__(self, name: str, target: str, help: str) -> None:
        super().__init__(name, help=help)
        #: Where the real command is: ``module:attribute``.
        self.target = target

    def load(self) -> click.Command:
        """Import and return the real command."""
        module, _, attribute = self.target.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command), self.target
        return command


class SetecGroup(click.Group):
    """The ``setec`` group: lists its commands in the order they were added, not A to
    Z, and imports a :class:`LazyCommand` only when it is invoked or asked for (then
    the plugins of the command line, the root context's ``obj``, add their commands
    to it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = self.commands.get(cmd_name)
        if isinstance(command, LazyCommand) and not self._listing:
            command = self.commands[cmd_name] = command.load()  # keeps its place
            plugins = ctx.find_root().obj
            if plugins is not None:
                add_plugin_commands(plugins, command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with self._stand_ins():
            super().format_commands(ctx, formatter)

    def shell_complete(
        self, ctx: click.Context, incomplete: str
    ) -> list[click.shell_completion.CompletionItem]:
        with self._stand_ins():
            return super().shell_complete(ctx, incomplete)

    @contextlib.contextmanager
    def _stand_ins(self) -> Iterator[None]:
        # Listing the commands (help, completion of a command name) needs only each
        # one's short help, which a LazyCommand carries: "setec --help" lists "server"
        # without importing the server.
        self._listing = True
        try:
            yield
        finally:
            self._listing = False


@click.group(
    name="setec",
    cls=SetecGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@global_options(envvar=True)
@version_flag("setec")
def cli() -> None:
    """A server and command-line tool for the setec API.

    The "server" subcommand starts a server for the setec API. The other subcommands
    call methods of a running setec server.

    Client commands must provide a server URL with the -s flag, or via the
    SETEC_SERVER environment variable. For a server using bearer tokens, set
    SETEC_TOKEN or pass --token-file.
    """


assert isinstance(cli, SetecGroup)
# "setec server" is the whole server (werkzeug, cryptography, storage, the admin
# commands): imported only when used, so that the client commands start fast.
cli.add_command(
    LazyCommand(
        "server",
        target="setec_cli.serve:cli",
        help="Run the setec secrets server (or one of the commands below).",
    )
)
for _command in (*COMMANDS, import_command, export_command, run_command, inject_command):
    cli.add_command(_command)


@cli.command("help")
@click.argument("command", nargs=-1, metavar="[COMMAND]")
@click.pass_context
def help_command(ctx: click.Context, command: tuple[str, ...]) -> None:
    """Print help for setec or one of its commands."""
    group = ctx.parent.command if ctx.parent is not None else cli
    parent = ctx.parent or ctx
    if not command:
        click.echo(group.get_help(parent))
        return
    assert isinstance(group, click.Group)
    found = group.get_command(parent, command[0])
    if found is None:
        raise click.UsageError(f"no such command {command[0]!r}; run 'setec help'")
    with click.Context(found, info_name=command[0], parent=parent) as sub:
        click.echo(found.get_help(sub))


@cli.command("version")
@click.option("--json", "as_json", is_flag=True, help="Print the version as JSON.")
def version_command(as_json: bool) -> None:
    """Print the version of this setec (the same as setec --version)."""
    if as_json:
        click.echo(json.dumps({"name": PACKAGE, "version": package_version()}))
    else:
        click.echo(version_text("setec"))


#: The client commands built in here, which run without loading plugins.
CLIENT_COMMANDS = frozenset(cli.commands) - {"server", "help"}


def invoked_command(args: Sequence[str]) -> str | None:
    """The subcommand ``args`` (``setec``'s arguments) invoke, skipping the global
    options; ``None`` if there is none."""
    takes_value = {"-s", "--server", "--token-file"}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            return args[i + 1] if i + 1 < len(args) else None
        if not arg.startswith("-"):
            return arg
        i += 2 if arg in takes_value else 1
    return None


def main() -> None:
    """Entry point of ``setec``."""
    # Plugins are loaded when they can matter (setec server, help, a command a plugin
    # adds), not for the built-in client commands: importing every server plugin
    # (KMS, storage, authorizers) added a sixth to the start-up time of "setec get".
    if sys.stdout is None:  # started with its standard output closed (>&-)
        sys.stderr.write("Error: standard output is closed; nothing can be printed\n")
        sys.exit(1)
    if sys.stdin is None:  # <&-: reads see an empty input, as from /dev/null
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the process
    plugins = None
    command = invoked_command(sys.argv[1:])
    # "setec --version" needs no plugin either.
    if command not in CLIENT_COMMANDS and not (command is None and "--version" in sys.argv):
        plugins = load_plugins()
    cli(prog_name="setec", obj=plugins)


def load_plugins() -> Plugins:
    """Load the installed plugins and let them add their commands to ``setec``; they
    add those of ``setec server`` when it is loaded (:class:`SetecGroup`).

    Exits with a one-line error if a plugin is broken.
    """
    from setec_core.plugins import Plugins

    try:
        plugins = Plugins.load()
    except SetecError as e:
        fail(str(e))
    add_plugin_commands(plugins, cli)
    return plugins


def add_plugin_commands(plugins: Plugins, command: click.Command) -> None:
    """Let every plugin add subcommands to ``command``, if it is a group.

    Exits with a one-line error if a plugin is broken.
    """
    if isinstance(command, click.Group):
        try:
            plugins.add_commands(command)
        except SetecError as e:
            fail(str(e))
