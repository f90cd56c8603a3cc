"""``/api/extensions``: what the server offers beyond Go setec's API, asked through
the real front by the real client, and refused cleanly by a server that does not
know it (a Go setec server answers 404 for any path it does not route)."""

from __future__ import annotations

import json

import pytest
import requests
from go_like_server import GoLikeServer

from setec_core import AccessDenied, UnsupportedError, wire
from setec_core.client import Client
from setec_core.testing import SUPERUSER, audit_entries
from setec_core.testing.fakes import FixedAuthorizer
from setec_core.testing.server import LocalServer
from setec_core.wire.extensions import FIELD_EXTENSIONS, offered

GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}


def test_the_server_lists_its_extensions_sorted_and_audits_nothing(
    server: LocalServer,
) -> None:
    """The answer is the sorted union of the routed endpoints' extensions and the
    field extensions, and asking leaves no audit entry."""
    before = len(audit_entries(server.db))
    response = requests.post(f"{server.url}/api/extensions", data=b"{}", headers=GUARD, timeout=10)
    assert response.status_code == 200, response.text
    names = json.loads(response.content)["Extensions"]
    assert names == sorted(names)
    assert "extensions" in names
    assert set(names) == set(offered(wire.ENDPOINTS)) | set(FIELD_EXTENSIONS)
    assert len(audit_entries(server.db)) == before


def test_the_usual_api_checks_apply(server: LocalServer) -> None:
    """Like every API call: POST only, a JSON body, the browser guard header."""
    url = f"{server.url}/api/extensions"
    assert requests.get(url, headers=GUARD, timeout=10).status_code == 400
    no_guard = {"Content-Type": "application/json"}
    assert requests.post(url, data=b"{}", headers=no_guard, timeout=10).status_code == 403
    text = {**GUARD, "Content-Type": "text/plain"}
    assert requests.post(url, data=b"{}", headers=text, timeout=10).status_code == 400
    bad = requests.post(url, data=b"[1]", headers=GUARD, timeout=10)
    assert bad.status_code == 400
    assert "body must be a JSON object" in bad.text


def test_an_unidentified_caller_is_refused() -> None:
    """The caller must be identified, as for any API call, though no rule is checked."""
    refusing = FixedAuthorizer(SUPERUSER, error=AccessDenied("not on the guest list"))
    with LocalServer(authorizer=refusing) as server:
        response = requests.post(
            f"{server.url}/api/extensions", data=b"{}", headers=GUARD, timeout=10
        )
        assert response.status_code == 403
        assert refusing.identified == 1


def test_the_client_asks_once_and_remembers(client: Client, server: LocalServer) -> None:
    """Client.extensions() is the server's list; offers() and require() use it."""
    names = client.extensions()
    assert names == frozenset(offered(wire.ENDPOINTS))
    assert client.offers("extensions")
    assert not client.offers("time-travel")
    client.require("extensions", "asking what the server offers")
    with pytest.raises(UnsupportedError) as raised:
        client.require("time-travel", "a trip to yesterday")
    message = str(raised.value)
    assert server.url in message
    assert "a trip to yesterday" in message
    assert "'time-travel'" in message
    assert "nothing was sent" in message
    assert client.extensions() is names


def test_a_server_without_the_endpoint_offers_nothing(go_like_server: GoLikeServer) -> None:
    """Against a server answering 404 (a Go setec server) the client offers nothing,
    refuses a guarded request with UnsupportedError, and asks only once."""
    client = Client(go_like_server.url)
    assert client.extensions() == frozenset()
    with pytest.raises(UnsupportedError, match="does not offer a guarded put"):
        client.require("cas", "a guarded put")
    assert client.extensions() == frozenset()
    assert go_like_server.seen == ["/api/extensions"]
