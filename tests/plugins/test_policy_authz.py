"""The policy authorizer: bearer tokens, their hashes and rules in a JSON file."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Response

from setec_core import AccessDenied, Authorizer, ConfigError, Peer, Plugins, Rule
from setec_core.http.app import peer_of
from setec_core.server_info import ServerInfo
from setec_core.testing import SUPERUSER, AuthorizerContract, new_database
from setec_plugins.policy_authz import (
    TOKEN_PREFIX,
    PolicyAuthorizer,
    hash_token,
    new_token,
    parse_allow,
    policy_entry,
)

ALICE_TOKEN = "setec_alice-token-for-tests-only"
CI_TOKEN = "setec_ci-token-for-tests-only"
ALICE_RULE = {"action": ["get", "info"], "secret": ["team/*"]}
CI_RULE = {"action": ["get"], "secret": ["ci/*"]}


def alice_entry() -> dict[str, Any]:
    return {
        "comment": "Alice",
        "sha256": hash_token(ALICE_TOKEN),
        "user": "alice@example.com",
        "hostname": "alice-laptop",
        "rules": [ALICE_RULE],
    }


def ci_entry() -> dict[str, Any]:
    return {"sha256": hash_token(CI_TOKEN), "tags": ["tag:ci"], "rules": [CI_RULE]}


def write(path: Path, doc: Any) -> str:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
    return str(path)


@pytest.fixture
def policy_file(tmp_path: Path) -> str:
    """A policy with a user's token and a tagged CI token."""
    return write(tmp_path / "policy.json", {"tokens": [alice_entry(), ci_entry()]})


@pytest.fixture
def authz(policy_file: str) -> PolicyAuthorizer:
    """The policy authorizer, built from server options."""
    server = ServerInfo("0.0.0.0", 8443, tls=True)  # noqa: S104 - nothing binds to it
    return PolicyAuthorizer.from_options({"policy_file": policy_file}, server)


def peer_from(ip: str, headers: Mapping[str, str] | None = None) -> Peer:
    """The peer a server would report for a request from ``ip``."""
    return Peer(ip, 51234, headers=headers or {})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- identify --------------------------------------------------------------------------


def test_user_token(authz: PolicyAuthorizer) -> None:
    """A known token gives its entry's user, hostname and rules, with the peer's IP."""
    caller = authz.identify(peer_from("10.0.0.7", bearer(ALICE_TOKEN)))
    assert caller.principal.to_json() == {
        "hostname": "alice-laptop",
        "ip": "10.0.0.7",
        "user": "alice@example.com",
    }
    assert [r.to_json() for r in caller.rules] == [ALICE_RULE]
    assert caller.allows("info", "team/db")
    assert not caller.allows("put", "team/db")


def test_tagged_token(authz: PolicyAuthorizer) -> None:
    """A tags entry gives a principal with tags and no user."""
    caller = authz.identify(peer_from("10.0.0.8", bearer(CI_TOKEN)))
    assert caller.principal.to_json() == {"hostname": "", "ip": "10.0.0.8", "tags": ["tag:ci"]}
    assert caller.allows("get", "ci/deploy-key")


def test_scheme_is_case_insensitive(authz: PolicyAuthorizer) -> None:
    """RFC 7235: the auth scheme is case-insensitive; surrounding spaces are ignored."""
    headers = {"Authorization": f"  bearer   {CI_TOKEN} "}
    assert authz.identify(peer_from("10.0.0.8", headers)).principal.tags == ("tag:ci",)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": ""},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer   "},
        {"Authorization": f"Basic {ALICE_TOKEN}"},
        {"Authorization": "Bearer setec_not-a-known-token"},
        {"Authorization": f"Bearer {ALICE_TOKEN}x"},
        {"Authorization": f"Bearer {hash_token(ALICE_TOKEN)}"},
    ],
)
def test_missing_or_unknown_token_denied(authz: PolicyAuthorizer, headers: dict[str, str]) -> None:
    """No token, another scheme, an unknown token, or the hash itself: one 403 message."""
    with pytest.raises(AccessDenied) as info:
        authz.identify(peer_from("10.0.0.7", headers))
    assert str(info.value) == "access denied: missing or unknown bearer token"


def test_last_entry_is_found(tmp_path: Path) -> None:
    """Every entry is compared, so a token at the end of a long list is found."""
    tokens = [new_token() for _ in range(50)]
    entries = [policy_entry(t, user=f"u{i}@example.com") for i, t in enumerate(tokens)]
    authz = PolicyAuthorizer(write(tmp_path / "p.json", {"tokens": entries}))
    assert authz.identify(peer_from("10.0.0.1", bearer(tokens[-1]))).principal.user == (
        "u49@example.com"
    )


def test_non_ascii_token(tmp_path: Path) -> None:
    """A UTF-8 token sent on the wire matches hash_token of the same text."""
    token = "setec_clé-ünïcode"
    path = write(tmp_path / "p.json", {"tokens": [policy_entry(token, user="u@example.com")]})
    header = f"Bearer {token}".encode().decode("latin-1")  # what a WSGI server hands over
    caller = PolicyAuthorizer(path).identify(peer_from("10.0.0.1", {"Authorization": header}))
    assert caller.principal.user == "u@example.com"


class TestPolicyContract(AuthorizerContract):
    """The policy authorizer meets the Authorizer contract."""

    @pytest.fixture
    def authorizer(self, authz: PolicyAuthorizer) -> PolicyAuthorizer:
        return authz

    @pytest.fixture
    def known_peer(self) -> Peer:
        return peer_from("10.0.0.7", bearer(ALICE_TOKEN))

    @pytest.fixture
    def unknown_peer(self) -> Peer:
        return peer_from("10.0.0.7", bearer("setec_not-a-known-token"))

    @pytest.fixture
    def bad_options(self, policy_file: str, tmp_path: Path) -> list[tuple[Any, ...]]:
        return [
            ({},),
            ({"policy_file": str(tmp_path / "absent.json")},),
            ({"policy_file": policy_file}, ServerInfo(host="100.64.0.1")),
        ]


# --- reload ----------------------------------------------------------------------------


def test_reload_picks_up_changes(authz: PolicyAuthorizer, policy_file: str) -> None:
    """reload() re-reads the file: a new token works and a removed one stops working."""
    new = new_token()
    entry = policy_entry(new, user="bob@example.com", rules=[Rule(["get"], ["bob/*"])])
    write(Path(policy_file), {"tokens": [ci_entry(), entry]})
    authz.reload()
    assert authz.identify(peer_from("10.0.0.9", bearer(new))).principal.user == ("bob@example.com")
    with pytest.raises(AccessDenied):
        authz.identify(peer_from("10.0.0.7", bearer(ALICE_TOKEN)))


@pytest.mark.parametrize("broken", ["{", {"tokens": [{"sha256": "00"}]}, None])
def test_reload_with_broken_file_keeps_old_policy(
    authz: PolicyAuthorizer, policy_file: str, broken: Any
) -> None:
    """A broken or missing new file raises ConfigError and the old policy stays in force."""
    if broken is None:
        Path(policy_file).unlink()
    else:
        write(Path(policy_file), broken)
    with pytest.raises(ConfigError, match=policy_file):
        authz.reload()
    assert authz.identify(peer_from("10.0.0.7", bearer(ALICE_TOKEN))).principal.user == (
        "alice@example.com"
    )


# --- loading errors --------------------------------------------------------------------

GOOD = hash_token("setec_good")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{", r"is not valid JSON: Expecting property name .* at line 1 column 2"),
        ("\xff", r"is not valid JSON|is not UTF-8"),
        ([], r'must hold a JSON object \{"tokens": \[...\]\}'),
        ({}, r"'tokens' must be a list of entries"),
        ({"tokens": {}}, r"'tokens' must be a list"),
        ({"tokens": [], "token": []}, r"unknown key 'token'; expected only 'tokens'"),
        ({"tokens": ["x"]}, r"tokens\[0\]: an entry must be a JSON object"),
        (
            {"tokens": [{"sha256": GOOD, "user": "a", "rules": [], "rule": []}]},
            r"tokens\[0\]: unknown key 'rule'",
        ),
        (
            {"tokens": [{"sha256": GOOD, "user": "a", "tags": ["tag:x"], "rules": []}]},
            r"tokens\[0\]: give exactly one of 'user' and 'tags'",
        ),
        (
            {"tokens": [{"sha256": GOOD, "rules": []}]},
            r"tokens\[0\]: give exactly one of 'user' and 'tags'",
        ),
        (
            {"tokens": [{"sha256": GOOD, "user": "", "rules": []}]},
            r"tokens\[0\]: 'user' must be a non-empty string",
        ),
        (
            {"tokens": [{"sha256": GOOD, "tags": [], "rules": []}]},
            r"tokens\[0\]: 'tags' must be a non-empty list of strings",
        ),
        (
            {"tokens": [{"sha256": GOOD, "tags": ["tag:a", 3], "rules": []}]},
            r"tokens\[0\]: 'tags' must be a non-empty list of strings",
        ),
        (
            {"tokens": [{"sha256": GOOD[:-1], "user": "a", "rules": []}]},
            r"tokens\[0\]: 'sha256' must be 64 hex digits .* not a string of 63 characters",
        ),
        (
            {"tokens": [{"sha256": "g" * 64, "user": "a", "rules": []}]},
            r"tokens\[0\]: 'sha256' must be 64 hex digits",
        ),
        (
            {"tokens": [{"sha256": 5, "user": "a", "rules": []}]},
            r"tokens\[0\]: 'sha256' must be 64 hex digits .* not a JSON int",
        ),
        (
            {"tokens": [{"user": "a", "rules": []}]},
            r"tokens\[0\]: 'sha256' must be 64 hex digits .* not missing",
        ),
        (
            {"tokens": [{"sha256": GOOD, "user": "a"}]},
            r"tokens\[0\]: 'rules' must be a list of rules",
        ),
        (
            {"tokens": [{"sha256": GOOD, "user": "a", "hostname": 1, "rules": []}]},
            r"tokens\[0\]: 'hostname' must be a string",
        ),
        (
            {
                "tokens": [
                    {"sha256": GOOD, "user": "a", "rules": []},
                    {"sha256": hash_token("x"), "user": "b", "rules": [{"action": "get"}]},
                ]
            },
            r'tokens\[1\], rules\[0\]: access rule field "action" must be a list of strings',
        ),
        (
            {
                "tokens": [
                    {"sha256": GOOD, "user": "a", "rules": []},
                    {"sha256": hash_token("y"), "user": "b", "rules": []},
                    {"sha256": GOOD.upper(), "tags": ["tag:c"], "rules": []},
                ]
            },
            r"tokens\[2\]: the same sha256 as tokens\[0\]",
        ),
    ],
)
def test_invalid_policy_is_a_config_error(tmp_path: Path, doc: Any, message: str) -> None:
    """Each problem in the file is a ConfigError naming the file, the entry and the fault."""
    path = tmp_path / "policy.json"
    if isinstance(doc, str):
        path.write_bytes(doc.encode("latin-1"))
    else:
        write(path, doc)
    with pytest.raises(ConfigError, match=message) as info:
        PolicyAuthorizer.from_options({"policy_file": str(path)})
    assert f"policy file {str(path)!r}" in str(info.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 100_000, "nested too deeply"),
        ('{"tokens": [' + "9" * 5000 + "]}", "not valid JSON"),
    ],
    ids=["deep nesting", "huge number"],
)
def test_hostile_json_is_a_config_error(tmp_path: Path, text: str, message: str) -> None:
    """JSON that makes the parser itself fail (RecursionError, ValueError) is still a
    ConfigError, so a SIGHUP reload of such a file keeps the old policy."""
    path = tmp_path / "policy.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        PolicyAuthorizer.from_options({"policy_file": str(path)})


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    """A policy file that does not exist is a ConfigError naming it."""
    path = str(tmp_path / "absent.json")
    with pytest.raises(ConfigError, match=r"cannot read policy file .*absent\.json.*No such file"):
        PolicyAuthorizer.from_options({"policy_file": path})


@pytest.mark.parametrize(
    "server",
    [
        ServerInfo("0.0.0.0", 8080),  # noqa: S104 - a listen value to refuse; nothing binds
        ServerInfo("100.101.102.103", 80),
        ServerInfo("::", 8080),
    ],
    ids=["0.0.0.0:8080", "100.101.102.103:80", "[::]:8080"],
)
def test_tokens_in_clear_on_the_network_are_refused(policy_file: str, server: ServerInfo) -> None:
    """Bearer tokens on a non-loopback address without TLS would cross the network in
    clear: the authorizer refuses to start, naming the flags that fix it."""
    with pytest.raises(ConfigError) as e:
        PolicyAuthorizer.from_options({"policy_file": policy_file}, server)
    assert f"--listen {server.listen!r}" in str(e.value)
    assert "--tls-cert" in str(e.value)
    assert "--insecure-http" in str(e.value)


def test_insecure_http_is_allowed_loudly(
    policy_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    """--insecure-http lets it start on a plain-HTTP network address, with a warning."""
    options = {"policy_file": policy_file, "insecure_http": True}
    server = ServerInfo("0.0.0.0", 8080)  # noqa: S104 - nothing binds to it
    assert isinstance(PolicyAuthorizer.from_options(options, server), PolicyAuthorizer)
    assert "INSECURE: bearer tokens are accepted over plain HTTP" in caplog.text


@pytest.mark.parametrize(
    "server",
    [
        ServerInfo("127.0.0.1", 8080),
        ServerInfo("::1", 8080),
        ServerInfo(unix_socket="/run/setec.sock"),
    ],
    ids=["127.0.0.1:8080", "[::1]:8080", "unix:/run/setec.sock"],
)
def test_loopback_without_tls_is_fine(
    policy_file: str, server: ServerInfo, caplog: pytest.LogCaptureFixture
) -> None:
    """Behind a local TLS proxy (loopback or a unix socket) plain HTTP is fine, quietly."""
    assert PolicyAuthorizer.from_options({"policy_file": policy_file}, server)
    assert "INSECURE" not in caplog.text


def test_policy_file_option_is_required() -> None:
    """Without --policy-file the authorizer says which flag to set."""
    with pytest.raises(ConfigError, match="--policy-file"):
        PolicyAuthorizer.from_options({"policy_file": None})


def test_registered_by_name(policy_file: str) -> None:
    """The policy authorizer is installed through the 'setec' entry points."""
    authz = Plugins.load().authorizer("policy", {"policy_file": policy_file})
    assert isinstance(authz, PolicyAuthorizer)


# --- the token never leaks -------------------------------------------------------------


def test_token_never_logged_or_echoed(
    authz: PolicyAuthorizer, policy_file: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither a valid nor an unknown bearer token appears in a log line or an error, even
    when a token is pasted into the file in place of its hash."""
    unknown = "setec_unknown-token-that-must-not-leak"
    messages: list[str] = []
    with caplog.at_level(logging.DEBUG):
        authz.identify(peer_from("10.0.0.7", bearer(ALICE_TOKEN)))
        for headers in (bearer(unknown), {"Authorization": f"Basic {unknown}"}):
            with pytest.raises(AccessDenied) as denied:
                authz.identify(peer_from("10.0.0.7", headers))
            messages.append(str(denied.value))
        write(Path(policy_file), {"tokens": [{"sha256": unknown, "user": "a", "rules": []}]})
        with pytest.raises(ConfigError) as bad:
            authz.reload()
        messages.append(str(bad.value))
    assert "it looks like a token" in messages[-1]
    for text in [caplog.text, *messages]:
        for token in (ALICE_TOKEN, unknown):
            assert token not in text
    assert "unknown bearer token" in caplog.text  # it was logged, without the token


# --- helpers for the CLI ---------------------------------------------------------------


def test_new_token_shape() -> None:
    """Tokens are recognisable by their prefix and carry 256 random bits."""
    a, b = new_token(), new_token()
    assert a.startswith(TOKEN_PREFIX)
    assert a != b
    assert len(a) == len(TOKEN_PREFIX) + 43


def test_hash_token() -> None:
    """hash_token is the hex SHA-256 of the token's UTF-8 bytes."""
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


def test_policy_entry_round_trip(tmp_path: Path) -> None:
    """An entry printed by policy_entry, pasted into a file, admits its token."""
    token = new_token()
    entry = policy_entry(
        token, tags=["tag:ci"], hostname="runner", rules=[CI_RULE], comment="CI job"
    )
    assert token not in json.dumps(entry)
    assert entry == {
        "comment": "CI job",
        "sha256": hash_token(token),
        "tags": ["tag:ci"],
        "hostname": "runner",
        "rules": [CI_RULE],
    }
    authz = PolicyAuthorizer(write(tmp_path / "p.json", {"tokens": [entry]}))
    caller = authz.identify(peer_from("10.0.0.1", bearer(token)))
    assert caller.principal.to_json() == {
        "hostname": "runner",
        "ip": "10.0.0.1",
        "tags": ["tag:ci"],
    }


@pytest.mark.parametrize(
    "kwargs", [{}, {"user": "a", "tags": ["tag:b"]}, {"user": "a", "rules": [{"action": "get"}]}]
)
def test_policy_entry_refuses_bad_input(kwargs: dict[str, Any]) -> None:
    """policy_entry needs exactly one of user and tags, and valid rules."""
    with pytest.raises(ConfigError):
        policy_entry("t", **kwargs)


# --- end to end over real connections --------------------------------------------------


@contextmanager
def serving(authorizer: Authorizer) -> Iterator[int]:
    """Serve an app on 127.0.0.1 that answers with its caller as JSON; yield the port."""

    def app(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            caller = authorizer.identify(peer_of(environ))
        except AccessDenied as e:
            response = Response(str(e), 403)
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


def get_from(source: str, port: int, headers: Mapping[str, str]) -> tuple[int, Any]:
    """GET / on 127.0.0.1:port from the loopback address ``source``; return (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10, source_address=(source, 0))
    try:
        conn.request("GET", "/", headers=dict(headers))
        response = conn.getresponse()
        body = response.read().decode()
    finally:
        conn.close()
    return response.status, json.loads(body) if response.status == 200 else body


def test_end_to_end_two_tokens_two_identities(authz: PolicyAuthorizer) -> None:
    """Over real TCP from 127.0.0.2 and 127.0.0.3, each token gives its own identity and
    rules with the connection's address; no token gets 403."""
    with serving(authz) as port:
        alice = get_from("127.0.0.2", port, bearer(ALICE_TOKEN))
        ci = get_from("127.0.0.3", port, bearer(CI_TOKEN))
        nobody = get_from("127.0.0.3", port, {})
    assert alice == (
        200,
        {
            "principal": {
                "hostname": "alice-laptop",
                "ip": "127.0.0.2",
                "user": "alice@example.com",
            },
            "rules": [ALICE_RULE],
        },
    )
    assert ci == (
        200,
        {"principal": {"hostname": "", "ip": "127.0.0.3", "tags": ["tag:ci"]}, "rules": [CI_RULE]},
    )
    assert nobody == (403, "access denied: missing or unknown bearer token")


# --- set-info (docs/api.md §9.5) --------------------------------------------------------


def test_set_info_is_granted_by_a_policy_rule(tmp_path: Path) -> None:
    """A token whose rule lists set-info may describe the secrets it names; Alice's,
    which does not, is refused; new-token's --allow knows the action."""
    writer_token = "setec_writer-token-for-tests-only"
    writer = {
        "sha256": hash_token(writer_token),
        "user": "writer@example.com",
        "rules": [parse_allow("set-info,info:team/*")],
    }
    path = write(tmp_path / "policy.json", {"tokens": [alice_entry(), writer]})
    authz = PolicyAuthorizer.from_options({"policy_file": path}, ServerInfo(port=0))
    with new_database() as db:
        db.put(SUPERUSER, "team/db", b"v")
        alice = authz.identify(peer_from("10.0.0.7", bearer(ALICE_TOKEN)))
        with pytest.raises(AccessDenied):
            db.set_info(alice, "team/db", "the team's database")
        granted = authz.identify(peer_from("10.0.0.9", bearer(writer_token)))
        db.set_info(granted, "team/db", "the team's database")
        with pytest.raises(AccessDenied):
            db.set_info(granted, "other/db", "not theirs")
        assert db.info(granted, "team/db").description == "the team's database"
