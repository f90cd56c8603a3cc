"""Showing text that came from elsewhere (a server's reason, a user's argument) on a
terminal: Go's ``%q`` quoting, and the same escapes without the quotes.

A character that is not printable (Unicode categories C: controls such as ESC, format
characters such as the right-to-left override, surrogates, private use, unassigned; and
the separators other than the ASCII space) is written as an escape, never as itself, so
text from a server cannot move the cursor, retitle the window or clear the screen of
the terminal it is shown on.
"""

from __future__ import annotations

_GO_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
}


def go_quote(text: str) -> str:
    """Quote ``text`` as Go's ``%q`` (``strconv.Quote``) does.

    Double quotes and backslashes are escaped, printable characters are kept as they
    are, ``\\n`` and friends use their short escapes, and everything else becomes
    ``\\xNN``, ``\\uNNNN`` or ``\\UNNNNNNNN``. A character that stands for an
    undecodable byte of a command-line argument (Python's surrogateescape) is written
    as that byte, ``\\xNN``, as Go would write the raw byte.
    """
    return '"' + _escape(text, quotes=True) + '"'


def escape_unprintable(text: str) -> str:
    """``text`` with each character that is not printable written as :func:`go_quote`
    writes it (ESC as ``\\x1b``, a right-to-left override as ``\\u202e``), and nothing
    else changed: no quotes around it, and quotes and backslashes kept as they are.

    For text that is shown as it is (a server's reason in an error message), where
    :func:`go_quote`'s quotes would be noise.
    """
    if text.isprintable():
        return text
    return _escape(text, quotes=False)


def _escape(text: str, *, quotes: bool) -> str:
    out = []
    for ch in text:
        code = ord(ch)
        if quotes and ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            # Python's "printable" is Go's unicode.IsPrint: categories L, M, N, P, S and
            # the ASCII space.
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)
