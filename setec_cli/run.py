"""``setec run``: start a program with secrets in its environment. Go's CLI has none.

Each secret's active value is fetched once, all before the program starts; then setec
replaces itself with the program (``exec``), so nothing is written to disk and no setec
process stays around holding the values.
"""

from __future__ import annotations

import os
import sys

import click

from setec_cli.dotenv import KEY_PATTERN
from setec_cli.formats import go_quote
from setec_cli.options import TOKEN_ENV, CommandError, client_command, make_client
from setec_core.errors import SetecError


class ProgramError(CommandError):
    """The program could not be started: exit 126, as a shell would."""

    exit_code = 126


class ProgramNotFoundError(ProgramError):
    """The program does not exist: exit 127, as a shell would."""

    exit_code = 127


def parse_secret_option(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> list[tuple[str, str]]:
    """Parse each ``--secret VAR=NAME`` into ``(VAR, NAME)``.

    :raises click.BadParameter: for a missing ``=``, a VAR that is not a variable name,
        or a VAR given twice.
    """
    pairs: list[tuple[str, str]] = []
    for value in values:
        var, sep, name = value.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"{go_quote(value)} is not VAR=NAME", ctx, param)
        if not KEY_PATTERN.fullmatch(var):
            raise click.BadParameter(
                f"{go_quote(var)} is not a variable name (a letter or _ followed by "
                "letters, digits or _)",
                ctx,
                param,
            )
        if any(var == seen for seen, _ in pairs):
            raise click.BadParameter(f"{var} is given twice", ctx, param)
        pairs.append((var, name))
    return pairs


def environment_value(name: str, var: str, value: bytes) -> str:
    """Check that a secret's value can be an environment variable and return it as text.

    :raises CommandError: naming the secret and variable (never the value) if the value
        holds a NUL byte or is not UTF-8 text.
    """
    if b"\0" in value:
        raise CommandError(
            f"secret {go_quote(name)} contains a NUL byte, which the environment variable "
            f"{var} cannot hold"
        )
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise CommandError(
            f"secret {go_quote(name)} is not UTF-8 text, so it cannot be the environment "
            f"variable {var}"
        ) from None


@client_command(
    "run",
    # Everything from the program's name on is the program's, options included.
    context_settings={"allow_interspersed_args": False},
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    required=True,
    metavar="VAR=NAME",
    callback=parse_secret_option,
    help="Set the environment variable VAR to the active value of secret NAME (repeatable).",
)
@click.argument(
    "command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- COMMAND [ARGS]..."
)
@click.pass_context
def run_command(
    ctx: click.Context, secrets: list[tuple[str, str]], command: tuple[str, ...]
) -> None:
    """Run COMMAND with secrets in its environment.

    Example: setec run --secret DB_PASS=prod/db/password -- ./server --port 8080

    Every secret is fetched before COMMAND starts; if any fetch fails, COMMAND does not
    run. SETEC_TOKEN is not passed on: COMMAND gets its secrets, not the credential
    to fetch more.
    """
    client = make_client(ctx)
    fetched: dict[str, bytes] = {}
    env = dict(os.environ)
    env.pop(TOKEN_ENV, None)
    for var, name in secrets:
        if name not in fetched:
            try:
                fetched[name] = client.get(name).value
            except SetecError as e:
                raise CommandError(
                    f"failed to get secret {go_quote(name)} for {var}: {e}"
                ) from None
        env[var] = environment_value(name, var, fetched[name])
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)  # noqa: S606 - running the user's program is the point
    except OSError as e:
        error = ProgramNotFoundError if isinstance(e, FileNotFoundError) else ProgramError
        raise error(
            f"cannot run {go_quote(command[0])}: {e.strerror or type(e).__name__}"
        ) from None
