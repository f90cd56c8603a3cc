"""Asserting that a store refuses to open, with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest

from setec_core import CorruptStoreError, Database


def refused_to_open(state: Path, key: str, *needles: str) -> str:
    """Open the store in ``state`` with ``key``, expect a one-line
    :class:`CorruptStoreError` (an integrity refusal is one) holding every needle, and
    return its message."""
    with pytest.raises(CorruptStoreError) as info:
        Database.open(state, key=key)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message
