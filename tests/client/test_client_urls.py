"""The server URL a Client is given: checked at once, with a clear error, and never
carrying credentials that would end up in error messages and logs."""

from __future__ import annotations

import pytest

from setec_core.client import Client
from setec_core.errors import InvalidRequestError


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "no server address is set"),
        ("http://user:pa55word@host:8080", "must not carry a user name or password"),
        ("user:pa55word@host", "must not carry a user name or password"),
        ("http://[::1", "is not a valid URL"),
        ("http://host:99999", "is not a valid URL"),
        ("ftp://host", "must be http:// or https://"),
        ("http://", "must be http:// or https://"),
        ("secrets.example.ts.net", "must be http:// or https://"),
    ],
)
def test_bad_server_urls(url: str, message: str) -> None:
    """A server address that is empty, carries credentials, is not a URL or is not
    http(s) is an InvalidRequestError saying why, which never shows the password."""
    with pytest.raises(InvalidRequestError, match=message) as info:
        Client(url)
    assert "pa55word" not in str(info.value)


def test_unusable_host_is_a_setec_error_not_a_crash() -> None:
    """A host name the HTTP stack cannot use (a label over 63 characters) is an
    InvalidRequestError, not a crash."""
    client = Client("http://" + "a" * 70 + ".example")
    with pytest.raises(InvalidRequestError, match="cannot be used"):
        client.list()


@pytest.mark.parametrize(
    ("url", "base"),
    [
        ("https://secrets.example.ts.net/", "https://secrets.example.ts.net"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("http://127.0.0.1:8080/prefix", "http://127.0.0.1:8080/prefix"),
    ],
)
def test_good_server_urls(url: str, base: str) -> None:
    """A good address becomes the base URL, without a trailing slash."""
    assert Client(url).server == base
