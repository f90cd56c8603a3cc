"""Reading a file a command is given (``--from-file``, ``--env-file``, an import, a
template): the whole of it, or of standard input for ``-``, with one-line errors that
name the file and never quote what it holds."""

from __future__ import annotations

import sys

from setec_cli.formats import go_quote
from setec_cli.options import CommandError

#: The path that means standard input, where a command accepts it.
STDIN = "-"


def read_input(path: str, what: str = "", *, stdin: bool = False) -> bytes:
    """Return the bytes of the file at ``path`` (of standard input if ``stdin`` and
    ``path`` is ``-``).

    :param what: how messages name the file before its path, such as ``"--env-file "``.
    :raises CommandError: ``cannot read WHAT "PATH": REASON; ...``, with the system's
        reason only (an exception's text could carry more than the path).
    """
    try:
        if stdin and path == STDIN:
            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CommandError(
            f"cannot read {what}{go_quote(path)}: {e.strerror or type(e).__name__}; "
            "check the path and that you may read the file"
        ) from None


def utf8_text(data: bytes, shown: str) -> str:
    """Return ``data`` as UTF-8 text.

    :param shown: the file's name in the message.
    :raises CommandError: ``SHOWN:LINE: not UTF-8 text``, naming the first bad line
        and quoting none of it.
    """
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CommandError(f"{shown}:{line}: not UTF-8 text") from None
