"""Checking an ``-o`` path (``setec get``, ``export``, ``inject``) before any secret is
fetched: a fetch is audited as a successful read, so it must not happen for a value
that then has nowhere to go.
"""

from __future__ import annotations

import os

from setec_cli.formats import go_quote
from setec_cli.options import CommandError
from setec_cli.private_file import check_target


def check_output_path(path: str) -> None:
    """Refuse an ``-o`` path that cannot be written, before any secret is fetched (and
    the fetch audited): a directory, or a path whose directory does not exist.

    :raises CommandError: naming the path and saying what to do.
    """
    check_target(path)
    directory = os.path.dirname(path) or "."
    if not os.path.isdir(directory):
        where = f"cannot write {go_quote(path)}"
        if os.path.exists(directory):
            raise CommandError(f"{where}: {go_quote(directory)} is not a directory")
        raise CommandError(
            f"{where}: the directory {go_quote(directory)} does not exist; create it first"
        )
