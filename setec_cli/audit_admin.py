"""``setec-serve`` commands for the audit log and the store's integrity (docs/audit.md).

* ``audit verify [FILE...]``: check the audit log's keyed chain, line by line, with the
  store's audit key, and that it holds the head the store recorded. Read-only, so it
  may run beside a server.
* ``audit rotate``: start a new audit log that continues the chain, keeping the old one
  aside (log rotation, or after the file was lost). Takes the state directory's lock,
  so the server must be stopped.
* ``check [--against NAME]``: check the store (integrity entry, records, audit key) and
  its audit log, and optionally how it differs from a backup. Read-only.

Each exits 1 when it finds a problem. None ever prints a secret value.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from setec_cli.admin import (
    _BACKUP_OPTIONS,
    _STORE_OPTIONS,
    AUDIT_FILE,
    _key,
    _locked,
    _offline_store,
    _open_chosen,
    _plugins,
    _require,
    _run,
    _settings,
    _sink,
    _storage_uri,
    _with,
)
from setec_cli.plugin_flags import PluginFlagsCommand
from setec_cli.say import fail

if TYPE_CHECKING:
    from setec_core.audit_chain import AuditHead
    from setec_core.integrity import StoreSeal


@click.group("audit")
def audit_group() -> None:
    """Check the audit log, or start a new one."""


def _audit_path(settings: dict[str, Any]) -> Path:
    return Path(_require(settings, "state_dir", "the server's state directory"), AUDIT_FILE)


def _recorded(seal: StoreSeal | None, path: Path) -> AuditHead | None:
    # The head the store recorded for the replica whose state directory holds ``path``.
    from setec_core.integrity import recorded_head
    from setec_core.opening import replica_name

    replica = replica_name(path.parent, create=False)
    return recorded_head(seal, replica, log_ends_keyed=path.stat().st_size > 0)[0]


def _worker_logs(state: Path) -> list[Path]:
    # The audit logs of setec-serve --workers' workers 1 and up (setec_cli.workers),
    # in worker order.
    logs = [p for p in state.glob("workers/*/audit.log") if p.parent.name.isdigit()]
    return sorted(logs, key=lambda p: int(p.parent.name))


def _in_use(path: Path) -> bool:
    # A running server holds the log under an exclusive lock: a line may be half
    # written at its end while we read.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError as e:
        return e.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
    finally:
        os.close(fd)
    return False


@audit_group.command("verify", cls=PluginFlagsCommand)
@click.argument("files", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@_with(_STORE_OPTIONS)
@click.pass_context
def audit_verify(ctx: click.Context, /, files: tuple[Path, ...], **given: Any) -> None:
    """Check every line of the audit log with the store's audit key, and that the log
    holds the last entry the store recorded. Safe beside a running server.

    FILES are older logs set aside by 'audit rotate', oldest first; they are checked
    before the state directory's audit.log, and each must end where the next one says
    it continues from. The logs of a --workers server's other workers
    (workers/N/audit.log) are checked after it, each on its own."""
    from setec_core.audit_chain import verify
    from setec_core.data_key import unwrap_data_key
    from setec_core.integrity import StoreKeys, open_audit_key, read_seal

    settings = _settings(ctx, given)

    def act() -> None:
        current = _audit_path(settings)
        with _offline_store(ctx, settings) as store:
            snapshot = store.storage.export()
            wrapped = snapshot.meta.get("dek")
            if wrapped is None:
                fail(f"store {store.storage.uri} has no data key: it is empty")
            dek = unwrap_data_key(store.storage, store.key, wrapped)
            seal = read_seal(snapshot.meta, StoreKeys(dek), store.storage.uri)
            key = open_audit_key(dek, snapshot.meta)
        problems = 0
        previous_head = ""
        workers = _worker_logs(current.parent)
        for path in (*files, current, *workers):
            is_current = path.resolve() == current.resolve() or path in workers
            if path in workers:
                previous_head = ""  # each worker's log is a chain of its own
            report = verify(
                path,
                key,
                recorded=_recorded(seal, path) if is_current else None,
                commits=seal.commits if seal and is_current else None,
                in_use=is_current and _in_use(path),
            )
            name = str(path.relative_to(current.parent)) if path in workers else path.name
            click.echo(f"{name}: {_summary(report)}")
            if (
                previous_head
                and report.continues
                and f"hmac-sha256:{report.continues}" != (previous_head)
            ):
                report.problems.append(
                    "it does not continue from where the file before it ends: lines were "
                    "cut from the end of that file, or a file is missing between them"
                )
            if is_current and seal is not None:
                if _recorded(seal, path) is None:
                    click.echo(f"{name}: the store has recorded no entry of it yet")
                elif report.recorded_line:
                    click.echo(
                        f"{name}: holds the last entry the store recorded (line "
                        f"{report.recorded_line}); {report.after_recorded} lines after it"
                    )
            for note in report.notes:
                click.echo(f"{name}: {note}")
            for problem in report.problems:
                click.echo(f"{name}: {problem}")
            problems += len(report.problems)
            previous_head = report.head
        if key is None:
            click.echo("the store has no audit key yet (written by an earlier setec)")
        if problems:
            fail(
                f"{problems} problem{'s' if problems != 1 else ''} in the audit log; keep "
                "the files as evidence, and see docs/audit.md for what to do"
            )
        click.echo("ok")

    _run(act)


def _summary(report: Any) -> str:
    parts = [f"{report.entries} {'entry' if report.entries == 1 else 'entries'}"]
    if report.plain:
        covered = (
            "the first keyed line vouches for them"
            if report.keyed
            else "nothing vouches for them: they are unprotected"
        )
        parts.append(
            f"{report.plain} with plain SHA-256 links (written before keyed chaining; {covered})"
        )
    if report.keyed:
        how = "checked with the store's audit key" if report.checked else "not checked (no key)"
        parts.append(f"{report.keyed} keyed, {how}")
    if report.continues:
        parts.append(f"continues from {report.continues[:16]}...")
    return ", ".join(parts)


@audit_group.command("rotate", cls=PluginFlagsCommand)
@_with(_STORE_OPTIONS)
@click.pass_context
def audit_rotate(ctx: click.Context, /, **given: Any) -> None:
    """Start a new audit log, with the server stopped: the old one is kept as
    audit.log.TIME, and the new one's first entry continues its chain. Use it to rotate
    a large log, or to start again after the log was lost or damaged (once you have
    kept what is left of it as evidence)."""
    settings = _settings(ctx, given)

    def act() -> None:
        key_uri = _require(settings, "kms_key_name", "the key that wraps the data key")
        storage_uri = _storage_uri(settings, must_exist=True)
        with _locked(settings, "audit-rotate") as audit, _key(ctx, key_uri) as key:
            storage = _plugins(ctx).storage(storage_uri)
            try:
                aside = audit.rotate(storage, key)
            finally:
                storage.close()
        if aside is None:
            click.echo(
                f"started {AUDIT_FILE} afresh (the old one was empty or missing); it "
                "continues from the last entry the store recorded"
            )
        else:
            click.echo(f"started a new {AUDIT_FILE}; the old one is kept as {aside.name}")

    _run(act)


@click.command("check", cls=PluginFlagsCommand)
@_with(_STORE_OPTIONS + _BACKUP_OPTIONS)
@click.option(
    "--against",
    metavar="NAME",
    help="Also say how the store differs from backup NAME (or 'latest'): secret names "
    "and versions, never values.",
)
@click.option("--backup-key", help="The key that wrapped that backup, if not --kms-key-name.")
@click.pass_context
def check_command(ctx: click.Context, /, against: str | None, **given: Any) -> None:
    """Check the store without changing it (safe beside a running server): that its
    integrity entry is authentic and vouches for exactly its records, that every record
    opens under its own key, and that the audit log holds what the store recorded."""
    from setec_core.backup.snapshot import BackupKeys
    from setec_core.store_check import check_store, compare_with_backup

    settings = _settings(ctx, given)

    def act() -> None:
        audit = _audit_path(settings) if settings.get("state_dir") else None
        with _offline_store(ctx, settings) as store:
            report = check_store(
                store.storage,
                store.key,
                audit_path=audit if audit is not None and audit.exists() else None,
                in_use=audit is not None and _in_use(audit),
            )
            click.echo(f"store {report.uri}: revision {report.revision}, {report.records} records")
            if report.seal is not None:
                click.echo(
                    f"integrity entry: authentic; {report.seal.commits} commits; vouches for "
                    f"{report.seal.records} records"
                )
                names = sorted(
                    name or "(unnamed, from before replicas)" for name in report.seal.heads
                )
                shown = ", ".join(names) or "none"
                click.echo(f"integrity entry: audit heads recorded for replicas: {shown}")
            if report.audit is not None:
                click.echo(f"audit log: {_summary(report.audit)}")
                if report.audit.recorded_line:
                    click.echo(
                        f"audit log: holds the last entry the store recorded (line "
                        f"{report.audit.recorded_line}); {report.audit.after_recorded} "
                        "lines after it"
                    )
            for note in report.notes:
                click.echo(f"note: {note}")
            for problem in report.problems:
                click.echo(f"problem: {problem}")
            if against:
                key_uri = settings.get("backup_key")
                with _sink(ctx, settings, read_only=True) as sink:
                    if key_uri:
                        with _key(ctx, key_uri) as backup_key:
                            chosen, opened = _open_chosen(sink, against, BackupKeys(backup_key))
                    else:
                        chosen, opened = _open_chosen(sink, against, BackupKeys(store.key))
                differences = compare_with_backup(report, opened)
                click.echo(
                    f"against backup {chosen}: "
                    + (f"{len(differences)} secrets differ" if differences else "no difference")
                )
                for line in differences:
                    click.echo(f"  {line}")
        if report.problems:
            fail(
                f"{len(report.problems)} problem{'s' if len(report.problems) != 1 else ''} "
                "found; keep the state directory as evidence, and see docs/audit.md for "
                "what to do"
            )
        click.echo("ok")

    _run(act)
