"""Durations on the command line: ``7d``, ``12h``, ``30m``, ``90s``, ``1h30m``, ``0``.

A duration is ``0`` or one or more runs of a number (decimals allowed) and a unit: ``d``
(days of 24 hours), ``h``, ``m`` or ``s``, largest first, as Go's ``time.ParseDuration``
writes them (with days added). A bare number other than 0 is refused: ``30`` could mean
seconds or minutes, and a recovery window off by a factor of 60 is not a typo to guess.
"""

from __future__ import annotations

import re
from typing import Any

import click

_UNITS = {"d": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
#: The longest duration taken (100 years): a time that far ahead is still a date.
MAX_SECONDS = 36500 * 86400.0


def parse_duration(text: str) -> float:
    """Return the seconds ``text`` stands for.

    :raises ValueError: with a one-line message naming ``text`` and the accepted forms.
    """
    clean = text.strip()
    if clean == "0":
        return 0.0
    seconds = 0.0
    at = 0
    order = "dhms"
    last = -1
    while at < len(clean):
        match = _PART.match(clean, at)
        if match is None:
            break
        rank = order.index(match.group(2))
        if rank <= last:
            break  # units repeated or out of order: "30m1h"
        last = rank
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        at = match.end()
    if not clean or at != len(clean):
        raise ValueError(
            f"{text!r} is not a duration; write a number and a unit: 7d, 12h, 30m, 90s, "
            "1h30m (or 0)"
        )
    if seconds > MAX_SECONDS:
        raise ValueError(f"{text!r} is longer than {MAX_SECONDS / 86400:g} days")
    return seconds


def format_duration(seconds: float) -> str:
    """``seconds`` as :func:`parse_duration` reads it, in whole units where it can be
    (``7d``, ``1h30m``, ``0``); fractions of a second are rounded."""
    left = round(seconds)
    if left <= 0:
        return "0"
    out = ""
    for unit, size in _UNITS.items():
        count, left = divmod(left, int(size))
        if count:
            out += f"{count}{unit}"
    return out


class Duration(click.ParamType[float]):
    """A click parameter type for :func:`parse_duration`: the value is in seconds."""

    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as e:
            self.fail(str(e), param, ctx)
