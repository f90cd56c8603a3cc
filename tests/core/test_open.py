"""Opening a database on disk: persistence, modes, wrong keys, corruption and crashes
(wrong keys and bad input fail with a message saying what to do)."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from refusals import refused_to_open

from setec_core import (
    ConfigError,
    CorruptStoreError,
    Database,
    KeyMismatchError,
    NotFound,
    SecretValue,
)
from setec_core.audit import verify
from setec_core.testing import SUPERUSER

SU = SUPERUSER
KEY = "dev://"


def snapshot(state: Path) -> dict[str, str]:
    """Hash of every file in the state dir, to prove nothing changed."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(state.iterdir())}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    """A state dir holding a store with two secrets (three versions)."""
    path = tmp_path / "state"
    with Database.open(path, key=KEY) as db:
        db.put(SU, "prod/db-pass", b"hunter2-persist")
        db.put(SU, "prod/db-pass", b"correct-horse-persist")
        db.put(SU, "dev/api-key", b"\x00\xffbinary")
        db.delete_version(SU, "prod/db-pass", 2)
        db.put(SU, "gone", b"x")
        db.delete(SU, "gone")
    return path


def test_files_and_modes(state: Path) -> None:
    """The state dir is 0700 and holds secrets.db and audit.log, both 0600."""
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert {"secrets.db", "audit.log"} <= {p.name for p in state.iterdir()}
    for name in ["secrets.db", "audit.log"]:
        assert stat.S_IMODE((state / name).stat().st_mode) == 0o600


def test_loose_state_dir_is_tightened(tmp_path: Path) -> None:
    """An existing state dir readable by others is set to 0700."""
    path = tmp_path / "loose"
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    Database.open(path, key=KEY).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_reopen_keeps_everything(state: Path) -> None:
    """Reopening with the same key gives the same secrets, versions,
    values and history."""
    with Database.open(state, key=KEY) as db:
        assert [(i.name, i.versions, i.active_version) for i in db.list(SU)] == [
            ("dev/api-key", (1,), 1),
            ("prod/db-pass", (1,), 1),
        ]
        assert db.get(SU, "dev/api-key") == SecretValue(b"\x00\xffbinary", 1)
        with pytest.raises(NotFound):
            db.get(SU, "prod/db-pass", 2)
        assert db.put(SU, "prod/db-pass", b"third") == 3  # latest survives restarts
        with pytest.raises(NotFound):
            db.info(SU, "gone")


def test_open_does_not_change_the_store(state: Path) -> None:
    """Opening (and closing) an existing store without writes leaves the store
    file's bytes unchanged."""
    before = hashlib.sha256((state / "secrets.db").read_bytes()).hexdigest()
    with Database.open(state, key=KEY):
        pass
    assert hashlib.sha256((state / "secrets.db").read_bytes()).hexdigest() == before


def test_wrong_key_fails_and_changes_nothing(state: Path) -> None:
    """Opening with another key fails with a message naming both keys, and no file in
    the state dir changes."""
    before = snapshot(state)
    with pytest.raises(KeyMismatchError) as info:
        Database.open(state, key="dev://someone-else")
    message = str(info.value)
    assert "dev://someone-else" in message
    assert "created with dev://" in message
    assert "Nothing was changed" in message
    assert snapshot(state) == before


def test_storage_sees_no_names_or_values(state: Path) -> None:
    """Storage holds only keyed hashes and ciphertext: no name or value appears in the
    store's files."""
    raw = b"".join(p.read_bytes() for p in state.iterdir() if p.name.startswith("secrets.db"))
    for needle in [b"prod/db-pass", b"dev/api-key", b"hunter2", b"correct-horse", b"binary"]:
        assert needle not in raw


def test_swapped_records_are_detected(state: Path) -> None:
    """Moving one record's ciphertext onto another's key makes open fail, not serve the
    wrong secret."""
    with sqlite3.connect(state / "secrets.db") as conn:
        rows = conn.execute("SELECT key, data FROM records WHERE data IS NOT NULL").fetchall()
        assert len(rows) == 2
        (k1, d1), (k2, d2) = rows
        conn.execute("UPDATE records SET data = ? WHERE key = ?", (d2, k1))
        conn.execute("UPDATE records SET data = ? WHERE key = ?", (d1, k2))
    conn.close()
    with pytest.raises(CorruptStoreError, match="fails authentication"):
        Database.open(state, key=KEY)


def test_corrupt_store_file(state: Path) -> None:
    """A store file overwritten with garbage is a clear CorruptStoreError naming it."""
    (state / "secrets.db").write_bytes(b"this is not sqlite" * 100)
    for extra in state.glob("secrets.db-*"):
        extra.unlink()
    with pytest.raises(CorruptStoreError, match=r"secrets\.db"):
        Database.open(state, key=KEY)


def test_truncated_store_file(tmp_path: Path) -> None:
    """A store truncated to half its size is refused at open, not served partly."""
    path = tmp_path / "state"
    with Database.open(path, key=KEY) as db:
        db.put_many(SU, {f"s/{i:05d}": bytes(200) + str(i).encode() for i in range(3000)})
    store = path / "secrets.db"
    for extra in path.glob("secrets.db-*"):
        extra.unlink()
    data = store.read_bytes()
    store.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptStoreError):
        Database.open(path, key=KEY)


def test_unusable_state_dir(tmp_path: Path) -> None:
    """A state dir under a regular file is a ConfigError naming the path."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"file/state"):
        Database.open(blocker / "state", key=KEY)
    with pytest.raises(ConfigError, match="not a directory"):
        Database.open(blocker, key=KEY)


def test_second_server_on_same_state_dir_refused(state: Path) -> None:
    """Two processes (or two opens) on one state dir would interleave the audit log:
    the second open is refused and the first keeps working."""
    with Database.open(state, key=KEY) as db:
        with pytest.raises(ConfigError, match="in use"):
            Database.open(state, key=KEY)
        assert db.get(SU, "dev/api-key").version == 1


def test_no_state_dir_and_no_storage(tmp_path: Path) -> None:
    """Without a state dir, storage and audit must both be given."""
    with pytest.raises(ConfigError, match="no state directory"):
        Database.open(storage="memory://", key=KEY)


WRITER = textwrap.dedent(
    """
    import logging, sys
    logging.disable(logging.CRITICAL)
    from setec_core import Database
    from setec_core.testing import SUPERUSER
    db = Database.open(sys.argv[1], key="dev://")
    i = 0
    while True:
        i += 1
        name = f"s/{i % 7}"
        v = db.put(SUPERUSER, name, f"value-{i}".encode())
        print(name, v, i, flush=True)
    """
)


@pytest.mark.parametrize("delay_lines", [5, 60, 200])
def test_killed_writer_loses_nothing_acknowledged(tmp_path: Path, delay_lines: int) -> None:
    """Killing a writer process mid-write (SIGKILL) leaves a store that opens, holds
    every acknowledged write with its value, and an audit log whose chain verifies."""
    state = tmp_path / "state"
    acked: dict[tuple[str, int], bytes] = {}
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(state)], stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        for _ in range(delay_lines):
            name, version, i = proc.stdout.readline().split()
            acked[(name, int(version))] = f"value-{i}".encode()
        proc.send_signal(signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    with Database.open(state, key=KEY) as db:
        for (name, version), value in acked.items():
            assert db.get(SU, name, version) == SecretValue(value, version)
        for info in db.list(SU):
            assert info.versions == tuple(range(1, len(info.versions) + 1))
    assert verify(state / "audit.log").ok


# --- the audit log against the head the store recorded ---------------------------------


def _lines(state: Path) -> list[bytes]:
    return (state / "audit.log").read_bytes().splitlines(keepends=True)


def _refused(state: Path, *needles: str) -> str:
    """Open ``state`` and expect a one-line refusal holding every needle."""
    return refused_to_open(state, KEY, *needles)


def test_cut_audit_tail_is_refused_at_open(state: Path) -> None:
    """Lines cut off the end of audit.log while the server is stopped: the next start
    is refused, and says what to run."""
    lines = _lines(state)
    (state / "audit.log").write_bytes(b"".join(lines[:-2]))
    _refused(state, "audit.log ends before the entry the store recorded", "audit verify")


def test_audit_log_truncated_to_zero_is_refused(state: Path) -> None:
    """An emptied audit.log is no fresh start: refused."""
    (state / "audit.log").write_bytes(b"")
    _refused(state, "audit.log ends before")


def test_deleted_audit_log_is_refused(state: Path) -> None:
    """A deleted audit.log (recreated empty by the next start) is refused, and the
    message names the sanctioned way to start a new one."""
    (state / "audit.log").unlink()
    _refused(state, "audit.log", "audit rotate")


def test_rewritten_audit_suffix_is_refused(state: Path) -> None:
    """A suffix rewritten with every hash recomputed (a forgery the plain SHA-256 chain
    accepted) does not open: the chain is keyed."""
    lines = _lines(state)
    forged = list(lines[:-3])
    for line in lines[-3:]:
        doc = json.loads(line)
        doc["authorized"] = False
        doc["prev"] = hashlib.sha256(forged[-1].rstrip(b"\n")).hexdigest()
        forged.append(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
    (state / "audit.log").write_bytes(b"".join(forged))
    _refused(state, "audit.log")


def test_unkeyed_lines_appended_after_keyed_ones_are_refused(state: Path) -> None:
    """Lines appended with plain SHA-256 links after keyed ones (what a writer without
    the key could add) are refused at open."""
    last = _lines(state)[-1].rstrip(b"\n")
    doc = json.loads(last)
    doc["prev"] = hashlib.sha256(last).hexdigest()
    doc["action"] = "put"
    with (state / "audit.log").open("ab") as f:
        f.write(json.dumps(doc, separators=(",", ":")).encode() + b"\n")
    _refused(state, "audit.log", "line")


def test_edited_recorded_line_is_refused(state: Path) -> None:
    """The last line (the one the store recorded) edited in place, same length."""
    lines = _lines(state)
    lines[-1] = lines[-1].replace(b'"authorized":true', b'"authorized":fals')
    (state / "audit.log").write_bytes(b"".join(lines))
    _refused(state, "audit.log")
