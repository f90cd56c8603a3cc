"""Text from elsewhere shown on a terminal (setec_core.quoting): Go's ``%q`` and the
same escapes without quotes, so nothing a server says can drive the terminal."""

from __future__ import annotations

import sys
import unicodedata

import pytest

from setec_core.quoting import escape_unprintable, go_quote


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("access denied: no token", "access denied: no token"),
        ('say "hi" \\ there', 'say "hi" \\ there'),
        ("\x1b]0;pwned\x07\x1b[2J", "\\x1b]0;pwned\\a\\x1b[2J"),
        ("tab\there\nnew", "tab\\there\\nnew"),
        ("\x00 \x7f \x9b \u00a0 \u2028", "\\x00 \\x7f \\u009b \\u00a0 \\u2028"),
        ("\u202eevil \u200d \ufeff", "\\u202eevil \\u200d \\ufeff"),
        ("\ue000 \U000f0000 \ud800", "\\ue000 \\U000f0000 \\ud800"),
        ("caf\u00e9 \u2603 \U0001f600", "caf\u00e9 \u2603 \U0001f600"),
    ],
)
def test_escape_unprintable(text: str, shown: str) -> None:
    """Controls, format characters, private use, surrogates and separators other than
    the space become Go's escapes; everything printable, quotes and backslashes
    included, is kept."""
    assert escape_unprintable(text) == shown


def test_no_character_of_category_c_survives() -> None:
    """Every code point of Unicode category C (Cc, Cf, Cs, Co, Cn) in the first three
    planes and the last three comes out as an ASCII escape, in both functions."""
    codes = [*range(0x30000), *range(0xE0000, sys.maxunicode + 1, 7)]
    for ch in map(chr, codes):
        if unicodedata.category(ch)[0] == "C":
            escaped = escape_unprintable(ch)
            assert escaped.startswith("\\"), hex(ord(ch))
            assert escaped.isascii(), hex(ord(ch))
            assert go_quote(ch) == f'"{escaped}"', hex(ord(ch))
