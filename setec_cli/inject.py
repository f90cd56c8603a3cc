"""``setec inject``: fill a template's ``{{ setec "NAME" }}`` references with secrets and
write the result, as ``op inject`` does. Go's CLI has none. The syntax is in
:mod:`setec_cli.template`.

Every referenced secret is fetched (each name once, in one request from a server that
offers batch gets, else one get each over one connection) before anything is written:
a failure writes nothing and leaves an existing output file as it was. An output file
is written readable by you only, and atomically
(:func:`setec_cli.private_file.write_private_file`).
"""

from __future__ import annotations

import contextlib
import sys

import click

from setec_cli.formats import go_quote
from setec_cli.input_file import STDIN, read_input, utf8_text
from setec_cli.options import CommandError, client_command, inform, make_client
from setec_cli.output_path import check_output_path
from setec_cli.prefetch import Prefetched
from setec_cli.private_file import write_private_file
from setec_cli.template import Reference, TemplateError, parse_template
from setec_core.errors import SetecError


def read_template(path: str) -> tuple[str, str]:
    """Read the template at ``path`` (``-``: standard input) as UTF-8 text.

    :returns: the text, and the name to give it in messages.
    :raises CommandError: naming the file (and line) if it cannot be read or decoded.
    """
    shown = "<stdin>" if path == STDIN else path
    return utf8_text(read_input(path, "the template ", stdin=True), shown), shown


def template_value(reference: Reference, where: str, value: bytes) -> str:
    """Check that a secret's value can go in a text file and return it as text.

    :param where: ``FILE:LINE:COLUMN`` of the reference, for the message.
    :raises CommandError: naming the secret (never the value) for a value that is not
        UTF-8 text or holds a NUL byte.
    """
    name = go_quote(reference.name)
    if b"\0" not in value:
        with contextlib.suppress(UnicodeDecodeError):
            return value.decode("utf-8")
    raise CommandError(
        f"secret {name} ({where}) is not text (not UTF-8, or it holds a NUL byte), so it "
        f"cannot go in a template; write it to a file of its own: setec get {name} -o FILE"
    )


@client_command("inject")
@click.option(
    "-i",
    "--in-file",
    "in_file",
    metavar="TEMPLATE",
    default=STDIN,
    help="Read the template from TEMPLATE (default: standard input).",
)
@click.option(
    "-o",
    "--out-file",
    "out_file",
    metavar="FILE",
    help="Write to FILE, atomically and readable by you only (default: standard output).",
)
@click.option("--force", is_flag=True, help="Print the result even to a terminal.")
@click.pass_context
def inject_command(ctx: click.Context, in_file: str, out_file: str | None, force: bool) -> None:
    """Replace each {{ setec "NAME" }} in a template with secret NAME's active value.

    Example: setec inject -i app.conf.tpl -o app.conf

    Every secret is fetched before anything is written: if one fails, nothing is
    written. Write a literal {{ as {{ "{{" }}. See docs/cli.md for the syntax.
    """
    if in_file == STDIN and sys.stdin.isatty():
        raise click.UsageError("give the template with -i TEMPLATE, or pipe it in")
    if out_file is None and not force and sys.stdout.isatty():
        raise CommandError(
            "refusing to print secret values to a terminal; redirect the output "
            "(setec inject ... > FILE), use -o FILE, or pass --force"
        )
    if out_file is not None:
        check_output_path(out_file)
    text, shown = read_template(in_file)
    try:
        template = parse_template(text, shown)
    except TemplateError as e:
        raise CommandError(str(e)) from None
    values: dict[str, str] = {}
    references = template.references()
    if references:
        prefetched = Prefetched(make_client(ctx), (ref.name for ref in references))
        for ref in references:
            if ref.name in values:
                continue
            where = f"{shown}:{ref.line}:{ref.column}"
            try:
                value = prefetched.get(ref.name).value
            except SetecError as e:
                raise CommandError(
                    f"failed to get secret {go_quote(ref.name)} ({where}): {e}"
                ) from None
            values[ref.name] = template_value(ref, where, value)
    data = template.render(values).encode("utf-8")
    if out_file is None:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        into = "standard output"
    else:
        write_private_file(out_file, data)
        into = go_quote(out_file)
    count = len(values)
    inform(f"Injected {count} secret{'' if count == 1 else 's'} into {into}")
