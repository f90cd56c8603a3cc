"""How this project's console scripts print their version: one line,
``<program> (pysetec) <version>``, for ``setec version``, ``setec --version`` and any
other script's ``--version``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: The distribution whose version is printed.
PACKAGE = "pysetec"


def package_version() -> str:
    """The installed version of :data:`PACKAGE`."""
    # Imported here: importlib.metadata costs start-up time every command would pay.
    from importlib import metadata

    return metadata.version(PACKAGE)


def version_text(program: str) -> str:
    """The version line of ``program``, e.g. ``setec (pysetec) 0.4.0``."""
    return f"{program} ({PACKAGE}) {package_version()}"


def version_flag(program: str) -> Callable[[F], F]:
    """Add a ``--version`` flag that prints :func:`version_text` of ``program`` on
    stdout and exits 0, before any other option is checked."""

    def show(ctx: click.Context, param: click.Parameter, value: bool) -> None:
        if value and not ctx.resilient_parsing:
            click.echo(version_text(program))
            ctx.exit()

    return click.option(
        "--version",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        callback=show,
        help="Print the version and exit.",
    )
