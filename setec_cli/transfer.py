"""``setec import`` and ``setec export``: many secrets under one prefix, from and to
``.env`` and JSON files (formats in :mod:`setec_cli.dotenv`). Go's CLI has neither.

Neither command ever prints a value: not in messages, not in ``--dry-run``, not in the
progress bar.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import click

from setec_cli.dotenv import (
    KEY_PATTERN,
    Entry,
    SecretFileError,
    parse_env,
    parse_json,
    render_env,
    render_json,
)
from setec_cli.formats import go_quote, tabwrite
from setec_cli.input_file import read_input, utf8_text
from setec_cli.options import CommandError, client_command, inform, is_quiet, make_client
from setec_cli.output_path import check_output_path
from setec_cli.private_file import write_private_file
from setec_core.errors import SetecError
from setec_core.model import SecretInfo

FORMATS = ("env", "json")


def _prefix(ctx: click.Context, param: click.Parameter, value: str) -> str:
    # Only trailing slashes: "prod/app/" means "prod/app", but "/x" is a name of its own.
    prefix = value.rstrip("/")
    if not prefix:
        raise click.BadParameter("must name a prefix, e.g. --prefix prod/myapp", ctx, param)
    return prefix


def _optional_prefix(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else _prefix(ctx, param, value)


def _param(ctx: click.Context, name: str) -> click.Parameter:
    return next(p for p in ctx.command.params if p.name == name)


def guess_format(path: str) -> str | None:
    """The format a file's name implies: ``json`` for ``*.json``; ``env`` for ``.env``,
    ``*.env`` and ``.env.*``; otherwise ``None``."""
    base = os.path.basename(path).lower()
    if base.endswith(".json"):
        return "json"
    if base == ".env" or base.endswith(".env") or base.startswith(".env."):
        return "env"
    return None


def read_entries(path: str, fmt: str | None) -> list[Entry]:
    """Read and parse the secrets file at ``path`` (``-``: standard input).

    A file that cannot be read is reported before a format that cannot be guessed
    from its name: the missing file is the problem to fix first.

    :raises CommandError: naming the file (and line) if it cannot be read or parsed.
    :raises click.UsageError: if the format is neither given nor implied by the name.
    """
    fmt = fmt or guess_format(path)
    unknown_format = click.UsageError(
        f"cannot tell the format of {go_quote(path)} from its name; "
        "pass --format env or --format json"
    )
    if path == "-" and fmt is None:
        raise unknown_format  # before waiting for standard input
    data = read_input(path, stdin=True)
    if fmt is None:
        raise unknown_format
    name = "<stdin>" if path == "-" else path
    text = utf8_text(data, name)
    try:
        return parse_env(text, name) if fmt == "env" else parse_json(text, name)
    except SecretFileError as e:
        raise CommandError(str(e)) from None


@client_command("import")
@click.argument("file", metavar="FILE")
@click.option(
    "--prefix",
    metavar="PREFIX",
    callback=_optional_prefix,
    help="Store each KEY as the secret PREFIX/KEY.  [required]",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="The file's format (default: from its name, *.env or *.json).",
)
@click.option(
    "--activate",
    is_flag=True,
    help="Activate each new version (otherwise only a secret's first version is active).",
)
@click.option("--dry-run", is_flag=True, help="Only list the secrets that would be written.")
@click.pass_context
def import_command(
    ctx: click.Context,
    file: str,
    prefix: str | None,
    fmt: str | None,
    activate: bool,
    dry_run: bool,
) -> None:
    """Store every KEY=value of a .env or JSON FILE as the secret PREFIX/KEY.

    FILE "-" reads standard input (give --format). A value equal to the secret's
    latest version is left alone, so an interrupted import can be run again. See
    docs/cli.md for the file formats.
    """
    # The file before --prefix: "setec import /no/such/file" says the file is missing
    # (but standard input is not read only to be refused).
    if prefix is None and file == "-":
        raise click.MissingParameter(ctx=ctx, param=_param(ctx, "prefix"))
    entries = read_entries(file, fmt)
    if prefix is None:
        raise click.MissingParameter(ctx=ctx, param=_param(ctx, "prefix"))
    shown = go_quote("<stdin>" if file == "-" else file)
    client = make_client(ctx)
    try:
        known = {info.name: info for info in client.list()}
    except SetecError as e:
        raise CommandError(f"failed to list secrets: {e}") from None
    if dry_run:
        click.echo(_dry_run(entries, prefix, known, shown), nl=False)
        return
    counts: Counter[str] = Counter()
    try:
        _import_entries(client, entries, prefix, known, activate, counts)
    except KeyboardInterrupt:
        # A put is idempotent (an equal value is left alone), so the same command
        # finishes the job; say so rather than only "Aborted!".
        done = sum(counts[k] for k in _OUTCOMES)
        click.echo(
            f"Interrupted after importing {done} of {_plural(len(entries), 'secret')} "
            "(the one being written may have been stored too). Run the same command "
            "again to finish: values already stored are left as they are.",
            err=True,
        )
        raise click.Abort() from None
    click.echo(_summary(counts, len(entries), shown, prefix))
    if counts["inactive"]:
        click.echo(
            "  New versions are not active yet: run 'setec activate NAME VERSION', "
            "or import again with --activate"
        )


_OUTCOMES = ("created", "new version", "unchanged")


def _import_entries(
    client: Any,
    entries: Sequence[Entry],
    prefix: str,
    known: dict[str, SecretInfo],
    activate: bool,
    counts: Counter[str],
) -> None:
    # Puts each entry, counting outcomes in ``counts`` as it goes, so that an
    # interruption can say how far it got.
    with _progress(entries) as items:
        for entry in items:
            name = f"{prefix}/{entry.key}"
            try:
                version = client.put(name, entry.value)
            except SetecError as e:
                raise CommandError(
                    f"failed to write secret {go_quote(name)}: {e} "
                    f"({sum(counts[k] for k in _OUTCOMES)} of {len(entries)} written before "
                    "it; run the same command again to finish)"
                ) from None
            outcome, active = _classify(known.get(name), version)
            counts[outcome] += 1
            if activate and not active:
                try:
                    client.activate(name, version)
                except SetecError as e:
                    raise CommandError(
                        f"failed to activate secret {go_quote(name)} version {version}: {e}"
                    ) from None
                counts["activated"] += 1
            elif not active:
                counts["inactive"] += 1


def _classify(before: SecretInfo | None, version: int) -> tuple[str, bool]:
    # What the put did, from the secret as list showed it before: put returns the
    # latest version, unchanged, when it already holds the value. Returns the outcome
    # and whether ``version`` is now active.
    if before is None:
        # Version 1 of a new secret is active at once. Anything else is a secret the
        # caller may write but not list: its active version is unknown.
        return ("created", True) if version == 1 else ("new version", False)
    if version in before.versions:
        return "unchanged", version == before.active_version
    return "new version", False


def _summary(counts: Counter[str], total: int, shown: str, prefix: str) -> str:
    parts = [
        f"{counts['created']} created",
        _plural(counts["new version"], "new version"),
        f"{counts['unchanged']} unchanged",
    ]
    if counts["activated"]:
        parts.append(f"{counts['activated']} activated")
    return (
        f"Imported {_plural(total, 'secret')} from {shown} under {go_quote(prefix + '/')} "
        f"({', '.join(parts)})"
    )


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _dry_run(
    entries: Sequence[Entry], prefix: str, known: dict[str, SecretInfo], shown: str
) -> str:
    rows = [f"Dry run: would write {_plural(len(entries), 'secret')} from {shown}:\n"]
    for entry in entries:
        name = f"{prefix}/{entry.key}"
        info = known.get(name)
        what = "new secret" if info is None else f"exists, active version {info.active_version}"
        rows.append(f"  {name}\t{what}\n")
    return tabwrite("".join(rows))


@contextlib.contextmanager
def _progress(entries: Sequence[Entry]) -> Iterator[Any]:
    # A bar only for a person watching: on a pipe or in a log it would be noise.
    if is_quiet() or not sys.stderr.isatty():
        yield entries
        return
    with click.progressbar(
        entries,
        label="Importing",
        file=sys.stderr,
        item_show_func=lambda entry: entry.key if entry is not None else None,
    ) as bar:
        yield bar


@client_command("export")
@click.option(
    "--prefix",
    required=True,
    metavar="PREFIX",
    callback=_prefix,
    help="Export every secret PREFIX/KEY as KEY.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="env",
    show_default=True,
    help="The output format.",
)
@click.option(
    "-o",
    "--output",
    metavar="PATH",
    help="Write to PATH (made readable by you only) instead of standard output.",
)
@click.option("--force", is_flag=True, help="Print the values even to a terminal.")
@click.pass_context
def export_command(
    ctx: click.Context, prefix: str, fmt: str, output: str | None, force: bool
) -> None:
    """Write the active value of every secret under PREFIX/ as a .env or JSON file.

    Refuses to print to a terminal unless --force: redirect the output or use
    --output. A value that is not UTF-8 text cannot go in a .env file; JSON writes it
    as {"base64": "..."}, which "setec import" reads back.
    """
    if output is None and not force and sys.stdout.isatty():
        raise CommandError(
            "refusing to print secret values to a terminal; redirect the output "
            "(setec export ... > FILE), use --output FILE, or pass --force"
        )
    if output is not None:
        check_output_path(output)
    client = make_client(ctx)
    try:
        names = [info.name for info in client.list() if info.name.startswith(prefix + "/")]
    except SetecError as e:
        raise CommandError(f"failed to list secrets: {e}") from None
    values = []
    # Every value is fetched before anything is written: a failure leaves no
    # half-written file behind.
    for name in names:
        try:
            values.append((name, client.get(name).value))
        except SetecError as e:
            raise CommandError(f"failed to get secret {go_quote(name)}: {e}") from None
    cut = len(prefix) + 1
    if fmt == "json":
        data = render_json((name[cut:], value) for name, value in values)
    else:
        data = render_env(_env_pairs(values, cut))
    if output is None:
        sys.stdout.buffer.write(data.encode("utf-8"))
        sys.stdout.buffer.flush()
    else:
        write_private_file(output, data.encode("utf-8"))
    inform(f"Exported {_plural(len(values), 'secret')} under {go_quote(prefix + '/')}")


def _env_pairs(values: Sequence[tuple[str, bytes]], cut: int) -> list[tuple[str, str]]:
    pairs = []
    for name, value in values:
        key = name[cut:]
        if not KEY_PATTERN.fullmatch(key):
            raise CommandError(
                f"secret {go_quote(name)} cannot be written to a .env file: {go_quote(key)} "
                "is not a valid key (a letter or _ followed by letters, digits or _); "
                "use --format json"
            )
        try:
            pairs.append((key, value.decode("utf-8")))
        except UnicodeDecodeError:
            raise CommandError(
                f"secret {go_quote(name)} is not UTF-8 text, so it cannot be written to a "
                '.env file; use --format json, which writes it as {"base64": "..."}'
            ) from None
    return pairs
