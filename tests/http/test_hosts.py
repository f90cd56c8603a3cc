"""The Host check against DNS rebinding: which Host headers name the server."""

from __future__ import annotations

import pytest

from setec_core.http.hosts import HostCheck

CHECK = HostCheck(["setec.example.ts.net", "*.lb.example"])


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:8080",
        "100.101.102.103",
        "[::1]",
        "[::1]:80",
        "[fe80::1%eth0]:80",
        "localhost",
        "LOCALHOST.",
        "a.localhost:8080",
        "setec.example.ts.net",
        "Setec.Example.TS.net.:443",
        "x.lb.example",
    ],
)
def test_names_the_server_answers_to(host: str) -> None:
    """IP literals, localhost, the given names and names under a *.domain."""
    assert CHECK.allows(host)


@pytest.mark.parametrize(
    "host",
    [
        "attacker.example",
        "lb.example",  # *.lb.example is what is under it, not itself
        "evil-lb.example",
        "localhost.attacker.example",
        "127.0.0.1.nip.io",
        "[::1]evil.example",
        "[::1]:80@evil.example",
        "1.2.3.4%evil.example",
        "[::1], evil.example",
        "[1.2.3.4]",
        "::1",
        "",
        "a b",
    ],
)
def test_anything_else_is_refused(host: str) -> None:
    """Other names, and malformed values that look like an address but are not one
    (user info, a zone on an IPv4 address, two hosts joined)."""
    assert not CHECK.allows(host)
