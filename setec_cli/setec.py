"""The ``setec`` command: the client commands, ``setec server``, ``help`` and ``version``.

``setec server`` is ``setec-serve`` under another name, as in Go setec. The client
commands live in :mod:`setec_cli.commands` (one API call each),
:mod:`setec_cli.transfer` (import, export) and :mod:`setec_cli.run`; docs/cli.md
describes them all.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence

import click

from setec_cli.commands import COMMANDS
from setec_cli.options import global_options
from setec_cli.run import run_command
from setec_cli.serve import cli as serve_cli
from setec_cli.serve import load_plugins
from setec_cli.transfer import export_command, import_command


class OrderedGroup(click.Group):
    """A group that lists its commands in the order they were added, not A to Z."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(
    name="setec",
    cls=OrderedGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@global_options(envvar=True)
def cli() -> None:
    """A server and command-line tool for the setec API.

    The "server" subcommand starts a server for the setec API. The other subcommands
    call methods of a running setec server.

    Client commands must provide a server URL with the -s flag, or via the
    SETEC_SERVER environment variable. For a server using bearer tokens, set
    SETEC_TOKEN or pass --token-file.
    """


cli.add_command(serve_cli, name="server")
for _command in (*COMMANDS, import_command, export_command, run_command):
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
    """Print the version of this setec."""
    from importlib import metadata

    version = metadata.version("pysetec")
    if as_json:
        click.echo(json.dumps({"name": "pysetec", "version": version}))
    else:
        click.echo(f"setec (pysetec) {version}")


#: The client commands built in here, which run without loading plugins.
CLIENT_COMMANDS = frozenset(
    name for name, command in cli.commands.items() if command is not serve_cli
) - {"help"}


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
    if invoked_command(sys.argv[1:]) not in CLIENT_COMMANDS:
        plugins = load_plugins(cli, serve_cli)
    cli(prog_name="setec", obj=plugins)
