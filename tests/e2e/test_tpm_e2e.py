"""``setec-serve --kms-key-name tpm:///PATH`` end to end: the console script against a
real software TPM (swtpm, tests/peers/swtpm_server.py) reached with ``--tpm-tcti``
(here through its variable, SETEC_TPM_TCTI)."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from backup_scenario import assert_no_values, round_trip
from peers.swtpm_server import SwtpmServer
from serve_process import ServeProcess, call, kms_serve_args, refused, run_serve, state_files

from setec_plugins.tpm import TpmKeyProvider

SECRET = b"tpm-e2e-secret-7c1e"


@pytest.fixture(scope="module")
def swtpm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwtpmServer]:
    with SwtpmServer(tmp_path_factory.mktemp("swtpm")) as server:
        yield server


def tpm_env(tcti: str) -> dict[str, str]:
    """The server's environment: the TPM by its setec-serve option's variable only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TPM2", "SETEC_TPM_"))}
    env["SETEC_TPM_TCTI"] = tcti
    return env


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error: " in line]


def files_under(*dirs: Path) -> dict[str, bytes]:
    """Every file under ``dirs`` and its bytes."""
    out: dict[str, bytes] = {}
    for d in dirs:
        out.update({f"{d.name}/{k}": v for k, v in state_files(d).items()})
    return out


def test_serves_restarts_and_refuses_another_tpm(swtpm: SwtpmServer, tmp_path: Path) -> None:
    """Serve under a new sealed key, restart and read it back; the same files on a
    second swtpm, or with the swtpm stopped, exit 1 with one line and change nothing."""
    keys = tmp_path / "keys"
    keys.mkdir(mode=0o700)
    key = f"tpm://{keys / 'kek.tpm'}"
    state = tmp_path / "st"
    env = tpm_env(swtpm.tcti)
    value = base64.b64encode(SECRET).decode()
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        put = call(server.url, "put", {"Name": "prod/db", "Value": value})
        assert (put.status_code, put.text) == (200, "1")
        assert server.stop() == 0
    assert (keys / "kek.tpm").stat().st_mode & 0o777 == 0o600
    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).json() == {"Value": value, "Version": 1}
        assert server.stop() == 0
    assert SECRET.decode() not in server.output
    # The unsealed key itself, unsealed here the way the server does it: in no output.
    kek = TpmKeyProvider.from_uri(key, options={"tpm_tcti": swtpm.tcti})._unseal()
    for form in (kek.hex(), kek.hex().upper(), base64.b64encode(kek).decode()):
        assert form not in server.output

    before = files_under(state, keys)
    with SwtpmServer(tmp_path / "other-tpm") as other:
        refused(
            *kms_serve_args(state, key),
            cwd=tmp_path,
            env=tpm_env(other.tcti),
            error_lines=error_lines,
            naming=("not sealed by this TPM", str(keys / "kek.tpm")),
        )
    assert files_under(state, keys) == before

    gone = SwtpmServer(tmp_path / "gone-tpm").start()
    gone.stop()
    refused(
        *kms_serve_args(state, key),
        cwd=tmp_path,
        env=tpm_env(gone.tcti),
        error_lines=error_lines,
        naming=("cannot reach the TPM", gone.tcti),
    )
    no_device = {k: v for k, v in env.items() if k != "SETEC_TPM_TCTI"}
    refused(
        *kms_serve_args(state, key),
        "--tpm-device",
        str(tmp_path / "no-tpmrm0"),
        cwd=tmp_path,
        env=no_device,
        error_lines=error_lines,
        naming=("no TPM device", "--tpm-device"),
    )
    assert files_under(state, keys) == before


def test_backs_up_and_restores(swtpm: SwtpmServer, tmp_path: Path) -> None:
    """Serve under a sealed key with a dir:// sink, back up, wipe, restore with the
    same sealed key, and every secret and version is back."""
    key = f"tpm://{tmp_path / 'kek.tpm'}"
    sink = ("--backup", f"dir://{tmp_path / 'backups'}")
    printed = round_trip(
        key, serve_backup=sink, admin_backup=sink, tmp_path=tmp_path, env=tpm_env(swtpm.tcti)
    )
    assert_no_values(printed)


def test_rotate_kek_dev_to_tpm_and_back(swtpm: SwtpmServer, tmp_path: Path) -> None:
    """rotate-kek moves a dev:// store onto a new sealed key (sealed by the rotation)
    and back again; setec-serve serves it under each key in turn."""
    state = tmp_path / "st"
    env = tpm_env(swtpm.tcti)
    dev, tpm = "dev://tpm-e2e", f"tpm://{tmp_path / 'kek.tpm'}"
    value = base64.b64encode(SECRET).decode()
    with ServeProcess(*kms_serve_args(state, dev), cwd=tmp_path, env=env) as server:
        assert call(server.url, "put", {"Name": "a", "Value": value}).status_code == 200
        assert server.stop() == 0
    printed = []
    for old, new in ((dev, tpm), (tpm, dev)):
        rotated = run_serve(
            "rotate-kek", "--to", new, "--state-dir", str(state), "--kms-key-name", old,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr
        printed += [rotated.stdout, rotated.stderr]
        assert (tmp_path / "kek.tpm").exists()
        with ServeProcess(*kms_serve_args(state, new), cwd=tmp_path, env=env) as server:
            assert call(server.url, "get", {"Name": "a"}).json()["Value"] == value
            assert server.stop() == 0
        printed.append(server.output)
        refused(
            *kms_serve_args(state, old),
            cwd=tmp_path,
            env=env,
            error_lines=error_lines,
            naming=(new,),
        )
    assert all(SECRET.decode() not in text and value not in text for text in printed)
