"""Times in the API's JSON, as Go's ``time.Time`` writes and reads them.

Go marshals a ``time.Time`` as an RFC 3339 string with nanoseconds (``RFC3339Nano``):
the fraction's trailing zeros are dropped, and the dot with them when nothing is left,
so ``2026-12-02T12:00:00.1234Z`` and ``2026-12-02T12:00:00Z``. This server writes UTC
(``Z``), and a Python ``datetime`` holds microseconds, so at most six digits follow the
dot. A client reads what Go's ``UnmarshalJSON`` reads: RFC 3339 with any offset and a
fraction of any length (kept to the microsecond).
"""

from __future__ import annotations

import datetime
import re

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?"
    r"(?:([Zz])|([+-])(\d{2}):(\d{2}))"
)


def format_time(when: datetime.datetime) -> str:
    """``when`` (an aware datetime) in UTC as Go's ``RFC3339Nano`` writes it.

    :raises ValueError: if ``when`` is naive: a time without a zone names no instant.
    """
    if when.tzinfo is None:
        raise ValueError("a naive datetime names no instant; give it a time zone")
    utc = when.astimezone(datetime.UTC)
    text = (
        f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T"
        f"{utc.hour:02d}:{utc.minute:02d}:{utc.second:02d}"
    )
    if utc.microsecond:
        text += "." + f"{utc.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_time(text: str) -> datetime.datetime | None:
    """Read an RFC 3339 time as Go's ``time.Time.UnmarshalJSON`` does, as an aware UTC
    datetime; ``None`` for Go's zero time (a Go server's "never").

    :raises ValueError: if ``text`` is not an RFC 3339 time.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise ValueError("not an RFC 3339 time")
    year, month, day, hour, minute, second, fraction, z, sign, oh, om = match.groups()
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    offset = datetime.timedelta(0)
    if not z:
        if int(oh) > 23 or int(om) > 59:
            raise ValueError("not an RFC 3339 time")
        offset = datetime.timedelta(hours=int(oh), minutes=int(om))
        if sign == "-":
            offset = -offset
    zero = ("0001", "01", "01", "00", "00", "00", 0)
    if (year, month, day, hour, minute, second, micro) == zero and not offset:
        return None
    try:
        local = datetime.datetime(
            int(year),
            int(month),
            int(day),
            int(hour),
            int(minute),
            int(second),
            micro,
            tzinfo=datetime.timezone(offset),
        )
        return local.astimezone(datetime.UTC)
    except (ValueError, OverflowError):
        raise ValueError("not an RFC 3339 time") from None
