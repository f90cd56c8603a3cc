"""``setec-serve --kms-key-name age://`` end to end: the console script with identity
files made by the real age-keygen and ssh-keygen, the store's wrapped key checked with
the real age command line, a backup round trip and rotate-kek to and from dev://."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

from backup_scenario import assert_no_values, round_trip
from serve_process import ServeProcess, call, kms_serve_args, refused, run_serve, state_files

from setec_core.builtin.sqlite_storage import SqliteStorage

SECRET = b"age-e2e-secret-7c1d"
VALUE = base64.b64encode(SECRET).decode()
AGE = shutil.which("age") or "age"
AGE_KEYGEN = shutil.which("age-keygen") or "age-keygen"
SSH_KEYGEN = shutil.which("ssh-keygen") or "ssh-keygen"


def run(*args: str | Path) -> bytes:
    done = subprocess.run([str(a) for a in args], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def keygen(path: Path) -> str:
    """An age identity file by age-keygen; its recipient."""
    run(AGE_KEYGEN, "-o", path)
    return run(AGE_KEYGEN, "-y", path).decode().strip()


def leaked(identity: Path, text: str) -> bool:
    """Whether any line of an identity file's private key is in ``text``."""
    lines = [line.strip() for line in identity.read_text().splitlines()]
    secret = [line for line in lines if line and not line.startswith(("#", "-----"))]
    assert secret
    return any(line in text for line in secret)


def age_env(identity: Path, **extra: str) -> dict[str, str]:
    """The server's environment: the identity file in SETEC_AGE_IDENTITY_FILE."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SETEC_AGE_")}
    env.update({"SETEC_AGE_IDENTITY_FILE": str(identity), **extra})
    return env


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "error: " in line]


def stored_dek(state: Path) -> bytes:
    """The store's wrapped data key, as the metadata holds it."""
    storage = SqliteStorage.from_uri(f"sqlite://{state / 'secrets.db'}")
    try:
        wrapped = storage.get_meta("dek")
    finally:
        storage.close()
    assert wrapped is not None
    return wrapped


def test_serves_restarts_and_refuses_another_identity(tmp_path: Path) -> None:
    """Serve under age://, put, stop; the stored key opens with ``age -d``; restart and
    the secret is there; another identity, a missing identity file and a malformed
    recipient each exit 1 with one line and change nothing; no identity in any output."""
    server_id, other_id = tmp_path / "server.age", tmp_path / "other.age"
    own, other = keygen(server_id), keygen(other_id)
    state = tmp_path / "st"
    env = age_env(server_id)
    with ServeProcess(*kms_serve_args(state, "age://"), cwd=tmp_path, env=env) as server:
        put = call(server.url, "put", {"Name": "prod/db", "Value": VALUE})
        assert (put.status_code, put.text) == (200, "1")
        assert server.stop() == 0
    outputs = [server.output]
    blob = tmp_path / "dek.age"
    blob.write_bytes(stored_dek(state))
    assert run(AGE, "-d", "-i", server_id, blob).startswith(b"setec-age-v1\n")

    with ServeProcess(*kms_serve_args(state, f"age://{own}"), cwd=tmp_path, env=env) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).json() == {"Value": VALUE, "Version": 1}
        assert server.stop() == 0
    outputs.append(server.output)

    before = state_files(state)
    wrong = refused(
        *kms_serve_args(state, "age://"),
        cwd=tmp_path,
        env=age_env(other_id),
        error_lines=error_lines,
        naming=(f"created with age://{own}", other, "cannot decrypt the store's key"),
    )
    missing = refused(
        *kms_serve_args(state, "age://"),
        cwd=tmp_path,
        env=age_env(tmp_path / "gone.age"),
        error_lines=error_lines,
        naming=("gone.age does not exist",),
    )
    malformed = refused(
        *kms_serve_args(state, "age://"),
        "--age-recipient",
        "age1nope",
        cwd=tmp_path,
        env=env,
        error_lines=error_lines,
        naming=("malformed age recipient 'age1nope'",),
    )
    assert state_files(state) == before
    for done in (wrong, missing, malformed):
        outputs += [done.stdout, done.stderr]
    text = "\n".join(outputs)
    assert SECRET.decode() not in text
    assert not leaked(server_id, text)
    assert not leaked(other_id, text)


def test_backs_up_to_a_dir_and_restores(tmp_path: Path) -> None:
    """Serve under age:// with a break-glass recipient and a dir:// sink, back up, wipe,
    restore through the console script: every secret and version is back."""
    server_id = tmp_path / "server.age"
    keygen(server_id)
    glass = keygen(tmp_path / "glass.age")
    sink = ("--backup", f"dir://{tmp_path / 'backups'}")
    printed = round_trip(
        "age://",
        serve_backup=sink,
        admin_backup=sink,
        tmp_path=tmp_path,
        env=age_env(server_id, SETEC_AGE_RECIPIENT=glass),
    )
    assert_no_values(printed)
    assert not leaked(server_id, "\n".join(printed))


def test_rotate_kek_dev_to_ssh_age_and_back(tmp_path: Path) -> None:
    """rotate-kek moves a dev:// store onto an ssh-ed25519 age identity (the stored key
    then opens with ``age -d -i`` that SSH key) and back to dev://; the server serves the
    secret under each, and the old key is refused after each move."""
    ssh = tmp_path / "id_ed25519"
    run(SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-f", ssh)
    state = tmp_path / "st"
    env = age_env(ssh)
    dev, age = "dev://age-e2e", "age://"
    with ServeProcess(*kms_serve_args(state, dev), cwd=tmp_path, env=env) as server:
        assert call(server.url, "put", {"Name": "app/key", "Value": VALUE}).status_code == 200
        assert server.stop() == 0
    outputs = [server.output]

    for old, new in ((dev, age), (age, dev)):
        rotated = run_serve(
            "rotate-kek", "--to", new, "--state-dir", str(state), "--kms-key-name", old,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert rotated.returncode == 0, rotated.stderr
        outputs += [rotated.stdout, rotated.stderr]
        if new == age:
            blob = tmp_path / "dek.age"
            blob.write_bytes(stored_dek(state))
            assert run(AGE, "-d", "-i", ssh, blob).startswith(b"setec-age-v1\n")
        with ServeProcess(*kms_serve_args(state, new), cwd=tmp_path, env=env) as server:
            got = call(server.url, "get", {"Name": "app/key"}).json()
            assert got == {"Value": VALUE, "Version": 1}
            assert server.stop() == 0
        outputs.append(server.output)
        stale = refused(*kms_serve_args(state, old), cwd=tmp_path, env=env, error_lines=error_lines)
        outputs += [stale.stdout, stale.stderr]
    text = "\n".join(outputs)
    assert SECRET.decode() not in text
    assert not leaked(ssh, text)
