"""The ``setec`` commands that call one API method each: list, info, get, put,
create-version, activate, delete-version, delete, as Go's CLI has them.

Output and messages are Go setec's, byte for byte, where Go has the command; each
difference is listed in docs/cli.md.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from setec_cli.confirm import check_confirmation, delete_secret_request, delete_version_request
from setec_cli.formats import dump_json, go_quote, info_json, info_table, list_table, value_json
from setec_cli.guards import guard_failed, guard_options, guards
from setec_cli.options import (
    CommandError,
    check_name,
    client_command,
    inform,
    is_quiet,
    make_client,
    parse_version_arg,
    stdout_is_terminal,
    take_args,
    take_at_least,
    version_option,
)
from setec_cli.output_path import check_output_path
from setec_cli.private_file import write_private_file
from setec_cli.recovery import (
    deleted_json,
    deleted_table,
    list_deleted,
    pending,
    purge_secret_request,
    put_aside_line,
    undelete_command,
)
from setec_cli.value import read_secret_value
from setec_core.errors import NotFound, SetecError, VersionClaimed, VersionConflict

_JSON_HELP = "Print JSON instead of a table (see docs/cli.md for the format)."

_YES_HELP = "Delete without a confirmation token (for scripts)."


def _value_is_not_an_argument(command: str, takes: str) -> click.UsageError:
    # "setec put NAME VALUE" is the first thing many people try; Go's argument count
    # message does not say why it is refused.
    return click.UsageError(
        f"setec {command} takes {takes}; the value comes from standard input or "
        "--from-file, never the command line (it would land in shell history)"
    )


@client_command("list")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.option(
    "--deleted",
    is_flag=True,
    help="List the secrets deleted but not yet purged (a server with a recovery window), "
    "and when each goes for good.",
)
@click.argument("args", nargs=-1, metavar="[PREFIX]")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool, deleted: bool, args: tuple[str, ...]) -> None:
    """List all secrets visible to the caller.

    With PREFIX, only those whose names start with it ("prod/" for the secrets
    under prod/). With --deleted, the deleted secrets the caller may bring back
    ("setec undelete") instead.
    """
    if len(args) > 1:
        take_args("list", args, 0)  # Go's message, naming the extra arguments
    prefix = args[0] if args else ""
    client = make_client(ctx)
    if deleted:
        gone = list_deleted(client, prefix)
        text = dump_json([deleted_json(s) for s in gone]) if as_json else deleted_table(gone)
        click.echo(text, nl=False)
        return
    try:
        secrets = [info for info in client.list() if info.name.startswith(prefix)]
    except SetecError as e:
        raise CommandError(f"failed to list secrets: {e}") from None
    if as_json:
        click.echo(dump_json([info_json(info) for info in secrets]), nl=False)
    else:
        click.echo(list_table(secrets), nl=False)


@client_command("info")
@click.option("--json", "as_json", is_flag=True, help=_JSON_HELP)
@click.argument("args", nargs=-1, metavar="NAME")
@click.pass_context
def info_command(ctx: click.Context, as_json: bool, args: tuple[str, ...]) -> None:
    """Get metadata for the specified secret."""
    (name,) = take_args("info", args, 1)
    client = make_client(ctx)
    try:
        info = client.info(check_name(name))
    except SetecError as e:
        raise CommandError(f"failed to get secret info: {e}") from None
    click.echo(dump_json(info_json(info)) if as_json else info_table(info), nl=False)


@client_command("get")
@click.option(
    "--version",
    callback=version_option,
    metavar="N",
    help="Secret version to retrieve (default: the active version).",
)
@click.option("--if-changed", is_flag=True, help="Get active version if changed from --version.")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print {"name", "version", "value"} as JSON; a value that is not UTF-8 text '
    'is "value_base64" instead of "value".',
)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Write to PATH (a new file readable by you only) instead of standard output.",
)
@click.argument("args", nargs=-1, metavar="NAME")
@click.pass_context
def get_command(
    ctx: click.Context,
    version: int,
    if_changed: bool,
    as_json: bool,
    output: str | None,
    args: tuple[str, ...],
) -> None:
    """Get the active value of the specified secret.

    With --version, fetch the specified version instead of the active one. With
    --if-changed, return the active value only if it differs from --version (exit 1
    with "value not changed" otherwise). The value is written as raw bytes, with a
    newline added only when standard output is a terminal.
    """
    (name,) = take_args("get", args, 1)
    client = make_client(ctx)
    check_name(name)
    if output is not None:
        check_output_path(output)
    try:
        if version == 0:
            secret = client.get(name)
        elif if_changed:
            secret = client.get_if_changed(name, version)
        else:
            secret = client.get_version(name, version)
    except SetecError as e:
        raise CommandError(f"failed to get secret: {e}") from None
    data = dump_json(value_json(name, secret)).encode("utf-8") if as_json else secret.value
    if output is not None:
        write_private_file(output, data)
        inform(f"Wrote {go_quote(name)} version {secret.version} to {go_quote(output)}")
        return
    if not as_json and stdout_is_terminal():
        data += b"\n"
    out = sys.stdout.buffer
    out.write(data)
    out.flush()


def _value_options(f: Any) -> Any:
    # The value sources of put and create-version, as in Go's CLI.
    f = click.option(
        "--trim-space",
        is_flag=True,
        help="Remove whitespace around a text value read from a file or pipe.",
    )(f)
    f = click.option(
        "--verbatim",
        is_flag=True,
        help="Keep whitespace around a text value read from a file or pipe.",
    )(f)
    f = click.option("--empty-ok", is_flag=True, help="Allow an empty value.")(f)
    return click.option(
        "--from-file",
        metavar="PATH",
        help="Read the value from PATH instead of standard input.",
    )(f)


@client_command("put")
@_value_options
@guard_options
@click.argument("args", nargs=-1, metavar="NAME")
@click.pass_context
def put_command(
    ctx: click.Context,
    from_file: str | None,
    empty_ok: bool,
    verbatim: bool,
    trim_space: bool,
    args: tuple[str, ...],
) -> None:
    """Put a new value for the specified secret.

    With --from-file, the new value is read from the specified file; otherwise if
    stdin is connected to a pipe, its contents are fully read to obtain the new
    value. Otherwise, the user is prompted for a new value and confirmation.

    A text value from a file or pipe with whitespace around it needs --verbatim
    (keep it) or --trim-space (remove it). The new version is not active unless it
    is the secret's first: activate it with "setec activate".
    """
    if len(args) > 1:
        raise _value_is_not_an_argument("put", "one NAME")
    (name,) = take_args("put", args, 1)
    client = make_client(ctx)
    check_name(name)
    guarded = guards(ctx, client)
    value = read_secret_value(
        from_file, empty_ok=empty_ok, verbatim=verbatim, trim_space=trim_space
    )
    try:
        version = client.put(name, value, **guarded)
    except VersionConflict as e:
        raise guard_failed("failed to write secret", e) from None
    except SetecError as e:
        raise CommandError(f"failed to write secret: {e}") from None
    click.echo(f"Secret saved as {go_quote(name)}, version {version}")
    if version != 1 and not _is_active(client, name, version):
        click.echo(f"  To activate this version, run 'setec activate {go_quote(name)} {version}'")


def _is_active(client: Any, name: str, version: int) -> bool:
    # A put of the value the latest version already holds returns that version; if it
    # is the active one, Go's hint to activate it would be wrong (Go
    # prints it anyway). Without info permission, print the hint as Go does.
    try:
        return bool(client.info(name).active_version == version)
    except SetecError:
        return False


@client_command("create-version")
@_value_options
@guard_options
@click.argument("args", nargs=-1, metavar="NAME VERSION")
@click.pass_context
def create_version_command(
    ctx: click.Context,
    from_file: str | None,
    empty_ok: bool,
    verbatim: bool,
    trim_space: bool,
    args: tuple[str, ...],
) -> None:
    """Create exactly VERSION of a secret and make it active.

    The value is read as for "setec put". A version number that exists, or existed
    and was deleted, cannot be created again. Go's CLI has no such command.
    """
    if len(args) > 2:
        raise _value_is_not_an_argument("create-version", "NAME VERSION")
    name, version_text = take_args("create-version", args, 2)
    client = make_client(ctx)
    check_name(name)
    version = parse_version_arg(version_text)
    if version == 0:
        # Before the value is typed in, not after the server refuses it.
        raise CommandError(f"invalid version {go_quote(version_text)}: versions start at 1")
    guarded = guards(ctx, client)
    value = read_secret_value(
        from_file, empty_ok=empty_ok, verbatim=verbatim, trim_space=trim_space
    )
    try:
        client.create_version(name, version, value, **guarded)
    except VersionConflict as e:
        raise guard_failed(
            f"failed to create secret {go_quote(name)} version {version}", e
        ) from None
    except VersionClaimed as e:
        raise CommandError(
            f"failed to create secret {go_quote(name)} version {version}: {e}; a version "
            "that exists or was deleted cannot be created again"
        ) from None
    except SetecError as e:
        raise CommandError(
            f"failed to create secret {go_quote(name)} version {version}: {e}"
        ) from None
    click.echo(f"Secret saved as {go_quote(name)}, version {version} (now active)")


@client_command("activate")
@guard_options
@click.argument("args", nargs=-1, metavar="NAME VERSION")
@click.pass_context
def activate_command(ctx: click.Context, args: tuple[str, ...]) -> None:
    """Set the active version of the specified secret."""
    name, version_text = take_args("activate", args, 2)
    client = make_client(ctx)
    check_name(name)
    version = parse_version_arg(version_text)
    guarded = guards(ctx, client)
    try:
        client.activate(name, version, **guarded)
    except VersionConflict as e:
        raise guard_failed("failed to set active version", e) from None
    except SetecError as e:
        raise CommandError(f"failed to set active version: {e}") from None


@client_command("delete-version")
@click.option("-y", "--yes", is_flag=True, help=_YES_HELP)
@guard_options
@click.argument("args", nargs=-1, metavar="NAME VERSION [TOKEN]")
@click.pass_context
def delete_version_command(ctx: click.Context, yes: bool, args: tuple[str, ...]) -> None:
    """Delete the specified non-active version of a secret.

    A confirmation token is required to delete a secret value. Run the command to
    generate the token, then re-run appending the provided value (or pass --yes).
    """
    name, version_text, *rest = take_at_least("delete-version", args, 2)
    client = make_client(ctx)
    check_name(name)
    version = parse_version_arg(version_text)
    if not yes:
        request = delete_version_request(name, version)
        problem = check_confirmation(request, rest[0] if rest else "")
        if problem:
            raise CommandError(problem)
    guarded = guards(ctx, client)
    try:
        client.delete_version(name, version, **guarded)
    except VersionConflict as e:
        raise guard_failed(
            f"failed to delete secret {go_quote(name)} version {version}", e
        ) from None
    except SetecError as e:
        raise CommandError(
            f"failed to delete secret {go_quote(name)} version {version}: {e}"
        ) from None
    inform(f"Deleted version {version} of secret {go_quote(name)}")


@client_command("delete")
@click.option("-y", "--yes", is_flag=True, help=_YES_HELP)
@click.option(
    "--purge",
    is_flag=True,
    help="Delete for good at once, even on a server that keeps deleted secrets for a "
    "while (and also a secret already deleted there). Needs its own token.",
)
@guard_options
@click.argument("args", nargs=-1, metavar="NAME [TOKEN]")
@click.pass_context
def delete_command(ctx: click.Context, yes: bool, purge: bool, args: tuple[str, ...]) -> None:
    """Delete all versions of a secret (including active).

    A confirmation token is required to delete a secret. Run the command to generate
    the token, then re-run appending the provided value (or pass --yes).

    A server with a recovery window keeps the secret aside until the window ends:
    "setec undelete" brings it back until then, and --purge deletes it for good now.
    """
    name, *rest = take_at_least("delete", args, 1)
    client = make_client(ctx)
    check_name(name)
    if not yes:
        request = purge_secret_request(name) if purge else delete_secret_request(name)
        problem = check_confirmation(request, rest[0] if rest else "")
        if problem:
            raise CommandError(problem)
    guarded = guards(ctx, client)
    versions = None if is_quiet() else _versions(client, name)
    if purge and versions == ():
        # Not visible: it may be a secret already put aside, which a purge removes.
        aside = pending(client, name)
        versions = None if aside is None else aside.versions
    try:
        client.delete(name, **guarded, purge=purge)
    except VersionConflict as e:
        raise guard_failed(f"failed to delete secret {go_quote(name)}", e) from None
    except SetecError as e:
        raise CommandError(f"failed to delete secret {go_quote(name)}: {e}") from None
    aside = None if is_quiet() or purge or versions == () else pending(client, name)
    if aside is not None:
        inform(put_aside_line(aside))
    elif versions is None:
        inform(f"Deleted secret {go_quote(name)}")
    elif not versions:
        # The server answers a delete of a missing secret with success, as Go's does.
        inform(f"Secret {go_quote(name)} does not exist; nothing was deleted")
    else:
        listed = ", ".join(str(v) for v in versions)
        noun = "version" if len(versions) == 1 else "versions"
        inform(f"Deleted secret {go_quote(name)} ({noun} {listed})")


def _versions(client: Any, name: str) -> tuple[int, ...] | None:
    # What delete is about to remove, to say so afterwards: () for a secret that does
    # not exist, None when the caller may not info it (then the line names no versions).
    try:
        return tuple(client.info(name).versions)
    except NotFound:
        return ()
    except SetecError:
        return None


@client_command("set-info")
@click.option(
    "--description",
    "description",
    required=True,
    metavar="TEXT",
    help='What the secret is for: one line of at most 1,000 bytes; "" clears it.',
)
@click.argument("args", nargs=-1, metavar="NAME")
@click.pass_context
def set_info_command(ctx: click.Context, description: str, args: tuple[str, ...]) -> None:
    """Set the description of a secret, which list and info show.

    Makes no new version. Needs a setec for Python server (Go setec has no
    descriptions) and the set-info right on the secret.
    """
    (name,) = take_args("set-info", args, 1)
    client = make_client(ctx)
    check_name(name)
    try:
        client.set_info(name, description)
    except SetecError as e:
        raise CommandError(f"failed to set the description of {go_quote(name)}: {e}") from None
    if description:
        inform(f"Set the description of secret {go_quote(name)}")
    else:
        inform(f"Cleared the description of secret {go_quote(name)}")


COMMANDS = (
    list_command,
    info_command,
    get_command,
    put_command,
    create_version_command,
    activate_command,
    delete_version_command,
    delete_command,
    undelete_command,
    set_info_command,
)
"""The API commands, in the order ``setec --help`` lists them."""
