"""The template syntax of ``setec inject``: text with references to secrets, and no code.

- ``{{ setec "NAME" }}`` is replaced by the active value of the secret ``NAME``.
- ``{{ "TEXT" }}`` is replaced by ``TEXT``: ``{{ "{{" }}`` writes a literal ``{{``.
- Every other ``{{`` is an error, so that a mistyped reference never reaches the output
  unnoticed. ``}}`` outside a reference is ordinary text.

``NAME`` and ``TEXT`` are double-quoted as in JSON (``\\"``, ``\\\\``, ``\\n``,
``\\uXXXX``), spaces and tabs may surround the words, and a reference fits on one line.
Errors name the file, line and column.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from setec_cli.formats import go_quote

OPEN = "{{"
CLOSE = "}}"
KEYWORD = "setec"
#: What an error suggests for writing a literal ``{{``.
LITERAL_HINT = 'write a literal {{ as {{ "{{" }}'

_WORD = re.compile(r"[^\s\"{}]+")
_BLANKS = re.compile(r"[ \t]*")
_DECODER = json.JSONDecoder()


class TemplateError(Exception):
    """A template is malformed: the message starts ``FILE:LINE:COLUMN:`` and says what
    was expected."""


@dataclass(frozen=True, slots=True)
class Reference:
    """A ``{{ setec "NAME" }}`` in a template, and where it starts (1-based)."""

    name: str
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: text and references, in order."""

    parts: tuple[str | Reference, ...]

    def references(self) -> list[Reference]:
        """Every reference, in the order they appear."""
        return [part for part in self.parts if isinstance(part, Reference)]

    def render(self, values: Mapping[str, str]) -> str:
        """The template with each reference replaced by ``values[reference.name]``.

        :raises KeyError: if ``values`` lacks a referenced name.
        """
        return "".join(part if isinstance(part, str) else values[part.name] for part in self.parts)


def parse_template(text: str, filename: str) -> Template:
    """Parse ``text`` (see the module docs); ``filename`` is for messages.

    :raises TemplateError: for an unterminated ``{{``, an unknown directive, a reference
        without a quoted name, or a malformed quoted string.
    """
    parts: list[str | Reference] = []
    pos = 0
    while (start := text.find(OPEN, pos)) != -1:
        if start > pos:
            parts.append(text[pos:start])
        part, pos = _Directive(text, start, filename).parse()
        parts.append(part)
    if pos < len(text):
        parts.append(text[pos:])
    return Template(tuple(parts))


class _Directive:
    """Reads the ``{{ ... }}`` that starts at ``start``."""

    def __init__(self, text: str, start: int, filename: str) -> None:
        self.text = text
        self.start = start
        self.filename = filename
        line_start = text.rfind("\n", 0, start) + 1
        self.line = text.count("\n", 0, start) + 1
        self.column = start - line_start + 1
        end = text.find("\n", start)
        self.line_end = len(text) if end == -1 else end

    def parse(self) -> tuple[str | Reference, int]:
        """The text or reference of the directive, and the index just past its ``}}``."""
        i = self._skip(self.start + len(OPEN))
        part: str | Reference
        if self.text.startswith('"', i):
            part, i = self._string(i)
        else:
            word = _WORD.match(self.text, i, self.line_end)
            if word is None:
                self._check_open(i)
                raise self._error('empty directive "{{ }}"; ' + LITERAL_HINT)
            if word.group() != KEYWORD:
                shown = go_quote(word.group()[:40])
                raise self._error(
                    f'unknown directive {shown}: a reference is {{{{ setec "NAME" }}}}; '
                    + LITERAL_HINT
                )
            i = self._skip(word.end())
            self._check_open(i)
            if not self.text.startswith('"', i):
                raise self._error(
                    "expected a quoted secret name after setec, as in "
                    '{{ setec "prod/db/password" }}'
                )
            name, i = self._string(i)
            if not name:
                raise self._error("the secret name is empty")
            part = Reference(name, self.line, self.column)
        i = self._skip(i)
        self._check_open(i)
        if not self.text.startswith(CLOSE, i):
            raise self._error("expected }} after the quoted string")
        return part, i + len(CLOSE)

    def _skip(self, i: int) -> int:
        m = _BLANKS.match(self.text, i)
        assert m is not None  # [ \t]* matches everywhere
        return m.end()

    def _check_open(self, i: int) -> None:
        if i >= self.line_end:
            raise self._error(
                "unterminated {{: no }} before the end of the line (a reference fits on "
                "one line; " + LITERAL_HINT + ")"
            )

    def _string(self, i: int) -> tuple[str, int]:
        try:
            value, end = _DECODER.raw_decode(self.text, i)
        except json.JSONDecodeError as e:
            # A newline inside the quotes is JSON's "invalid control character"; here
            # it means the closing quote is missing. e.msg never quotes the text.
            unclosed = e.pos >= self.line_end or e.msg.startswith("Unterminated")
            reason = "no closing quote on the line" if unclosed else e.msg
            raise self._error(f"not a valid quoted string: {reason}") from None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise self._error("the quoted string holds an unpaired surrogate escape") from None
        assert isinstance(value, str)  # raw_decode at a '"' reads a string
        return value, end

    def _error(self, message: str) -> TemplateError:
        return TemplateError(f"{self.filename}:{self.line}:{self.column}: {message}")
