"""The backup round trip, run through the console script for
each key provider: serve with a backup sink, write secrets, wait for the loop's backup,
stop, wipe the state directory, ``setec-serve restore``, serve again and compare every
secret and version over HTTP."""

from __future__ import annotations

import base64
import re
import shutil
import time
from pathlib import Path
from typing import Any

import requests
from serve_process import ServeProcess, call, kms_serve_args, run_serve

# Values the scenario writes; tests grep all output for them.
VALUES = {
    "prod/db": [b"backup-e2e-db-1", b"backup-e2e-db-2"],
    "prod/api": [b"backup-e2e-api-1"],
    "team/x/token": [b"backup-e2e-token-1", b"backup-e2e-token-2", b"backup-e2e-token-3"],
}


def write_secrets(url: str) -> None:
    """Put every value of :data:`VALUES`, then make the second version of prod/db active
    and delete team/x/token's first version, so the store has history to restore."""
    for name, values in VALUES.items():
        for value in values:
            put = call(url, "put", {"Name": name, "Value": base64.b64encode(value).decode()})
            assert put.status_code == 200, put.text
    assert call(url, "activate", {"Name": "prod/db", "Version": 2}).status_code == 200
    assert call(url, "activate", {"Name": "team/x/token", "Version": 3}).status_code == 200
    assert call(url, "delete-version", {"Name": "team/x/token", "Version": 1}).status_code == 200


def read_everything(url: str) -> dict[str, Any]:
    """Every secret's versions, active version and the value of each version."""
    out: dict[str, Any] = {}
    for info in call(url, "list", {}).json():
        values = {}
        for version in info["Versions"]:
            got = call(url, "get", {"Name": info["Name"], "Version": version}).json()
            values[version] = got["Value"]
        out[info["Name"]] = (info["Versions"], info["ActiveVersion"], values)
    return out


def store_revision(url: str) -> int:
    text = requests.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^setec_store_revision (\d+)", text, re.M)
    assert match, text
    return int(match.group(1))


def wait_for_backup(
    key: str, backup: tuple[str, ...], revision: int, cwd: Path, env: dict[str, str]
) -> str:
    """Wait until ``setec-serve backup verify latest`` reports ``revision``; return the
    verify line."""
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        last = run_serve(
            "backup", "verify", "latest", "--kms-key-name", key, *backup, cwd=cwd, env=env
        )
        if last.returncode == 0 and f"revision {revision}," in last.stdout:
            return last.stdout
        time.sleep(0.5)
    raise AssertionError(f"no backup of revision {revision} appeared: {last}")


def round_trip(
    key: str,
    *,
    serve_backup: tuple[str, ...],
    admin_backup: tuple[str, ...],
    tmp_path: Path,
    env: dict[str, str],
) -> list[str]:
    """Run the scenario; return everything the processes printed (for leak checks).

    :param serve_backup: the backup flags given to the server.
    :param admin_backup: the flags naming the same sink for the admin commands (to
        show that both spellings reach the same backups).
    """
    state = tmp_path / "state"
    printed = []
    serve_args = (*kms_serve_args(state, key), *serve_backup, "--backup-interval", "1")
    with ServeProcess(*serve_args, cwd=tmp_path, env=env) as server:
        write_secrets(server.url)
        before = read_everything(server.url)
        revision = store_revision(server.url)
        printed.append(wait_for_backup(key, admin_backup, revision, tmp_path, env))
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert re.search(r"^setec_backups_total [1-9]", metrics, re.M), metrics
        assert re.search(r"^setec_backup_failures_total 0", metrics, re.M), metrics
        assert server.stop() == 0
    printed.append(server.output)
    assert "backed up revision" in server.output

    listed = run_serve("backup", "list", *admin_backup, cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    names = listed.stdout.split()
    assert names
    assert names == sorted(names)
    printed += [listed.stdout, listed.stderr]

    restore = ("restore", "latest", "--state-dir", str(state), "--kms-key-name", key)
    shutil.rmtree(state)
    restored = run_serve(*restore, *admin_backup, cwd=tmp_path, env=env)
    assert restored.returncode == 0, restored.stderr
    assert f"restored {names[-1]}" in restored.stdout
    assert f"{len(VALUES)} secrets" in restored.stdout
    printed += [restored.stdout, restored.stderr]

    again = run_serve(*restore, *admin_backup, cwd=tmp_path, env=env)
    assert again.returncode == 1
    assert "is not empty" in again.stderr
    assert "--force" in again.stderr
    printed += [again.stdout, again.stderr]

    with ServeProcess(*kms_serve_args(state, key), cwd=tmp_path, env=env) as server:
        assert read_everything(server.url) == before
        assert server.stop() == 0
    printed.append(server.output)
    return printed


def assert_no_values(printed: list[str]) -> None:
    """None of the scenario's secret values appears in ``printed``, in clear or base64."""
    text = "\n".join(printed)
    for values in VALUES.values():
        for value in values:
            assert value.decode() not in text
            assert base64.b64encode(value).decode() not in text
