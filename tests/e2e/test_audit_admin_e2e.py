"""``setec-serve audit verify``, ``audit rotate`` and ``check`` end to end through the
console script, with the server itself refusing to start on a tampered state directory."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
from pathlib import Path

from console_scripts import clean_env
from serve_process import ServeProcess, call, refused, run_serve

from setec_core import Database
from setec_core.testing import SUPERUSER

KEY = "dev://audit-e2e"
OLD = b"audit-e2e-old-value-51f0"
NEW = b"audit-e2e-new-value-9c2e"


def serve_args(state: Path, key: str = KEY) -> tuple[str, ...]:
    return ("--dev", "--state-dir", str(state), "--listen", "127.0.0.1:0", "--kms-key-name", key)


def admin(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_serve(*args, cwd=cwd, env=clean_env())


def store_args(state: Path, key: str = KEY) -> tuple[str, ...]:
    return ("--state-dir", str(state), "--kms-key-name", key)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("setec-serve: error: ")]


def assert_no_values(*texts: str) -> None:
    for text in texts:
        for value in (OLD, NEW):
            assert value.decode() not in text
            assert base64.b64encode(value).decode() not in text


def served_state(tmp_path: Path) -> Path:
    """A state directory a server wrote to (a put, a get) and stopped cleanly."""
    state = tmp_path / "state"
    with ServeProcess(*serve_args(state), cwd=tmp_path, env=clean_env()) as server:
        value = base64.b64encode(OLD).decode()
        assert call(server.url, "put", {"Name": "prod/db", "Value": value}).status_code == 200
        assert call(server.url, "get", {"Name": "prod/db"}).status_code == 200
        assert server.stop() == 0
    return state


def test_audit_verify_checks_the_keyed_log_beside_a_running_server(tmp_path: Path) -> None:
    """audit verify checks every line with the store's audit key and finds the head the
    store recorded, also while a server writes to the log."""
    state = served_state(tmp_path)
    done = admin("audit", "verify", *store_args(state), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "keyed, checked with the store's audit key" in done.stdout
    assert "holds the last entry the store recorded" in done.stdout
    with ServeProcess(*serve_args(state), cwd=tmp_path, env=clean_env()) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).status_code == 200
        beside = admin("audit", "verify", *store_args(state), cwd=tmp_path)
        assert beside.returncode == 0, beside.stdout + beside.stderr
        assert server.stop() == 0
    assert_no_values(done.stdout, done.stderr, beside.stdout, beside.stderr)


def test_cut_log_refuses_the_server_until_rotated(tmp_path: Path) -> None:
    """Lines cut off the log while the server is stopped: the server refuses to start
    with one line; audit verify says where; audit rotate starts a new file (keeping the
    old), the server starts again, and the gap stays on record across the files."""
    state = served_state(tmp_path)
    log = state / "audit.log"
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"".join(lines[:-1]))
    refused(
        *serve_args(state),
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=("audit.log ends before the entry the store recorded", "audit rotate"),
    )
    verify = admin("audit", "verify", *store_args(state), cwd=tmp_path)
    assert verify.returncode == 1
    assert "ends before the entry the store recorded" in verify.stdout
    rotated = admin("audit", "rotate", *store_args(state), cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "did not check out" in rotated.stderr
    (aside,) = state.glob("audit.log.2*")
    first = json.loads(log.read_bytes().splitlines()[0])
    assert (first["action"], "continues" in first) == ("audit-rotate", True)
    with ServeProcess(*serve_args(state), cwd=tmp_path, env=clean_env()) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).status_code == 200
        assert server.stop() == 0
    assert admin("audit", "verify", *store_args(state), cwd=tmp_path).returncode == 0
    both = admin("audit", "verify", *store_args(state), str(aside), cwd=tmp_path)
    assert both.returncode == 1
    assert "does not continue from where the file before it ends" in both.stdout


def test_check_finds_a_rolled_back_record_and_names_the_secret(tmp_path: Path) -> None:
    """An older ciphertext copied back: the server refuses to start; check says what is
    wrong and, against a backup, which secret differs, never its value."""
    state = tmp_path / "state"
    backups = f"dir://{tmp_path / 'backups'}"
    with Database.open(state, key=KEY) as db:
        db.put(SUPERUSER, "prod/db", OLD)
        db.put(SUPERUSER, "prod/other", b"audit-e2e-other")
    with sqlite3.connect(state / "secrets.db") as conn:
        old_rows = conn.execute("SELECT key, data FROM records").fetchall()
    conn.close()
    with Database.open(state, key=KEY) as db:
        db.put(SUPERUSER, "prod/db", NEW)
        db.activate(SUPERUSER, "prod/db", 2)
    taken = admin("backup", "now", *store_args(state), "--backup", backups, cwd=tmp_path)
    assert taken.returncode == 0, taken.stderr
    conn = sqlite3.connect(state / "secrets.db")
    with conn:
        for key, data in old_rows:
            conn.execute("UPDATE records SET data = ? WHERE key = ?", (data, key))
    conn.close()
    start = refused(
        *serve_args(state),
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=("fails its integrity check", "setec-serve check"),
    )
    check = admin(
        "check", *store_args(state), "--against", "latest", "--backup", backups, cwd=tmp_path
    )
    assert check.returncode == 1
    assert len(error_lines(check.stderr)) == 1
    assert "problem: the store fails its integrity check" in check.stdout
    assert "'prod/db': versions 1 in the store, 1,2 in the backup" in check.stdout
    assert "'prod/other'" not in check.stdout
    assert_no_values(start.stdout, start.stderr, check.stdout, check.stderr)


def test_rotate_kek_writes_a_keyed_entry_and_keeps_the_head(tmp_path: Path) -> None:
    """rotate-kek checks the log first, writes its entry keyed and records the new head:
    the server starts with the new key, and the log verifies."""
    state = served_state(tmp_path)
    new = "dev://audit-e2e-new"
    rotated = admin("rotate-kek", "--to", new, *store_args(state), cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    last = json.loads((state / "audit.log").read_bytes().splitlines()[-1])
    assert (last["action"], last["prev"][:12]) == ("rotate-kek", "hmac-sha256:")
    check = admin("check", *store_args(state, new), cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    with ServeProcess(*serve_args(state, new), cwd=tmp_path, env=clean_env()) as server:
        assert call(server.url, "get", {"Name": "prod/db"}).status_code == 200
        assert server.stop() == 0
    assert admin("audit", "verify", *store_args(state, new), cwd=tmp_path).returncode == 0
