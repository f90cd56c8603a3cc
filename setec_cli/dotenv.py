"""Files of named secrets: ``.env`` and JSON, read by ``setec import`` and written by
``setec export``.

``.env``: one ``KEY=value`` a line; blank lines and ``#`` comments are skipped; a line
may start with ``export``. A value is unquoted (trimmed, and a `` #`` starts a
comment), single-quoted (literal) or double-quoted (with the escapes ``\\\\ \\" \\'
\\$ \\n \\r \\t \\a \\b \\f \\v``); quoted values may span lines. Nothing is
interpolated: ``$HOME`` is five characters.

JSON: an object of ``"KEY": "value"``, where a value that is not UTF-8 text is written
``{"base64": "..."}``.

Errors name the file and line but never quote the line: a malformed line may well be a
secret pasted in the wrong place.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from setec_core.encoding import decode_base64

KEY_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ASSIGNMENT = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*")
_AFTER_QUOTE = re.compile(r"[ \t]*(?:#.*)?")
_ESCAPES = {
    "\\": "\\",
    '"': '"',
    "'": "'",
    "$": "$",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "v": "\v",
}
_RENDER_ESCAPES = {v: "\\" + k for k, v in _ESCAPES.items() if k != "'"}

#: The JSON form of a value that is not UTF-8 text: ``{"base64": "<standard base64>"}``.
BASE64_KEY = "base64"


class SecretFileError(Exception):
    """A secrets file cannot be read. The message names the file and line and never
    quotes the file's content."""


@dataclass(frozen=True, slots=True, repr=False)
class Entry:
    """One ``KEY = value`` of a secrets file; ``line`` is where it starts (1-based; 0
    for JSON). Its ``repr`` never shows the value."""

    key: str
    value: bytes
    line: int = 0

    def __repr__(self) -> str:
        return f"Entry(key={self.key!r}, value=<{len(self.value)} bytes redacted>)"


def parse_env(text: str, filename: str) -> list[Entry]:
    """Parse ``.env`` text (see the module docs) into entries, in file order.

    :raises SecretFileError: for a malformed line, an unclosed quote or a key set twice.
    """
    lines = text.removeprefix("\ufeff").replace("\r\n", "\n").split("\n")
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    i = 0
    while i < len(lines):
        lineno, line = i + 1, lines[i]
        i += 1
        stripped = line.strip(" \t")
        if not stripped or stripped.startswith("#"):
            continue
        m = _ASSIGNMENT.match(line)
        if m is None:
            raise SecretFileError(
                f"{filename}:{lineno}: expected KEY=value, where KEY is a letter or _ "
                "followed by letters, digits or _ (the line is not shown: it may hold "
                "a secret)"
            )
        key, rest = m.group(1), line[m.end() :]
        if key in seen:
            raise SecretFileError(
                f"{filename}:{lineno}: {key} is set again (first on line {seen[key]})"
            )
        seen[key] = lineno
        if rest[:1] in ("'", '"'):
            value, after, i = _quoted(rest, lines, i, key, filename, lineno)
            if not _AFTER_QUOTE.fullmatch(after):
                raise SecretFileError(
                    f"{filename}:{i}: unexpected text after the closing quote of {key}'s "
                    "value (only a # comment may follow it)"
                )
        else:
            value = re.split(r"[ \t]#", rest, maxsplit=1)[0].strip(" \t")
        entries.append(Entry(key, value.encode("utf-8"), lineno))
    return entries


def _quoted(
    rest: str, lines: Sequence[str], i: int, key: str, filename: str, lineno: int
) -> tuple[str, str, int]:
    # Returns the value, the text after the closing quote, and the index of the next
    # unread line. A quoted value may continue on the following lines.
    quote, buf, pos = rest[0], rest[1:], 0
    out: list[str] = []
    while True:
        if pos >= len(buf):
            if i >= len(lines):
                kind = "single" if quote == "'" else "double"
                raise SecretFileError(
                    f"{filename}:{lineno}: the {kind}-quoted value of {key} is not closed"
                )
            out.append("\n")
            buf, pos, i = lines[i], 0, i + 1
            continue
        ch = buf[pos]
        if ch == quote:
            return "".join(out), buf[pos + 1 :], i
        if ch == "\\" and quote == '"' and pos + 1 < len(buf):
            nxt = buf[pos + 1]
            # An unknown escape is kept as written, backslash included.
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            pos += 2
            continue
        out.append(ch)
        pos += 1


def render_env(entries: Iterable[tuple[str, str]]) -> str:
    """Write ``(key, text)`` pairs as ``.env`` lines that :func:`parse_env` reads back
    exactly, and that other dotenv readers take literally: single quotes where the text
    allows, otherwise double quotes with escapes (``$`` too, since some readers expand
    variables in double quotes).

    :raises ValueError: if a key is not a valid variable name (the message names it).
    """
    out = []
    for key, text in entries:
        if not KEY_PATTERN.fullmatch(key):
            raise ValueError(f"{key!r} is not a valid .env key")
        if "'" not in text and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            out.append(f"{key}='{text}'\n")
        else:
            escaped = "".join(_RENDER_ESCAPES.get(c, c) for c in text)
            out.append(f'{key}="{escaped}"\n')
    return "".join(out)


def parse_json(text: str, filename: str) -> list[Entry]:
    """Parse a JSON object of secrets (see the module docs), in file order.

    :raises SecretFileError: if it is not an object of strings and ``{"base64": ...}``
        values, or a key is empty or repeated.
    """

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for key, value in items:
            if key in doc:
                raise SecretFileError(f"{filename}: {json.dumps(key)} is set twice")
            doc[key] = value
        return doc

    try:
        doc = json.loads(text.removeprefix("\ufeff"), object_pairs_hook=pairs)
    except json.JSONDecodeError as e:
        # e.msg says what was expected, never what was found.
        raise SecretFileError(f"{filename}:{e.lineno}:{e.colno}: not valid JSON: {e.msg}") from None
    except RecursionError:
        raise SecretFileError(f"{filename}: not valid JSON: nested too deeply") from None
    except ValueError:  # a number with more digits than Python converts; not quoted
        raise SecretFileError(f"{filename}: not valid JSON: a number is too long") from None
    if not isinstance(doc, dict):
        raise SecretFileError(f'{filename}: expected a JSON object, {{"KEY": "value", ...}}')
    entries = []
    for key, value in doc.items():
        if not key:
            raise SecretFileError(f"{filename}: a key is empty")
        if not _encodable(key):
            raise SecretFileError(f"{filename}: a key holds an unpaired surrogate escape")
        entries.append(Entry(key, _json_value(value, key, filename)))
    return entries


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_value(value: Any, key: str, filename: str) -> bytes:
    where = f"{filename}: the value of {json.dumps(key, ensure_ascii=False)}"
    if isinstance(value, str):
        if not _encodable(value):
            raise SecretFileError(f"{where} holds an unpaired surrogate escape")
        return value.encode("utf-8")
    if (
        isinstance(value, dict)
        and set(value) == {BASE64_KEY}
        and isinstance(value[BASE64_KEY], str)
    ):
        try:
            return decode_base64(value[BASE64_KEY])
        except ValueError:  # also a non-ASCII character, which binascii.Error is not
            raise SecretFileError(f"{where} is not valid base64") from None
    raise SecretFileError(
        f'{where} must be a string or {{"{BASE64_KEY}": "..."}}, not {_json_kind(value)}'
    )


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    return "an object"


def render_json(entries: Iterable[tuple[str, bytes]]) -> str:
    """Write ``(key, value)`` pairs as a JSON object that :func:`parse_json` reads back:
    text as a string, anything else as ``{"base64": "..."}``."""
    doc: dict[str, Any] = {}
    for key, value in entries:
        try:
            doc[key] = value.decode("utf-8")
        except UnicodeDecodeError:
            doc[key] = {BASE64_KEY: base64.b64encode(value).decode("ascii")}
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
