"""setec_core.kms: the retry budget, the retry loop and the URI scheme check that key
providers for a remote KMS share (docs/plugins.md, "Helpers for key-provider plugins").

The provider under test is that section's example, ``MyKmsKeyProvider``, run as it is
written against ``mykms``, an in-process fake of the SDK it imagines, whose KMS can be
told to be unreachable or to refuse.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from setec_core import ConfigError, KeyMismatchError, KeyProvider, KeyProviderError
from setec_core.errors import UnavailableError
from setec_core.kms import DEFAULT_RETRY_SECONDS, RETRY_ENV, Backoff, retry_budget
from setec_core.testing import KeyProviderContract
from setec_core.testing.key_contract import CONTEXT

DOCS = Path(__file__).resolve().parents[2] / "docs" / "plugins.md"


class FakeKms:
    """The service behind the fake SDK: AES-GCM keys by name, and faults on demand."""

    def __init__(self) -> None:
        self.keys: dict[str, AESGCM] = {}
        self.calls: list[str] = []
        self.outages = 0  # how many of the next calls find it unreachable
        self.refusing = False

    def key(self, operation: str, name: str) -> AESGCM:
        self.calls.append(operation)
        if self.outages:
            self.outages -= 1
            raise MyKmsUnavailable("connection refused")
        if self.refusing:
            raise MyKmsError(f"key {name} is disabled")
        return self.keys.setdefault(name, AESGCM(AESGCM.generate_key(256)))


class MyKmsError(Exception):
    """The fake SDK's base error: a refusal."""


class MyKmsUnavailable(MyKmsError):  # noqa: N818 - the imagined SDK's name
    """The fake SDK's error for an unreachable KMS."""


class MyKmsThrottled(MyKmsError):  # noqa: N818 - the imagined SDK's name
    """The fake SDK's error for a throttled call."""


class MyKmsInvalidCiphertext(MyKmsError):  # noqa: N818 - the imagined SDK's name
    """The fake SDK's error for a ciphertext that does not open."""


KMS = FakeKms()


class MyKmsClient:
    """The fake SDK's client, as the docs example builds it."""

    def __init__(self, *, retries: int, timeout: float) -> None:
        self.retries, self.timeout = retries, timeout

    def encrypt(self, key: str, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + KMS.key("Encrypt", key).encrypt(nonce, plaintext, aad)

    def decrypt(self, key: str, blob: bytes, aad: bytes) -> bytes:
        aead = KMS.key("Decrypt", key)
        try:
            return aead.decrypt(blob[:12], blob[12:], aad)
        except (InvalidTag, ValueError):
            raise MyKmsInvalidCiphertext("invalid ciphertext") from None


def _fake_sdk() -> types.ModuleType:
    sdk = types.ModuleType("mykms")
    sdk.Client = MyKmsClient  # type: ignore[attr-defined]
    sdk.errors = types.SimpleNamespace(  # type: ignore[attr-defined]
        Error=MyKmsError,
        Unavailable=MyKmsUnavailable,
        Throttled=MyKmsThrottled,
        InvalidCiphertext=MyKmsInvalidCiphertext,
    )
    return sdk


def _docs_example() -> types.ModuleType:
    section = DOCS.read_text().split("## Helpers for key-provider plugins", 1)[1]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[0]
    module = types.ModuleType("setec_mykms")
    exec(compile(code, "docs/plugins.md", "exec"), module.__dict__)  # noqa: S102 - our own docs
    return module


EXAMPLE = _docs_example()


@pytest.fixture(autouse=True)
def healthy_kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake SDK installed, its KMS answering, no retry budget in the environment."""
    monkeypatch.setitem(sys.modules, "mykms", _fake_sdk())
    monkeypatch.delenv(RETRY_ENV, raising=False)
    yield
    KMS.outages, KMS.refusing = 0, False
    KMS.calls.clear()


def provider(retry_seconds: float | None = 5) -> Any:
    """The docs example for a fresh key."""
    return EXAMPLE.MyKmsKeyProvider(f"k{os.urandom(4).hex()}", retry_seconds=retry_seconds)


class TestDocsExampleContract(KeyProviderContract):
    """The docs example meets the KeyProvider contract although its KMS is unreachable
    on the first call of each test; a blob that does not open is a KeyMismatchError (a
    refusal its classifier returns)."""

    @pytest.fixture
    def provider(self) -> KeyProvider:
        KMS.outages = 1
        return provider()  # type: ignore[no-any-return]

    @pytest.fixture
    def other_provider(self) -> KeyProvider:
        return provider()  # type: ignore[no-any-return]


# --- the retry budget --------------------------------------------------------------


@pytest.mark.parametrize(("value", "seconds"), [(None, 30.0), ("", 30.0), ("2.5", 2.5), ("0", 0)])
def test_retry_budget_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str | None, seconds: float
) -> None:
    """SETEC_KMS_RETRY_SECONDS gives the budget; unset or empty, it is 30 s."""
    if value is not None:
        monkeypatch.setenv(RETRY_ENV, value)
    assert retry_budget() == seconds
    assert DEFAULT_RETRY_SECONDS == 30.0


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_bad_retry_budget_is_a_config_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    """A budget that is not a number of seconds >= 0 is a ConfigError naming the variable
    and the value, also when a provider's KmsRetry reads it."""
    monkeypatch.setenv(RETRY_ENV, value)
    expected = f"SETEC_KMS_RETRY_SECONDS='{value}' is not a number of seconds"
    with pytest.raises(ConfigError, match=expected):
        retry_budget()
    with pytest.raises(ConfigError, match=expected):
        provider(None)


def test_kms_retry_reads_the_budget_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """KmsRetry takes the budget from the environment when no seconds are given."""
    monkeypatch.setenv(RETRY_ENV, "7")
    assert provider(None)._kms.seconds == 7
    assert provider(0.5)._kms.seconds == 0.5


@pytest.mark.parametrize(("seconds", "timeout"), [(0, 1.0), (7, 7.0), (300, 20.0)])
def test_attempt_timeout_is_the_budget_within_1_and_20_s(seconds: float, timeout: float) -> None:
    """One attempt may take the budget, but at least 1 s and at most 20 s."""
    p = provider(seconds)
    assert p._kms.attempt_timeout == timeout
    assert p._client.timeout == timeout


# --- the retry loop ----------------------------------------------------------------


def test_transient_failures_are_retried_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    """An unreachable KMS is called again after a backoff, with a warning per failure
    naming the service, the operation, the key and the failure."""
    p = provider()
    KMS.outages = 2
    dek = os.urandom(32)
    with caplog.at_level(logging.WARNING, logger="setec"):
        blob = p.wrap(dek, CONTEXT)
    assert KMS.calls == ["Encrypt"] * 3
    warnings = [r.getMessage() for r in caplog.records if r.name == "setec.keys"]
    assert len(warnings) == 2
    assert warnings[0].startswith(
        f"MyKMS Encrypt with key {p._key} failed (MyKmsUnavailable: connection refused); "
        "retrying for up to "
    )
    assert p.unwrap(blob, CONTEXT) == dek


def test_retry_stops_at_the_budget() -> None:
    """A KMS that stays unreachable is retried until the budget is spent, then an
    UnavailableError names the key, the budget, the operation and the last error."""
    p = provider(0.3)
    KMS.outages = 1_000
    started = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        p.wrap(os.urandom(32), CONTEXT)
    assert 0.3 <= time.monotonic() - started < 2
    assert len(KMS.calls) > 1
    assert str(info.value) == (
        f"MyKMS key {p._key} could not be reached in 0.3 s (Encrypt); last error: "
        "MyKmsUnavailable: connection refused. Check the network path to MyKMS, or raise "
        "SETEC_KMS_RETRY_SECONDS"
    )


def test_zero_budget_tries_once() -> None:
    """With a budget of 0 the KMS is called once."""
    p = provider(0)
    KMS.outages = 1
    with pytest.raises(UnavailableError, match="could not be reached in 0 s"):
        p.wrap(os.urandom(32), CONTEXT)
    assert KMS.calls == ["Encrypt"]


@pytest.mark.parametrize(
    ("refusing", "error"), [(True, KeyProviderError), (False, KeyMismatchError)]
)
def test_refusals_are_raised_at_once(refusing: bool, error: type[KeyProviderError]) -> None:
    """A refusal the classifier returns, a disabled key (KeyProviderError) or a blob
    that does not open (KeyMismatchError), is raised on the first failure, not retried,
    without the SDK's exception chained to it."""
    p = provider()
    blob = p.wrap(os.urandom(32), CONTEXT)
    KMS.calls.clear()
    KMS.refusing = refusing
    with pytest.raises(KeyProviderError) as info:
        p.unwrap(blob if refusing else blob[:-1], CONTEXT)
    assert KMS.calls == ["Decrypt"]
    assert type(info.value) is error
    assert info.value.__suppress_context__
    assert info.value.__cause__ is None


def test_unknown_errors_propagate_unchanged() -> None:
    """An exception the classifier does not know is raised as it was, at once."""
    raised = RuntimeError("a bug in the SDK")
    attempts: list[int] = []

    def attempt() -> bytes:
        attempts.append(1)
        raise raised

    with pytest.raises(RuntimeError) as info:
        provider()._kms.call("Encrypt", attempt)
    assert info.value is raised
    assert attempts == [1]


def test_success_is_returned_after_one_attempt() -> None:
    """A KMS that answers is called once per operation, and its answer is returned."""
    p = provider()
    dek = os.urandom(32)
    assert p.unwrap(p.wrap(dek, CONTEXT), CONTEXT) == dek
    assert KMS.calls == ["Encrypt", "Decrypt"]


def test_backoff_stops_when_spent(caplog: pytest.LogCaptureFixture) -> None:
    """Backoff.pause sleeps and says so while time is left; once it is spent it returns
    False, logging nothing."""
    with caplog.at_level(logging.WARNING, logger="setec"):
        assert Backoff(5).pause("MyKMS Encrypt with key k", "down")
        assert "MyKMS Encrypt with key k failed (down)" in caplog.text
        caplog.clear()
        assert not Backoff(0).pause("MyKMS Encrypt with key k", "down")
    assert caplog.text == ""


# --- the SDK, the URI and the repr -------------------------------------------------


def test_missing_sdk_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without its SDK the example is the ConfigError the docs show."""
    monkeypatch.delitem(sys.modules, "mykms")
    with pytest.raises(ConfigError) as info:
        provider()
    assert str(info.value) == (
        "the mykms key provider needs mykms-sdk, which is not installed (No module named "
        "'mykms'); install it with: pip install 'setec-mykms'"
    )


@pytest.mark.parametrize(
    ("uri", "key"),
    [("mykms://k1", "k1"), ("MYKMS://k1", "k1"), ("mykms://a/b?c=d", "a/b?c=d")],
)
def test_from_uri_takes_what_follows_the_scheme(uri: str, key: str) -> None:
    """What follows scheme:// is the key's name as it is; the scheme's case does not
    matter."""
    assert EXAMPLE.MyKmsKeyProvider.from_uri(uri).uri == f"mykms://{key}"


@pytest.mark.parametrize(
    "uri", ["mykms:k1", "mykms", "other://k1", "other://admin:hunter2@host/k1", "k1"]
)
def test_another_scheme_is_a_config_error_showing_the_form(uri: str) -> None:
    """Another scheme, or none, is a ConfigError naming the provider and the expected
    form; credentials in the URI are not shown."""
    with pytest.raises(ConfigError) as info:
        EXAMPLE.MyKmsKeyProvider.from_uri(uri)
    message = str(info.value)
    assert message.startswith("not a key name for the mykms key provider: ")
    assert message.endswith("; expected mykms://KEY")
    assert "hunter2" not in message


def test_repr_shows_the_uri() -> None:
    """A key provider's default repr is its class and URI, with credentials redacted."""

    class UserInfoKeyProvider(EXAMPLE.MyKmsKeyProvider):  # type: ignore[misc,name-defined]
        @property
        def uri(self) -> str:
            return "mykms://admin:hunter2@host/k1"

    assert repr(provider(5)).startswith("MyKmsKeyProvider('mykms://k")
    assert repr(UserInfoKeyProvider("k1")) == "UserInfoKeyProvider('mykms://***@host/k1')"
