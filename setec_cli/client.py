"""The ``setec`` command: client commands (issue: client side) and ``setec server``.

``setec server`` is ``setec-serve`` under another name, as in Go setec.
"""

from __future__ import annotations

import click

from setec_cli.serve import cli as serve_cli
from setec_cli.serve import load_plugins


@click.group(name="setec", context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """The setec secrets client. Run ``setec server`` to run a server."""


cli.add_command(serve_cli, name="server")


def main() -> None:
    """Entry point of ``setec``."""
    plugins = load_plugins(cli, serve_cli)
    cli(prog_name="setec", obj=plugins)
