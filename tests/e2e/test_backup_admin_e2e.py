"""``setec-serve`` backups and admin commands end to end through the console script,
under the dev key and a dir:// sink: the backup loop's failures, backup
now/list/verify, restore --force, rotate-kek, rotate-dek (killed midway, too), and
files planted, copied or linked where the backups are."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests
from console_scripts import clean_env, console_script
from serve_process import ServeProcess, call, refused, run_serve

from setec_core import Database, KeyMismatchError
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.backup.loop import backup_name, taken_at
from setec_core.testing import SUPERUSER

VALUE = b"admin-e2e-value-7a1c"
KEY = "dev://admin-e2e"


def serve_args(state: Path, *extra: str, key: str = KEY) -> tuple[str, ...]:
    return (
        "--dev",
        "--state-dir",
        str(state),
        "--listen",
        "127.0.0.1:0",
        "--kms-key-name",
        key,
        *extra,
    )


def admin(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_serve(*args, cwd=cwd, env=clean_env())


def backup_now(state: Path, sink: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    return admin(
        "backup", "now", "--state-dir", str(state), "--kms-key-name", KEY, "--backup", sink, cwd=cwd
    )


def restore_args(state: Path, sink: str, *extra: str) -> tuple[str, ...]:
    return (
        "restore",
        "latest",
        "--state-dir",
        str(state),
        "--kms-key-name",
        KEY,
        "--backup",
        sink,
        *extra,
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("setec-serve: error: ")]


def put(url: str, name: str, value: bytes) -> None:
    answer = call(url, "put", {"Name": name, "Value": base64.b64encode(value).decode()})
    assert answer.status_code == 200, answer.text


def make_store(state: Path, count: int = 3, key: str = KEY) -> None:
    """A store of ``count`` secrets, written through the library."""
    with Database.open(state, key=key) as db:
        db.put_many(SUPERUSER, {f"svc/{i}": VALUE + str(i).encode() for i in range(count)})


def check_store(state: Path, count: int = 3, key: str = KEY) -> None:
    with Database.open(state, key=key) as db:
        assert len(db) == count
        for i in range(count):
            assert db.get(SUPERUSER, f"svc/{i}").value == VALUE + str(i).encode()


def audit_actions(state: Path) -> list[tuple[str, str]]:
    lines = (state / "audit.log").read_text().splitlines()
    return [(e["action"], e.get("outcome", "")) for e in map(json.loads, lines)]


def test_backup_now_list_and_verify_beside_a_running_server(tmp_path: Path) -> None:
    """backup now runs while the server holds the state directory, prints the name;
    list shows it; verify checks it; a damaged copy fails verify with one line."""
    state, sink = tmp_path / "state", f"dir://{tmp_path / 'b'}"
    with ServeProcess(*serve_args(state), cwd=tmp_path, env=clean_env()) as server:
        put(server.url, "prod/db", VALUE)
        now = backup_now(state, sink, cwd=tmp_path)
        assert now.returncode == 0, now.stderr
        name = now.stdout.strip()
        assert re.fullmatch(r"\d{4}/\d\d/\d\d/db-[-0-9T:.]+Z\.json", name), name
        assert call(server.url, "get", {"Name": "prod/db"}).status_code == 200
        assert server.stop() == 0
    listed = admin("backup", "list", "--backup", sink, cwd=tmp_path)
    assert listed.stdout.split() == [name]
    # The store options may come before the command, as for the server.
    verify = admin("--kms-key-name", KEY, "backup", "verify", name, "--backup", sink, cwd=tmp_path)
    assert verify.returncode == 0, verify.stderr
    assert verify.stdout.startswith(f"ok: {name}: 1 secrets, 1 versions")

    verify = ("backup", "verify", name, "--backup", sink)
    refused(
        *verify,
        "--kms-key-name",
        "dev://other",
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=(KEY,),
    )

    path = tmp_path / "b" / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 1
    path.chmod(0o600)
    path.write_bytes(bytes(data))
    refused(*verify, "--kms-key-name", KEY, cwd=tmp_path, env=clean_env(), error_lines=error_lines)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("backup", "list"), "--backup (or SETEC_BACKUP) must be given"),
        (("backup", "list", "--backup", "dir://{tmp}/typo"), "does not exist"),
        (
            (
                "backup",
                "verify",
                "2026/01/01/db-2026-01-01T00:00:00.000Z.json",
                "--kms-key-name",
                KEY,
                "--backup",
                "dir://{tmp}",
            ),
            "there is no backup",
        ),
        (
            ("backup", "list", "--backup", "dir://{tmp}/x", "--backup-region", "us-east-1"),
            "apply to s3:// backups",
        ),
        (("backup", "list", "--backup", "s3://a", "--backup-bucket", "b"), "give one"),
        (
            ("rotate-dek", "--state-dir", "{tmp}/no-such-state", "--kms-key-name", KEY),
            "there is no store",
        ),
        (
            (
                "restore",
                "latest",
                "--state-dir",
                "{tmp}/state",
                "--kms-key-name",
                KEY,
                "--backup",
                "dir://{tmp}",
            ),
            "there are no backups",
        ),
    ],
)
def test_admin_mistakes_get_one_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    """A mistake on the admin command line is exit 1 with one line saying what to do."""
    refused(
        *(arg.format(tmp=tmp_path) for arg in args),
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=(message,),
    )


def test_a_failing_sink_does_not_stop_serving(tmp_path: Path) -> None:
    """A backup that fails is logged and counted, the server keeps serving, and the
    next round succeeds once the sink is back."""
    state, where = tmp_path / "state", tmp_path / "b"
    args = serve_args(state, "--backup", f"dir://{where}", "--backup-interval", "1")
    with ServeProcess(*args, cwd=tmp_path, env=clean_env()) as server:
        deadline = time.monotonic() + 20
        while not list(where.rglob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        shutil.rmtree(where)
        where.write_text("in the way")  # the sink's directory is now a file
        put(server.url, "prod/db", VALUE)
        deadline = time.monotonic() + 20
        while "backup failed" not in server.output and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "backup failed" in server.output
        assert call(server.url, "get", {"Name": "prod/db"}).status_code == 200
        metrics = requests.get(f"{server.url}/metrics", timeout=10).text
        assert re.search(r"^setec_backup_failures_total [1-9]", metrics, re.M)
        # The sink does not recreate its own root (it may be a mount point that is
        # away): the operator puts it back.
        where.unlink()
        where.mkdir(mode=0o700)
        deadline = time.monotonic() + 20
        while not list(where.rglob("*.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert list(where.rglob("*.json")), server.output
        assert server.stop() == 0
    assert VALUE.decode() not in server.output


def test_unusable_sink_stops_the_start(tmp_path: Path) -> None:
    """A sink that cannot be built stops the server from starting (as in Go setec)."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    refused(
        *serve_args(tmp_path / "state", "--backup", f"dir://{blocker}/b"),
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=(str(blocker),),
    )


def test_restore_force_keeps_the_old_store_and_refuses_a_running_server(tmp_path: Path) -> None:
    """restore --force swaps the restored store in and keeps the old one aside; it is
    refused while a server holds the state directory; the restore is audited."""
    state, sink = tmp_path / "state", f"dir://{tmp_path / 'b'}"
    make_store(state)
    now = backup_now(state, sink, cwd=tmp_path)
    assert now.returncode == 0, now.stderr
    with Database.open(state, key=KEY) as db:
        db.put(SUPERUSER, "svc/later", b"admin-e2e-later")
    restore = restore_args(state, sink, "--force")
    with ServeProcess(*serve_args(state), cwd=tmp_path, env=clean_env()) as server:
        busy = admin(*restore, cwd=tmp_path)
        assert busy.returncode == 1
        assert "another setec server running" in busy.stderr
        assert server.stop() == 0
    done = admin(*restore, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert audit_actions(state)[-1] == ("restore", "ok")
    check_store(state)  # svc/later was written after the backup: gone from the store
    aside = list(state.glob("secrets.db.replaced-*"))
    assert len(aside) == 1
    with Database.open(key=KEY, storage=f"sqlite://{aside[0]}", audit=_null_audit()) as old:
        assert old.get(SUPERUSER, "svc/later").value == b"admin-e2e-later"


def _null_audit() -> AuditLog:
    return AuditLog(MemoryAuditSink())


def test_rotate_kek_then_serve_with_the_new_key(tmp_path: Path) -> None:
    """rotate-kek --to: the server starts with the new key and serves every secret; the
    old key no longer opens the store; the rotation is audited."""
    state = tmp_path / "state"
    make_store(state)
    new = "dev://admin-e2e-new"
    rotated = admin(
        "rotate-kek", "--to", new, "--state-dir", str(state), "--kms-key-name", KEY, cwd=tmp_path
    )
    assert rotated.returncode == 0, rotated.stderr
    assert audit_actions(state)[-1] == ("rotate-kek", "ok")
    assert f"--kms-key-name {new}" in rotated.stdout
    check_store(state, key=new)
    with pytest.raises(KeyMismatchError):
        Database.open(state, key=KEY)
    old = run_serve(*serve_args(state), cwd=tmp_path, env=clean_env())
    assert old.returncode == 1
    assert new in old.stderr


def test_rotate_dek_keeps_every_secret(tmp_path: Path) -> None:
    """rotate-dek re-encrypts under a new data key; the store opens with all data."""
    state = tmp_path / "state"
    make_store(state, count=50)
    before = (state / "secrets.db").read_bytes()
    rotated = admin("rotate-dek", "--state-dir", str(state), "--kms-key-name", KEY, cwd=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    assert "re-encrypted 50 secrets" in rotated.stdout
    assert audit_actions(state)[-1] == ("rotate-dek", "ok")
    assert (state / "secrets.db").read_bytes() != before
    check_store(state, count=50)


@pytest.mark.slow
def test_rotate_dek_killed_midway_leaves_a_whole_store(tmp_path: Path) -> None:
    """rotate-dek killed with SIGKILL at several points of its run: every time, the
    store opens with all its data (under the old data key or the new one)."""
    state = tmp_path / "state"
    count = 20_000
    make_store(state, count=count)
    args = [
        console_script("setec-serve"),
        "rotate-dek",
        "--state-dir",
        str(state),
        "--kms-key-name",
        KEY,
    ]
    # The shortest of two whole runs: the first can be slowed by a cold page cache, and
    # kills timed from it would find the later, faster runs finished.
    runs = []
    for _ in range(2):
        started = time.monotonic()
        subprocess.run(args, cwd=tmp_path, env=clean_env(), capture_output=True, check=True)
        runs.append(time.monotonic() - started)
    full = min(runs)
    killed = 0
    for fraction in (0.4, 0.55, 0.7, 0.8, 0.9):
        proc = subprocess.Popen(
            args,
            cwd=tmp_path,
            env=clean_env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(full * fraction)
        os.kill(proc.pid, signal.SIGKILL)
        killed += proc.wait() == -signal.SIGKILL
        check_store(state, count=count)
    # The kills must have interrupted runs (not found them finished) to show anything.
    assert killed >= 3


def test_restore_force_twice_keeps_both_old_stores(tmp_path: Path) -> None:
    """Two restores with --force in quick succession each keep the store they replace:
    nothing is ever renamed over an existing file."""
    state, sink = tmp_path / "state", f"dir://{tmp_path / 'b'}"
    make_store(state, count=3)
    assert backup_now(state, sink, cwd=tmp_path).returncode == 0
    with Database.open(state, key=KEY) as db:
        db.put(SUPERUSER, "svc/original-only", b"admin-e2e-original")
    for _ in range(2):
        done = admin(*restore_args(state, sink, "--force"), cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    aside = sorted(state.glob("secrets.db.replaced-*"))
    assert len(aside) == 2
    with Database.open(key=KEY, storage=f"sqlite://{aside[0]}", audit=_null_audit()) as old:
        assert old.get(SUPERUSER, "svc/original-only").value == b"admin-e2e-original"
    check_store(state)


def test_failed_restore_leaves_nothing_in_the_way(tmp_path: Path) -> None:
    """A restore that fails (the wrong key) writes nothing, so the corrected command
    works without --force; an audit log alone does not make a directory non-empty."""
    source, sink = tmp_path / "source", f"dir://{tmp_path / 'b'}"
    make_store(source)
    assert backup_now(source, sink, cwd=tmp_path).returncode == 0
    state = tmp_path / "state"
    restore = ("restore", "latest", "--state-dir", str(state), "--backup", sink)
    refused(
        *restore,
        "--kms-key-name",
        "dev://wrong",
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=("dev://wrong",),
    )
    assert not state.exists()
    state.mkdir()
    (state / "audit.log").write_text("")
    right = admin(*restore, "--kms-key-name", KEY, cwd=tmp_path)
    assert right.returncode == 0, right.stderr
    check_store(state)


def test_restore_force_over_a_damaged_store_with_a_hot_journal(tmp_path: Path) -> None:
    """Restoring over a store too damaged to open, with a rollback journal beside it:
    the journal goes aside with the old store and never meets the new one."""
    state, sink = tmp_path / "state", f"dir://{tmp_path / 'b'}"
    make_store(state)
    assert backup_now(state, sink, cwd=tmp_path).returncode == 0
    store = state / "secrets.db"
    damaged = bytearray(store.read_bytes())
    damaged[:16] = b"not sqlite here!"
    store.write_bytes(bytes(damaged))
    (state / "secrets.db-journal").write_bytes(b"\xd9\xd5\x05\xf9\x20\xa1\x63\xd7" * 512)
    done = admin(*restore_args(state, sink, "--force"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not (state / "secrets.db-journal").exists()
    assert len(list(state.glob("secrets.db.replaced-*-journal"))) == 1
    check_store(state)


# --- backups that lie about their age ---------------------------------------------------


def _two_backups(state: Path, sink: str, tmp_path: Path) -> tuple[str, str]:
    """Back up a store of svc/0..2 (the old backup), then delete svc/1 and rotate
    svc/0 to a new active version, and back up again (the new one); return both
    names."""
    make_store(state)
    old = backup_now(state, sink, cwd=tmp_path)
    assert old.returncode == 0, old.stderr
    with Database.open(state, key=KEY) as db:
        db.delete(SUPERUSER, "svc/1")
        db.activate(SUPERUSER, "svc/0", db.put(SUPERUSER, "svc/0", b"admin-e2e-rotated"))
    time.sleep(0.01)  # names have millisecond resolution
    new = backup_now(state, sink, cwd=tmp_path)
    assert new.returncode == 0, new.stderr
    return old.stdout.strip(), new.stdout.strip()


def _plant(root: Path, name: str, data: bytes) -> Path:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_restore_latest_skips_an_old_backup_copied_under_a_newer_name(tmp_path: Path) -> None:
    """An old genuine backup copied under a name newer than the newest backup is not
    "latest": restore latest brings back the newest genuine backup (the deleted and
    rotated values stay gone) and says which file it skipped."""
    state, root = tmp_path / "state", tmp_path / "b"
    sink = f"dir://{root}"
    old, new = _two_backups(state, sink, tmp_path)
    forged = backup_name(taken_at(new) + dt.timedelta(seconds=1))
    _plant(root, forged, (root / old).read_bytes())
    target = tmp_path / "restored"
    done = admin(*restore_args(target, sink), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"restored {new}" in done.stdout
    assert forged in done.stderr
    with Database.open(target, key=KEY) as db:
        assert db.get(SUPERUSER, "svc/0").value == b"admin-e2e-rotated"
        assert [info.name for info in db.list(SUPERUSER)] == ["svc/0", "svc/2"]


@pytest.mark.parametrize("command", ["verify", "restore"])
def test_a_backup_whose_name_lies_is_refused(tmp_path: Path, command: str) -> None:
    """backup verify NAME and restore NAME refuse a genuine backup stored under another
    time's name, with one line naming both times and the name it should have; restore
    creates nothing."""
    state, root = tmp_path / "state", tmp_path / "b"
    sink = f"dir://{root}"
    old, new = _two_backups(state, sink, tmp_path)
    forged = backup_name(taken_at(new) + dt.timedelta(seconds=1))
    _plant(root, forged, (root / old).read_bytes())
    target = tmp_path / "restored"
    args = (
        ("backup", "verify", forged)
        if command == "verify"
        else ("restore", forged, "--state-dir", str(target))
    )
    stamp = "%Y-%m-%dT%H:%M:%S"
    refused(
        *args,
        *("--kms-key-name", KEY, "--backup", sink),
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=(forged, old, taken_at(old).strftime(stamp), taken_at(forged).strftime(stamp)),
    )
    assert not target.exists()


def test_backup_keep_is_not_fooled_by_planted_files(tmp_path: Path) -> None:
    """Files planted with names up to an hour ahead (junk, and an old genuine backup
    copied under a newer name) neither push genuine backups out under --backup-keep
    nor are deleted by it; the genuine backups beyond the newest N are."""
    state, root = tmp_path / "state", tmp_path / "b"
    sink = f"dir://{root}"
    make_store(state)
    genuine = []
    for _ in range(3):
        made = backup_now(state, sink, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        genuine.append(made.stdout.strip())
        time.sleep(0.01)
    now = dt.datetime.now(dt.UTC)
    planted = [backup_name(now + dt.timedelta(minutes=m)) for m in (10, 20, 30, 40)]
    for name in planted[:-1]:
        _plant(root, name, b"setec-backup v2\n{}\n")
    _plant(root, planted[-1], (root / genuine[0]).read_bytes())
    made = admin(
        "backup", "now", "--state-dir", str(state), "--kms-key-name", KEY, "--backup", sink,
        "--backup-keep", "2", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    newest = made.stdout.strip()
    listed = admin("backup", "list", "--backup", sink, cwd=tmp_path).stdout.split()
    assert listed == sorted([genuine[-1], newest, *planted])


def test_verify_does_not_follow_a_symbolic_link_out_of_the_backup_folder(tmp_path: Path) -> None:
    """A symbolic link planted in the backup folder, to a backup kept elsewhere, is no
    backup: verify refuses it rather than read the file outside."""
    state, root, outside = tmp_path / "state", tmp_path / "b", tmp_path / "outside"
    make_store(state)
    assert backup_now(state, f"dir://{outside}", cwd=tmp_path).returncode == 0
    (real,) = [p for p in outside.rglob("*.json")]
    name = real.relative_to(outside).as_posix()
    link = root / name
    link.parent.mkdir(parents=True)
    link.symlink_to(real)
    refused(
        *("backup", "verify", name, "--kms-key-name", KEY, "--backup", f"dir://{root}"),
        cwd=tmp_path,
        env=clean_env(),
        error_lines=error_lines,
        naming=("no backup",),
    )
