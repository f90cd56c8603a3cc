"""docs/kubernetes.md's manifests, read out of the page and played against a real
``setec-serve``: the server starts with the StatefulSet's flags, answers the probes as
the kubelet sends them, and serves the request External Secrets Operator's webhook
provider makes from the ClusterSecretStore, so the page cannot drift from the server.

What stands in for the cluster: the server listens on loopback with the dev key and a
state directory, policy file and certificate of the test's own (every other flag is the
page's); the tokens the page leaves as placeholders are made here. The request is
built as ESO builds it (its ``pkg/common/webhook``): the body and headers rendered as Go
templates over ``remoteRef`` and the store's ``secrets``, sent with the store's method
to the store's URL path, with the URL's host as ``Host``; then ``result.jsonPath`` picks
the value out of the JSON answer and the ExternalSecret's ``decodingStrategy`` decodes
it.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
import yaml
from serve_process import ServeProcess
from tls_certs import self_signed

from setec_plugins.policy_authz import hash_token, new_token

DOC = Path(__file__).resolve().parents[2] / "docs" / "kubernetes.md"
VALUE = b"p\xc3\xa4ss\nw\x00rd\xff"  # not UTF-8, with a newline and a NUL: base64 all the way
GUARD = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}


def manifests() -> list[dict[str, Any]]:
    """Every Kubernetes object in the page's ``yaml`` blocks, in order."""
    found: list[dict[str, Any]] = []
    for block in re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S):
        found += [m for m in yaml.safe_load_all(block) if m]
    return found


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    """The page's one object of ``kind`` (named ``name``, if given)."""
    matches = [
        m
        for m in manifests()
        if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)
    ]
    assert len(matches) == 1, f"docs/kubernetes.md has {len(matches)} {kind} {name or ''}"
    return matches[0]


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret's keys and values, from ``stringData`` or (base64) ``data``."""
    values = dict(secret.get("stringData") or {})
    for key, encoded in (secret.get("data") or {}).items():
        values[key] = base64.b64decode(encoded).decode()
    return values


def render(template: str, data: dict[str, dict[str, str]]) -> str:
    """Run ``template`` as Go's text/template does ESO's, for the form the page uses,
    ``{{ .OBJECT.FIELD }}``: the value as it is, unescaped. Any other template action
    fails, so a page that starts using one must teach this function first."""

    def field(match: re.Match[str]) -> str:
        return data[match[1]][match[2]]

    rendered = re.sub(r"\{\{\s*\.(\w+)\.(\w+)\s*\}\}", field, template)
    assert "{{" not in rendered, f"a template action this test cannot run: {template!r}"
    return rendered


def json_path(document: Any, path: str) -> Any:
    """ESO's ``result.jsonPath``, for the form the page uses: ``$.FIELD[.FIELD...]``."""
    assert re.fullmatch(r"\$(\.\w+)+", path), f"a JSONPath this test cannot run: {path!r}"
    for part in path.split(".")[1:]:
        document = document[part]
    return document


class Cluster:
    """The page's objects, and the server its StatefulSet describes, on loopback."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = the("ClusterSecretStore")["spec"]["provider"]["webhook"]
        self.external_secret = the("ExternalSecret")
        statefulset = the("StatefulSet")
        self.container = statefulset["spec"]["template"]["spec"]["containers"][0]
        self.service = the("Service")
        # The token ESO sends, made here for the placeholder in the page's Secret, and
        # the page's policy with that token's hash for the placeholder hash.
        self.token = new_token()
        self.admin_token = new_token()
        self.host = urlsplit(self.store["url"]).hostname or ""
        self.cert, key = self_signed(tmp_path, dns_names=[self.host])
        policy_file = tmp_path / "policy.json"
        policy_file.write_text(json.dumps(self._policy()))
        local = {
            "--state-dir": str(tmp_path / "state"),
            "--kms-key-name": "dev://",
            "--listen": "127.0.0.1:0",
            "--policy-file": str(policy_file),
            "--tls-cert": str(self.cert),
            "--tls-key": str(key),
        }
        args = []
        for arg in self.container["args"]:
            flag, _, value = arg.partition("=")
            args.append(f"{flag}={local.get(flag, value)}")
        self.server = ServeProcess(*args, cwd=tmp_path)

    def _policy(self) -> dict[str, Any]:
        policy = json.loads(secret_data(the("Secret", "setec-policy"))["policy.json"])
        for entry in policy["tokens"]:
            assert entry["sha256"].startswith("<"), "the page's policy holds a real hash"
            entry["sha256"] = hash_token(self.token)
        # The test's own token, to store the secret ESO will read.
        policy["tokens"].append(
            {
                "comment": "the test",
                "sha256": hash_token(self.admin_token),
                "user": "admin@example.com",
                "rules": [{"action": ["put"], "secret": ["*"]}],
            }
        )
        return policy  # type: ignore[no-any-return]

    def put(self, name: str, value: bytes) -> None:
        """Store ``value`` as ``name`` with the test's own token."""
        put = requests.post(
            f"{self.server.url}/api/put",
            json={"Name": name, "Value": base64.b64encode(value).decode()},
            headers={**GUARD, "Authorization": f"Bearer {self.admin_token}"},
            verify=str(self.cert),
            timeout=10,
        )
        assert put.status_code == 200, put.text

    def eso_request(self, key: str) -> requests.Response:
        """Make the request ESO's webhook provider makes for ``remoteRef.key = key``."""
        data = {"remoteRef": {"key": key, "version": "", "property": ""}}
        for exposed in self.store.get("secrets", []):
            ref = exposed["secretRef"]
            secret = the("Secret", ref["name"])
            assert secret["metadata"]["namespace"] == ref["namespace"]
            assert secret["metadata"]["labels"]["external-secrets.io/type"] == "webhook"
            values = secret_data(secret)
            if values.get("token", "").startswith("<"):  # the page's placeholder
                values["token"] = self.token
            data[exposed["name"]] = values
        url = urlsplit(self.store["url"])
        assert not url.query, "the page's URL carries a query this test does not render"
        headers = {name: render(value, data) for name, value in self.store["headers"].items()}
        headers["Host"] = url.netloc  # what Go's client sends for the page's URL
        return requests.request(
            self.store.get("method", "GET"),
            self.server.url + url.path,
            data=render(self.store.get("body", ""), data).encode(),
            headers=headers,
            verify=str(self.cert),
            timeout=10,
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    """The page's server, started with the StatefulSet's flags."""
    cluster = Cluster(tmp_path)
    with cluster.server:
        yield cluster


def test_eso_reads_a_secret_through_the_pages_cluster_secret_store(cluster: Cluster) -> None:
    """The request ESO makes from the page's ClusterSecretStore and ExternalSecret reads
    the secret's bytes: POST /api/get with the rendered body, the guard header and the
    token, then ``$.Value`` and the Base64 decoding strategy."""
    remote_ref = cluster.external_secret["spec"]["data"][0]["remoteRef"]
    cluster.put(remote_ref["key"], VALUE)
    got = cluster.eso_request(remote_ref["key"])
    assert got.status_code == 200, got.text
    value = json_path(got.json(), cluster.store["result"]["jsonPath"])
    assert isinstance(value, str)
    assert remote_ref["decodingStrategy"] == "Base64"
    assert base64.b64decode(value, validate=True) == VALUE


def test_eso_sees_the_statuses_the_page_describes(cluster: Cluster) -> None:
    """As the page's "Errors" note says: a missing name the token may read is 404 (ESO's
    "deleted"), a name outside its grant 403, and a name with a quote makes the body
    invalid JSON, 400."""
    key = cluster.external_secret["spec"]["data"][0]["remoteRef"]["key"]
    missing = key.rsplit("/", 1)[0] + "/missing"
    assert cluster.eso_request(missing).status_code == 404
    cluster.put("elsewhere/x", b"not for eso")
    assert cluster.eso_request("elsewhere/x").status_code == 403
    assert cluster.eso_request(key.rsplit("/", 1)[0] + '/a"b').status_code == 400


def test_the_pages_probes_reach_the_health_pages(cluster: Cluster) -> None:
    """The StatefulSet's liveness and readiness probes, sent as the kubelet sends them
    (to the named port, by its scheme, no token), get 200 ``ok`` and the version header."""
    ports = {p["name"]: p["containerPort"] for p in cluster.container["ports"]}
    for kind in ("livenessProbe", "readinessProbe"):
        probe = cluster.container[kind]["httpGet"]
        assert probe["port"] in ports
        assert cluster.server.url.startswith(probe["scheme"].lower() + "://")
        got = requests.get(cluster.server.url + probe["path"], verify=str(cluster.cert), timeout=10)
        assert (got.status_code, got.text) == (200, "ok\n"), kind
        assert got.headers["Setec-Version"]


def test_the_pages_names_and_ports_agree() -> None:
    """The store's URL is the Service's cluster name and port; the Service forwards to
    the container's named port, which is the port the server listens on."""
    statefulset, service = the("StatefulSet"), the("Service")
    container = statefulset["spec"]["template"]["spec"]["containers"][0]
    url = urlsplit(the("ClusterSecretStore")["spec"]["provider"]["webhook"]["url"])
    meta = service["metadata"]
    assert url.hostname == f"{meta['name']}.{meta['namespace']}.svc.cluster.local"
    (port,) = service["spec"]["ports"]
    assert url.port == port["port"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen = next(a for a in container["args"] if a.startswith("--listen="))
    assert int(listen.rsplit(":", 1)[1]) == ports[port["targetPort"]]
    assert statefulset["metadata"]["namespace"] == meta["namespace"]
    assert the("Secret", "setec-policy")["metadata"]["namespace"] == meta["namespace"]
