"""Backup, verify, restore and DEK rotation against store size (target: restore of
100,000 secrets in under 30 s).

For each size N (default 10,000 and 100,000) a fresh state directory (SQLite store +
real audit log, key ``dev://bench``) is filled with N secrets (40-byte names, 32-byte
random values) by ``put_many`` in batches of 1,000. Then, timed with
``time.perf_counter``:

* ``raw copy`` (the baseline, what Go setec uploads): after a WAL checkpoint, read the
  SQLite file's bytes and write them to a new file, fsynced;
* ``backup``: ``take_backup(db, DirBackupSink)`` (export in one read transaction, seal
  with the HMAC tag, write the file with fsync and a directory fsync);
* ``verify``: ``open_backup(data, key)`` (unwrap, check the tag, decrypt and parse every
  record);
* ``restore``: the admin path, ``restore_backup`` into a new ``sqlite://`` store in a
  new directory (which verifies the backup first, then writes it in one commit), and
  ``open``: ``Database.open`` of the result. The restored store must hold all N
  secrets and a sample of values must match;
* ``rotate-dek``: ``rotate_dek`` on that restored store (every record decrypted,
  re-encrypted under a new data key and moved, in one commit).

Sizes up to 10,000 take the best of 3 runs of each step (each run into a new backup
directory and a new restored store); larger sizes run each step once.

    python bench/backup.py                 # N = 10,000 and 100,000 (about 16 s)
    python bench/backup.py 1000 10000      # other sizes

Exits 1 if the restore (restore_backup + Database.open) of 100,000 secrets takes 30 s
or more; prints the verdict only when 100,000 is among the sizes.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from setec_core import Database
from setec_core.backup.loop import take_backup
from setec_core.backup.snapshot import BackupInfo, open_backup
from setec_core.keys import KeyProvider
from setec_core.maintenance import DekRotation, restore_backup, rotate_dek
from setec_core.plugins import Plugins
from setec_core.testing import SUPERUSER
from setec_plugins.dir_backup import DirBackupSink

KEY = "dev://bench"
BATCH = 1_000
TARGET_SECRETS = 100_000
TARGET_SECONDS = 30.0
SMALL = 10_000  # sizes up to this take the best of SMALL_RUNS runs
SMALL_RUNS = 3
SAMPLE = 200  # restored values compared with what was put

P = ParamSpec("P")
T = TypeVar("T")


def secret_name(i: int) -> str:
    return f"platform-team/service-{i:06d}/db-password"  # 40 bytes


def build(state_dir: str, n: int) -> tuple[Database, dict[str, bytes]]:
    """Open a new store in ``state_dir``, fill it with ``n`` secrets, return it and
    the values put."""
    db = Database.open(state_dir, key=KEY)
    values: dict[str, bytes] = {}
    for start in range(0, n, BATCH):
        batch = {secret_name(i): os.urandom(32) for i in range(start, min(n, start + BATCH))}
        db.put_many(SUPERUSER, batch)
        values.update(batch)
    return db, values


def checkpoint(db_file: str) -> int:
    """Checkpoint the store's WAL into the file; return the bytes of the file + WAL."""
    conn = sqlite3.connect(db_file)
    try:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        conn.close()
    if busy:
        raise SystemExit(f"could not checkpoint {db_file}")
    wal = db_file + "-wal"
    return os.path.getsize(db_file) + (os.path.getsize(wal) if os.path.exists(wal) else 0)


def raw_copy(db_file: str, dest: str) -> int:
    """Copy the SQLite file's bytes (and its WAL's, if any) to ``dest`` durably."""
    data = b""
    for path in (db_file, db_file + "-wal"):
        if os.path.exists(path):
            with open(path, "rb") as f:
                data += f.read()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(data)


def check(ok: bool, message: str) -> None:
    """Stop the bench if a restored or rotated store is not what was backed up."""
    if not ok:
        raise SystemExit(f"wrong result: {message}")


def timed(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> tuple[float, T]:
    """Call ``fn``; return the seconds it took and its result."""
    started = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - started, result


def restore(plugins: Plugins, uri: str, data: bytes, key: KeyProvider) -> BackupInfo:
    """The admin path: open the new store at ``uri``, restore ``data`` into it, close."""
    storage = plugins.storage(uri)
    try:
        return restore_backup(data, storage, key=key)
    finally:
        storage.close()


def rotate(plugins: Plugins, uri: str, key: KeyProvider) -> DekRotation:
    """Open the store at ``uri``, re-encrypt it under a new data key, close."""
    storage = plugins.storage(uri)
    try:
        return rotate_dek(storage, key=key)
    finally:
        storage.close()


def measure(root: str, n: int, plugins: Plugins, key: KeyProvider) -> dict[str, float]:
    """Run every step for a store of ``n`` secrets; return the best times and sizes."""
    runs = SMALL_RUNS if n <= SMALL else 1
    state = os.path.join(root, "state")
    db_file = os.path.join(state, "secrets.db")
    started = time.perf_counter()
    db, values = build(state, n)
    print(f"N={n:,}: built in {time.perf_counter() - started:.1f} s", flush=True)
    out: dict[str, float] = {"n": n, "runs": runs}
    try:
        out["sqlite_bytes"] = checkpoint(db_file)
        copy_s, backup_s = [], []
        data = b""
        for run in range(runs):
            seconds, _ = timed(raw_copy, db_file, os.path.join(root, f"raw-{run}.db"))
            copy_s.append(seconds)
            sink = DirBackupSink.from_uri(f"dir://{os.path.join(root, f'backups-{run}')}")
            seconds, result = timed(take_backup, db, sink)
            backup_s.append(seconds)
            data = sink.get(result.name)
            check(len(data) == result.size, "the stored backup is not the size taken")
        out["copy"], out["backup"], out["backup_bytes"] = min(copy_s), min(backup_s), len(data)
    finally:
        # Restoring is done with the server stopped: close the source store first.
        db.close()

    verify_s = []
    for _ in range(runs):
        seconds, opened = timed(open_backup, data, key)
        verify_s.append(seconds)
        check(opened.info.secrets == n, f"the backup holds {opened.info.secrets} secrets")
    out["verify"] = min(verify_s)

    restore_s, open_s, rotate_s = [], [], []
    rng = random.Random(n)
    for run in range(runs):
        target = os.path.join(root, f"restored-{run}")
        os.makedirs(target, 0o700)
        uri = f"sqlite://{os.path.join(target, 'secrets.db')}"
        seconds, info = timed(restore, plugins, uri, data, key)
        check(info.secrets == n, f"restore_backup restored {info.secrets} secrets")
        restore_s.append(seconds)
        seconds, restored = timed(Database.open, target, key=KEY)
        open_s.append(seconds)
        try:
            check(len(restored) == n, f"the restored store opens with {len(restored)} secrets")
            for name in rng.sample(sorted(values), min(SAMPLE, n)):
                check(restored.get(SUPERUSER, name).value == values[name], f"{name} differs")
        finally:
            restored.close()
        seconds, rotation = timed(rotate, plugins, uri, key)
        check(rotation.secrets == n, f"rotate_dek re-encrypted {rotation.secrets} secrets")
        rotate_s.append(seconds)
    with Database.open(target, key=KEY) as rotated:  # the last rotated store is whole
        check(len(rotated) == n, f"the rotated store opens with {len(rotated)} secrets")
        for name in rng.sample(sorted(values), min(SAMPLE, n)):
            check(rotated.get(SUPERUSER, name).value == values[name], f"{name} differs")
    out["restore"], out["open"], out["rotate"] = min(restore_s), min(open_s), min(rotate_s)
    out["restore_total"] = min(r + o for r, o in zip(restore_s, open_s, strict=True))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sizes", nargs="*", type=int, default=[10_000, 100_000], help="store sizes")
    parser.add_argument("--dir", help="where to create the temporary stores (default: $TMPDIR)")
    parser.add_argument("--keep", action="store_true", help="keep the stores afterwards")
    args = parser.parse_args()
    logging.getLogger("setec").setLevel(logging.ERROR)

    whole = time.perf_counter()
    plugins = Plugins.load()
    key = plugins.key_provider(KEY)
    root = tempfile.mkdtemp(prefix="setec-backup-", dir=args.dir)
    results = []
    try:
        for n in args.sizes:
            results.append(measure(os.path.join(root, f"n{n}"), n, plugins, key))
    finally:
        key.close()
        if args.keep:
            print(f"stores kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\nseconds (best of {SMALL_RUNS} up to N={SMALL:,}, else one run); bytes")
    head = ("N", "raw copy", "backup", "verify", "restore", "open", "rest.+open", "rotate-dek")
    print(f"{head[0]:>8}" + "".join(f"{h:>11}" for h in head[1:]) + f"{'runs':>6}")
    for r in results:
        row = (r["copy"], r["backup"], r["verify"], r["restore"], r["open"])
        print(
            f"{r['n']:>8,.0f}"
            + "".join(f"{s:>11.3f}" for s in row)
            + f"{r['restore_total']:>11.3f}{r['rotate']:>11.3f}{r['runs']:>6.0f}"
        )
    print(f"\n{'N':>8}{'SQLite bytes':>14}{'per secret':>11}{'backup bytes':>14}{'per secret':>11}")
    for r in results:
        n = r["n"]
        print(
            f"{n:>8,.0f}{r['sqlite_bytes']:>14,.0f}{r['sqlite_bytes'] / n:>11.0f}"
            f"{r['backup_bytes']:>14,.0f}{r['backup_bytes'] / n:>11.0f}"
        )
    print("\nratios to the raw copy of the SQLite file (same run):")
    for r in results:
        print(
            f"  N={r['n']:,.0f}: backup time {r['backup'] / r['copy']:.1f}x, "
            f"backup size {r['backup_bytes'] / r['sqlite_bytes']:.2f}x; "
            f"restore + open {r['restore_total'] / r['copy']:.0f}x the copy, "
            f"{r['restore_total'] / r['n'] * 1e6:.0f} us per secret"
        )
    print(f"\nwhole run {time.perf_counter() - whole:.0f} s")

    target = [r for r in results if r["n"] == TARGET_SECRETS]
    if not target:
        print(f"(target not checked: it is for N={TARGET_SECRETS:,})")
        return
    total = target[0]["restore_total"]
    ok = total < TARGET_SECONDS
    print(
        f"{'PASS' if ok else 'MISS'}: restore_backup + Database.open of {TARGET_SECRETS:,} "
        f"secrets took {total:.2f} s (target < {TARGET_SECONDS:.0f} s)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
