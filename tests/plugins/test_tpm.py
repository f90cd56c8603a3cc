"""tpm://: the contract against a real software TPM (swtpm, tests/peers/swtpm_server.py)
through the real tpm2-tools; another TPM, a missing device, an unreachable swtpm and a
missing or foreign sealed-key file are refused without touching the file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from peers.swtpm_server import SwtpmServer

from setec_core import ConfigError, KeyMismatchError, KeyProvider, Plugins
from setec_core.errors import KeyProviderError
from setec_core.testing import KeyProviderContract
from setec_core.testing.key_contract import CONTEXT
from setec_plugins.tpm import TCTI_ENV, TpmKeyProvider, parse_uri, resolve_tcti


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmServer]:
    with SwtpmServer(tmp_path_factory.mktemp("swtpm")) as server:
        yield server


@pytest.fixture(scope="module")
def other_swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmServer]:
    """A second TPM: its own state directory, so its own owner seed."""
    with SwtpmServer(tmp_path_factory.mktemp("swtpm-other")) as server:
        yield server


@pytest.fixture(autouse=True)
def tcti_env(monkeypatch: pytest.MonkeyPatch, swtpm: SwtpmServer) -> None:
    """The swtpm as the default TPM, as an operator's TPM2TOOLS_TCTI would name it."""
    monkeypatch.setenv(TCTI_ENV, swtpm.tcti)


def provider_at(path: Path, **options: object) -> TpmKeyProvider:
    return TpmKeyProvider.from_uri(f"tpm://{path}", options=options)


class TestTpmContract(KeyProviderContract):
    """tpm:// meets the KeyProvider contract; a key sealed in another file (another
    random key on the same TPM) cannot unwrap."""

    @pytest.fixture
    def provider(self, tmp_path: Path) -> KeyProvider:
        return provider_at(tmp_path / "kek.tpm")

    @pytest.fixture
    def other_provider(self, tmp_path: Path) -> KeyProvider:
        other = provider_at(tmp_path / "other.tpm")
        other.wrap(os.urandom(32), CONTEXT)  # seals its own key
        return other


def test_registered_with_its_options() -> None:
    """setec-serve finds tpm:// and gives it --tpm-device and --tpm-tcti."""
    plugins = Plugins.load()
    assert plugins.key_providers.by_uri("tpm:///k") is TpmKeyProvider
    assert {o.flag for o in TpmKeyProvider.options} == {"--tpm-device", "--tpm-tcti"}


@pytest.mark.parametrize(
    "uri", ["tpm://", "tpm://kek.tpm", "tpm:///dir/", "tpm:///k?x=1", "dev:///k"]
)
def test_malformed_uri_shows_the_form(uri: str) -> None:
    """A URI without an absolute file path is refused, showing the form."""
    with pytest.raises(ConfigError, match=r"tpm:///PATH"):
        parse_uri(uri)


def test_tcti_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    """--tpm-tcti, else --tpm-device, else $TPM2TOOLS_TCTI, else /dev/tpmrm0; not both."""
    assert resolve_tcti("swtpm:port=1", None) == "swtpm:port=1"
    assert resolve_tcti(None, Path("/dev/tpm0")) == "device:/dev/tpm0"
    monkeypatch.setenv(TCTI_ENV, "mssim:port=9")
    assert resolve_tcti(None, None) == "mssim:port=9"
    monkeypatch.delenv(TCTI_ENV)
    assert resolve_tcti(None, None) == "device:/dev/tpmrm0"
    with pytest.raises(ConfigError, match="not both"):
        resolve_tcti("swtpm:port=1", "/dev/tpm0")


def test_seals_once_0600_and_never_overwrites(tmp_path: Path) -> None:
    """The first wrap writes the sealed key (0600, no key in it); a second provider
    reuses the file rather than sealing another key."""
    path = tmp_path / "kek.tpm"
    blob = provider_at(path).wrap(b"k" * 32, CONTEXT)
    sealed = path.read_bytes()
    assert path.stat().st_mode & 0o777 == 0o600
    again = provider_at(path)
    again.wrap(b"j" * 32, CONTEXT)
    assert path.read_bytes() == sealed
    assert again.unwrap(blob, CONTEXT) == b"k" * 32
    assert [p.name for p in tmp_path.iterdir()] == ["kek.tpm"]


def test_another_tpm_is_refused_and_nothing_changes(
    tmp_path: Path, other_swtpm: SwtpmServer
) -> None:
    """A file sealed by one swtpm does not unseal on another: one line saying so."""
    path = tmp_path / "kek.tpm"
    blob = provider_at(path).wrap(os.urandom(32), CONTEXT)
    before = path.read_bytes()
    with pytest.raises(KeyMismatchError, match="not sealed by this TPM") as caught:
        provider_at(path, tpm_tcti=other_swtpm.tcti).unwrap(blob, CONTEXT)
    assert "\n" not in str(caught.value)
    assert path.read_bytes() == before


def test_missing_device_is_refused(tmp_path: Path) -> None:
    """A device that does not exist is named, with the flags that choose another."""
    path = tmp_path / "kek.tpm"
    with pytest.raises(KeyProviderError, match="no TPM device /nonexistent/tpmrm0") as caught:
        provider_at(path, tpm_device=Path("/nonexistent/tpmrm0")).wrap(b"k" * 32, CONTEXT)
    assert "--tpm-device" in str(caught.value)
    assert not path.exists()


def test_swtpm_not_running_is_refused(tmp_path: Path) -> None:
    """An swtpm that is not listening: one line naming the TCTI, nothing written."""
    stopped = SwtpmServer(tmp_path / "st").start()
    tcti = stopped.tcti
    stopped.stop()
    path = tmp_path / "kek.tpm"
    with pytest.raises(KeyProviderError, match="cannot reach the TPM") as caught:
        provider_at(path, tpm_tcti=tcti).wrap(b"k" * 32, CONTEXT)
    assert tcti in str(caught.value)
    assert "\n" not in str(caught.value)
    assert not path.exists()


def test_missing_file_is_not_recreated_on_open(tmp_path: Path) -> None:
    """Opening (unwrap) with no sealed-key file refuses instead of sealing a new key
    that could not open the store."""
    path = tmp_path / "kek.tpm"
    blob = provider_at(path).wrap(b"k" * 32, CONTEXT)
    path.unlink()
    with pytest.raises(KeyProviderError, match="does not exist"):
        provider_at(path).unwrap(blob, CONTEXT)
    assert not path.exists()


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    """A file that is not a sealed key made here is refused as such, not parsed on."""
    path = tmp_path / "kek.tpm"
    path.write_bytes(b"not a sealed key")
    with pytest.raises(KeyMismatchError, match="not a TPM-sealed key file"):
        provider_at(path).wrap(b"k" * 32, CONTEXT)
    assert path.read_bytes() == b"not a sealed key"


def test_repr_and_errors_hold_no_key(tmp_path: Path) -> None:
    """The repr names the file only."""
    provider = provider_at(tmp_path / "kek.tpm")
    provider.wrap(b"k" * 32, CONTEXT)
    assert repr(provider) == f"TpmKeyProvider('tpm://{tmp_path / 'kek.tpm'}')"
