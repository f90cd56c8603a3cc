"""aws-kms://: the contract against moto's KMS server on loopback, through real boto3 and
real HTTP; key states moto does not model (disabled, pending deletion, throttling) are
injected by a loopback proxy that answers KMS error JSON in moto's place."""

from __future__ import annotations

import base64
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from peers.moto_server import MotoServer

from setec_core import ConfigError, KeyMismatchError, KeyProvider, Plugins
from setec_core.errors import KeyProviderError, UnavailableError
from setec_core.testing import KeyProviderContract
from setec_core.testing.key_contract import CONTEXT
from setec_plugins.aws_kms import AwsKmsKeyProvider

REGION = "us-east-1"
OTHER_REGION = "eu-west-1"


class FaultProxy:
    """A loopback HTTP proxy in front of moto that can answer chosen KMS operations
    itself: ``fail("Encrypt", "DisabledException")`` makes the next Encrypt calls (all, or
    ``times`` of them) get that error instead of reaching moto."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.faults: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        self.forever: dict[str, tuple[int, dict[str, Any]]] = {}
        self.seen: list[str] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                op = self.headers.get("X-Amz-Target", "").rpartition(".")[2]
                proxy.seen.append(op)
                queued = proxy.faults.get(op)
                answer = queued.pop(0) if queued else proxy.forever.get(op)
                if answer is not None:
                    status, payload = answer
                    data = json.dumps(payload).encode()
                    ctype = "application/x-amz-json-1.1"
                else:
                    conn = http.client.HTTPConnection(proxy.upstream, timeout=10)
                    conn.request("POST", self.path, body, dict(self.headers))
                    resp = conn.getresponse()
                    status, data = resp.status, resp.read()
                    ctype = resp.getheader("Content-Type", "application/x-amz-json-1.1")
                    conn.close()
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def fail(
        self,
        op: str,
        code: str,
        message: str = "",
        *,
        status: int = 400,
        times: int | None = None,
    ) -> None:
        error = (status, {"__type": code, "message": message})
        if times is None:
            self.forever[op] = error
        else:
            self.faults.setdefault(op, []).extend([error] * times)

    def answer(self, op: str, payload: dict[str, Any]) -> None:
        """Answer the next ``op`` with a 200 and ``payload`` (a forged success)."""
        self.faults.setdefault(op, []).append((200, payload))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(autouse=True)
def aws_env(monkeypatch: pytest.MonkeyPatch, moto: MotoServer, tmp_path: Any) -> None:
    """Dummy credentials, no shared config, no instance metadata, KMS at moto."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")  # the ARN's region must win
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", moto.url)
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "5")


@pytest.fixture
def proxy(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    p = FaultProxy(moto.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", p.url)
    yield p
    p.close()


def provider_for(arn: str) -> AwsKmsKeyProvider:
    return AwsKmsKeyProvider.from_uri(f"aws-kms://{arn}")


class TestAwsKmsContract(KeyProviderContract):
    """aws-kms:// meets the KeyProvider contract against moto; a key in another region
    (the other_provider) cannot unwrap."""

    @pytest.fixture
    def provider(self, moto: MotoServer) -> Iterator[KeyProvider]:
        p = provider_for(moto.new_kms_key())
        yield p
        p.close()

    @pytest.fixture
    def other_provider(self, moto: MotoServer) -> Iterator[KeyProvider]:
        p = provider_for(moto.new_kms_key(OTHER_REGION))
        yield p
        p.close()


def test_another_key_in_the_same_region_is_a_mismatch(moto: MotoServer) -> None:
    """A blob wrapped under one key is a KeyMismatchError under another, naming it."""
    mine, other = moto.new_kms_key(), moto.new_kms_key()
    blob = provider_for(mine).wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyMismatchError, match=other):
        provider_for(other).unwrap(blob, CONTEXT)


def test_region_comes_from_the_arn(moto: MotoServer) -> None:
    """A key in ap-southeast-2 works although AWS_DEFAULT_REGION says otherwise."""
    arn = moto.new_kms_key("ap-southeast-2")
    p = provider_for(arn)
    assert p._client.meta.region_name == "ap-southeast-2"
    dek = os.urandom(32)
    assert p.unwrap(p.wrap(dek, CONTEXT), CONTEXT) == dek


def test_alias_arn_opens_what_the_key_arn_wrapped(moto: MotoServer) -> None:
    """aws-kms://arn:...:alias/NAME selects the aliased key."""
    arn = moto.new_kms_key()
    moto.client("kms").create_alias(AliasName="alias/setec-test", TargetKeyId=arn)
    alias = arn.rsplit(":", 1)[0] + ":alias/setec-test"
    dek = os.urandom(32)
    blob = provider_for(arn).wrap(dek, CONTEXT)
    assert provider_for(alias).unwrap(blob, CONTEXT) == dek
    assert provider_for(alias).uri == f"aws-kms://{alias}"


def test_encryption_context_is_tinks(moto: MotoServer) -> None:
    """The blob is plain KMS Encrypt output under {"associatedData": hex(context)}, the
    context tink-go-awskms (so Go setec) uses."""
    arn = moto.new_kms_key()
    dek = os.urandom(32)
    blob = provider_for(arn).wrap(dek, CONTEXT)
    out = moto.client("kms").decrypt(
        CiphertextBlob=blob, KeyId=arn, EncryptionContext={"associatedData": CONTEXT.hex()}
    )
    assert out["Plaintext"] == dek


def test_bare_arn_selects_aws_kms(moto: MotoServer) -> None:
    """A bare arn:aws:kms:... key name means aws-kms://ARN, through the entry point."""
    arn = moto.new_kms_key()
    p = Plugins.load().key_provider(arn)
    assert isinstance(p, AwsKmsKeyProvider)
    assert p.uri == f"aws-kms://{arn}"
    assert repr(p) == f"AwsKmsKeyProvider('aws-kms://{arn}')"


@pytest.mark.parametrize(
    "uri",
    [
        "aws-kms://",
        "aws-kms://arn:aws:s3:::bucket",
        "aws-kms://arn:aws:kms:us-east-1:123456789012:key/",
        "aws-kms://arn:aws:kms::123456789012:key/abc",
        "aws-kms://arn:aws:kms:us-east-1:123456789012:secret/abc",
        "aws-kms://1234abcd-12ab-34cd-56ef-1234567890ab",
    ],
)
def test_malformed_uri_shows_the_form(uri: str) -> None:
    """Anything but a KMS key or alias ARN is a ConfigError showing the expected form."""
    with pytest.raises(ConfigError, match=r"arn:aws:kms:REGION:ACCOUNT:key/ID"):
        AwsKmsKeyProvider.from_uri(uri)


@pytest.mark.parametrize(
    ("op", "code", "advice"),
    [
        ("Encrypt", "DisabledException", "enable-key"),
        ("Decrypt", "DisabledException", "enable-key"),
        ("Encrypt", "KMSInvalidStateException", "cancel-key-deletion"),
        ("Decrypt", "KMSInvalidStateException", "cancel-key-deletion"),
        ("Encrypt", "NotFoundException", "check the ARN"),
        ("Encrypt", "AccessDeniedException", "kms:Encrypt"),
    ],
)
def test_refusals_fail_at_once(
    moto: MotoServer, proxy: FaultProxy, op: str, code: str, advice: str
) -> None:
    """A disabled, deleted, missing or forbidden key is a KeyProviderError on the first
    answer, never retried, naming the key and what to do; no key material in it."""
    arn = moto.new_kms_key()
    p = provider_for(arn)
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    proxy.seen.clear()
    proxy.fail(op, code, f"{arn} says no")
    started = time.monotonic()
    with pytest.raises(KeyProviderError) as info:
        p.wrap(dek, CONTEXT) if op == "Encrypt" else p.unwrap(blob, CONTEXT)
    assert time.monotonic() - started < 2
    assert proxy.seen == [op]
    message = str(info.value)
    assert arn in message
    assert code in message
    assert advice in message
    assert not isinstance(info.value, KeyMismatchError)
    for secret in (dek, dek.hex(), base64.b64encode(dek)):
        assert str(secret) not in message


def test_access_denied_on_decrypt_is_a_mismatch_saying_both_causes(
    moto: MotoServer, proxy: FaultProxy
) -> None:
    """KMS says AccessDenied on Decrypt both for a blob of a key it cannot see and for
    missing kms:Decrypt; the error is a KeyMismatchError that names both causes."""
    arn = moto.new_kms_key()
    p = provider_for(arn)
    blob = p.wrap(os.urandom(32), CONTEXT)
    proxy.fail("Decrypt", "AccessDeniedException")
    with pytest.raises(KeyMismatchError, match=r"another key .* lack kms:Decrypt"):
        p.unwrap(blob, CONTEXT)


def test_decrypt_by_another_key_is_a_mismatch(moto: MotoServer, proxy: FaultProxy) -> None:
    """If KMS reports that another key decrypted the blob, the plaintext is refused."""
    arn, other = moto.new_kms_key(), moto.new_kms_key()
    p = provider_for(arn)
    proxy.answer("Decrypt", {"KeyId": other, "Plaintext": base64.b64encode(b"k" * 32).decode()})
    with pytest.raises(KeyMismatchError, match=other):
        p.unwrap(b"blob", CONTEXT)


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("ThrottlingException", 400),
        ("KMSInternalException", 500),
        ("DependencyTimeoutException", 503),
    ],
)
def test_transient_errors_are_retried(
    moto: MotoServer, proxy: FaultProxy, code: str, status: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Throttling and KMS-side failures are retried with backoff until KMS answers."""
    p = provider_for(moto.new_kms_key())
    proxy.fail("Encrypt", code, status=status, times=2)
    dek = os.urandom(32)
    with caplog.at_level(logging.WARNING, logger="setec"):
        blob = p.wrap(dek, CONTEXT)
    assert proxy.seen.count("Encrypt") == 3
    assert p.unwrap(blob, CONTEXT) == dek
    assert code in caplog.text


def test_throttling_without_end_is_unavailable(
    moto: MotoServer, proxy: FaultProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Throttled for longer than SETEC_KMS_RETRY_SECONDS: UnavailableError with the key
    and the last error."""
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "0.5")
    arn = moto.new_kms_key()
    p = provider_for(arn)
    proxy.fail("Encrypt", "ThrottlingException", "Rate exceeded")
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="ThrottlingException: Rate exceeded") as info:
        p.wrap(os.urandom(32), CONTEXT)
    assert time.monotonic() - started < 2
    assert arn in str(info.value)
    assert proxy.seen.count("Encrypt") > 1


def test_unreachable_kms_is_unavailable_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listening at the endpoint: retried for SETEC_KMS_RETRY_SECONDS, then an
    UnavailableError naming the key and the connection error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL_KMS", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "0.7")
    arn = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="EndpointConnectionError") as info:
        provider_for(arn).wrap(os.urandom(32), CONTEXT)
    elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 3
    assert arn in str(info.value)
    assert "could not be reached in 0.7 s" in str(info.value)


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_retry_seconds_is_a_config_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """SETEC_KMS_RETRY_SECONDS must be a number of seconds."""
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", value)
    with pytest.raises(ConfigError, match="SETEC_KMS_RETRY_SECONDS"):
        provider_for("arn:aws:kms:us-east-1:123456789012:key/abc")


def test_no_credentials_is_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no credentials anywhere in the chain the error says how to provide them."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    p = provider_for("arn:aws:kms:us-east-1:123456789012:key/abc")
    with pytest.raises(KeyProviderError, match="no AWS credentials found"):
        p.wrap(os.urandom(32), CONTEXT)


def test_missing_boto3_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without boto3 the provider is a ConfigError naming the extra to install."""
    monkeypatch.setitem(sys.modules, "boto3", None)
    with pytest.raises(ConfigError, match=r"pip install 'pysetec\[aws\]'"):
        Plugins.load().key_provider("arn:aws:kms:us-east-1:123456789012:key/abc")


def test_registering_does_not_import_boto3() -> None:
    """Loading the plugins (aws-kms included) leaves boto3 unimported until a key is built."""
    code = (
        "import sys; from setec_core import Plugins; p = Plugins.load(); "
        "assert p.key_providers.by_name('aws-kms'); "
        "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_docs_policy_names_the_context_setec_sends() -> None:
    """docs/keys.md's IAM condition holds the hex context the provider sends."""
    docs = Path(__file__).resolve().parents[2] / "docs" / "keys.md"
    block = docs.read_text().split("```json\n", 1)[1].split("```", 1)[0]
    condition = json.loads(block)["Statement"][0]["Condition"]["StringEquals"]
    assert condition == {"kms:EncryptionContext:associatedData": CONTEXT.hex()}
