"""The tailscale and tailscale-serve authorizers against a fake tailscaled (docs/api.md §6)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import tempfile
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import pytest
from peers.fake_tailscaled import FakeTailscaled, go_q_encode, running
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from setec_core import AccessDenied, Authorizer, ConfigError, Peer, Plugins, UnavailableError
from setec_core.http.app import peer_of
from setec_core.server_info import ServerInfo
from setec_core.testing import SUPERUSER, AuthorizerContract, new_database
from setec_plugins.tailscale_authz import (
    CAP_SECRETS,
    DEFAULT_SOCKET,
    LEGACY_CAP_SECRETS,
    TailscaleAuthorizer,
    TailscaleServeAuthorizer,
)

ALICE = "127.0.0.2"
CI = "127.0.0.3"
ALICE_RULE = {"action": ["get", "info", "put"], "secret": ["team/*"]}
CI_RULE = {"action": ["get"], "secret": ["ci/*"]}


@pytest.fixture
def fake() -> FakeTailscaled:
    """A tailscaled that knows a user's laptop and a tagged CI node."""
    ts = FakeTailscaled()
    ts.add_peer(
        ALICE,
        "alice@example.com",
        display="Alice",
        node_name="alice-laptop.tail1234.ts.net.",
        caps={CAP_SECRETS: [ALICE_RULE]},
    )
    ts.add_peer(CI, tags=["tag:ci"], node_name="ci.tail1234.ts.net.", caps={CAP_SECRETS: [CI_RULE]})
    return ts


@pytest.fixture
def sock_dir() -> Iterator[str]:
    """A short directory for unix sockets (pytest's tmp_path can exceed the 108-byte limit)."""
    with tempfile.TemporaryDirectory(prefix="ts") as d:
        yield d


@pytest.fixture
def sock(fake: FakeTailscaled, sock_dir: str) -> Iterator[str]:
    """The socket path of the running fake tailscaled."""
    path = f"{sock_dir}/tailscaled.sock"
    with running(fake, path):
        yield path


@pytest.fixture
def authz(sock: str) -> TailscaleAuthorizer:
    """The tailscale authorizer, built from server options like setec-serve builds it."""
    return TailscaleAuthorizer.from_options({"tailscale_socket": sock}, ServerInfo(port=0))


def peer_from(ip: str, port: int | None = 51234, headers: Mapping[str, str] | None = None) -> Peer:
    """The peer a server would report for a request from ``ip:port``."""
    return Peer(ip, port, headers=headers or {})


def rules_json(authorizer: Authorizer, peer: Peer) -> list[dict[str, list[str]]]:
    """The rules of the caller ``authorizer`` identifies ``peer`` as, in their JSON form."""
    return [rule.to_json() for rule in authorizer.identify(peer).rules]


# --- tailscale: identity (docs/api.md §6.3) ---------------------------------------


def test_user_peer(authz: TailscaleAuthorizer, fake: FakeTailscaled) -> None:
    """An untagged node is its user's login; hostname is Node.Name, ip the peer's."""
    caller = authz.identify(peer_from(ALICE))
    assert caller.principal.to_json() == {
        "hostname": "alice-laptop.tail1234.ts.net.",
        "ip": ALICE,
        "user": "alice@example.com",
    }
    assert caller.allows("get", "team/db")
    assert not caller.allows("delete", "team/db")
    assert not caller.allows("get", "ci/token")
    method, path, headers = fake.requests[-1]
    assert (method, path) == ("GET", "/localapi/v0/whois?addr=127.0.0.2%3A51234")
    assert headers["Host"] == "local-tailscaled.sock"
    assert "Referer" not in headers
    assert "Origin" not in headers


def test_tagged_peer_tags_win(authz: TailscaleAuthorizer, fake: FakeTailscaled) -> None:
    """A tagged node is its tags; the UserProfile is ignored even if real."""
    fake.peers[CI]["UserProfile"]["LoginName"] = "bob@example.com"
    caller = authz.identify(peer_from(CI))
    assert caller.principal.tags == ("tag:ci",)
    assert caller.principal.user == ""
    assert caller.principal.hostname == "ci.tail1234.ts.net."
    assert rules_json(authz, peer_from(CI)) == [CI_RULE]


def test_address_without_port_asks_for_the_ip(
    authz: TailscaleAuthorizer, fake: FakeTailscaled
) -> None:
    """Without REMOTE_PORT the whois addr is the bare IP, which tailscaled also accepts."""
    assert authz.identify(peer_from(ALICE, port=None)).principal.user == "alice@example.com"
    assert fake.requests[-1][1] == "/localapi/v0/whois?addr=127.0.0.2"


def test_ipv6_peer(authz: TailscaleAuthorizer, fake: FakeTailscaled) -> None:
    """An IPv6 peer is asked about as [v6]:port and recorded with its IPv6 address."""
    fake.add_peer("fd7a:115c:a1e0::5", "carol@example.com")
    caller = authz.identify(peer_from("fd7a:115c:a1e0::5", port=443))
    assert caller.principal.user == "carol@example.com"
    assert caller.principal.ip == "fd7a:115c:a1e0::5"
    assert fake.requests[-1][1] == "/localapi/v0/whois?addr=%5Bfd7a%3A115c%3Aa1e0%3A%3A5%5D%3A443"


def test_ipv4_mapped_peer_is_unmapped(authz: TailscaleAuthorizer) -> None:
    """A dual-stack socket's ::ffff:a.b.c.d peer is looked up and recorded as a.b.c.d."""
    caller = authz.identify(peer_from("::ffff:" + ALICE))
    assert caller.principal.ip == ALICE
    assert caller.principal.user == "alice@example.com"


def test_unknown_peer_is_denied(
    authz: TailscaleAuthorizer, caplog: pytest.LogCaptureFixture
) -> None:
    """A peer tailscaled does not know (404) is 403 naming the IP, and is logged."""
    with (
        caplog.at_level(logging.WARNING, logger="setec.authz"),
        pytest.raises(AccessDenied) as info,
    ):
        authz.identify(peer_from("127.0.0.9"))
    assert str(info.value) == "access denied: 127.0.0.9 is not a known tailnet peer"
    assert "no match for IP:port" in caplog.text


def test_peer_without_user_or_tags_is_denied(
    authz: TailscaleAuthorizer, fake: FakeTailscaled
) -> None:
    """Neither tags nor a login name is an identity failure (403 here; docs/api.md §6.3)."""
    fake.add_peer("127.0.0.4", "")
    with pytest.raises(AccessDenied, match="no user or tags"):
        authz.identify(peer_from("127.0.0.4"))


def test_peer_address_must_be_an_ip(authz: TailscaleAuthorizer) -> None:
    """A remote address that is not an IP cannot be identified (docs/api.md §6.3, step 1)."""
    with pytest.raises(AccessDenied, match="no IP address"):
        authz.identify(peer_from("", port=None))


class TestTailscaleContract(AuthorizerContract):
    """The tailscale authorizer meets the Authorizer contract."""

    @pytest.fixture
    def authorizer(self, authz: TailscaleAuthorizer) -> TailscaleAuthorizer:
        return authz

    @pytest.fixture
    def known_peer(self) -> Peer:
        return peer_from(ALICE)

    @pytest.fixture
    def unknown_peer(self) -> Peer:
        return peer_from("127.0.0.9")

    @pytest.fixture
    def bad_options(self, sock: str) -> list[tuple[Any, ...]]:
        return [
            ({"tailscale_socket": ""},),
            ({"tailscale_socket": sock}, ServerInfo(unix_socket="/run/setec.sock")),
        ]


# --- tailscale: capabilities (docs/api.md §6.3) -----------------------------------


def test_legacy_cap_is_the_fallback(authz: TailscaleAuthorizer, fake: FakeTailscaled) -> None:
    """With no primary capability, the legacy https:// one gives the rules."""
    fake.add_peer("127.0.0.4", "dave@example.com", caps={LEGACY_CAP_SECRETS: [CI_RULE]})
    assert rules_json(authz, peer_from("127.0.0.4")) == [CI_RULE]


def test_legacy_cap_used_when_primary_is_empty(
    authz: TailscaleAuthorizer, fake: FakeTailscaled
) -> None:
    """An empty primary list counts as zero rules, so the legacy one is read."""
    fake.add_peer(
        "127.0.0.4", "dave@example.com", caps={CAP_SECRETS: [], LEGACY_CAP_SECRETS: [CI_RULE]}
    )
    assert rules_json(authz, peer_from("127.0.0.4")) == [CI_RULE]


def test_legacy_cap_ignored_when_primary_has_rules(
    authz: TailscaleAuthorizer, fake: FakeTailscaled
) -> None:
    """The legacy capability is not consulted when the primary gives rules."""
    fake.add_peer(
        "127.0.0.4",
        "dave@example.com",
        caps={CAP_SECRETS: [ALICE_RULE], LEGACY_CAP_SECRETS: [CI_RULE]},
    )
    assert rules_json(authz, peer_from("127.0.0.4")) == [ALICE_RULE]


def test_no_capabilities_means_no_rules(authz: TailscaleAuthorizer, fake: FakeTailscaled) -> None:
    """A known peer with a null CapMap is identified and may do nothing."""
    fake.add_peer("127.0.0.4", "erin@example.com")
    caller = authz.identify(peer_from("127.0.0.4"))
    assert caller.principal.user == "erin@example.com"
    assert caller.rules == ()


def test_rules_decode_like_go(authz: TailscaleAuthorizer, fake: FakeTailscaled) -> None:
    """Each value is one rule; keys are case-insensitive, unknown keys ignored, null
    is an empty rule."""
    caps = {CAP_SECRETS: [{"Action": ["get"], "SECRET": ["a/*"], "note": 1}, None]}
    fake.add_peer("127.0.0.4", "dave@example.com", caps=caps)
    assert rules_json(authz, peer_from("127.0.0.4")) == [
        {"action": ["get"], "secret": ["a/*"]},
        {"action": [], "secret": []},
    ]


@pytest.mark.parametrize(
    "bad_rule",
    [{"action": "get", "secret": ["x"]}, {"action": ["get"], "secret": [7]}, "get", 5, []],
)
def test_malformed_rule_is_denied_and_logged(
    authz: TailscaleAuthorizer,
    fake: FakeTailscaled,
    caplog: pytest.LogCaptureFixture,
    bad_rule: Any,
) -> None:
    """A value that is not a rule refuses the caller (403 with a generic message) and
    logs an error naming the rule and the peer."""
    fake.add_peer("127.0.0.4", "dave@example.com", caps={CAP_SECRETS: [ALICE_RULE, bad_rule]})
    with caplog.at_level(logging.ERROR, logger="setec.authz"), pytest.raises(AccessDenied) as info:
        authz.identify(peer_from("127.0.0.4"))
    message = str(info.value)
    assert message.startswith("access denied:")
    assert "team/*" not in message
    assert json.dumps(bad_rule) not in message
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert json.dumps(bad_rule) in record.getMessage()
    assert "127.0.0.4" in record.getMessage()
    assert "dave@example.com" in record.getMessage()


# --- tailscale: tailscaled unavailable -------------------------------------------------


@pytest.mark.parametrize("mode", ["error", "hangup", "garbage", "denied"])
def test_broken_tailscaled_is_unavailable(
    authz: TailscaleAuthorizer,
    fake: FakeTailscaled,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    """A 500, a dropped connection, a non-JSON answer or a refusal from tailscaled is 503,
    and the reason is logged for the operator."""
    fake.mode = mode
    with caplog.at_level(logging.ERROR, logger="setec.authz"), pytest.raises(UnavailableError):
        authz.identify(peer_from(ALICE))
    assert "whois 127.0.0.2:51234" in caplog.text
    if mode == "denied":
        assert "--operator" in caplog.text


def test_malformed_whois_answer_is_unavailable(
    authz: TailscaleAuthorizer, fake: FakeTailscaled, caplog: pytest.LogCaptureFixture
) -> None:
    """A whois answer without a Node object is tailscaled answering nonsense: 503."""
    fake.peers[ALICE]["Node"] = None
    with caplog.at_level(logging.ERROR, logger="setec.authz"), pytest.raises(UnavailableError):
        authz.identify(peer_from(ALICE))
    assert "no Node object" in caplog.text


def test_slow_tailscaled_times_out(sock: str, fake: FakeTailscaled) -> None:
    """A tailscaled that does not answer within the timeout is 503, not a hung request."""
    fake.mode = "slow"
    with pytest.raises(UnavailableError):
        TailscaleAuthorizer(sock, timeout=0.2).identify(peer_from(ALICE))


def test_missing_socket_is_unavailable(sock_dir: str, caplog: pytest.LogCaptureFixture) -> None:
    """No socket at the path (tailscaled not running) is 503 and a log line naming it."""
    path = f"{sock_dir}/absent.sock"
    with caplog.at_level(logging.WARNING, logger="setec.authz"):
        authz = TailscaleAuthorizer.from_options({"tailscale_socket": path})
    assert f"tailscaled socket {path} does not exist" in caplog.text
    with caplog.at_level(logging.ERROR, logger="setec.authz"), pytest.raises(UnavailableError):
        authz.identify(peer_from(ALICE))
    assert "FileNotFoundError" in caplog.text


def test_refused_socket_is_unavailable(sock_dir: str) -> None:
    """A socket file nobody listens on (tailscaled died) is 503."""
    path = f"{sock_dir}/dead.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(path)
    with pytest.raises(UnavailableError):
        TailscaleAuthorizer(path).identify(peer_from(ALICE))


def test_the_fake_enforces_localapi_rules(sock: str) -> None:
    """The fake refuses what tailscaled refuses, so the tests above prove our requests pass:
    a browser Origin or a foreign Host is 403, a missing or bad addr is 400."""

    def status(path: str, headers: dict[str, str]) -> int:
        conn = http.client.HTTPConnection("local-tailscaled.sock")
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.sock.connect(sock)
            conn.request("GET", path, headers=headers)
            response = conn.getresponse()
            response.read()
            return response.status
        finally:
            conn.close()

    assert status("/localapi/v0/whois?addr=127.0.0.2", {}) == 200
    assert status("/localapi/v0/whois?addr=127.0.0.2", {"Origin": "https://evil"}) == 403
    assert status("/localapi/v0/whois?addr=127.0.0.2", {"Host": "evil.example"}) == 403
    assert status("/localapi/v0/whois", {}) == 400
    assert status("/localapi/v0/whois?addr=not-an-ip:1", {}) == 400


# --- tailscale: options ----------------------------------------------------------------


def test_options_default_socket() -> None:
    """Without tailscale_socket, the Linux default socket is used."""
    assert TailscaleAuthorizer.from_options({}).socket_path == DEFAULT_SOCKET


def test_options_refuse_empty_socket() -> None:
    """An empty socket path is a configuration error naming the flag."""
    with pytest.raises(ConfigError, match="--tailscale-socket"):
        TailscaleAuthorizer.from_options({"tailscale_socket": ""})


def test_options_refuse_unix_listener(sock: str) -> None:
    """whois needs the peer's IP, which a unix-socket listener does not give."""
    with pytest.raises(ConfigError, match="tailscale-serve"):
        TailscaleAuthorizer.from_options(
            {"tailscale_socket": sock}, ServerInfo(unix_socket="/run/s")
        )


def test_registered_by_name(sock: str) -> None:
    """Both authorizers are installed through the 'setec' entry points."""
    plugins = Plugins.load()
    assert isinstance(
        plugins.authorizer("tailscale", {"tailscale_socket": sock}), TailscaleAuthorizer
    )
    serve = plugins.authorizer("tailscale-serve", {}, server=ServerInfo("127.0.0.1", 8080))
    assert isinstance(serve, TailscaleServeAuthorizer)


# --- end to end over real connections --------------------------------------------------


@contextmanager
def serving(authorizer: Authorizer) -> Iterator[int]:
    """Serve an app on 127.0.0.1 that answers with its caller as JSON; yield the port."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            caller = authorizer.identify(peer_of(environ))
        except AccessDenied as e:
            response = Response(str(e), 403)
        except UnavailableError as e:
            response = Response(str(e), 503)
        else:
            body = {
                "principal": caller.principal.to_json(),
                "rules": [rule.to_json() for rule in caller.rules],
            }
            response = Response(json.dumps(body), content_type="application/json")
        return response(environ, start_response)

    server = make_server("127.0.0.1", 0, app, threaded=True)
    # A short poll interval makes shutdown() return in milliseconds, not half a second.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get_from(source: str, port: int, headers: Mapping[str, str] | None = None) -> Any:
    """GET / on 127.0.0.1:port from the loopback address ``source``; return (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/", headers=dict(headers or {}))
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    return response.status, json.loads(body) if response.status == 200 else body


def test_end_to_end_two_peers_two_identities(authz: TailscaleAuthorizer) -> None:
    """Over real TCP from 127.0.0.2 and 127.0.0.3, the fake LocalAPI gives each connection
    its own identity and rules; an address it does not know gets 403."""
    with serving(authz) as port:
        alice = get_from(ALICE, port)
        ci = get_from(CI, port)
        stranger = get_from("127.0.0.9", port)
    assert alice == (
        200,
        {
            "principal": {
                "hostname": "alice-laptop.tail1234.ts.net.",
                "ip": ALICE,
                "user": "alice@example.com",
            },
            "rules": [{"action": ["get", "info", "put"], "secret": ["team/*"]}],
        },
    )
    assert ci == (
        200,
        {
            "principal": {"hostname": "ci.tail1234.ts.net.", "ip": CI, "tags": ["tag:ci"]},
            "rules": [CI_RULE],
        },
    )
    assert stranger == (403, "access denied: 127.0.0.9 is not a known tailnet peer")


def test_end_to_end_tailscale_serve(fake: FakeTailscaled) -> None:
    """Over real TCP, the headers tailscale serve adds for two peers give two identities;
    the tagged peer, for which serve sends no identity, gets 403."""
    fake.add_peer("127.0.0.4", "bob@example.com", caps={CAP_SECRETS: [CI_RULE]})
    authz = TailscaleServeAuthorizer.from_options({}, ServerInfo(port=0))
    with serving(authz) as port:
        alice = get_from("127.0.0.1", port, fake.serve_headers(ALICE))
        bob = get_from("127.0.0.1", port, fake.serve_headers("127.0.0.4"))
        ci = get_from("127.0.0.1", port, fake.serve_headers(CI))
    assert alice == (
        200,
        {
            "principal": {"hostname": "", "ip": ALICE, "user": "alice@example.com"},
            "rules": [ALICE_RULE],
        },
    )
    assert bob == (
        200,
        {
            "principal": {"hostname": "", "ip": "127.0.0.4", "user": "bob@example.com"},
            "rules": [CI_RULE],
        },
    )
    assert ci[0] == 403
    assert "'tailscale' authorizer" in ci[1]


# --- tailscale-serve -------------------------------------------------------------------


@pytest.fixture
def serve_authz() -> TailscaleServeAuthorizer:
    """The tailscale-serve authorizer on a loopback listener."""
    return TailscaleServeAuthorizer.from_options({}, ServerInfo("127.0.0.1", 8080))


def test_serve_headers_give_the_caller(
    serve_authz: TailscaleServeAuthorizer, fake: FakeTailscaled
) -> None:
    """Login from Tailscale-User-Login, rules from Tailscale-App-Capabilities, IP from
    X-Forwarded-For (serve connects from loopback)."""
    caller = serve_authz.identify(peer_from("127.0.0.1", headers=fake.serve_headers(ALICE)))
    assert caller.principal.to_json() == {"hostname": "", "ip": ALICE, "user": "alice@example.com"}
    assert [r.to_json() for r in caller.rules] == [ALICE_RULE]


def test_serve_without_forwarded_for_uses_the_peer(serve_authz: TailscaleServeAuthorizer) -> None:
    """Without X-Forwarded-For the IP is the connection's peer address."""
    caller = serve_authz.identify(
        peer_from("127.0.0.1", headers={"Tailscale-User-Login": "alice@example.com"})
    )
    assert caller.principal.ip == "127.0.0.1"


def test_serve_missing_headers_denied(serve_authz: TailscaleServeAuthorizer) -> None:
    """A request without identity headers (it did not come through serve) is refused."""
    with pytest.raises(AccessDenied, match="no Tailscale-User-Login header"):
        serve_authz.identify(peer_from("127.0.0.1"))


def test_serve_tagged_node_denied(
    serve_authz: TailscaleServeAuthorizer, fake: FakeTailscaled
) -> None:
    """Serve sends capabilities but no identity for a tagged node: refused, pointing at the
    tailscale authorizer."""
    headers = fake.serve_headers(CI)
    assert "Tailscale-App-Capabilities" in headers
    with pytest.raises(AccessDenied, match="tagged nodes must use a server with the 'tailscale'"):
        serve_authz.identify(peer_from("127.0.0.1", headers=headers))


def test_serve_funnel_denied(serve_authz: TailscaleServeAuthorizer) -> None:
    """A request through Funnel (from the internet) has no identity and is refused."""
    with pytest.raises(AccessDenied, match="Funnel"):
        serve_authz.identify(peer_from("127.0.0.1", headers={"Tailscale-Funnel-Request": "?1"}))


def test_serve_q_encoded_headers(
    serve_authz: TailscaleServeAuthorizer, fake: FakeTailscaled
) -> None:
    """Non-ASCII capabilities (and names) arrive RFC 2047 Q-encoded, split into several
    encoded words as Go's mime package does; they decode to the same rules."""
    rule = {"action": ["get"], "secret": ["café/*", "naïve/" + "x" * 80, "日本/*"]}
    fake.add_peer(
        "127.0.0.4", "jürgen@example.com", display="Jürgen Müller", caps={CAP_SECRETS: [rule]}
    )
    headers = fake.serve_headers("127.0.0.4")
    assert headers["Tailscale-App-Capabilities"].startswith("=?utf-8?q?")
    assert headers["Tailscale-App-Capabilities"].count("=?utf-8?q?") > 1
    caller = serve_authz.identify(peer_from("127.0.0.1", headers=headers))
    assert caller.principal.user == "jürgen@example.com"
    assert [r.to_json() for r in caller.rules] == [rule]
    assert caller.allows("get", "café/menu")


def test_go_q_encode_matches_go() -> None:
    """The test encoder reproduces Go's mime.QEncoding output for a known value."""
    assert go_q_encode("plain ascii") == "plain ascii"
    assert go_q_encode("Jürgen Müller_?") == "=?utf-8?q?J=C3=BCrgen_M=C3=BCller=5F=3F?="


def test_serve_legacy_cap(serve_authz: TailscaleServeAuthorizer) -> None:
    """As with whois, the legacy capability name is the fallback in the header too."""
    caps = json.dumps({LEGACY_CAP_SECRETS: [CI_RULE]})
    headers = {"Tailscale-User-Login": "a@b", "Tailscale-App-Capabilities": caps}
    assert rules_json(serve_authz, peer_from("127.0.0.1", headers=headers)) == [CI_RULE]


def test_serve_without_caps_header_warns_once(
    serve_authz: TailscaleServeAuthorizer, caplog: pytest.LogCaptureFixture
) -> None:
    """No capabilities header (serve run without --accept-app-caps) means no rules, and
    one warning that says how to fix it."""
    peer = peer_from("127.0.0.1", headers={"Tailscale-User-Login": "a@b"})
    with caplog.at_level(logging.WARNING, logger="setec.authz"):
        assert serve_authz.identify(peer).rules == ()
        assert serve_authz.identify(peer).rules == ()
    assert caplog.text.count("--accept-app-caps=tailscale.com/cap/secrets") == 1


@pytest.mark.parametrize(
    "header", ["not json", "[1, 2]", json.dumps({CAP_SECRETS: {"action": ["get"]}}), "=?x?q?a?="]
)
def test_serve_malformed_caps_header_denied(
    serve_authz: TailscaleServeAuthorizer, caplog: pytest.LogCaptureFixture, header: str
) -> None:
    """A capabilities header that is not {cap: [rule, ...]} refuses the caller, and is logged."""
    headers = {"Tailscale-User-Login": "a@b", "Tailscale-App-Capabilities": header}
    with caplog.at_level(logging.ERROR, logger="setec.authz"), pytest.raises(AccessDenied) as info:
        serve_authz.identify(peer_from("127.0.0.1", headers=headers))
    assert str(info.value) == "access denied: the Tailscale-App-Capabilities header is malformed"
    assert "Tailscale-App-Capabilities header is malformed" in caplog.text


def test_serve_malformed_rule_denied(
    serve_authz: TailscaleServeAuthorizer, caplog: pytest.LogCaptureFixture
) -> None:
    """A grant that is not a rule refuses the caller; the log names the rule."""
    caps = json.dumps({CAP_SECRETS: [{"action": "get", "secret": ["s3cret-name/*"]}]})
    headers = {"Tailscale-User-Login": "a@b", "Tailscale-App-Capabilities": caps}
    with caplog.at_level(logging.ERROR, logger="setec.authz"), pytest.raises(AccessDenied) as info:
        serve_authz.identify(peer_from("127.0.0.1", headers=headers))
    assert "s3cret-name" not in str(info.value)
    assert '{"action": "get", "secret": ["s3cret-name/*"]}' in caplog.text


@pytest.mark.parametrize(
    "server",
    [
        ServerInfo("0.0.0.0", 8080),  # noqa: S104 - a listen value to refuse; nothing binds
        ServerInfo("100.64.0.1", 443),
        ServerInfo("::", 8080),
        ServerInfo("example.com", 80),
        ServerInfo(unix_socket=""),
        None,
    ],
    ids=["0.0.0.0:8080", "100.64.0.1:443", "[::]:8080", "example.com:80", "unix:", "default"],
)
def test_serve_refuses_reachable_listener(server: ServerInfo | None) -> None:
    """Anyone who can reach the port could forge the headers: only loopback or a unix
    socket is allowed, and the error names the listen value and what to do."""
    if server is None:  # no server facts: setec-serve's default listen is assumed: allowed
        TailscaleServeAuthorizer.from_options({})
        return
    with pytest.raises(ConfigError) as info:
        TailscaleServeAuthorizer.from_options({}, server)
    assert repr(server.listen) in str(info.value)
    assert "127.0.0.1:PORT" in str(info.value)


@pytest.mark.parametrize(
    "server",
    [
        ServerInfo("127.0.0.1", 8080),
        ServerInfo("::1", 8080),
        ServerInfo("localhost", 8080),
        ServerInfo("127.0.0.5", 0),
        ServerInfo(unix_socket="/x"),
        ServerInfo("::1"),
    ],
    ids=["127.0.0.1:8080", "[::1]:8080", "localhost:8080", "127.0.0.5:0", "unix:/x", "::1"],
)
def test_serve_accepts_local_listener(server: ServerInfo) -> None:
    """Loopback addresses (IPv4, IPv6, localhost) and unix sockets are accepted."""
    assert isinstance(TailscaleServeAuthorizer.from_options({}, server), TailscaleServeAuthorizer)


class TestTailscaleServeContract(AuthorizerContract):
    """The tailscale-serve authorizer meets the Authorizer contract."""

    @pytest.fixture
    def authorizer(self, serve_authz: TailscaleServeAuthorizer) -> TailscaleServeAuthorizer:
        return serve_authz

    @pytest.fixture
    def known_peer(self, fake: FakeTailscaled) -> Peer:
        return peer_from("127.0.0.1", headers=fake.serve_headers(ALICE))

    @pytest.fixture
    def unknown_peer(self) -> Peer:
        return peer_from("127.0.0.1")

    @pytest.fixture
    def logged_headers(self) -> list[str]:
        # The tailnet's grants, logged when malformed so the operator can fix them.
        return ["Tailscale-App-Capabilities"]

    @pytest.fixture
    def bad_options(self) -> list[tuple[Any, ...]]:
        return [({}, ServerInfo(host="100.64.0.1")), ({}, ServerInfo(host="192.0.2.7", port=443))]


# --- set-info (docs/api.md §9.5) --------------------------------------------------------


def test_set_info_is_granted_by_a_tailscale_grant(
    authz: TailscaleAuthorizer, fake: FakeTailscaled
) -> None:
    """A tailnet grant listing set-info lets its node describe the secrets it names;
    Alice's grant (get, info, put) does not."""
    writer = "127.0.0.9"
    rule = {"action": ["set-info"], "secret": ["team/*"]}
    fake.add_peer(writer, "writer@example.com", caps={CAP_SECRETS: [rule]})
    with new_database() as db:
        db.put(SUPERUSER, "team/db", b"v")
        with pytest.raises(AccessDenied):
            db.set_info(authz.identify(peer_from(ALICE)), "team/db", "the team's database")
        granted = authz.identify(peer_from(writer))
        db.set_info(granted, "team/db", "the team's database")
        assert db.info(SUPERUSER, "team/db").description == "the team's database"
        with pytest.raises(AccessDenied):
            db.set_info(granted, "ci/token", "not theirs")
