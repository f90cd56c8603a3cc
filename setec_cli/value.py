"""Reading the value of ``setec put`` and ``setec create-version``, as Go's CLI reads it.

Three sources, in this order: ``--from-file``, a hidden prompt when standard input is a
terminal, or all of standard input when it is a pipe. Text from a file or a pipe goes
through Go's whitespace rule, so that ``echo secret | setec put x`` does not silently
store a trailing newline.
"""

from __future__ import annotations

import os
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager

import click

from setec_cli.input_file import read_input
from setec_cli.options import CommandError, inform

#: The characters Go's ``bytes.TrimSpace`` removes: Unicode White_Space. Not Python's
#: ``str.strip()``, which also removes U+001C..U+001F and would disagree with Go.
GO_WHITESPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    "\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000"
)

SURROUNDING_WHITESPACE = (
    "text value has surrounding whitespace, specify --verbatim to keep the space "
    "or --trim-space to remove it"
)


def check_put_text(value: bytes, *, verbatim: bool = False, trim_space: bool = False) -> bytes:
    """Apply Go's whitespace rule (``checkPutText``) to a value read from a file or pipe.

    A value that is not UTF-8 is binary and kept as it is, as is text without leading
    or trailing whitespace. Otherwise ``verbatim`` keeps it (and wins over
    ``trim_space``), ``trim_space`` trims it, and with neither it is an error.

    :raises CommandError: if the text has surrounding whitespace and neither flag is set.
    """
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value
    trimmed = text.strip(GO_WHITESPACE)
    if trimmed == text or verbatim:
        return value
    if trim_space:
        return trimmed.encode("utf-8")
    raise CommandError(SURROUNDING_WHITESPACE)


def read_secret_value(
    from_file: str | None,
    *,
    empty_ok: bool = False,
    verbatim: bool = False,
    trim_space: bool = False,
) -> bytes:
    """Read the value to store, from ``from_file``, the terminal or a pipe.

    :raises CommandError: with Go's messages (``empty secret value``, ``no secret
        provided, aborting``, ``secrets do not match, aborting``, ``read from stdin:
        ...``), or naming the file that cannot be read.
    """
    if from_file:
        raw = read_input(from_file, "--from-file ")
        value = check_put_text(raw, verbatim=verbatim, trim_space=trim_space)
        if not value and not empty_ok:
            raise CommandError("empty secret value")
        return value
    if os.isatty(sys.stdin.fileno()):
        return _prompt_twice(sys.stdin.fileno(), empty_ok=empty_ok)
    try:
        raw = sys.stdin.buffer.read()
    except OSError as e:
        raise CommandError(f"read from stdin: {e.strerror or e}") from None
    value = check_put_text(raw, verbatim=verbatim, trim_space=trim_space)
    if not value and not empty_ok:
        raise CommandError("empty secret value")
    inform(f"Read {len(value)} bytes from stdin")
    return value


def _prompt_twice(fd: int, *, empty_ok: bool) -> bytes:
    # Echo goes off before the first prompt is shown, so that nothing typed early is
    # echoed, and stays off until the confirmation has been read.
    with _echo_off(fd):
        click.echo("Enter secret: ", nl=False)
        value = _read_line(fd)
        click.echo("")
        if not value and not empty_ok:
            raise CommandError("no secret provided, aborting")
        click.echo("Confirm secret: ", nl=False)
        again = _read_line(fd)
        click.echo("")
    if value != again:
        raise CommandError("secrets do not match, aborting")
    return value


@contextmanager
def _echo_off(fd: int) -> Iterator[None]:
    # What Go's term.ReadPassword does on Unix: no echo, but line editing and Ctrl-C
    # still work, and Enter sends "\n" even on terminals that send "\r".
    old = termios.tcgetattr(fd)
    new = termios.tcgetattr(fd)
    new[3] = (new[3] & ~termios.ECHO) | termios.ICANON | termios.ISIG
    new[0] |= termios.ICRNL
    termios.tcsetattr(fd, termios.TCSANOW, new)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, old)


def _read_line(fd: int) -> bytes:
    # One byte at a time, as Go's readPasswordLine: a larger read could swallow the
    # confirmation typed ahead on the next line. End of input ends the line.
    line = bytearray()
    while True:
        byte = os.read(fd, 1)
        if not byte or byte == b"\n":
            return bytes(line)
        if byte == b"\b":
            del line[-1:]
        elif byte != b"\r":
            line += byte
