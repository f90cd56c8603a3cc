"""What every client command of ``setec`` shares: the global options (``-s/--server``,
``--token-file``, ``-q/--quiet``), the :class:`~setec_core.client.Client` they
configure, Go's argument count messages, and how errors reach the user (``Error:
<message>`` on stderr, exit 1; usage errors exit 2; never a traceback).
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click

from setec_cli.formats import go_quote, go_quote_list, parse_uint32
from setec_core.errors import SetecError
from setec_core.model import MAX_VERSION

F = TypeVar("F", bound=Callable[..., Any])

SERVER_ENV = "SETEC_SERVER"
TOKEN_ENV = "SETEC_TOKEN"  # noqa: S105 - the variable's name, not a token

# Where the global options are kept: Context.meta is shared by the root context and
# the subcommand's, so a value given after the subcommand overrides one given before.
_SERVER = "setec.server"
_TOKEN_FILE = "setec.token_file"  # noqa: S105 - a dictionary key, not a token
_QUIET = "setec.quiet"


class CommandError(click.ClickException):
    """A command failed: click prints ``Error: <message>`` on stderr and exits 1 (a
    subclass may set another :attr:`exit_code`). The message must never hold a secret
    value."""


class ClientCommand(click.Command):
    """A client command: turns every error into a one-line message, never a traceback.

    A :class:`SetecError` the command did not word itself is printed as it is. An
    unexpected exception is printed by type only, since its text could hold a value;
    set ``SETEC_DEBUG=1`` to see the traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except SetecError as e:
            raise CommandError(str(e)) from None
        except OSError as e:
            if e.errno == errno.EPIPE:
                raise  # click exits quietly when the reader of our output has gone
            raise CommandError(_describe_os_error(e)) from None
        except Exception as e:
            # Broad on purpose: the last line of defence against a traceback that
            # could print a secret. The type is enough to report the bug.
            if os.environ.get("SETEC_DEBUG"):
                raise
            raise CommandError(
                f"internal error ({type(e).__name__}); run with SETEC_DEBUG=1 to see "
                "the traceback, and please report it"
            ) from None


def _describe_os_error(e: OSError) -> str:
    where = f" ({e.filename})" if e.filename else ""
    return f"{e.strerror or type(e).__name__}{where}"


def _remember(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if value is not None:
            ctx.meta[key] = value
        return value

    return callback


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # Only ever set: a subcommand without -q must not undo "setec -q COMMAND".
    if value:
        ctx.meta[_QUIET] = True


def global_options(*, envvar: bool) -> Callable[[F], F]:
    """Add ``-s/--server``, ``--token-file`` and ``-q/--quiet`` to a command.

    The root group takes them with ``SETEC_SERVER`` as the default (``envvar``); every
    client command takes them too, so that they work after the subcommand as in Go,
    where root flags are merged into each subcommand's.
    """

    def decorate(f: F) -> F:
        f = click.option(
            "-q",
            "--quiet",
            is_flag=True,
            expose_value=False,
            callback=_set_quiet,
            help="Print no informational lines on stderr (errors are still printed).",
        )(f)
        f = click.option(
            "--token-file",
            metavar="PATH",
            expose_value=False,
            callback=_remember(_TOKEN_FILE),
            help="Read the bearer token from PATH (for servers using the policy "
            f"authorizer; without it, the token is read from ${TOKEN_ENV}).",
        )(f)
        return click.option(
            "-s",
            "--server",
            metavar="URL",
            envvar=SERVER_ENV if envvar else None,
            expose_value=False,
            callback=_remember(_SERVER),
            help=f"The setec server's base URL (default: ${SERVER_ENV}).",
        )(f)

    return decorate


def client_command(name: str, **kwargs: Any) -> Callable[[Callable[..., Any]], ClientCommand]:
    """Declare a client command: a :class:`ClientCommand` that takes the global options."""

    def decorate(f: Callable[..., Any]) -> ClientCommand:
        command = click.command(name, cls=ClientCommand, **kwargs)(global_options(envvar=False)(f))
        assert isinstance(command, ClientCommand)
        return command

    return decorate


def inform(message: str) -> None:
    """Print an informational line (``Read 12 bytes from stdin``) on stderr, unless
    ``-q/--quiet`` was given. Errors never go through here: they always print."""
    ctx = click.get_current_context(silent=True)
    if ctx is None or not ctx.meta.get(_QUIET):
        click.echo(message, err=True)


def is_quiet() -> bool:
    """Whether ``-q/--quiet`` was given (for progress bars and the like)."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(_QUIET))


def make_client(ctx: click.Context) -> Any:
    """Build the :class:`~setec_core.client.Client` the global options describe.

    The token comes from ``--token-file`` or else ``$SETEC_TOKEN``; it is never printed.

    :raises CommandError: ``no server address is set`` (Go's message), a server that
        is not an http(s) URL, or a token file that cannot be read.
    """
    from setec_core.client import Client

    server = (ctx.meta.get(_SERVER) or "").strip()
    if not server:
        raise CommandError("no server address is set")
    if not server.startswith(("http://", "https://")):
        raise CommandError(
            f"server address {go_quote(server)} is not an http:// or https:// URL; "
            f"set -s or ${SERVER_ENV} to e.g. https://secrets.example.ts.net"
        )
    token_file = ctx.meta.get(_TOKEN_FILE)
    token = _read_token(token_file) if token_file else os.environ.get(TOKEN_ENV, "").strip()
    return Client(server, token=token or None)


def _read_token(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise CommandError(
            f"cannot read --token-file {go_quote(path)}: {reason}; "
            "check the path and that you may read the file"
        ) from None
    if not token:
        raise CommandError(f"--token-file {go_quote(path)} is empty")
    return token


def take_args(command: str, args: Sequence[str], want: int) -> list[str]:
    """Check that ``args`` holds exactly ``want`` arguments, with Go's usage message.

    :raises click.UsageError: ``wrong number of arguments for "get": got 0, want 1``
        (or Go's ``extra arguments after command`` for a command that takes none).
    """
    if len(args) != want:
        if want == 0:
            raise click.UsageError(
                f"extra arguments after command {go_quote(command)}: {go_quote_list(args)}"
            )
        raise click.UsageError(
            f"wrong number of arguments for {go_quote(command)}: got {len(args)}, want {want}"
        )
    return list(args)


def take_at_least(command: str, args: Sequence[str], want: int) -> list[str]:
    """Check that ``args`` holds at least ``want`` arguments, with Go's usage message."""
    if len(args) < want:
        raise click.UsageError(
            f"wrong number of arguments for {go_quote(command)}: "
            f"got {len(args)}, want at least {want}"
        )
    return list(args)


def check_name(name: str) -> str:
    """Refuse a secret name that UTF-8 cannot carry (an undecodable command-line byte).

    :raises CommandError: naming it as Go would quote it.
    """
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError(f"secret name {go_quote(name)} is not valid UTF-8") from None
    return name


def stdout_is_terminal() -> bool:
    """Whether standard output is a terminal (Go's ``term.IsTerminal(stdout)``)."""
    try:
        return os.isatty(sys.stdout.fileno())
    except (OSError, ValueError):
        return False


def version_option(ctx: click.Context, param: click.Parameter, value: str | None) -> int:
    """Convert a ``--version N`` option: a uint32, refused rather than truncated when
    larger (Go's CLI silently truncates 4294967297 to 1).

    :raises click.BadParameter: for anything but a decimal number from 0 to 2^32-1.
    """
    if value is None:
        return 0
    try:
        return parse_uint32(value)
    except ValueError:
        raise click.BadParameter(
            f"{go_quote(value)} is not a version: versions are whole numbers "
            f"from 0 to {MAX_VERSION}",
            ctx,
            param,
        ) from None


def parse_version_arg(text: str) -> int:
    """Parse a VERSION argument as Go's CLI does (base 10, uint32).

    :raises CommandError: Go's ``invalid version "x": strconv.ParseUint: parsing "x":
        invalid syntax`` (exit 1, as in Go: it is not a usage error there).
    """
    try:
        return parse_uint32(text)
    except ValueError as e:
        raise CommandError(f"invalid version {go_quote(text)}: {e}") from None
