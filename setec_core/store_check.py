"""Checking a store without changing it: what ``setec-serve check`` reports.

:func:`check_store` reads a consistent snapshot of the store and says what it can: whether
the integrity entry is authentic, whether the records are the set it vouches for, which
records fail to open or sit under the wrong key, whether the audit key opens and, given
the audit log, whether its chain is whole and holds the head the store recorded.
:func:`compare_with_backup` then says which secrets differ from a backup, so that an
operator can see *what* was rolled back or removed. Neither ever shows a value.

It only reads, so it is safe beside a running server.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from setec_core.audit_chain import AuditReport, verify
from setec_core.backup.snapshot import OpenedBackup, secrets_of
from setec_core.data_key import unwrap_data_key
from setec_core.errors import CorruptStoreError, IntegrityCheckError
from setec_core.integrity import (
    StoreKeys,
    StoreSeal,
    digest_of,
    mismatch,
    open_audit_key,
    read_seal,
    recorded_head,
)
from setec_core.keys import KeyProvider
from setec_core.model import SecretState
from setec_core.opening import replica_name
from setec_core.storage import StorageBackend


@dataclass
class StoreReport:
    """What :func:`check_store` found.

    :param uri: the store checked.
    :param revision: its revision when read.
    :param records: how many live records it holds.
    :param seal: its integrity entry, if present and authentic.
    :param audit: the audit log's report, if one was checked.
    :param problems: one line per problem.
    :param notes: remarks that are not problems.
    """

    uri: str
    revision: int = 0
    records: int = 0
    seal: StoreSeal | None = None
    audit: AuditReport | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: The secrets that opened, by name (values inside: never print them).
    secrets: dict[str, SecretState] = field(default_factory=dict, repr=False)

    @property
    def ok(self) -> bool:
        """True if no problem was found."""
        return not self.problems


def check_store(
    storage: StorageBackend,
    key: KeyProvider,
    *,
    audit_path: str | os.PathLike[str] | None = None,
    in_use: bool = False,
    replica: str | None = None,
) -> StoreReport:
    """Check ``storage`` (opened with ``key``) and, if given, the audit log at
    ``audit_path``, changing nothing.

    :param replica: the replica name of the audit log (docs/replicas.md), whose
        recorded head the log must hold; by default, that of the state directory
        holding ``audit_path``.

    :param in_use: a server is running on the store (a line being written at the end of
        the audit log is then skipped, not reported as torn).
    :raises KeyMismatchError: if ``key`` cannot unwrap the store's data key.
    :raises CorruptStoreError: if the store has no data key or an unknown schema.
    :raises StorageError: if the store cannot be read.
    """
    snapshot = storage.export()
    report = StoreReport(storage.uri, snapshot.revision, len(snapshot.records))
    problems = report.problems
    wrapped = snapshot.meta.get("dek")
    if wrapped is None:
        raise CorruptStoreError(
            f"store {storage.uri} has no data key: it is empty, or not a setec store"
        )
    dek = unwrap_data_key(storage, key, wrapped)
    check = snapshot.meta.get("dek-check")
    if check is not None and not hmac.compare_digest(check, dek.check_value):
        problems.append("the data key does not match the store's check value (dek-check)")
    for record in snapshot.records:
        assert record.data is not None  # snapshots hold live records only
        shown = f"record {record.key.hex()[:16]}..."
        try:
            state = SecretState.decode(dek.open(record.key, record.data), record.revision)
        except CorruptStoreError:
            problems.append(
                f"{shown} does not open under the data key: it was altered, moved from "
                "another record's key, or comes from another store"
            )
            continue
        if dek.storage_key(state.name) != record.key:
            problems.append(f"{shown} holds secret {state.name!r} but sits under another key")
            continue
        report.secrets[state.name] = state
    keys = StoreKeys(dek)
    digest, count = digest_of(keys, snapshot.records)
    try:
        report.seal = read_seal(snapshot.meta, keys, storage.uri)
    except IntegrityCheckError as e:
        problems.append(str(e))
    else:
        if report.seal is None:
            report.notes.append(
                "the store has no integrity entry: it was written by an earlier version of "
                "setec (the next open adds one)"
            )
        else:
            problem = mismatch(report.seal, count, digest)
            if problem:
                problems.append(f"the store fails its integrity check: {problem}")
    try:
        audit_key = open_audit_key(dek, snapshot.meta)
    except CorruptStoreError as e:
        problems.append(str(e))
        audit_key = None
    if audit_path is not None:
        seal = report.seal
        report.audit = verify(
            audit_path,
            audit_key,
            recorded=recorded_head(
                seal,
                replica_name(Path(audit_path).parent, create=False) if replica is None else replica,
                log_ends_keyed=Path(audit_path).stat().st_size > 0,
            )[0],
            commits=seal.commits if seal else None,
            in_use=in_use,
        )
        problems.extend(f"audit log: {p}" for p in report.audit.problems)
    return report


def compare_with_backup(report: StoreReport, backup: OpenedBackup) -> list[str]:
    """Say, one line per secret, how the store checked by ``report`` differs from the
    checked ``backup``: secrets only in one of them, versions, the active version, and
    which versions' values differ (never the values)."""
    theirs = {state.name: state for state in secrets_of(backup)}
    ours = report.secrets
    lines = []
    for name in sorted(set(ours) | set(theirs)):
        mine, other = ours.get(name), theirs.get(name)
        if other is None:
            lines.append(f"{name!r}: in the store, not in the backup")
            continue
        if mine is None:
            lines.append(f"{name!r}: in the backup, not in the store")
            continue
        diffs = []
        if sorted(mine.versions) != sorted(other.versions):
            diffs.append(
                f"versions {_versions(mine)} in the store, {_versions(other)} in the backup"
            )
        if mine.active != other.active:
            diffs.append(f"active version {mine.active} in the store, {other.active} in the backup")
        changed = [
            v
            for v in sorted(mine.versions)
            if v in other.versions and not hmac.compare_digest(mine.versions[v], other.versions[v])
        ]
        if changed:
            diffs.append(f"the value of version {', '.join(map(str, changed))} differs")
        if diffs:
            lines.append(f"{name!r}: " + "; ".join(diffs))
    return lines


def _versions(state: SecretState) -> str:
    return ",".join(map(str, sorted(state.versions))) or "none"
