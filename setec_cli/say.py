"""The one-line messages ``setec-serve`` and its admin commands print on stderr."""

from __future__ import annotations

import shlex
import sys
from typing import NoReturn

import click


def say(message: str) -> None:
    """Print ``setec-serve: MESSAGE`` on stderr."""
    click.echo(f"setec-serve: {message}", err=True)


def fail(message: str) -> NoReturn:
    """Print ``setec-serve: error: MESSAGE`` on stderr and exit with status 1."""
    say(f"error: {message}")
    sys.exit(1)


def dev_export_hint(url: str) -> None:
    """Print the line that points the ``setec`` CLI at a ``--dev`` server at ``url``, as
    ``vault server -dev`` does: on a line of its own, ready to paste."""
    say("dev mode: to use this server from the setec CLI, run:")
    click.echo(f"    export SETEC_SERVER={shlex.quote(url)}", err=True)
