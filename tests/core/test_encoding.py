"""Base64 as Go reads it: one rule for requests, responses, caches and secret files."""

from __future__ import annotations

import pytest

from setec_core.encoding import decode_base64, encode_base64


@pytest.mark.parametrize(
    ("text", "value"),
    [("", b""), ("YQ==", b"a"), ("YWI=", b"ab"), ("YWJj", b"abc"), ("YW\r\nJj", b"abc")],
)
def test_accepts_what_go_accepts(text: str, value: bytes) -> None:
    """Padded standard base64 decodes, CR and LF skipped, as Go's decoder does."""
    assert decode_base64(text) == value


@pytest.mark.parametrize(
    "text",
    ["YWJj=", "YWJj====", "YQ=", "YQ", "YWI", "YW Jj", "YWJj\t", "YW-j", "YW_j", "Y===", "é"],
)
def test_refuses_what_go_refuses(text: str) -> None:
    """Padding after a whole group, missing or extra padding, spaces, tabs, the URL-safe
    alphabet and non-ASCII are refused, and the error does not quote the text."""
    with pytest.raises(ValueError, match="not padded standard base64") as info:
        decode_base64(text)
    assert text not in str(info.value) or not text


def test_round_trip() -> None:
    """encode_base64 and decode_base64 round-trip values of 0 to 19 bytes."""
    for n in range(20):
        value = bytes(range(n))
        assert decode_base64(encode_base64(value)) == value
