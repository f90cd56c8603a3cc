"""``setec-serve --kms-key-name pkcs11://...`` end to end: the console script with its
data key wrapped inside a real SoftHSM2 token (tests/peers/softhsm.py)."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from backup_scenario import assert_no_values, round_trip
from peers.softhsm import SoftHsm
from serve_process import ServeProcess, call, kms_serve_args, refused, run_serve, state_files

SECRET = b"pkcs11-e2e-secret-9c2e"
PIN = "e2e-pin-60417"
TOKEN = "setec-e2e"
KEY = f"pkcs11://{TOKEN}/kek"
OTHER = f"pkcs11://{TOKEN}/kek-other"


@pytest.fixture(scope="module")
def hsm(tmp_path_factory: pytest.TempPathFactory) -> SoftHsm:
    hsm = SoftHsm(tmp_path_factory.mktemp("softhsm-e2e"))
    hsm.init_token(TOKEN, PIN)
    hsm.generate_key(TOKEN, PIN, "kek")
    hsm.generate_key(TOKEN, PIN, "kek-other")
    return hsm


@pytest.fixture
def env(hsm: SoftHsm, tmp_path: Path) -> dict[str, str]:
    """The server's environment: the module, a PIN file of mode 600, SoftHSM's config."""
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)
    base = {k: v for k, v in os.environ.items() if not k.startswith("SETEC_PKCS11_")}
    return {
        **base,
        **hsm.env,
        "SETEC_PKCS11_MODULE": hsm.module,
        "SETEC_PKCS11_PIN_FILE": str(pin_file),
    }


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error: " in line]


def test_serves_restarts_and_refuses_another_key(env: dict[str, str], tmp_path: Path) -> None:
    """Serve, put, stop; restart under the same HSM key and the secret is there; another
    key in the token exits 1 with one line naming both keys and changes nothing; the
    PIN is printed nowhere."""
    state = tmp_path / "st"
    value = base64.b64encode(SECRET).decode()
    outputs = []
    with ServeProcess(*kms_serve_args(state, KEY), cwd=tmp_path, env=env) as server:
        put = call(server.url, "put", {"Name": "prod/db", "Value": value})
        assert (put.status_code, put.text) == (200, "1")
        assert server.stop() == 0
    outputs.append(server.output)
    with ServeProcess(*kms_serve_args(state, KEY), cwd=tmp_path, env=env) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).json() == {"Value": value, "Version": 1}
        assert server.stop() == 0
    outputs.append(server.output)
    before = state_files(state)
    result = refused(
        *kms_serve_args(state, OTHER),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(OTHER, KEY),
    )
    outputs += [result.stdout, result.stderr]
    assert state_files(state) == before
    for text in outputs:
        assert PIN not in text
        assert SECRET.decode() not in text
    for path in state.rglob("*"):
        if path.is_file():
            assert PIN.encode() not in path.read_bytes()


@pytest.mark.parametrize(
    ("change", "naming"),
    [
        ({"SETEC_PKCS11_PIN_FILE": "", "SETEC_PKCS11_PIN": "wrong-5512"}, "CKR_PIN_INCORRECT"),
        ({"SETEC_PKCS11_MODULE": "/nonexistent/libp11.so"}, "does not exist"),
        ({"SETEC_PKCS11_MODULE": "/etc/hostname"}, "is not a PKCS#11 module"),
    ],
)
def test_start_up_refusals_change_nothing(
    env: dict[str, str], tmp_path: Path, change: dict[str, str], naming: str
) -> None:
    """A wrong PIN or module: exit 1 with one line, the store's files untouched and
    the PIN in no output."""
    state = tmp_path / "st"
    with ServeProcess(*kms_serve_args(state, KEY), cwd=tmp_path, env=env) as server:
        assert server.stop() == 0
    before = state_files(state)
    result = refused(
        *kms_serve_args(state, KEY),
        cwd=tmp_path,
        env={**env, **change},
        error_lines=error_lines,
        naming=(naming,),
    )
    assert state_files(state) == before
    for text in (result.stdout, result.stderr):
        assert PIN not in text
        assert "wrong-5512" not in text


@pytest.mark.parametrize(
    ("uri", "naming"),
    [
        ("pkcs11://no-such-token/kek", "no token labelled 'no-such-token'"),
        (f"pkcs11://{TOKEN}/missing", "no key labelled 'missing'"),
        (f"pkcs11://{TOKEN}/kek?pin={PIN}", "--pkcs11-pin-file"),
    ],
)
def test_wrong_token_key_or_pin_in_uri_is_refused(
    env: dict[str, str], tmp_path: Path, uri: str, naming: str
) -> None:
    """An unknown token or key, or a PIN in the key name, is refused in one line
    before a store is created."""
    state = tmp_path / "st"
    result = refused(
        *kms_serve_args(state, uri),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(naming,),
    )
    assert PIN not in result.stdout + result.stderr
    assert not (state / "secrets.db").exists()


def test_backs_up_to_a_dir_and_restores(env: dict[str, str], tmp_path: Path) -> None:
    """Serve under the HSM key with a dir:// sink, back up, wipe, restore through the
    console script: every secret and version is back, and no value or PIN printed."""
    sink = ("--backup", f"dir://{tmp_path / 'backups'}")
    printed = round_trip(KEY, serve_backup=sink, admin_backup=sink, tmp_path=tmp_path, env=env)
    assert_no_values(printed)
    assert all(PIN not in text for text in printed)


def test_rotate_kek_dev_to_pkcs11_and_back(env: dict[str, str], tmp_path: Path) -> None:
    """rotate-kek dev:// -> pkcs11:// -> dev://, serving the secret after each step."""
    state = tmp_path / "st"
    value = base64.b64encode(SECRET).decode()
    dev = "dev://pkcs11-e2e"
    with ServeProcess(*kms_serve_args(state, dev), cwd=tmp_path, env=env) as server:
        assert call(server.url, "put", {"Name": "a", "Value": value}).status_code == 200
        assert server.stop() == 0
    printed = []
    for old, new in [(dev, KEY), (KEY, dev)]:
        rotated = run_serve(
            "rotate-kek", "--to", new, "--state-dir", str(state), "--kms-key-name", old,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr
        printed += [rotated.stdout, rotated.stderr]
        with ServeProcess(*kms_serve_args(state, new), cwd=tmp_path, env=env) as server:
            assert call(server.url, "get", {"Name": "a"}).json()["Value"] == value
            assert server.stop() == 0
        printed.append(server.output)
        refused(
            *kms_serve_args(state, old), cwd=tmp_path, env=env, error_lines=error_lines,
            naming=(new,),
        )  # fmt: skip
    assert all(PIN not in text for text in printed)
