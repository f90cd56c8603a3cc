"""age://: the contract, and interoperation with the real ``age`` command line (Debian's
age package, tests/peers/provision.py) in both directions, for X25519 and ssh-ed25519
keys; refusals of identity files and recipients, none showing the identity."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
from pathlib import Path
from urllib.parse import quote

import pyrage
import pytest

from setec_core import ConfigError, KeyMismatchError, KeyProvider, Plugins
from setec_core.testing import KeyProviderContract
from setec_core.testing.key_contract import CONTEXT
from setec_plugins.age_key import IDENTITY_ENV, MAGIC, AgeKeyProvider

# The peers are provisioned before the suite (tox); a missing one is a failure here,
# never a skip.
AGE = shutil.which("age") or "age"
AGE_KEYGEN = shutil.which("age-keygen") or "age-keygen"
SSH_KEYGEN = shutil.which("ssh-keygen") or "ssh-keygen"


def run(*args: str | Path, data: bytes = b"") -> bytes:
    """Run a command line tool, returning its stdout; fail the test on an error."""
    done = subprocess.run([str(a) for a in args], input=data, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def keygen(path: Path) -> str:
    """Make an age identity file with the real age-keygen; return its recipient."""
    run(AGE_KEYGEN, "-o", path)
    return run(AGE_KEYGEN, "-y", path).decode().strip()


def ssh_keygen(path: Path, passphrase: str = "") -> str:
    """Make an ssh-ed25519 key pair with ssh-keygen; return the public key line."""
    run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", passphrase, "-C", "setec-test", "-f", path)
    return Path(f"{path}.pub").read_text().strip()


def secret_lines(path: Path) -> list[str]:
    """The private material of an identity file, to look for in messages."""
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith(("#", "-----"))]


def provider(identity: Path, *recipients: str, uri: str = "age://") -> AgeKeyProvider:
    options = {"age_identity_file": identity, "age_recipient": recipients}
    return AgeKeyProvider.from_uri(uri, options=options)


def payload(dek: bytes, context: bytes = CONTEXT) -> bytes:
    """What the age file of a wrapped data key decrypts to."""
    return MAGIC + hashlib.sha256(context).digest() + dek


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, Path]:
    """Two age identity files made by age-keygen, mode 600."""
    out = {}
    for name in ("server", "other"):
        out[name] = tmp_path / f"{name}.age"
        keygen(out[name])
    return out


class TestAgeContract(KeyProviderContract):
    """age:// meets the KeyProvider contract; another identity cannot unwrap. The
    identity file comes from SETEC_AGE_IDENTITY_FILE, as from_uri without options reads
    it (the contract reopens the provider from its URI alone)."""

    @pytest.fixture
    def provider(self, keys: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> KeyProvider:
        monkeypatch.setenv(IDENTITY_ENV, str(keys["server"]))
        return AgeKeyProvider.from_uri("age://")

    @pytest.fixture
    def other_provider(self, keys: dict[str, Path]) -> KeyProvider:
        return provider(keys["other"])


def test_registered_and_built_with_its_options(keys: dict[str, Path]) -> None:
    """The plugins facade finds age:// and hands it --age-identity-file and
    --age-recipient; the URI names every recipient, the identity's own first."""
    other = run(AGE_KEYGEN, "-y", keys["other"]).decode().strip()
    plugins = Plugins.load().with_options(
        {"age_identity_file": keys["server"], "age_recipient": (other,)}
    )
    key = plugins.key_provider("age://")
    assert isinstance(key, AgeKeyProvider)
    own = run(AGE_KEYGEN, "-y", keys["server"]).decode().strip()
    assert key.uri == f"age://{own},{other}"
    assert key.recipients == [own, other]


def test_blob_decrypts_with_the_age_command_line(keys: dict[str, Path], tmp_path: Path) -> None:
    """A wrapped key is a plain age file: ``age -d -i IDENTITY`` opens it, to the magic,
    the context's digest and the data key."""
    dek = os.urandom(32)
    blob = provider(keys["server"]).wrap(dek, CONTEXT)
    assert blob.startswith(b"age-encryption.org/v1\n-> X25519 ")
    (tmp_path / "blob.age").write_bytes(blob)
    assert run(AGE, "-d", "-i", keys["server"], tmp_path / "blob.age") == payload(dek)


@pytest.mark.parametrize("armor", [False, True], ids=["binary", "armored"])
def test_reads_what_the_age_command_line_encrypted(keys: dict[str, Path], armor: bool) -> None:
    """A data key encrypted by ``age -r RECIPIENT`` (binary or ``-a``) unwraps."""
    dek = os.urandom(32)
    recipient = run(AGE_KEYGEN, "-y", keys["server"]).decode().strip()
    blob = run(AGE, *(["-a"] if armor else []), "-r", recipient, data=payload(dek))
    assert provider(keys["server"]).unwrap(blob, CONTEXT) == dek


def test_ssh_ed25519_both_ways(tmp_path: Path) -> None:
    """An ssh-ed25519 private key is the identity and its public key the recipient
    (derived from the private key, comment dropped): age's command line decrypts the
    blob with the private key and encrypts to the .pub for the provider to read."""
    ssh = tmp_path / "id_ed25519"
    public = ssh_keygen(ssh)
    key = provider(ssh)
    assert key.recipients == [" ".join(public.split()[:2])]
    assert key.uri == "age://" + quote(key.recipients[0], safe="")
    dek = os.urandom(32)
    blob = key.wrap(dek, CONTEXT)
    assert blob.startswith(b"age-encryption.org/v1\n-> ssh-ed25519 ")
    (tmp_path / "blob.age").write_bytes(blob)
    assert run(AGE, "-d", "-i", ssh, tmp_path / "blob.age") == payload(dek)
    theirs = run(AGE, "-R", f"{ssh}.pub", data=payload(dek))
    assert key.unwrap(theirs, CONTEXT) == dek
    again = AgeKeyProvider.from_uri(key.uri, options={"age_identity_file": ssh})
    assert again.unwrap(blob, CONTEXT) == dek


def test_break_glass_recipient_decrypts_too(keys: dict[str, Path], tmp_path: Path) -> None:
    """Each --age-recipient is one more way to decrypt: the break-glass key opens the
    blob with the age command line, and the server's identity still does."""
    glass = run(AGE_KEYGEN, "-y", keys["other"]).decode().strip()
    ssh = tmp_path / "id_ed25519"
    public = ssh_keygen(ssh)
    key = provider(keys["server"], glass, public)
    dek = os.urandom(32)
    (tmp_path / "blob.age").write_bytes(key.wrap(dek, CONTEXT))
    assert run(AGE, "-d", "-i", keys["other"], tmp_path / "blob.age") == payload(dek)
    assert run(AGE, "-d", "-i", ssh, tmp_path / "blob.age") == payload(dek)
    assert key.unwrap((tmp_path / "blob.age").read_bytes(), CONTEXT) == dek


def test_wrong_identity_names_its_public_key_never_its_secret(keys: dict[str, Path]) -> None:
    """Another identity cannot unwrap: a mismatch naming the file and its public key,
    without any of the identity file's text."""
    blob = provider(keys["server"]).wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyMismatchError) as info:
        provider(keys["other"]).unwrap(blob, CONTEXT)
    message = str(info.value)
    assert "cannot decrypt the store's key: it was encrypted to other recipients" in message
    assert str(keys["other"]) in message
    assert run(AGE_KEYGEN, "-y", keys["other"]).decode().strip() in message
    for line in secret_lines(keys["other"]) + secret_lines(keys["server"]):
        assert line not in message


def test_a_dev_blob_is_a_mismatch(keys: dict[str, Path]) -> None:
    """A blob another provider made is not an age file: a mismatch saying so."""
    dev = Plugins.load().key_provider("dev://").wrap(os.urandom(32), CONTEXT)
    with pytest.raises(KeyMismatchError, match="not an intact age file"):
        provider(keys["server"]).unwrap(dev, CONTEXT)


def test_age_file_of_something_else_is_a_mismatch(keys: dict[str, Path]) -> None:
    """An age file to the right recipient that is not a setec data key is refused."""
    recipient = run(AGE_KEYGEN, "-y", keys["server"]).decode().strip()
    blob = run(AGE, "-r", recipient, data=os.urandom(64))
    with pytest.raises(KeyMismatchError, match="not to a setec data key"):
        provider(keys["server"]).unwrap(blob, CONTEXT)


# --- refusals ---------------------------------------------------------------------


def refusal(identity: Path, *recipients: str, uri: str = "age://") -> str:
    """The ConfigError building the provider raises; its message."""
    with pytest.raises(ConfigError) as info:
        provider(identity, *recipients, uri=uri)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_refuses_a_missing_identity_file(tmp_path: Path) -> None:
    """A missing identity file is one line saying it does not exist."""
    assert "does not exist" in refusal(tmp_path / "nope.age")


def test_refuses_an_unreadable_identity_file(tmp_path: Path) -> None:
    """A path that cannot be read as a file (a directory here: root reads any mode)."""
    message = refusal(tmp_path)
    assert f"cannot read the age identity file {tmp_path}" in message


def test_refuses_no_identity_file_at_all(monkeypatch: pytest.MonkeyPatch) -> None:
    """No identity file given anywhere: one line naming the option and variable."""
    monkeypatch.delenv(IDENTITY_ENV, raising=False)
    with pytest.raises(ConfigError, match="--age-identity-file PATH"):
        AgeKeyProvider.from_uri("age://")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("hello world\n", "is not an age identity file"),
        ("# only a comment\n", "holds no identity"),
        ("AGE-SECRET-KEY-1QQQQ\n", "is not a valid age identity"),
        ("AGE-PLUGIN-YUBIKEY-1QQQQ\n", "plugin identity"),
    ],
)
def test_refuses_what_is_not_an_identity(tmp_path: Path, text: str, says: str) -> None:
    """Text that is no usable identity is refused, without repeating the file's content."""
    path = tmp_path / "id"
    path.write_text(text)
    message = refusal(path)
    assert says in message
    assert "QQQQ" not in message


def test_refuses_a_public_key_given_as_identity(keys: dict[str, Path], tmp_path: Path) -> None:
    """A recipient file given as the identity is refused, saying to give the private key."""
    public = tmp_path / "server.pub"
    public.write_bytes(run(AGE_KEYGEN, "-y", keys["server"]))
    assert "holds a public key (line 1), not an identity" in refusal(public)


def test_refuses_passphrase_protected_identities(keys: dict[str, Path], tmp_path: Path) -> None:
    """An age identity encrypted with a passphrase (as ``age -p`` writes it) and a
    passphrase-protected SSH key: one line saying to use an unencrypted file, chmod 600."""
    sealed = tmp_path / "sealed.age"
    sealed.write_bytes(pyrage.passphrase.encrypt(keys["server"].read_bytes(), "pw"))
    ssh = tmp_path / "id_ed25519"
    ssh_keygen(ssh, passphrase="correct horse")
    for path in (sealed, ssh):
        message = refusal(path)
        assert "is passphrase-protected" in message
        assert "unencrypted identity file" in message
        assert "chmod 600" in message


@pytest.mark.parametrize("bad", ["age1notarecipient", "ssh-dss AAAAB3Nza", "hello"])
def test_refuses_a_malformed_recipient(keys: dict[str, Path], bad: str) -> None:
    """A recipient that is neither age1... nor an SSH key line is refused, naming it."""
    message = refusal(keys["server"], bad)
    assert message.startswith("malformed age recipient ")
    assert bad.split()[0] in message


def test_refuses_a_private_key_in_the_uri_or_an_option(keys: dict[str, Path]) -> None:
    """An identity where a recipient belongs is refused without being repeated."""
    secret = secret_lines(keys["other"])[0]
    for message in (
        refusal(keys["server"], secret),
        refusal(keys["server"], uri=f"age://{secret}"),
        refusal(keys["server"], uri=f"age://{secret.lower()}"),
    ):
        assert "private key" in message
        assert secret not in message
        assert secret.lower() not in message


def test_own_key_is_always_a_recipient(keys: dict[str, Path]) -> None:
    """A URI naming only another recipient still encrypts to the server's own key
    first (a store it could not reopen is never written); reopening from the URI gives
    the same recipients."""
    other = run(AGE_KEYGEN, "-y", keys["other"]).decode().strip()
    own = run(AGE_KEYGEN, "-y", keys["server"]).decode().strip()
    key = provider(keys["server"], uri=f"age://{other}")
    assert key.recipients == [own, other]
    assert provider(keys["server"], uri=key.uri).uri == key.uri
    blob = key.wrap(b"k" * 32, CONTEXT)
    assert provider(keys["other"]).unwrap(blob, CONTEXT) == b"k" * 32


def test_refuses_a_malformed_key_name(keys: dict[str, Path]) -> None:
    """A key name with a path or query is refused, showing the expected form."""
    assert "expected age://" in refusal(keys["server"], uri="age://x/y?z")


def test_warns_once_about_a_group_readable_identity(
    keys: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    """A group- or world-readable identity file works, with one warning to chmod 600."""
    caplog.set_level(logging.WARNING, "setec.keys.age")
    provider(keys["server"])
    assert caplog.records == []
    keys["server"].chmod(0o644)
    provider(keys["server"])
    assert [r.getMessage() for r in caplog.records] == [
        f"the age identity file {keys['server']} is readable by other users (mode 644); "
        "anyone who reads it decrypts the store's key: chmod 600 it"
    ]
