"""--listen parsing: HOST:PORT, IPv6 only in brackets, and clear errors naming the value."""

from __future__ import annotations

import pytest

from setec_cli.config import parse_listen
from setec_core.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        ("localhost:0", ("localhost", 0)),
        ("[::1]:8443", ("::1", 8443)),
        ("[fd7a:115c:a1e0::1]:443", ("fd7a:115c:a1e0::1", 443)),
    ],
)
def test_valid_listen_addresses(value: str, expected: tuple[str, int]) -> None:
    assert parse_listen(value) == expected


@pytest.mark.parametrize(
    "value",
    ["nonsense", ":8080", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1", "::1:8080", "[::1]"],
)
def test_invalid_listen_addresses_name_the_value(value: str) -> None:
    with pytest.raises(ConfigError, match=r"is not HOST:PORT") as info:
        parse_listen(value)
    assert repr(value) in str(info.value)
