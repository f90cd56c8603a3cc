"""vault-transit://: the contract against a loopback fake of Vault's Transit API
(tests/peers/fake_vault.py), through the real hvac client and real HTTP; refusals and
outages are injected by the fake answering Vault's error bodies."""

from __future__ import annotations

import base64
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import hvac
import pytest
from peers.fake_vault import FakeVault

from setec_core import ConfigError, KeyMismatchError, KeyProvider, Plugins
from setec_core.errors import KeyProviderError, UnavailableError
from setec_core.testing import KeyProviderContract
from setec_core.testing.key_contract import CONTEXT
from setec_plugins.vault_transit import VaultTransitKeyProvider, parse_uri

TOKEN = "s.test-token"


@pytest.fixture(scope="module")
def vault() -> Iterator[FakeVault]:
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    fake = FakeVault(token=TOKEN).start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def vault_env(monkeypatch: pytest.MonkeyPatch, vault: FakeVault) -> Iterator[None]:
    """The token in VAULT_TOKEN, nothing else of Vault's environment, a short retry."""
    for name in list(os.environ):
        if name.startswith("VAULT_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VAULT_TOKEN", TOKEN)
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "5")
    yield
    vault.heal()


def uri_of(vault: FakeVault, key: str) -> str:
    return f"vault-transit://127.0.0.1:{vault.port}/transit/{key}?tls=false"


def provider_for(vault: FakeVault, key: str | None = None) -> VaultTransitKeyProvider:
    """A provider for ``key`` (a fresh key if None) on the fake."""
    name = key or vault.create_key(f"k{os.urandom(4).hex()}")
    return VaultTransitKeyProvider.from_uri(uri_of(vault, name))


class TestVaultTransitContract(KeyProviderContract):
    """vault-transit:// meets the KeyProvider contract; another Transit key (the
    other_provider) cannot unwrap."""

    @pytest.fixture
    def provider(self, vault: FakeVault) -> Iterator[KeyProvider]:
        p = provider_for(vault)
        yield p
        p.close()

    @pytest.fixture
    def other_provider(self, vault: FakeVault) -> Iterator[KeyProvider]:
        p = provider_for(vault)
        yield p
        p.close()


def test_another_key_is_a_mismatch_naming_it(vault: FakeVault) -> None:
    """A blob wrapped under one key is a KeyMismatchError under another, naming it and
    what Vault said."""
    mine, other = provider_for(vault), provider_for(vault)
    blob = mine.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyMismatchError) as info:
        other.unwrap(blob, CONTEXT)
    assert other.uri in str(info.value)
    assert "cipher: message authentication failed" in str(info.value)


def test_wrong_context_is_a_mismatch(vault: FakeVault) -> None:
    """The context is bound as Transit associated_data: another context does not open."""
    p = provider_for(vault)
    blob = p.wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyMismatchError, match="another key or context"):
        p.unwrap(blob, b"setec DEK v2")


def test_blob_is_transit_ciphertext_under_associated_data(vault: FakeVault) -> None:
    """The blob is Vault's vault:v1:... string, which plain hvac decrypts with
    associated_data = base64(context): what the docs' policy and key type rely on."""
    p = provider_for(vault)
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    assert blob.startswith(b"vault:v1:")
    client = hvac.Client(url=vault.url, token=TOKEN)
    out = client.secrets.transit.decrypt_data(
        name=p.uri.split("/")[-1].split("?")[0],
        ciphertext=blob.decode(),
        associated_data=base64.b64encode(CONTEXT).decode(),
    )
    assert base64.b64decode(out["data"]["plaintext"]) == dek


def test_vault_ignoring_associated_data_is_refused(vault: FakeVault) -> None:
    """A Vault too old for associated_data ignores it with a warning: setec refuses
    rather than wrap without the context bound."""
    p = provider_for(vault)
    vault.ignore_associated_data = True
    try:
        with pytest.raises(KeyProviderError, match=r"ignored associated_data.*1\.13"):
            p.wrap(os.urandom(32), CONTEXT)
    finally:
        vault.ignore_associated_data = False


def test_rotated_key_still_opens_old_blobs(vault: FakeVault) -> None:
    """After a Transit key rotation the old wrapped key still opens, and new wraps use
    the new version."""
    name = vault.create_key("rotating")
    p = provider_for(vault, name)
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    vault.rotate(name)
    assert p.unwrap(blob, CONTEXT) == dek
    assert p.wrap(dek, CONTEXT).startswith(b"vault:v2:")


def test_non_ascii_blob_is_a_mismatch_without_a_call(vault: FakeVault) -> None:
    """Bytes that cannot be a Vault ciphertext fail locally as a mismatch."""
    p = provider_for(vault)
    before = vault.calls("decrypt")
    with pytest.raises(KeyMismatchError, match="not a Vault ciphertext"):
        p.unwrap(b"\xff" * 40, CONTEXT)
    assert vault.calls("decrypt") == before


def test_bad_token_is_refused_at_once_advising_the_policy(
    vault: FakeVault, monkeypatch: pytest.MonkeyPatch
) -> None:
    """403 permission denied is a KeyProviderError on the first answer, not a mismatch,
    naming the key and the policy path to grant; the token is not in the message."""
    name = vault.create_key("guarded")
    monkeypatch.setenv("VAULT_TOKEN", "s.wrong-token")
    p = provider_for(vault, name)
    before = vault.calls("encrypt")
    started = time.monotonic()
    with pytest.raises(KeyProviderError) as info:
        p.wrap(os.urandom(32), CONTEXT)
    assert time.monotonic() - started < 2
    assert vault.calls("encrypt") == before + 1
    message = str(info.value)
    assert not isinstance(info.value, KeyMismatchError)
    assert p.uri in message
    assert "permission denied" in message
    assert 'path "transit/encrypt/guarded"' in message
    assert "s.wrong-token" not in message


def test_forbidden_decrypt_is_not_a_mismatch(vault: FakeVault) -> None:
    """A 403 on decrypt says to grant decrypt, rather than blaming the blob."""
    p = provider_for(vault)
    blob = p.wrap(os.urandom(32), CONTEXT)
    vault.fail("decrypt", 403, "permission denied")
    with pytest.raises(KeyProviderError, match=r"/decrypt/") as info:
        p.unwrap(blob, CONTEXT)
    assert not isinstance(info.value, KeyMismatchError)


def test_missing_key_says_how_to_create_it(vault: FakeVault) -> None:
    """A key that does not exist is refused at once with the command to create it."""
    p = provider_for(vault, "never-made")
    with pytest.raises(KeyProviderError, match="vault write -f transit/keys/never-made") as info:
        p.wrap(os.urandom(32), CONTEXT)
    assert not isinstance(info.value, KeyMismatchError)


def test_no_key_material_in_errors(vault: FakeVault) -> None:
    """Neither the data key nor the wrapped blob appears in a mismatch error."""
    p, other = provider_for(vault), provider_for(vault)
    dek = os.urandom(32)
    blob = p.wrap(dek, CONTEXT)
    with pytest.raises(KeyMismatchError) as info:
        other.unwrap(blob, CONTEXT)
    message = str(info.value)
    for secret in (dek.hex(), base64.b64encode(dek).decode(), blob.decode()):
        assert secret not in message


def test_missing_vault_token_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without VAULT_TOKEN the provider is a ConfigError naming it."""
    monkeypatch.delenv("VAULT_TOKEN")
    with pytest.raises(ConfigError, match="VAULT_TOKEN is not set"):
        VaultTransitKeyProvider.from_uri("vault-transit://vault.example:8200/transit/setec")


@pytest.mark.parametrize(("status", "message"), [(503, "Vault is sealed"), (500, "internal")])
def test_sealed_or_failing_vault_is_retried(
    vault: FakeVault, status: int, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sealed Vault (503) or a 5xx is retried with backoff until Vault answers."""
    p = provider_for(vault)
    dek = os.urandom(32)
    before = vault.calls("encrypt")
    vault.fail("encrypt", status, message, times=2)
    with caplog.at_level(logging.WARNING, logger="setec"):
        blob = p.wrap(dek, CONTEXT)
    assert vault.calls("encrypt") == before + 3
    assert p.unwrap(blob, CONTEXT) == dek
    assert message in caplog.text


def test_unreachable_vault_is_unavailable_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Nothing listening: retried for SETEC_KMS_RETRY_SECONDS, then an UnavailableError
    naming the key and the connection error."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("SETEC_KMS_RETRY_SECONDS", "0.7")
    uri = f"vault-transit://127.0.0.1:{port}/transit/setec?tls=false"
    p = VaultTransitKeyProvider.from_uri(uri)
    started = time.monotonic()
    with pytest.raises(UnavailableError, match="ConnectionError") as info:
        p.wrap(os.urandom(32), CONTEXT)
    elapsed = time.monotonic() - started
    assert 0.7 <= elapsed < 3
    assert uri in str(info.value)
    assert "could not be reached in 0.7 s" in str(info.value)


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("//vault.example/transit/setec", ("vault.example", 8200, "transit", "setec", True)),
        (
            "//10.0.0.5:8300/team/transit/k?tls=false",
            ("10.0.0.5", 8300, "team/transit", "k", False),
        ),
        ("//[::1]:8200/transit/k?tls=true", ("::1", 8200, "transit", "k", True)),
    ],
)
def test_uri_forms(uri: str, parsed: tuple[str, int, str, str, bool]) -> None:
    """HOST[:PORT]/MOUNT/KEY, port 8200 by default, mounts with slashes, https unless
    ?tls=false."""
    assert parse_uri("vault-transit:" + uri) == parsed


def test_uri_is_canonical() -> None:
    """uri spells out the port and keeps tls=false, so from_uri(uri) is the same key."""
    p = VaultTransitKeyProvider.from_uri("vault-transit://vault.example/transit/setec")
    assert p.uri == "vault-transit://vault.example:8200/transit/setec"
    assert repr(p) == f"VaultTransitKeyProvider({p.uri!r})"
    q = VaultTransitKeyProvider.from_uri("vault-transit://h:1/transit/k?tls=false")
    assert q.uri == "vault-transit://h:1/transit/k?tls=false"
    assert q._client.adapter.base_uri == "http://h:1"
    assert p._client.adapter.base_uri == "https://vault.example:8200"


@pytest.mark.parametrize(
    "uri",
    [
        "vault-transit://",
        "vault-transit://host",
        "vault-transit://host/transit",
        "vault-transit://host/transit/",
        "vault-transit://host:notaport/transit/k",
        "vault-transit://host//k",
        "vault://host/transit/k",
    ],
)
def test_malformed_uri_shows_the_form(uri: str) -> None:
    """Anything but HOST[:PORT]/MOUNT/KEY is a ConfigError showing the expected form."""
    with pytest.raises(ConfigError, match=r"HOST\[:PORT\]/MOUNT/KEY"):
        VaultTransitKeyProvider.from_uri(uri)


@pytest.mark.parametrize("query", ["tls=no", "insecure=true", "tls"])
def test_unknown_option_is_refused(query: str) -> None:
    """Only tls=true|false is an option."""
    with pytest.raises(ConfigError, match=r"the only option is tls=true\|false"):
        VaultTransitKeyProvider.from_uri(f"vault-transit://h/transit/k?{query}")


def test_entry_point_selects_vault_transit(vault: FakeVault) -> None:
    """vault-transit:// URIs reach this provider through the setec entry point."""
    uri = uri_of(vault, vault.create_key("via-plugins"))
    p = Plugins.load().key_provider(uri)
    assert isinstance(p, VaultTransitKeyProvider)
    dek = os.urandom(32)
    assert p.unwrap(p.wrap(dek, CONTEXT), CONTEXT) == dek


def test_missing_hvac_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without hvac the provider is a ConfigError naming the extra to install."""
    monkeypatch.setitem(sys.modules, "hvac", None)
    with pytest.raises(ConfigError, match=r"pip install 'pysetec\[vault\]'"):
        Plugins.load().key_provider("vault-transit://vault.example/transit/setec")


def test_registering_does_not_import_hvac() -> None:
    """Loading the plugins (vault-transit included) leaves hvac unimported."""
    code = (
        "import sys; from setec_core import Plugins; p = Plugins.load(); "
        "assert p.key_providers.by_name('vault-transit'); "
        "assert 'hvac' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
