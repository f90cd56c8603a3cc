"""How the ``setec`` command prints things: Go's ``%q`` quoting, Go's tab-aligned tables,
Go's ``strconv.ParseUint`` messages, and the ``--json`` shapes.

Go's CLI output is reproduced byte for byte, because people parse it in scripts; these
functions are pure so that the tests can check each rule directly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from typing import Any

from setec_core.model import MAX_VERSION, SecretInfo, SecretValue
from setec_core.quoting import escape_unprintable

# Re-exported: the commands quote with it from here.
from setec_core.quoting import go_quote as go_quote
from setec_core.wire.gotime import format_time


def go_quote_list(items: Iterable[str]) -> str:
    """Quote a list of strings as Go's ``%q`` does for a ``[]string``: ``["a" "b"]``."""
    return "[" + " ".join(go_quote(item) for item in items) + "]"


def parse_uint32(text: str) -> int:
    """Parse a version as Go's ``strconv.ParseUint(text, 10, 32)`` does.

    :raises ValueError: with Go's message, e.g. ``strconv.ParseUint: parsing "x":
        invalid syntax`` or ``... value out of range``.
    """
    quoted = go_quote(text)
    if not text:
        raise ValueError(f"strconv.ParseUint: parsing {quoted}: invalid syntax")
    value = 0
    # Digit by digit, as Go does: whichever comes first, a bad character or an
    # overflow, decides the message.
    for ch in text:
        if not ("0" <= ch <= "9"):
            raise ValueError(f"strconv.ParseUint: parsing {quoted}: invalid syntax")
        value = value * 10 + (ord(ch) - ord("0"))
        if value > MAX_VERSION:
            raise ValueError(f"strconv.ParseUint: parsing {quoted}: value out of range")
    return value


def tabwrite(text: str, *, padding: int = 1) -> str:
    """Align ``text`` as Go's ``text/tabwriter`` does with the settings of Go setec's
    CLI (``tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)``).

    Cells end at a tab; a column is as wide as its widest cell (counted in code
    points) plus ``padding``; the last cell of a line is not part of a column and is
    never padded. A column runs over consecutive lines that have a cell in it, so a
    line with fewer cells ends the columns to its right. A form feed ends a line and
    starts a new table, as in Go.
    """
    segments = text.split("\f")
    rendered = []
    for i, segment in enumerate(segments):
        lines = [line.replace("\v", "\t").split("\t") for line in segment.split("\n")]
        out: list[str] = []
        _format(lines, [], 0, len(lines), padding, out)
        joined = "\n".join(out)
        # A form feed ended this segment's last line (Go writes it as a newline).
        rendered.append(joined + "\n" if i < len(segments) - 1 else joined)
    return "".join(rendered)


def _format(
    lines: list[list[str]],
    widths: list[int],
    line0: int,
    line1: int,
    padding: int,
    out: list[str],
) -> None:
    # A transcription of tabwriter.(*Writer).format: find each block of consecutive
    # lines that have a cell in this column, size the column for the block, and
    # recurse for the columns to its right.
    column = len(widths)
    this = line0
    while this < line1:
        if column >= len(lines[this]) - 1:
            this += 1
            continue
        _write_lines(lines, widths, line0, this, out)
        line0 = this
        width = 0
        while this < line1 and column < len(lines[this]) - 1:
            width = max(width, len(lines[this][column]) + padding)
            this += 1
        _format(lines, [*widths, width], line0, this, padding, out)
        line0 = this
    _write_lines(lines, widths, line0, line1, out)


def _write_lines(
    lines: list[list[str]], widths: list[int], line0: int, line1: int, out: list[str]
) -> None:
    for cells in lines[line0:line1]:
        parts = []
        for j, cell in enumerate(cells):
            parts.append(cell)
            if j < len(widths):
                parts.append(" " * (widths[j] - len(cell)))
        out.append("".join(parts))


def list_table(secrets: Sequence[SecretInfo]) -> str:
    """The output of ``setec list``, as Go prints it; then the column ``LAST ACCESS``
    (``-`` for never) when any secret has a last access, and ``DESCRIPTION`` when any
    has a description (this project's server, docs/api.md §9.5). Go's server reports
    neither, and its table is Go's."""
    accessed = any(info.last_access is not None for info in secrets)
    described = any(info.description for info in secrets)
    header = "NAME\tACTIVE\tVERSIONS"
    header += "\tLAST ACCESS" if accessed else ""
    header += "\tDESCRIPTION" if described else ""
    rows = [header + "\n"]
    for info in secrets:
        versions = ",".join(str(v) for v in info.versions)
        row = f"{info.name}\t{info.active_version}\t{versions}"
        row += f"\t{last_access_text(info) or '-'}" if accessed else ""
        row += f"\t{description_text(info)}" if described else ""
        rows.append(row + "\n")
    table = tabwrite("".join(rows))
    if not described:
        return table
    # A row without a description would end in the padding of the column before it.
    return "\n".join(line.rstrip(" ") for line in table.split("\n"))


def info_table(info: SecretInfo) -> str:
    """The output of ``setec info NAME``, as Go prints it; then ``Description:`` and
    ``Last access:`` lines when the server says (docs/api.md §9.5)."""
    versions = ", ".join(str(v) for v in info.versions)
    text = f"Name:\t{info.name}\nActive version:\t{info.active_version}\nVersions:\t{versions}\n"
    if info.description:
        text += f"Description:\t{description_text(info)}\n"
    if info.last_access is not None:
        text += f"Last access:\t{last_access_text(info)}\n"
    return tabwrite(text)


def description_text(info: SecretInfo) -> str:
    """The description of ``info`` as the tables show it: a character that is not
    printable (a tab or an escape, from a server that allows them) as its escape."""
    return escape_unprintable(info.description)


def last_access_text(info: SecretInfo) -> str:
    """When ``info`` was last accessed, to the second in UTC
    (``2026-12-02T12:00:00Z``); ``""`` if never or not known."""
    when = info.last_access
    return "" if when is None else format_time(when.replace(microsecond=0))


def info_json(info: SecretInfo) -> dict[str, Any]:
    """The ``--json`` form of one secret's metadata (documented in docs/cli.md):
    ``description`` and ``last_access`` (RFC 3339, as the API has it) only when the
    server says."""
    doc: dict[str, Any] = {
        "name": info.name,
        "versions": list(info.versions),
        "active_version": info.active_version,
    }
    if info.description:
        doc["description"] = info.description
    if info.last_access is not None:
        doc["last_access"] = format_time(info.last_access)
    return doc


def value_json(name: str, secret: SecretValue) -> dict[str, Any]:
    """The ``get --json`` form of one secret value (documented in docs/cli.md).

    ``value`` holds the value as text when it is UTF-8; otherwise ``value_base64``
    holds it in standard base64 instead. Exactly one of the two is present.
    """
    doc: dict[str, Any] = {"name": name, "version": secret.version}
    try:
        doc["value"] = secret.value.decode("utf-8")
    except UnicodeDecodeError:
        doc["value_base64"] = base64.b64encode(secret.value).decode("ascii")
    return doc


def dump_json(doc: Any) -> str:
    """``doc`` as the ``--json`` options print it: indented by two spaces, non-ASCII
    characters as they are, a newline at the end."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
