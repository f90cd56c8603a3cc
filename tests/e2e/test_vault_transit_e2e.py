"""``setec-serve --kms-key-name vault-transit://...`` end to end: the console script
against the loopback fake of Vault's Transit API."""

from __future__ import annotations

import base64
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from backup_scenario import assert_no_values, round_trip
from peers.fake_vault import FakeVault
from serve_process import ServeProcess, call, free_port, kms_serve_args, refused, state_files

SECRET = b"vault-e2e-secret-51f3"
TOKEN = "s.e2e-token"


@pytest.fixture(scope="module")
def vault() -> Iterator[FakeVault]:
    logging.getLogger("werkzeug").setLevel(logging.CRITICAL)
    fake = FakeVault(token=TOKEN).start()
    yield fake
    fake.stop()


def key_name(vault: FakeVault, key: str) -> str:
    return f"vault-transit://127.0.0.1:{vault.port}/transit/{key}?tls=false"


def vault_env(**extra: str) -> dict[str, str]:
    """The server's environment: the fake's token and nothing else of Vault's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULT_")}
    env.update({"VAULT_TOKEN": TOKEN, "SETEC_KMS_RETRY_SECONDS": "5", **extra})
    return env


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error: " in line]


def test_serves_restarts_and_refuses_another_key(vault: FakeVault, tmp_path: Path) -> None:
    """Serve, put, get, stop; restart with the same Transit key and the secret is there;
    another key exits 1 with one error line naming both keys and changes nothing."""
    key = key_name(vault, vault.create_key("setec"))
    other = key_name(vault, vault.create_key("setec-other"))
    state = tmp_path / "st"
    env = vault_env()
    value = base64.b64encode(SECRET).decode()
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        put = call(server.url, "put", {"Name": "prod/db", "Value": value})
        assert (put.status_code, put.text) == (200, "1")
        assert call(server.url, "get", {"Name": "prod/db"}).json()["Value"] == value
        assert server.stop() == 0
    assert vault.calls("encrypt") == 1
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).json() == {"Value": value, "Version": 1}
        assert server.stop() == 0
    assert SECRET.decode() not in server.output
    assert TOKEN not in server.output

    before = state_files(state)
    # The error names the key given and the one the store was made with.
    refused(
        *kms_serve_args(state, other),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(other, key),
    )
    assert state_files(state) == before


def test_missing_token_exits_naming_the_variable(vault: FakeVault, tmp_path: Path) -> None:
    """No VAULT_TOKEN: exit 1 with one line naming the variable; no store is created
    (setec-serve opens its audit log first, so an empty one may exist)."""
    env = vault_env()
    del env["VAULT_TOKEN"]
    state = tmp_path / "st"
    refused(
        *kms_serve_args(state, key_name(vault, "setec")),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=("VAULT_TOKEN",),
    )
    assert (
        all(content == b"" for content in state_files(state).values()) if state.exists() else True
    )


def test_unreachable_vault_exits_after_the_bounded_retry(tmp_path: Path) -> None:
    """Vault unreachable at start: retried for SETEC_KMS_RETRY_SECONDS, then exit 1
    naming the key."""
    key = f"vault-transit://127.0.0.1:{free_port()}/transit/setec?tls=false"
    started = time.monotonic()
    refused(
        *kms_serve_args(tmp_path / "st", key),
        cwd=tmp_path,
        env=vault_env(SETEC_KMS_RETRY_SECONDS="1"),
        error_lines=error_lines,
        naming=(key, "could not be reached"),
    )
    assert time.monotonic() - started >= 1


def test_backs_up_to_a_dir_and_restores(vault: FakeVault, tmp_path: Path) -> None:
    """Serve under a Transit key with a dir:// sink, back up,
    wipe, restore through the console script, and every secret and version is back."""
    key = key_name(vault, vault.create_key("setec-backup"))
    sink = ("--backup", f"dir://{tmp_path / 'backups'}")
    printed = round_trip(
        key, serve_backup=sink, admin_backup=sink, tmp_path=tmp_path, env=vault_env()
    )
    assert_no_values(printed)
    assert all(TOKEN not in text for text in printed)
