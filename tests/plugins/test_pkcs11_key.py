"""The ``pkcs11://`` key provider against a real PKCS#11 module: SoftHSM2, with its
tokens in a throwaway directory (tests/peers/softhsm.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.softhsm import SoftHsm

from setec_core import Plugins
from setec_core.errors import ConfigError, KeyMismatchError
from setec_core.keys import KeyProvider
from setec_core.testing.key_contract import CONTEXT, KeyProviderContract
from setec_plugins.pkcs11_key import Pkcs11KeyProvider, parse_uri

PIN = "pin-3e9d71"
TOKEN = "setec-token"


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """One SoftHSM2 for the module: the module reads SOFTHSM2_CONF once per process,
    when first loaded, and sees only the tokens there then."""
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm"))
    hsm.init_token(TOKEN, PIN)
    hsm.init_token("other-token", "pin-other-1")
    for label, kind, extractable in [
        ("kek", "AES:32", False),
        ("kek-other", "AES:32", False),
        ("aes128", "AES:16", False),
        ("generic", "GENERIC:32", False),
        ("extractable", "AES:32", True),
        ("rsa", "rsa:2048", False),
    ]:
        hsm.generate_key(TOKEN, PIN, label, kind=kind, extractable=extractable)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOFTHSM2_CONF", str(hsm.conf))
        yield hsm


@pytest.fixture(autouse=True)
def pkcs11_env(hsm: SoftHsm, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module and the PIN, as setec-serve's environment would give them."""
    monkeypatch.setenv("SETEC_PKCS11_MODULE", hsm.module)
    monkeypatch.setenv("SETEC_PKCS11_PIN", PIN)
    monkeypatch.delenv("SETEC_PKCS11_PIN_FILE", raising=False)


class TestPkcs11Contract(KeyProviderContract):
    """The shared key-provider contract, wrapping inside SoftHSM2."""

    @pytest.fixture
    def provider(self) -> Iterator[KeyProvider]:
        p = Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek")
        yield p
        p.close()

    @pytest.fixture
    def other_provider(self) -> Iterator[KeyProvider]:
        p = Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek-other")
        yield p
        p.close()


def refusal(uri: str, **options: object) -> str:
    """The one-line ConfigError building ``uri`` raises."""
    with pytest.raises(ConfigError) as info:
        Pkcs11KeyProvider.from_uri(uri, options=options or None)
    message = str(info.value)
    assert "\n" not in message
    assert PIN not in message
    return message


def test_another_key_is_not_the_one_that_wrapped() -> None:
    """A blob from one key, unwrapped with another, says the key is not the one that
    wrapped the store, naming it."""
    blob = Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek").wrap(os.urandom(32), CONTEXT)
    other = Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek-other")
    with pytest.raises(KeyMismatchError, match="is not the one that wrapped the store") as info:
        other.unwrap(blob, CONTEXT)
    assert f"pkcs11://{TOKEN}/kek-other" in str(info.value)


def test_missing_module_is_refused(tmp_path: Path) -> None:
    """A module path that does not exist is named, with what to fix."""
    missing = tmp_path / "libnothere.so"
    message = refusal(f"pkcs11://{TOKEN}/kek", pkcs11_module=missing)
    assert f"the PKCS#11 module {missing} does not exist" in message
    assert "--pkcs11-module" in message


def test_a_file_that_is_not_a_module_is_refused(tmp_path: Path) -> None:
    """A file that is no shared library (or has no C_GetFunctionList) is refused."""
    fake = tmp_path / "fake.so"
    fake.write_bytes(b"not an ELF file")
    assert "is not a PKCS#11 module" in refusal(f"pkcs11://{TOKEN}/kek", pkcs11_module=fake)


def test_no_module_at_all_names_the_option(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --pkcs11-module or SETEC_PKCS11_MODULE the error names both."""
    monkeypatch.delenv("SETEC_PKCS11_MODULE")
    message = refusal(f"pkcs11://{TOKEN}/kek")
    assert "--pkcs11-module" in message
    assert "SETEC_PKCS11_MODULE" in message


def test_unknown_token_is_refused() -> None:
    """No token with the label: named, with the command that lists them."""
    message = refusal("pkcs11://no-such-token/kek")
    assert "no token labelled 'no-such-token'" in message
    assert "--list-token-slots" in message


def test_wrong_pin_is_refused_without_echoing_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """CKR_PIN_INCORRECT: one line, the wrong PIN nowhere in it."""
    monkeypatch.setenv("SETEC_PKCS11_PIN", "wrong-pin-88231")
    message = refusal(f"pkcs11://{TOKEN}/kek")
    assert "CKR_PIN_INCORRECT" in message
    assert "wrong-pin-88231" not in message


def test_no_pin_names_where_it_goes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither a PIN file nor SETEC_PKCS11_PIN: the error says where the PIN goes."""
    monkeypatch.delenv("SETEC_PKCS11_PIN")
    message = refusal(f"pkcs11://{TOKEN}/kek")
    assert "--pkcs11-pin-file" in message
    assert "SETEC_PKCS11_PIN" in message


def test_pin_file_is_read_and_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PIN file (mode 600, trailing newline) is used rather than the variable."""
    monkeypatch.setenv("SETEC_PKCS11_PIN", "not-this-one")
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    p = Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek", options={"pkcs11_pin_file": pin_file})
    dek = os.urandom(32)
    assert p.unwrap(p.wrap(dek, CONTEXT), CONTEXT) == dek
    assert PIN not in repr(p)
    assert PIN not in repr(vars(p).keys())


def test_world_readable_pin_file_is_refused(tmp_path: Path) -> None:
    """A PIN file every user can read is refused with the chmod to run."""
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN)
    pin_file.chmod(0o644)
    message = refusal(f"pkcs11://{TOKEN}/kek", pkcs11_pin_file=pin_file)
    assert f"chmod 600 {pin_file}" in message


def test_missing_pin_file_is_refused(tmp_path: Path) -> None:
    """A PIN file that is not there is named."""
    message = refusal(f"pkcs11://{TOKEN}/kek", pkcs11_pin_file=tmp_path / "nope")
    assert f"cannot read the PKCS#11 PIN file {tmp_path / 'nope'}" in message


def test_missing_key_says_how_to_create_it() -> None:
    """No object with the key label: the pkcs11-tool command that makes one."""
    message = refusal(f"pkcs11://{TOKEN}/never-made")
    assert "no key labelled 'never-made'" in message
    assert "--keygen --key-type AES:32 --label never-made --sensitive" in message


@pytest.mark.parametrize(
    ("label", "said"),
    [
        ("generic", "is a GENERIC_SECRET key, not an AES key"),
        ("rsa", "not an AES key"),
        ("aes128", "is AES-128, not AES-256"),
        ("extractable", "can leave the token"),
    ],
)
def test_unsuitable_key_is_refused(label: str, said: str) -> None:
    """A key of another type or size, or one that can be extracted, is refused."""
    assert said in refusal(f"pkcs11://{TOKEN}/{label}")


def test_key_in_another_token_is_not_found(monkeypatch: pytest.MonkeyPatch) -> None:
    """Labels are per token: the other token has no 'kek'."""
    monkeypatch.setenv("SETEC_PKCS11_PIN", "pin-other-1")
    assert "no key labelled 'kek' in token 'other-token'" in refusal("pkcs11://other-token/kek")


@pytest.mark.parametrize(
    "uri",
    [
        f"pkcs11://{TOKEN}/kek?pin={PIN}",
        f"pkcs11://{TOKEN}/kek?pin-value={PIN}",
        f"pkcs11://user:{PIN}@{TOKEN}/kek",
        f"pkcs11://{PIN}@{TOKEN}/kek",
    ],
)
def test_pin_in_the_key_name_is_refused(uri: str) -> None:
    """A PIN in the URI (query or user-info) is refused, saying where the PIN goes,
    without repeating the URI."""
    message = refusal(uri)
    assert "--pkcs11-pin-file" in message
    assert "SETEC_PKCS11_PIN" in message


@pytest.mark.parametrize(
    "uri",
    ["pkcs11://", "pkcs11://tok", "pkcs11://tok/", "pkcs11://tok/a/b", "pkcs11:token=t"],
)
def test_malformed_uri_shows_the_form(uri: str) -> None:
    """Anything but TOKEN-LABEL/KEY-LABEL is refused showing the form."""
    assert "pkcs11://TOKEN-LABEL/KEY-LABEL" in refusal(uri)


def test_labels_are_percent_encoded() -> None:
    """Labels with '/' or spaces round-trip through the canonical URI."""
    assert parse_uri("pkcs11://my%20token/team%2Fkek") == ("my token", "team/kek")


def test_concurrent_wraps_and_unwraps() -> None:
    """Threads wrapping and unwrapping with two providers on one token never log each
    other out (one login per process and token)."""
    a = Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek")
    b = Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek-other")
    failures: list[BaseException] = []

    def work(p: Pkcs11KeyProvider) -> None:
        try:
            for _ in range(10):
                dek = os.urandom(32)
                assert p.unwrap(p.wrap(dek, CONTEXT), CONTEXT) == dek
        except BaseException as e:  # collected and asserted on below
            failures.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in (a, b) * 4]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_entry_point_selects_pkcs11() -> None:
    """pkcs11:// URIs reach this provider through the setec entry point, with its
    options."""
    p = Plugins.load().key_provider(f"pkcs11://{TOKEN}/kek")
    assert isinstance(p, Pkcs11KeyProvider)
    assert [o.flag for o in Pkcs11KeyProvider.options] == ["--pkcs11-module", "--pkcs11-pin-file"]


def test_missing_python_pkcs11_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without python-pkcs11 the provider is a ConfigError naming the extra."""
    monkeypatch.setitem(sys.modules, "pkcs11", None)
    with pytest.raises(ConfigError, match=r"pip install 'pysetec\[pkcs11\]'"):
        Pkcs11KeyProvider.from_uri(f"pkcs11://{TOKEN}/kek")


def test_registering_does_not_import_pkcs11() -> None:
    """Loading the plugins leaves python-pkcs11 unimported."""
    code = (
        "import sys; from setec_core import Plugins; p = Plugins.load(); "
        "assert p.key_providers.by_name('pkcs11'); "
        "assert 'pkcs11' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
