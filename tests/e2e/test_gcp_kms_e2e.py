"""``setec-serve --kms-key-name gcp-kms://projects/...`` end to end: the console script
against the loopback gRPC fake of Cloud KMS."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from backup_scenario import assert_no_values, round_trip
from peers.fake_gcp_kms import FakeKmsServer, key_name
from serve_process import ServeProcess, call, free_port, kms_serve_args, refused, state_files

SECRET = b"gcp-kms-e2e-secret-4b7e"


@pytest.fixture(scope="module")
def kms() -> Iterator[FakeKmsServer]:
    with FakeKmsServer() as server:
        yield server


def gcp_env(endpoint: str, **extra: str) -> dict[str, str]:
    """The server's environment: KMS at ``endpoint``, no real credentials in reach."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "SETEC_"))}
    env.update(SETEC_GCP_KMS_ENDPOINT=endpoint, **extra)
    return env


def error_lines(stderr: str) -> list[str]:
    # Not any line holding "error: ": gRPC's own messages say "last error: UNKNOWN".
    return [line for line in stderr.splitlines() if line.startswith("setec-serve: error: ")]


def test_serves_restarts_and_refuses_another_key(kms: FakeKmsServer, tmp_path: Path) -> None:
    """Serve, put, get, stop; restart with the same key and the secret is there; another
    key exits 1 with one error line naming both keys and changes nothing on disk."""
    key = "gcp-kms://" + kms.kms.add_key(key_name("e2e"))
    other = "gcp-kms://" + kms.kms.add_key(key_name("e2e-other"))
    state = tmp_path / "st"
    env = gcp_env(kms.endpoint)
    value = base64.b64encode(SECRET).decode()
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        put = call(server.url, "put", {"Name": "prod/db", "Value": value})
        assert (put.status_code, put.text) == (200, "1")
        assert call(server.url, "get", {"Name": "prod/db"}).json()["Value"] == value
        assert server.stop() == 0
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).json() == {"Value": value, "Version": 1}
        assert server.stop() == 0
    assert SECRET.decode() not in server.output
    # One Encrypt to create the store, one Decrypt per start after that.
    assert [m for m, n in kms.kms.calls if key.endswith(n)] == ["Encrypt", "Decrypt"]

    before = state_files(state)
    # The error names the key given and the one the store was made with.
    refused(
        *kms_serve_args(state, other),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(other.removeprefix("gcp-kms://"), key),
    )
    assert state_files(state) == before


def test_disabled_key_exits_at_once(kms: FakeKmsServer, tmp_path: Path) -> None:
    """A disabled key version is not retried: exit 1 at the first answer, naming the key."""
    name = kms.kms.add_key(key_name("e2e-disabled"))
    kms.kms.disable(name)
    env = gcp_env(kms.endpoint, SETEC_KMS_RETRY_SECONDS="30")
    started = time.monotonic()
    refused(
        *kms_serve_args(tmp_path / "st", f"gcp-kms://{name}"),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(name, "FailedPrecondition"),
    )
    assert time.monotonic() - started < 10
    assert [c for c in kms.kms.calls if c[1] == name] == [("Encrypt", name)]


def test_unreachable_kms_exits_after_the_bounded_retry(kms: FakeKmsServer, tmp_path: Path) -> None:
    """KMS unreachable at start: retried for SETEC_KMS_RETRY_SECONDS, then exit 1 naming
    the key."""
    name = key_name("e2e-unreachable")
    env = gcp_env(f"127.0.0.1:{free_port()}", SETEC_KMS_RETRY_SECONDS="1")
    started = time.monotonic()
    refused(
        *kms_serve_args(tmp_path / "st", f"gcp-kms://{name}"),
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=(name, "could not be reached"),
    )
    assert time.monotonic() - started >= 1


def test_transient_unavailable_is_ridden_out(kms: FakeKmsServer, tmp_path: Path) -> None:
    """Two UNAVAILABLE answers at start are retried and the server comes up."""
    name = kms.kms.add_key(key_name("e2e-flaky"))
    kms.kms.fail("Encrypt", grpc.StatusCode.UNAVAILABLE, "warming up", times=2)
    env = gcp_env(kms.endpoint, SETEC_KMS_RETRY_SECONDS="10")
    with ServeProcess(
        *kms_serve_args(tmp_path / "st", f"gcp-kms://{name}"), cwd=tmp_path, env=env
    ) as server:
        assert call(server.url, "list", {}).status_code == 200
        assert server.stop() == 0
    assert "warming up" in server.output


def test_backs_up_to_a_dir_and_restores(kms: FakeKmsServer, tmp_path: Path) -> None:
    """Serve under a Cloud KMS key with a dir:// sink, back up,
    wipe, restore through the console script, and every secret and version is back."""
    key = "gcp-kms://" + kms.kms.add_key(key_name("e2e-backup"))
    sink = ("--backup", f"dir://{tmp_path / 'backups'}")
    printed = round_trip(
        key, serve_backup=sink, admin_backup=sink, tmp_path=tmp_path, env=gcp_env(kms.endpoint)
    )
    assert_no_values(printed)
