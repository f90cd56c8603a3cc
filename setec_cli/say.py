"""The one-line messages ``setec-serve`` and its admin commands print on stderr."""

from __future__ import annotations

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
