"""The guard options of the ``setec`` write commands (put, create-version, activate,
delete-version, delete): ``--if-active-version N``, ``--if-versions 1,2,3`` and
``--if-absent``, which make the write go through only while the secret is as the
caller last saw it (docs/cli.md, "Guarded writes").

A failed guard exits with :data:`GUARD_FAILED_EXIT`, so that a script can tell "someone
else changed it first" from any other failure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from setec_cli.formats import go_quote, parse_uint32
from setec_cli.options import CommandError
from setec_core.model import MAX_VERSION

F = TypeVar("F", bound=Callable[..., Any])

#: The exit status of a write whose guard failed (nothing was written).
GUARD_FAILED_EXIT = 3

_ACTIVE = "setec.if_active_version"
_VERSIONS = "setec.if_versions"
_ABSENT = "setec.if_absent"


class GuardFailedError(CommandError):
    """A guarded write found the secret changed: ``Error: <message>``, exit 3."""

    exit_code = GUARD_FAILED_EXIT


def _keep(key: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value is not None and value is not False:
            ctx.meta[key] = value

    return callback


def _active_version(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    try:
        ctx.meta[_ACTIVE] = parse_uint32(value)
    except ValueError:
        raise click.BadParameter(
            f"{go_quote(value)} is not a version: give a whole number from 0 to "
            f"{MAX_VERSION} (0: the secret must not exist)",
            ctx,
            param,
        ) from None


def _versions(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is None:
        return
    versions: list[int] = []
    for part in value.split(",") if value.strip() else []:
        try:
            version = parse_uint32(part.strip())
        except ValueError:
            version = 0
        if version == 0:
            raise click.BadParameter(
                f"{go_quote(part)} in {go_quote(value)} is not a version: give the "
                f"secret's versions as numbers from 1 to {MAX_VERSION} separated by "
                'commas, e.g. "1,2,3"',
                ctx,
                param,
            )
        if version in versions:
            raise click.BadParameter(f"{go_quote(value)} names version {version} twice", ctx, param)
        versions.append(version)
    ctx.meta[_VERSIONS] = tuple(versions)


def guard_options(f: F) -> F:
    """Add ``--if-active-version``, ``--if-versions`` and ``--if-absent`` to a write
    command; :func:`guards` reads what was given."""
    f = click.option(
        "--if-absent",
        is_flag=True,
        expose_value=False,
        callback=_keep(_ABSENT),
        help="Write only if the secret does not exist (exit 3 if it does).",
    )(f)
    f = click.option(
        "--if-versions",
        metavar="N,N,...",
        expose_value=False,
        callback=_versions,
        help="Write only if the secret's versions are exactly these, as 'setec info' "
        "lists them (exit 3 otherwise).",
    )(f)
    return click.option(
        "--if-active-version",
        metavar="N",
        expose_value=False,
        callback=_active_version,
        help="Write only if N is the secret's active version; 0: only if it does not "
        "exist (exit 3 otherwise).",
    )(f)


def guards(ctx: click.Context, client: Any) -> dict[str, Any]:
    """The guard keyword arguments of the client's write (empty when none was given).
    With a guard, check first that the server honours guards, so that nothing (no
    value typed in, no request) goes to a server that would write unguarded.

    :raises click.UsageError: for ``--if-absent`` with another guard option.
    :raises SetecError: :class:`~setec_core.errors.UnsupportedError` from a server
        without guards (a Go setec server).
    """
    active = ctx.meta.get(_ACTIVE)
    versions = ctx.meta.get(_VERSIONS)
    if ctx.meta.get(_ABSENT):
        if active is not None or versions is not None:
            raise click.UsageError(
                "--if-absent cannot be combined with --if-active-version or --if-versions"
            )
        active = 0
    if active is None and versions is None:
        return {}
    client.require("cas", "a write guarded by an expected version")
    return {"if_active_version": active, "if_versions": versions}


def guard_failed(prefix: str, error: Exception) -> GuardFailedError:
    """The error line of a write whose guard failed: ``<prefix>: <why>``, where the
    reason names the secret and, if you may see it, its versions now."""
    return GuardFailedError(f"{prefix}: {error}")
