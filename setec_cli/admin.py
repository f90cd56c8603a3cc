"""``setec-serve`` admin commands: backups, restore and key rotation (docs/backups.md),
and the audit log and store checks (docs/audit.md; in ``audit_admin.py``, added here).

* ``backup now``, ``backup list``, ``backup verify NAME``: these only read the store,
  so they may run beside a server on the same state directory.
* ``restore NAME``, ``rotate-kek --to URI``, ``rotate-dek``: these change the store,
  so they take the state directory's lock (the audit log's, which a running server
  holds) and refuse to run beside a server. Each writes an audit entry.
* ``audit verify [FILE...]``, ``check [--against NAME]``: these only read the store and
  its audit log, so they may run beside a server.
* ``audit rotate``: this starts a new audit log, so it takes the state directory's lock
  and refuses to run beside a server. It writes an audit entry (the new file's first).

The store options (``--state-dir``, ``--kms-key-name``, ``--storage``, ``--backup`` and
friends) may be given before the command, as for the server, or after it.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from setec_cli.config import DEV_KEY, DEV_STATE_DIR, backup_uri, check_state_dir
from setec_cli.plugin_flags import ListingOption, PluginFlagsCommand, plugins_of, uri_forms
from setec_cli.say import fail, say
from setec_core.errors import ConfigError, NotFound, SetecError

# The names setec_core.opening gives them (not imported: that module is heavy, and
# `setec-serve --help` should not pay for it).
STORE_FILE = "secrets.db"
AUDIT_FILE = "audit.log"
# SQLite's files beside a store: they belong to it, and must never meet another store.
_SIDECARS = ("-wal", "-shm", "-journal")


if TYPE_CHECKING:
    from setec_core.plugins import Plugins

_STORE_OPTIONS = (
    click.option("--state-dir", help="The server's state directory."),
    click.option("--kms-key-name", help="The key that wraps the data key (as for the server)."),
    click.option("--storage", help="Storage URI, if not the state directory's secrets.db."),
)
# The options of the plugins these select (the s3 sink's --backup-region, say) come
# from the plugins: the commands that take these are PluginFlagsCommands.
_BACKUP_OPTIONS = (
    click.option(
        "--backup", cls=ListingOption, metavar="URI", help="Where backups are ({backup_sinks})."
    ),
    click.option("--backup-bucket", help="Go setec's flag: the same as --backup s3://BUCKET."),
)


def _with(options: tuple[Callable[[Any], Any], ...]) -> Callable[[Any], Any]:
    def decorate(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _settings(ctx: click.Context, given: dict[str, Any]) -> dict[str, Any]:
    # Options after the command win over the same options before it (or from
    # SETEC_* variables, which only the top-level options read).
    root = ctx.find_root().params
    merged = {k: v for k, v in root.items() if v is not None}
    merged.update({k: v for k, v in given.items() if v is not None and v != ()})
    if merged.get("dev"):
        merged.setdefault("state_dir", DEV_STATE_DIR)
        merged.setdefault("kms_key_name", DEV_KEY)
    return merged


def _plugins(ctx: click.Context) -> Plugins:
    # Each plugin is built with the values of its own options on this command line.
    return plugins_of(ctx).with_options(_settings(ctx, ctx.params))


def _require(settings: dict[str, Any], name: str, why: str) -> str:
    value = settings.get(name)
    if not value:
        flag = "--" + name.replace("_", "-")
        env = "SETEC_" + name.upper()
        raise ConfigError(f"{flag} (or {env}) must be given: {why}")
    return str(value)


@contextmanager
def _sink(
    ctx: click.Context, settings: dict[str, Any], *, read_only: bool = False
) -> Iterator[Any]:
    uri = backup_uri(settings, plugins_of(ctx))
    if uri is None:
        raise ConfigError(
            "--backup (or SETEC_BACKUP) must be given: where the backups are "
            f"({uri_forms(plugins_of(ctx).backup_sinks)})"
        )
    sink = _plugins(ctx).backup_sink(uri, read_only=read_only)
    try:
        yield sink
    finally:
        sink.close()


@contextmanager
def _key(ctx: click.Context, uri: str) -> Iterator[Any]:
    key = _plugins(ctx).key_provider(uri)
    try:
        yield key
    finally:
        key.close()


def _storage_uri(settings: dict[str, Any], *, must_exist: bool) -> str:
    if settings.get("storage"):
        return str(settings["storage"])
    state_dir = _require(settings, "state_dir", "the server's state directory")
    path = Path(state_dir, STORE_FILE).resolve()
    if must_exist and not path.exists():
        raise ConfigError(
            f"there is no store in {state_dir!r} (no {STORE_FILE}); check --state-dir"
        )
    return f"sqlite://{path}"


@contextmanager
def _offline_store(ctx: click.Context, settings: dict[str, Any]) -> Iterator[Any]:
    from setec_core.maintenance import OfflineStore

    key_uri = _require(settings, "kms_key_name", "the key that wraps the data key")
    storage = _plugins(ctx).storage(_storage_uri(settings, must_exist=True))
    try:
        key = _plugins(ctx).key_provider(key_uri)
    except BaseException:
        storage.close()
        raise
    store = OfflineStore(storage, key)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _locked(settings: dict[str, Any], action: str) -> Iterator[Any]:
    """Hold the state directory's lock (its audit log, which a running server holds)
    while ``action`` runs. Yields the :class:`~setec_core.maintenance.AdminAudit` the
    action checks the log with before changing the store, and records its entry with
    after (keyed, with the log's new head recorded in the store); a failure is recorded
    as an ``error`` entry where the log can take one."""
    from setec_core.maintenance import AdminAudit
    from setec_core.opening import prepare_state_dir

    state_dir = _require(settings, "state_dir", "the server's state directory")
    check_state_dir(state_dir)
    state = prepare_state_dir(state_dir)
    audit = AdminAudit(state / AUDIT_FILE)
    try:
        yield audit
    except BaseException:
        audit.failed(action)
        raise
    finally:
        audit.close()
    for note in audit.notes:
        say(note)


def _resolve_name(sink: Any, name: str, keys: Any, *, strict: bool = False) -> str:
    # 'latest' is the newest genuine backup (its head authenticated by the data key
    # that ``keys`` unwraps, its name its own); files it skips are said on stderr.
    from setec_core.backup.loop import BackupCatalog

    if name != "latest":
        return name
    return str(BackupCatalog(sink, keys.check_head, report=say).latest(strict=strict))


def _fetch(sink: Any, name: str) -> bytes:
    try:
        return bytes(sink.get(name))
    except NotFound:
        raise NotFound(
            f"there is no backup {name!r} in {sink.uri}; 'setec-serve backup list' shows "
            "what there is"
        ) from None


def _open_chosen(sink: Any, name: str, keys: Any, *, strict: bool = False) -> tuple[str, Any]:
    """Choose backup NAME (or 'latest'), fetch it and check all of it with ``keys`` (a
    BackupKeys); refuse it if its name is not the one its own header gives it."""
    from setec_core.backup.loop import check_backup_name

    chosen = _resolve_name(sink, name, keys, strict=strict)
    opened = keys.open(_fetch(sink, chosen))
    check_backup_name(chosen, opened.head)
    return chosen, opened


def _run(action: Callable[[], None]) -> None:
    try:
        action()
    except (SetecError, ValueError) as e:
        fail(str(e))
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        fail(
            f"cannot use{where}: {e.strerror or type(e).__name__}; check the path, and that "
            "this user may read and write it (run as the server's user)"
        )


# --- backup --------------------------------------------------------------------------


@click.group("backup")
def backup_group() -> None:
    """Take, list and check backups."""


@backup_group.command("now", cls=PluginFlagsCommand)
@_with(_STORE_OPTIONS + _BACKUP_OPTIONS)
@click.option("--backup-keep", type=click.IntRange(min=1), help="Then keep only the newest N.")
@click.pass_context
def backup_now(ctx: click.Context, /, **given: Any) -> None:
    """Take a backup now (beside a running server, too) and print its name."""
    from setec_core.backup.loop import BackupCatalog, take_backup
    from setec_core.backup.snapshot import BackupKeys

    settings = _settings(ctx, given)

    def act() -> None:
        with _sink(ctx, settings) as sink, _offline_store(ctx, settings) as store:
            result = take_backup(store, sink)
            say(
                f"backed up revision {result.revision} to {sink.uri}: {result.size} bytes "
                f"in {result.seconds:.2f} s"
            )
            click.echo(result.name)
            keep = settings.get("backup_keep")
            if keep:
                # With the KMS key, backups under older data keys (before a rotate-dek)
                # authenticate too, unlike in the server's own retention.
                catalog = BackupCatalog(sink, BackupKeys(store.key).check_head, report=say)
                for name in catalog.prune(int(keep), newest=result.name):
                    say(f"deleted {name} (--backup-keep {keep})")

    _run(act)


@backup_group.command("list", cls=PluginFlagsCommand)
@_with(_BACKUP_OPTIONS)
@click.pass_context
def backup_list(ctx: click.Context, /, **given: Any) -> None:
    """List the backups, oldest first."""
    from setec_core.backup.loop import list_backups

    settings = _settings(ctx, given)

    def act() -> None:
        with _sink(ctx, settings, read_only=True) as sink:
            for name in list_backups(sink):
                click.echo(name)

    _run(act)


@backup_group.command("verify", cls=PluginFlagsCommand)
@click.argument("name")
@_with(_STORE_OPTIONS[1:2] + _BACKUP_OPTIONS)
@click.option("--backup-key", help="The key that wrapped the backup, if not --kms-key-name.")
@click.pass_context
def backup_verify(ctx: click.Context, /, name: str, **given: Any) -> None:
    """Check that backup NAME (or 'latest') is whole and named for itself: unwrap its
    data key, check its header and tag, decrypt every record, and check that NAME is
    the name of the time it was taken."""
    from setec_core.backup.snapshot import BackupKeys

    settings = _settings(ctx, given)

    def act() -> None:
        key_uri = settings.get("backup_key") or _require(
            settings, "kms_key_name", "the key that wraps the backup's data key"
        )
        with _sink(ctx, settings, read_only=True) as sink, _key(ctx, key_uri) as key:
            chosen, opened = _open_chosen(sink, name, BackupKeys(key))
            info = opened.info
            click.echo(
                f"ok: {chosen}: {info.secrets} secrets, {info.versions} versions, "
                f"revision {info.revision}, taken {info.created}, {info.size} bytes, "
                f"key {info.kek}"
            )

    _run(act)


# --- restore -------------------------------------------------------------------------


@click.command("restore", cls=PluginFlagsCommand)
@click.argument("name")
@_with(_STORE_OPTIONS + _BACKUP_OPTIONS)
@click.option("--backup-key", help="The key that wrapped the backup, if not --kms-key-name.")
@click.option(
    "--force",
    is_flag=True,
    help="Replace the store of a non-empty state directory (the old one is kept aside).",
)
@click.pass_context
def restore_command(ctx: click.Context, /, name: str, force: bool, **given: Any) -> None:
    """Restore backup NAME (or 'latest') into a state directory, with the server stopped."""
    settings = _settings(ctx, given)
    _run(lambda: _restore(ctx, settings, name, force))


def _restore(ctx: click.Context, settings: dict[str, Any], name: str, force: bool) -> None:
    from setec_core.backup.snapshot import BackupKeys
    from setec_core.maintenance import restore_opened

    state_dir = _require(settings, "state_dir", "the state directory to restore into")
    key_uri = _require(settings, "kms_key_name", "the key the restored store will use")
    state = Path(state_dir)
    # The audit log alone is no store: a directory holding only it (a store lost, or
    # an earlier restore that failed) is restored into without --force.
    present = (
        sorted(p.name for p in state.iterdir() if p.name != AUDIT_FILE) if state.is_dir() else []
    )
    if present and not force:
        raise ConfigError(
            f"state directory {state_dir!r} is not empty (it holds {', '.join(present[:5])}); "
            "restore into a new directory, or add --force to replace its store (the old "
            "store is kept beside it)"
        )
    plugins = _plugins(ctx)
    backup_key_uri = settings.get("backup_key")
    # Check everything (keys, the backup's name, header, tag and every record) before
    # touching the state directory, so that a mistake leaves nothing behind to trip
    # the next try.
    with ExitStack() as keys:
        key = keys.enter_context(_key(ctx, key_uri))
        # One provider when the backup's key is the store's: no second KMS client.
        backup_key = keys.enter_context(_key(ctx, backup_key_uri)) if backup_key_uri else key
        with _sink(ctx, settings, read_only=True) as sink:
            chosen, opened = _open_chosen(sink, name, BackupKeys(backup_key), strict=True)
        with _locked(settings, "restore") as audit:
            if settings.get("storage"):
                storage = plugins.storage(settings["storage"])
                try:
                    info = restore_opened(opened, storage, key=key)
                    audit.record(storage, key, "restore")
                finally:
                    storage.close()
                where = storage.uri
            else:
                info = _restore_file(state, opened, key, plugins)
                where = str(state / STORE_FILE)
                storage = plugins.storage(f"sqlite://{(state / STORE_FILE).resolve()}")
                try:
                    audit.record(storage, key, "restore")
                finally:
                    storage.close()
    click.echo(
        f"restored {chosen} into {where}: {info.secrets} secrets, {info.versions} versions "
        f"(revision {info.revision}, taken {info.created})"
    )


def _restore_file(state: Path, opened: Any, key: Any, plugins: Plugins) -> Any:
    # Restore into a new file beside the store, then swap it in: the old store is
    # hard-linked aside first (never overwriting anything), and the new one renamed
    # over it, so at every instant there is a whole secrets.db.
    from setec_core.maintenance import restore_opened

    target = state / STORE_FILE
    temp = state / (STORE_FILE + ".restoring")
    for leftover in (temp, *(Path(f"{temp}{suffix}") for suffix in _SIDECARS)):
        leftover.unlink(missing_ok=True)
    storage = plugins.storage(f"sqlite://{temp.resolve()}")
    try:
        info = restore_opened(opened, storage, key=key)
    except BaseException:
        storage.close()
        temp.unlink(missing_ok=True)
        raise
    storage.close()  # checkpoints: everything is in the file itself now
    if target.exists():
        _checkpoint(target, plugins)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        aside = Path(f"{target}.replaced-{stamp}")
        # A -wal (or hot -journal) left by a crash belongs to its store: it goes aside
        # with it, and must not be replayed onto the new one.
        for suffix in (*_SIDECARS, ""):
            if Path(f"{target}{suffix}").exists():
                os.link(f"{target}{suffix}", f"{aside}{suffix}")
        for suffix in _SIDECARS:
            Path(f"{target}{suffix}").unlink(missing_ok=True)
        say(f"the old store is kept as {aside}")
    os.replace(temp, target)
    fd = os.open(state, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return info


def _checkpoint(path: Path, plugins: Plugins) -> None:
    # Opening and closing the old store folds its -wal into the file, so that the new
    # store never meets the old one's write-ahead log. A store too damaged to open
    # keeps its -wal, which goes aside with it.
    try:
        plugins.storage(f"sqlite://{path.resolve()}").close()
    except SetecError as e:
        say(f"the old store could not be opened ({e}); keeping it aside as it is")


# --- rotation ------------------------------------------------------------------------


@click.command("rotate-kek", cls=PluginFlagsCommand)
@click.option("--to", "to", required=True, help="The new key's URI (as for --kms-key-name).")
@_with(_STORE_OPTIONS)
@click.pass_context
def rotate_kek_command(ctx: click.Context, /, to: str, **given: Any) -> None:
    """Rewrap the data key under the key --to, atomically, with the server stopped.
    Start the server with --kms-key-name set to the new key afterwards."""
    from setec_core.maintenance import rotate_kek

    settings = _settings(ctx, given)

    def act() -> None:
        old_uri = _require(settings, "kms_key_name", "the key that wraps the data key now")
        storage_uri = _storage_uri(settings, must_exist=True)
        plugins = _plugins(ctx)
        with (
            _locked(settings, "rotate-kek") as audit,
            _key(ctx, old_uri) as old,
            _key(ctx, to) as new,
        ):
            storage = plugins.storage(storage_uri)
            try:
                audit.check(storage, old)
                rotate_kek(storage, old=old, new=new)
                audit.record(storage, new, "rotate-kek")
            finally:
                storage.close()
            click.echo(
                f"the data key is now wrapped by {new.uri} (was {old.uri}); start the server "
                f"with --kms-key-name {new.uri}"
            )

    _run(act)


@click.command("rotate-dek", cls=PluginFlagsCommand)
@_with(_STORE_OPTIONS)
@click.pass_context
def rotate_dek_command(ctx: click.Context, /, **given: Any) -> None:
    """Re-encrypt every secret under a new data key, in one atomic commit, with the
    server stopped."""
    from setec_core.maintenance import rotate_dek

    settings = _settings(ctx, given)

    def act() -> None:
        key_uri = _require(settings, "kms_key_name", "the key that wraps the data key")
        storage_uri = _storage_uri(settings, must_exist=True)
        with _locked(settings, "rotate-dek") as audit, _key(ctx, key_uri) as key:
            storage = _plugins(ctx).storage(storage_uri)
            try:
                audit.check(storage, key)
                result = rotate_dek(storage, key=key)
                audit.record(storage, key, "rotate-dek")
            finally:
                storage.close()
            click.echo(
                f"re-encrypted {result.secrets} secrets under a new data key "
                f"(store revision {result.revision})"
            )

    _run(act)


def add_admin_commands(group: click.Group) -> None:
    """Add the admin commands to ``setec-serve``."""
    from setec_cli.audit_admin import audit_group, check_command

    for command in (
        backup_group,
        restore_command,
        rotate_kek_command,
        rotate_dek_command,
        audit_group,
        check_command,
    ):
        group.add_command(command)
