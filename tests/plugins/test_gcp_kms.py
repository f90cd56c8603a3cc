"""gcp-kms://: the contract and the failure modes against a loopback gRPC fake of Cloud
KMS (tests/peers/fake_gcp_kms.py), through the real google-cloud-kms client."""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import grpc
import pytest
from peers.fake_gcp_kms import FakeKms, FakeKmsServer, crc32c, key_name

from setec_core import ConfigError, KeyMismatchError, KeyProvider, Plugins
from setec_core.errors import KeyProviderError, UnavailableError
from setec_core.testing import KeyProviderContract
from setec_core.testing.key_contract import CONTEXT
from setec_plugins.gcp_kms import GcpKmsKeyProvider


@pytest.fixture(scope="module")
def server() -> Iterator[FakeKmsServer]:
    with FakeKmsServer() as s:
        yield s


@pytest.fixture
def kms(server: FakeKmsServer) -> Iterator[FakeKms]:
    """The module's fake, with its faults and calls cleared after each test."""
    yield server.kms
    server.kms.reset()


@pytest.fixture(autouse=True)
def gcp_env(monkeypatch: pytest.MonkeyPatch, server: FakeKmsServer) -> None:
    """KMS at the fake; no real credentials are looked for."""
    monkeypatch.setenv("SETEC_GCP_KMS_ENDPOINT", server.endpoint)
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "5")


_count = iter(range(1_000_000))


def new_key(kms: FakeKms) -> str:
    return kms.add_key(key_name(f"k{next(_count)}"))


def provider_for(name: str) -> GcpKmsKeyProvider:
    return GcpKmsKeyProvider.from_uri(f"gcp-kms://{name}")


class TestGcpKmsContract(KeyProviderContract):
    """gcp-kms:// meets the KeyProvider contract; another key cannot unwrap."""

    @pytest.fixture
    def provider(self, kms: FakeKms) -> Iterator[KeyProvider]:
        p = provider_for(new_key(kms))
        yield p
        p.close()

    @pytest.fixture
    def other_provider(self, kms: FakeKms) -> Iterator[KeyProvider]:
        p = provider_for(new_key(kms))
        yield p
        p.close()


def test_crc32c_of_the_fake_is_castagnoli() -> None:
    """The fake's CRC32C gives the standard check value, so its fields are honest."""
    assert crc32c(b"123456789") == 0xE3069283


def test_requests_carry_checksums_and_context(kms: FakeKms) -> None:
    """The context is the AAD, and every CRC32C field is sent (the fake checks them)."""
    p = provider_for(new_key(kms))
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    p.unwrap(blob, CONTEXT)
    encrypt, decrypt = kms.requests
    assert encrypt.additional_authenticated_data == CONTEXT
    assert encrypt.plaintext_crc32c == crc32c(dek)
    assert encrypt.additional_authenticated_data_crc32c == crc32c(CONTEXT)
    assert decrypt.additional_authenticated_data == CONTEXT
    assert decrypt.ciphertext_crc32c == crc32c(blob)
    assert decrypt.additional_authenticated_data_crc32c == crc32c(CONTEXT)


def test_another_key_is_a_mismatch_naming_it(kms: FakeKms) -> None:
    """A blob wrapped under one key is a KeyMismatchError under another, naming it."""
    mine, other = new_key(kms), new_key(kms)
    blob = provider_for(mine).wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyMismatchError, match=other):
        provider_for(other).unwrap(blob, CONTEXT)


def test_wrong_context_is_a_mismatch(kms: FakeKms) -> None:
    """The AAD is bound: another context fails with INVALID_ARGUMENT → KeyMismatchError."""
    p = provider_for(new_key(kms))
    blob = p.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyMismatchError, match="InvalidArgument"):
        p.unwrap(blob, b"another context")


def test_rotated_key_still_opens_old_blobs(kms: FakeKms) -> None:
    """After a new primary version, a blob of the old version still unwraps."""
    name = new_key(kms)
    p = provider_for(name)
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    kms.rotate(name)
    assert p.unwrap(blob, CONTEXT) == dek
    assert p.unwrap(p.wrap(dek, CONTEXT), CONTEXT) == dek


def test_uri_selects_gcp_kms_through_the_entry_point(kms: FakeKms) -> None:
    """gcp-kms://... is built by the installed plugin."""
    name = new_key(kms)
    p = Plugins.load().key_provider(f"gcp-kms://{name}")
    assert isinstance(p, GcpKmsKeyProvider)
    assert p.uri == f"gcp-kms://{name}"
    assert repr(p) == f"GcpKmsKeyProvider('gcp-kms://{name}')"


@pytest.mark.parametrize(
    "uri",
    [
        "gcp-kms://",
        "gcp-kms://projects/p/locations/global/keyRings/r",
        "gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/",
        "gcp-kms://projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        "gcp-kms://projects//locations/global/keyRings/r/cryptoKeys/k",
        "gcp-kms:projects/p/locations/global/keyRings/r/cryptoKeys/k",
    ],
)
def test_malformed_uri_shows_the_form(uri: str) -> None:
    """Anything but a CryptoKey name is a ConfigError showing the expected form."""
    with pytest.raises(ConfigError, match=r"projects/PROJECT/locations/LOCATION/keyRings"):
        GcpKmsKeyProvider.from_uri(uri)


@pytest.mark.parametrize("op", ["Encrypt", "Decrypt"])
def test_disabled_key_fails_at_once(kms: FakeKms, op: str) -> None:
    """A disabled version (FAILED_PRECONDITION) is refused on the first answer, never
    retried, naming the key and how to enable it; not a mismatch."""
    name = new_key(kms)
    p = provider_for(name)
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    kms.disable(name)
    kms.calls.clear()
    started = time.monotonic()
    with pytest.raises(KeyProviderError) as info:
        p.wrap(dek, CONTEXT) if op == "Encrypt" else p.unwrap(blob, CONTEXT)
    assert time.monotonic() - started < 2
    assert kms.calls == [(op, name)]
    message = str(info.value)
    assert not isinstance(info.value, KeyMismatchError)
    assert name in message
    assert "FailedPrecondition" in message
    assert "gcloud kms keys versions enable" in message
    for secret in (dek, dek.hex(), base64.b64encode(dek)):
        assert str(secret) not in message


@pytest.mark.parametrize(
    ("op", "code", "kind", "advice"),
    [
        ("Encrypt", grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied", "useToEncrypt"),
        ("Decrypt", grpc.StatusCode.PERMISSION_DENIED, "PermissionDenied", "useToDecrypt"),
        ("Encrypt", grpc.StatusCode.NOT_FOUND, "NotFound", "check the name"),
        ("Encrypt", grpc.StatusCode.UNAUTHENTICATED, "Unauthenticated", "application-default"),
        ("Encrypt", grpc.StatusCode.INVALID_ARGUMENT, "InvalidArgument", "ENCRYPT_DECRYPT"),
    ],
)
def test_refusals_fail_at_once(
    kms: FakeKms, op: str, code: grpc.StatusCode, kind: str, advice: str
) -> None:
    """Forbidden, missing or unsuitable keys are a KeyProviderError at once, naming the
    key, the status and what to do."""
    name = new_key(kms)
    p = provider_for(name)
    blob = p.wrap(os.urandom(32), CONTEXT)
    kms.calls.clear()
    kms.fail(op, code, "no")
    with pytest.raises(KeyProviderError) as info:
        p.wrap(os.urandom(32), CONTEXT) if op == "Encrypt" else p.unwrap(blob, CONTEXT)
    assert kms.calls == [(op, name)]
    assert not isinstance(info.value, KeyMismatchError)
    message = str(info.value)
    assert name in message
    assert kind in message
    assert advice in message
    if code == grpc.StatusCode.PERMISSION_DENIED:
        assert "roles/cloudkms.cryptoKeyEncrypterDecrypter" in message


def test_unknown_key_is_not_found(kms: FakeKms) -> None:
    """A key that does not exist is refused with NotFound, naming it."""
    name = key_name("never-made")
    with pytest.raises(KeyProviderError, match="NotFound") as info:
        provider_for(name).wrap(os.urandom(32), CONTEXT)
    assert name in str(info.value)


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ],
)
def test_transient_errors_are_retried(
    kms: FakeKms, code: grpc.StatusCode, caplog: pytest.LogCaptureFixture
) -> None:
    """UNAVAILABLE, DEADLINE_EXCEEDED and throttling are retried until KMS answers."""
    name = new_key(kms)
    p = provider_for(name)
    kms.fail("Encrypt", code, "try later", times=2)
    dek = os.urandom(32)
    with caplog.at_level(logging.WARNING, logger="setec"):
        blob = p.wrap(dek, CONTEXT)
    assert [c for c in kms.calls if c[0] == "Encrypt"] == [("Encrypt", name)] * 3
    assert p.unwrap(blob, CONTEXT) == dek
    assert "try later" in caplog.text


def test_unavailable_without_end_is_unavailable(
    kms: FakeKms, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UNAVAILABLE for longer than SETEC_KMS_RETRY_SECONDS: UnavailableError with the key
    and the last error."""
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "0.5")
    name = new_key(kms)
    p = provider_for(name)
    kms.fail("Decrypt", grpc.StatusCode.UNAVAILABLE, "backend down")
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="ServiceUnavailable: backend down") as info:
        p.unwrap(b"x" * 40, CONTEXT)
    assert time.monotonic() - started < 2
    assert name in str(info.value)
    assert len(kms.calls) > 1


def test_unreachable_kms_is_unavailable_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listening at the endpoint: retried for SETEC_KMS_RETRY_SECONDS, then an
    UnavailableError naming the key."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SETEC_GCP_KMS_ENDPOINT", f"127.0.0.1:{port}")
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "0.7")
    name = key_name("unreachable")
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="ServiceUnavailable") as info:
        provider_for(name).wrap(os.urandom(32), CONTEXT)
    elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 3
    assert name in str(info.value)
    assert "could not be reached in 0.7 s" in str(info.value)


@pytest.mark.parametrize(
    ("op", "forged", "what"),
    [
        ("Encrypt", {"ciphertext_crc32c": 0}, "ciphertext does not match"),
        ("Encrypt", {"verified_plaintext_crc32c": False}, "plaintext checksum"),
        ("Encrypt", {"verified_additional_authenticated_data_crc32c": False}, "context"),
        ("Decrypt", {"plaintext_crc32c": 0}, "plaintext does not match"),
        ("Decrypt", {"plaintext": b"y" * 32}, "plaintext does not match"),
    ],
)
def test_bad_checksum_in_a_response_is_corruption(
    kms: FakeKms, op: str, forged: dict[str, object], what: str
) -> None:
    """A response whose CRC32C does not hold (or that did not verify ours) is a
    KeyProviderError saying it was corrupted in transit; its data is not used."""
    name = new_key(kms)
    p = provider_for(name)
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    kms.forge(op, **forged)
    with pytest.raises(KeyProviderError, match="corrupted in transit") as info:
        p.wrap(dek, CONTEXT) if op == "Encrypt" else p.unwrap(blob, CONTEXT)
    assert not isinstance(info.value, KeyMismatchError)
    assert what in str(info.value)
    assert name in str(info.value)
    assert p.unwrap(blob, CONTEXT) == dek


def test_encrypt_by_another_key_is_refused(kms: FakeKms) -> None:
    """If KMS reports a version of another key, the ciphertext is not used."""
    name, other = new_key(kms), new_key(kms)
    kms.forge("Encrypt", name=f"{other}/cryptoKeyVersions/1")
    with pytest.raises(KeyProviderError, match=other):
        provider_for(name).wrap(os.urandom(32), CONTEXT)


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_retry_seconds_is_a_config_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """SETEC_KMS_RETRY_SECONDS must be a number of seconds."""
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", value)
    with pytest.raises(ConfigError, match="SETEC_KMS_RETRY_SECONDS"):
        provider_for(key_name("k"))


def test_no_credentials_says_how_to_provide_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    """Without the test endpoint and with no ADC anywhere, the error names the key and
    Application Default Credentials."""
    monkeypatch.delenv("SETEC_GCP_KMS_ENDPOINT")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", f"{tmp_path}/missing.json")
    name = key_name("k")
    with pytest.raises(KeyProviderError, match="Application Default Credentials") as info:
        provider_for(name).wrap(os.urandom(32), CONTEXT)
    assert name in str(info.value)


@pytest.mark.parametrize("module", ["google.cloud.kms_v1", "google_crc32c"])
def test_missing_sdk_says_how_to_install(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """Without google-cloud-kms (or google-crc32c) the provider is a ConfigError naming
    the extra to install."""
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigError, match=r"pip install 'pysetec\[gcp\]'"):
        Plugins.load().key_provider(f"gcp-kms://{key_name('k')}")


def test_registering_does_not_import_the_sdk() -> None:
    """Loading the plugins leaves google-cloud-kms and grpc unimported until a key is
    built."""
    code = (
        "import sys; from setec_core import Plugins; p = Plugins.load(); "
        "assert p.key_providers.by_name('gcp-kms'); "
        "assert not [m for m in sys.modules if m.startswith(('google', 'grpc'))], "
        "[m for m in sys.modules if m.startswith(('google', 'grpc'))]"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
