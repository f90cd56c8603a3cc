"""How Go's ``encoding/json`` reads a setec body, in both directions.

The server reads a request body as Go setec's server does (``json.Decoder.Decode``: the
first JSON value, whatever follows it ignored); a client reads a reply body as Go
setec's client does (``json.Unmarshal``: the whole body is one value). From there the
rules are the same (docs/api.md §3): keys match field names by Go's Unicode simple
folding (``"name"`` and ``"NAME"`` both set ``Name``), every key is applied in order so
the last one that matches a field wins, unknown keys are ignored, and ``null`` leaves a
field as it was, except a slice (a value, a list of versions), which it empties.

Each side raises its own error (the server's 400, the client's ``unmarshaling
response``): the functions here take the error class to raise. No message ever quotes
the body, and no error is chained to one that does: bodies carry secret values.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

#: Makes the error a side raises, from a one-line reason.
ErrorClass = Callable[[str], Exception]


class JsonInt(str):
    """A JSON integer literal, kept as text so that no digit count can raise."""


class JsonFraction(str):
    """A JSON number literal with a fraction or exponent, kept as text."""


class JsonObject(list[tuple[str, object]]):
    """A JSON object as its (key, value) pairs in body order, duplicates kept."""


class _NonFiniteError(Exception):
    """Python's json accepts NaN and Infinity; JSON and Go do not."""


def _reject_constant(literal: str) -> object:
    raise _NonFiniteError


_DECODER = json.JSONDecoder(
    object_pairs_hook=JsonObject,
    parse_int=JsonInt,
    parse_float=JsonFraction,
    parse_constant=_reject_constant,
)
_JSON_SPACE = " \t\n\r"  # Go's (and JSON's) whitespace; str.strip() would take more

# Go folds a key rune by rune to the smallest rune of its unicode.SimpleFold orbit. Our
# field names are ASCII, so only the runes whose orbit holds an ASCII letter matter:
# a-z, and the two non-ASCII members, U+017F (long s) and U+212A (Kelvin sign).
_FOLD = str.maketrans(string.ascii_lowercase + "\u017f\u212a", string.ascii_uppercase + "SK")


def fold(key: str) -> str:
    """Return ``key`` folded as Go matches it against a field name."""
    return key.translate(_FOLD)


def is_unicode(text: str) -> bool:
    """Whether ``text`` holds no lone surrogate (which UTF-8 cannot carry)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def parse(body: bytes, error: ErrorClass, *, whole: bool) -> object:
    """Parse the JSON value at the start of ``body``.

    Objects come back as :class:`JsonObject`, numbers as :class:`JsonInt` or
    :class:`JsonFraction` text, strings as ``str``, and ``true``, ``false`` and ``null``
    as Python's.

    :param whole: whether the value must be all of ``body`` but whitespace (Go's
        ``json.Unmarshal``, as a client reads a reply); otherwise whatever follows it is
        ignored (``json.Decoder.Decode``, as the server reads a request).
    :raises error: if the body is empty, not JSON, not UTF-8 where its value is, or
        nested too deeply.
    """
    # surrogateescape defers the UTF-8 check to the characters the value spans: Go's
    # server never looks at the bytes after it.
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(_JSON_SPACE))
    if start == len(text):
        raise error("body is empty")
    # The errors are raised after the except blocks, so that they chain no exception:
    # a JSONDecodeError holds the whole body.
    problem = "body is not valid JSON"
    try:
        value, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as e:
        problem += f" (line {e.lineno} column {e.colno})"
    except _NonFiniteError:
        problem += " (NaN and Infinity are not JSON)"
    except RecursionError:
        problem += " (nested too deeply)"
    else:
        if whole and text[end:].strip(_JSON_SPACE):
            problem += " (more follows the value)"
        elif is_unicode(text[start:end]):
            return value
        else:
            problem = "body is not valid UTF-8"
    raise error(problem)


def uint(raw: object, limit: int) -> int | None:
    """Return ``raw`` as an int if it is a JSON integer in 0..limit (Go's ParseUint)."""
    if type(raw) is not JsonInt or raw.startswith("-") or len(raw) > len(str(limit)):
        return None
    number = int(raw)
    return number if number <= limit else None


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a body, as Go's struct declares it.

    :param attr: the Python attribute it fills.
    :param wire: the JSON key Go writes (``"UpdateIfChanged"``).
    :param load: turns a non-null JSON value into the attribute's value, or raises the
        side's error naming the field.
    :param dump: turns the attribute's value into JSON (``None``: as it is).
    :param slice: whether ``null`` empties the field (Go sets a slice or a pointer to
        nil) rather than leaving it as it was.
    :param zero: the field's zero value, which a missing key (or a ``null`` for a
        slice) leaves.
    """

    attr: str
    wire: str
    load: Callable[[object], object]
    dump: Callable[[object], object] | None = None
    slice: bool = False
    zero: object = None


def by_fold(fields: Iterable[Field]) -> dict[str, Field]:
    """Map each field's folded wire name to it, for :func:`assign`."""
    return {fold(f.wire): f for f in fields}


def assign(pairs: JsonObject, fields: Mapping[str, Field]) -> dict[str, object]:
    """Apply an object's keys to ``fields`` (from :func:`by_fold`) as Go does.

    :returns: attribute -> value for the fields the object set; the others keep their
        zero values.
    :raises Exception: whatever a field's ``load`` raises for its value.
    """
    values: dict[str, object] = {}
    for key, raw in pairs:
        found = fields.get(key.translate(_FOLD))
        if found is None:
            continue
        if raw is None:
            if found.slice:
                values[found.attr] = found.zero
            continue
        values[found.attr] = found.load(raw)
    return values
