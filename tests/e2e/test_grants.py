"""Grants end to end: ``setec-serve`` as a subprocess with each real authorizer.

* ``tailscale``: identities and rules come from a fake tailscaled LocalAPI on a unix
  socket (tests/peers/fake_tailscaled.py); clients connect from different loopback
  addresses (127.0.0.2, 127.0.0.3, ...) so that whois tells them apart.
* ``tailscale-serve``: identity headers as ``tailscale serve --accept-app-caps`` sets
  them.
* ``policy``: bearer tokens from a policy file, reloaded on SIGHUP.
"""

from __future__ import annotations

import base64
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from peers.fake_tailscaled import FakeTailscaled, running
from requests.adapters import HTTPAdapter
from serve_process import ServeProcess, run_serve

from setec_core.audit import verify
from setec_plugins.policy_authz import new_token, policy_entry

CAP = "tailscale.com/cap/secrets"
GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
ADMIN, ALICE, CI, BROKEN, STRANGER = "127.0.0.6", "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"


class SourceAddressAdapter(HTTPAdapter):
    """Connects from a chosen local address, as a different tailnet peer would."""

    def __init__(self, ip: str) -> None:
        self.ip = ip
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.ip, 0)
        super().init_poolmanager(*args, **kwargs)


def peer(ip: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", SourceAddressAdapter(ip))
    return session


def call(session: requests.Session, url: str, method: str, body: object) -> requests.Response:
    return session.post(f"{url}/api/{method}", json=body, headers=GUARD, timeout=10)


@pytest.fixture
def tailnet(tmp_path: Path) -> Iterator[tuple[FakeTailscaled, str]]:
    fake = FakeTailscaled()
    fake.add_peer(
        ADMIN, "admin@example.com", caps={CAP: [{"action": ["put", "info"], "secret": ["*"]}]}
    )
    fake.add_peer(
        ALICE,
        "alice@example.com",
        node_name="alice-laptop.tail1234.ts.net.",
        caps={CAP: [{"action": ["get", "info"], "secret": ["team/*"]}]},
    )
    fake.add_peer(
        CI,
        node_name="ci-runner.tail1234.ts.net.",
        tags=["tag:ci"],
        caps={"https://tailscale.com/cap/secrets": [{"action": ["get"], "secret": ["ci/*"]}]},
    )
    fake.add_peer(BROKEN, "mallory@example.com", caps={CAP: [{"action": "get", "secret": ["*"]}]})
    sock = str(tmp_path / "tailscaled.sock")
    with running(fake, sock):
        yield fake, sock


def test_tailscale_grants(tmp_path: Path, tailnet: tuple[FakeTailscaled, str]) -> None:
    """With the tailscale authorizer each peer gets what its grants allow (a tagged
    node's through the legacy capability name); a malformed grant and an unknown peer
    are 403, tailscaled failing is 503, the bad rule is logged, and audit entries carry
    each peer's principal."""
    fake, sock = tailnet
    state = tmp_path / "state"
    args = (
        "--state-dir", str(state), "--kms-key-name", "dev://grants",
        "--authorizer", "tailscale", "--tailscale-socket", sock, "--listen", "127.0.0.1:0",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        url = server.url
        admin, alice, ci = peer(ADMIN), peer(ALICE), peer(CI)
        value = base64.b64encode(b"team-secret").decode()
        assert call(admin, url, "put", {"Name": "team/app", "Value": value}).text == "1"
        assert call(admin, url, "put", {"Name": "ci/key", "Value": "eA=="}).text == "1"
        assert call(admin, url, "get", {"Name": "team/app"}).status_code == 403  # no get
        assert call(alice, url, "get", {"Name": "team/app"}).json()["Value"] == value
        assert call(alice, url, "get", {"Name": "ci/key"}).status_code == 403
        listed = call(alice, url, "list", {}).json()
        assert "LastAccess" in listed[0]  # alice's get (docs/api.md §9.5)
        del listed[0]["LastAccess"]
        assert listed == [{"Name": "team/app", "Versions": [1], "ActiveVersion": 1}]
        # A tagged node, granted through the legacy capability name.
        assert call(ci, url, "get", {"Name": "ci/key"}).status_code == 200
        assert call(ci, url, "get", {"Name": "team/app"}).status_code == 403
        # A malformed grant: 403 for the caller, the rule named in the server's log.
        resp = call(peer(BROKEN), url, "get", {"Name": "team/app"})
        assert resp.status_code == 403
        # A peer tailscaled does not know.
        resp = call(peer(STRANGER), url, "get", {"Name": "team/app"})
        assert resp.status_code == 403
        assert STRANGER in resp.text
        # whois was asked about the real peer address, ip:port.
        assert any(
            f"addr={ALICE}%3A" in path or f"addr={ALICE}:" in path for _, path, _ in fake.requests
        )
        fake.mode = "error"
        resp = call(alice, url, "get", {"Name": "team/app"})
        assert resp.status_code == 503
        for session in (admin, alice, ci):
            session.close()
    # The malformed grant is named in the server's log, with the peer.
    bad_rule = json.dumps({"action": "get", "secret": ["*"]})
    assert any(BROKEN in line and bad_rule in line for line in server.output.splitlines())
    assert "team-secret" not in server.output
    entries = [json.loads(line) for line in (state / "audit.log").read_text().splitlines()]
    assert verify(state / "audit.log").ok
    alice_gets = [e for e in entries if e["principal"].get("user") == "alice@example.com"]
    assert alice_gets[0]["principal"] == {
        "hostname": "alice-laptop.tail1234.ts.net.",
        "ip": ALICE,
        "user": "alice@example.com",
    }
    ci_entries = [e for e in entries if "tags" in e["principal"]]
    assert ci_entries
    assert all(
        e["principal"]["tags"] == ["tag:ci"] and "user" not in e["principal"] for e in ci_entries
    )


def test_tailscale_serve_headers(tmp_path: Path, tailnet: tuple[FakeTailscaled, str]) -> None:
    """With the tailscale-serve authorizer identity and grants come from serve's
    headers; a tagged node, or a request without them, is 403."""
    fake, _ = tailnet
    args = (
        "--state-dir", str(tmp_path / "s"), "--kms-key-name", "dev://serve",
        "--authorizer", "tailscale-serve", "--listen", "127.0.0.1:0",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        url = server.url

        def as_peer(ip: str, method: str, body: object) -> requests.Response:
            headers = {**GUARD, **fake.serve_headers(ip)}
            return requests.post(f"{url}/api/{method}", json=body, headers=headers, timeout=10)

        assert as_peer(ADMIN, "put", {"Name": "team/app", "Value": "eA=="}).status_code == 200
        assert as_peer(ALICE, "get", {"Name": "team/app"}).status_code == 200
        assert as_peer(ALICE, "put", {"Name": "team/app", "Value": "eQ=="}).status_code == 403
        # Tagged nodes get no identity headers from serve.
        assert as_peer(CI, "get", {"Name": "ci/key"}).status_code == 403
        assert call(requests.Session(), url, "list", {}).status_code == 403  # no headers


def test_tailscale_serve_refuses_a_public_listener(tmp_path: Path) -> None:
    """The tailscale-serve authorizer will not start on a non-loopback address, and says
    which, without a traceback."""
    result = run_serve(
        "--state-dir", str(tmp_path / "s"), "--kms-key-name", "dev://x",
        "--authorizer", "tailscale-serve", "--listen", "0.0.0.0:0",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1
    assert "0.0.0.0" in result.stderr  # noqa: S104 - the refused address, not a bind
    assert "Traceback" not in result.stderr


def test_policy_tokens_and_sighup_reload(tmp_path: Path) -> None:
    """The policy authorizer maps bearer tokens to rules; SIGHUP loads a new policy
    file, a broken one (bad JSON, or too deep to parse) is refused and the old policy
    stays, and no token reaches the output."""
    alice, bob = new_token(), new_token()
    policy = tmp_path / "policy.json"
    rules = [{"action": ["get", "put", "info"], "secret": ["app/*"]}]
    policy.write_text(
        json.dumps({"tokens": [policy_entry(alice, user="alice@example.com", rules=rules)]})
    )
    args = (
        "--state-dir", str(tmp_path / "s"), "--kms-key-name", "dev://policy",
        "--authorizer", "policy", "--policy-file", str(policy), "--listen", "127.0.0.1:0",
    )  # fmt: skip

    def as_token(token: str, url: str, method: str, body: object) -> requests.Response:
        headers = {**GUARD, "Authorization": f"Bearer {token}"}
        return requests.post(f"{url}/api/{method}", json=body, headers=headers, timeout=10)

    with ServeProcess(*args, cwd=tmp_path) as server:
        url = server.url
        assert as_token(alice, url, "put", {"Name": "app/db", "Value": "eA=="}).status_code == 200
        assert as_token(alice, url, "put", {"Name": "other", "Value": "eA=="}).status_code == 403
        assert as_token(bob, url, "get", {"Name": "app/db"}).status_code == 403
        # Add bob and reload.
        entries = [
            policy_entry(alice, user="alice@example.com", rules=rules),
            policy_entry(bob, tags=["tag:ci"], rules=[{"action": ["get"], "secret": ["app/*"]}]),
        ]
        policy.write_text(json.dumps({"tokens": entries}))
        server.send(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while as_token(bob, url, "get", {"Name": "app/db"}).status_code != 200:
            assert time.monotonic() < deadline, server.output
            time.sleep(0.1)
        # A broken file is refused and the policy in force stays; so is one that
        # makes the JSON parser itself fail (too deep for Python's recursion limit).
        for broken in ("{not json", "[" * 100_000):
            policy.write_text(broken)
            server.send(signal.SIGHUP)
            time.sleep(0.5)
            assert as_token(bob, url, "get", {"Name": "app/db"}).status_code == 200
        assert server.stop() == 0
    assert "is not valid JSON" in server.output
    assert "nested too deeply" in server.output
    for token in (alice, bob):
        assert token not in server.output


def test_new_token_command_makes_a_working_entry(tmp_path: Path) -> None:
    """``setec-serve new-token`` prints a token and the entry for it; a server with a
    policy file made of that entry accepts the token for what --allow granted."""
    made = run_serve(
        "new-token", "--user", "alice@example.com", "--allow", "get,put:app/*", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    first, _, rest = made.stdout.partition("\n")
    token = first.removeprefix("token: ")
    entry = json.loads(rest.partition("\n")[2])
    assert token not in json.dumps(entry)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"tokens": [entry]}))
    args = (
        "--state-dir", str(tmp_path / "s"), "--kms-key-name", "dev://tok",
        "--authorizer", "policy", "--policy-file", str(policy), "--listen", "127.0.0.1:0",
    )  # fmt: skip
    with ServeProcess(*args, cwd=tmp_path) as server:
        headers = {**GUARD, "Authorization": f"Bearer {token}"}
        put = requests.post(
            f"{server.url}/api/put", json={"Name": "app/x", "Value": "eA=="}, headers=headers,
            timeout=10,
        )  # fmt: skip
        assert put.status_code == 200
        info = requests.post(
            f"{server.url}/api/info", json={"Name": "app/x"}, headers=headers, timeout=10
        )
        assert info.status_code == 403  # info was not granted
    bad = run_serve("new-token", "--user", "a@b", "--allow", "read:app/*", cwd=tmp_path)
    assert bad.returncode == 2
    assert "--allow 'read:app/*' is not ACTIONS:PATTERN" in bad.stderr
