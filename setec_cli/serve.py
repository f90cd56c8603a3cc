"""``setec-serve``: run the setec server, list plugins, and the admin commands of
:mod:`setec_cli.admin` (backups, restore, key rotation).

``setec-serve --dev`` needs no setup: the public dev key, SQLite in
``./setec-dev.state``, ``127.0.0.1:8080``, and the ``dev`` authorizer (every loopback
caller is a superuser). Every flag can also be set by an environment variable
``SETEC_<FLAG>`` (``--state-dir`` is ``SETEC_STATE_DIR``), as Go setec does. Besides
its own flags it takes those the installed plugins declare (``--policy-file``,
``--backup-region``, ...; see :mod:`setec_cli.plugin_flags`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import click

from setec_cli import logs
from setec_cli.admin import add_admin_commands
from setec_cli.config import DEFAULT_LISTEN, DEV_KEY, MAX_WORKERS, ServerConfig, resolve
from setec_cli.duration import Duration, format_duration
from setec_cli.plugin_flags import ListingOption, PluginFlagsGroup, plugins_of
from setec_cli.say import dev_export_hint, fail, say
from setec_core.errors import ConfigError, SetecError
from setec_core.uris import redact

if TYPE_CHECKING:
    from setec_core.database import Database
    from setec_core.plugins import Plugins
    from setec_core.purge import PurgeLoop

log = logging.getLogger("setec.serve")


@click.group(
    name="setec-serve",
    cls=PluginFlagsGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(
    package_name="pysetec",
    prog_name="setec-serve",
    message="%(prog)s (pysetec) %(version)s",
    help="Print the version (the line format of setec version) and exit.",
)
@click.option(
    "--state-dir",
    envvar="SETEC_STATE_DIR",
    show_envvar=True,
    help="Directory for the database and audit.log (created 0700). Default with --dev: "
    "./setec-dev.state.",
)
@click.option(
    "--listen",
    envvar="SETEC_LISTEN",
    show_envvar=True,
    help=f"HOST:PORT to listen on (default {DEFAULT_LISTEN}; port 0 picks a free port), or "
    "unix:PATH for a unix socket (created 0600).",
)
@click.option(
    "--allowed-host",
    envvar="SETEC_ALLOWED_HOST",
    show_envvar=True,
    multiple=True,
    metavar="NAME",
    help="A name clients reach the server by (repeatable; *.DOMAIN for any name under "
    "it). IP addresses, localhost, the --listen host and the --tls-cert names are always "
    "allowed; any other Host header gets 421 (DNS rebinding).",
)
@click.option(
    "--kms-key-name",
    cls=ListingOption,
    envvar="SETEC_KMS_KEY_NAME",
    show_envvar=True,
    metavar="URI",
    help="Key that wraps the data key ({key_providers}). Default with --dev: dev://.",
)
@click.option(
    "--storage",
    cls=ListingOption,
    envvar="SETEC_STORAGE",
    show_envvar=True,
    metavar="URI",
    help="Storage URI ({storage_backends}; default sqlite:///STATE_DIR/secrets.db).",
)
@click.option(
    "--authorizer",
    cls=ListingOption,
    envvar="SETEC_AUTHORIZER",
    show_envvar=True,
    metavar="NAME",
    help="Who may do what: one of {authorizers}. Default: tailscale; with --dev, dev "
    "(which only --dev allows).",
)
@click.option(
    "--max-request-bytes",
    envvar="SETEC_MAX_REQUEST_BYTES",
    show_envvar=True,
    type=click.IntRange(min=1),
    default=1 << 20,
    show_default=True,
    help="Larger request bodies get 413.",
)
@click.option(
    "--tls-cert",
    envvar="SETEC_TLS_CERT",
    show_envvar=True,
    help="PEM certificate chain for HTTPS.",
)
@click.option(
    "--tls-key",
    envvar="SETEC_TLS_KEY",
    show_envvar=True,
    help="PEM private key for HTTPS.",
)
@click.option(
    "--threads",
    envvar="SETEC_THREADS",
    show_envvar=True,
    type=click.IntRange(1, 1024),
    default=16,
    show_default=True,
    help="Requests the app runs at once (connections are not threads: any number may wait).",
)
@click.option(
    "--workers",
    envvar="SETEC_WORKERS",
    show_envvar=True,
    type=click.IntRange(1, MAX_WORKERS),
    default=1,
    show_default=True,
    help="Serving processes on this host, over the same store and listening address: "
    "one per core uses them all. Worker i > 0 keeps its audit log in "
    "STATE_DIR/workers/i (docs/server.md).",
)
@click.option(
    "--read-timeout",
    envvar="SETEC_READ_TIMEOUT",
    show_envvar=True,
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds for a TLS handshake, and for a whole request (head and body) from its "
    "first byte; also how long a new connection may wait to begin.",
)
@click.option(
    "--idle-timeout",
    envvar="SETEC_IDLE_TIMEOUT",
    show_envvar=True,
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds a kept-alive connection may sit between requests.",
)
@click.option(
    "--max-connections",
    envvar="SETEC_MAX_CONNECTIONS",
    show_envvar=True,
    type=click.IntRange(min=0),
    default=0,
    help="Connections open at once (0, the default: 8192, or the open-file limit, raised "
    "to its maximum, less 128 if that is lower).",
)
@click.option(
    "--max-connections-per-source",
    envvar="SETEC_MAX_CONNECTIONS_PER_SOURCE",
    show_envvar=True,
    type=click.IntRange(min=1),
    default=2048,
    show_default=True,
    help="Connections open at once from one address; beyond it, the source's idle or "
    "slowest connection is closed to make room.",
)
@click.option(
    "--max-watches",
    envvar="SETEC_MAX_WATCHES",
    show_envvar=True,
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Watches (/api/watch long polls) this process holds at once; more get 503 with "
    "Retry-After. A waiting watch costs a connection, not a thread.",
)
@click.option(
    "--watch-timeout-cap",
    envvar="SETEC_WATCH_TIMEOUT_CAP",
    show_envvar=True,
    type=click.IntRange(1, 3600),
    default=60,
    show_default=True,
    help="Seconds a watch waits at most: keep it below the idle timeout of any proxy or "
    "load balancer in front of the server (often 60 s).",
)
@click.option(
    "--log-level",
    envvar="SETEC_LOG_LEVEL",
    show_envvar=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
)
@click.option(
    "--backup",
    cls=ListingOption,
    envvar="SETEC_BACKUP",
    show_envvar=True,
    metavar="URI",
    help="Where backups go ({backup_sinks}). A backup is taken at start, then each "
    "--backup-interval if the store changed (docs/backups.md).",
)
@click.option(
    "--backup-bucket",
    envvar="SETEC_BACKUP_BUCKET",
    show_envvar=True,
    help="Go setec's flag: the same as --backup s3://BUCKET.",
)
@click.option(
    "--backup-keep",
    envvar="SETEC_BACKUP_KEEP",
    show_envvar=True,
    type=click.IntRange(min=1),
    help="Keep only the newest N backups (default: keep all).",
)
@click.option(
    "--backup-interval",
    envvar="SETEC_BACKUP_INTERVAL",
    show_envvar=True,
    type=click.FloatRange(min=1),
    default=60.0,
    show_default=True,
    help="Seconds between checks for changes to back up.",
)
@click.option(
    "--recovery-window",
    envvar="SETEC_RECOVERY_WINDOW",
    show_envvar=True,
    type=Duration(),
    default="0",
    show_default=True,
    metavar="DURATION",
    help="Keep a deleted secret aside this long (7d, 12h, 30m, 0) before purging it: "
    "until then it can be undeleted, and its name stays reserved. 0 deletes at once, as "
    "Go setec does.",
)
@click.option(
    "--dev",
    envvar="SETEC_DEV",
    show_envvar=True,
    is_flag=True,
    help="Development mode: dev key, ./setec-dev.state, loopback only, every local caller "
    "is a superuser (unless --authorizer says otherwise); prints the export "
    "SETEC_SERVER=URL line for the setec CLI. NOT FOR PRODUCTION.",
)
@click.pass_context
def cli(ctx: click.Context, /, **options: Any) -> None:
    """Run the setec secrets server (or one of the commands below)."""
    if ctx.invoked_subcommand is not None:
        return
    if options["workers"] > 1:
        # Before logging is set up: the workers are forked from a process without
        # threads (setec_cli.workers says why).
        from setec_cli.workers import serve_workers

        serve_workers(options, plugins_of(ctx), serve)
    access_lines = logs.configure(options["log_level"])
    plugins = plugins_of(ctx)
    try:
        config = resolve(options, plugins)
        serve(config, plugins=plugins, access_lines=access_lines)
    except (ConfigError, SetecError) as e:
        fail(str(e))


@cli.command("plugins")
@click.pass_context
def plugins_command(ctx: click.Context) -> None:
    """List the installed plugins: key providers, storage, authorizers, backup sinks."""
    table = [("KIND", "NAME", "PLUGIN", "SCHEMES")]
    for kind, name, plugin, schemes in sorted(plugins_of(ctx).describe()):
        table.append((kind, name, plugin, " ".join(f"{s}://" for s in schemes)))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        click.echo("  ".join([*cells, row[3]]).rstrip())


add_admin_commands(cli)


def dev_banner(config: ServerConfig) -> list[str]:
    """The warnings a ``--dev`` start prints first: who may do what, where the state
    is, and, for a ``dev://`` key, that the key is public. They name the authorizer and
    key in effect, whatever flags chose them."""
    if config.authorizer == "dev":
        who = "every local caller is a superuser"
    else:
        who = f"the {config.authorizer} authorizer decides who may do what"
    lines = [f"dev mode: NOT SAFE FOR PRODUCTION USE; {who}"]
    lines.append(f"dev mode: state dir is {config.state_dir!r}")
    if config.key.startswith(DEV_KEY):
        lines.append(
            f"dev mode: using the public dev key {redact(config.key)}; anyone can decrypt "
            "this store"
        )
    return lines


def serve(
    config: ServerConfig,
    *,
    plugins: Plugins | None = None,
    ready: Callable[[str], None] | None = None,
    access_lines: Callable[[str], None] | None = None,
    worker: bool = False,
) -> None:
    """Open the database, build the app and serve until SIGTERM or SIGINT.

    The listening address is bound first, and the authorizer built once the database
    is open: an address in use leaves nothing on disk, and a problem with the key or
    the store is reported before the authorizer says anything (such as tailscaled's
    socket being missing). A start that fails after making a new state directory
    removes it.

    :param plugins: the :class:`~setec_core.plugins.Plugins` to use; the installed
        plugins by default.
    :param access_lines: where access-log lines go; INFO records of the
        ``setec.http.access`` logger by default.
    :param ready: called with the URL once the server listens (tests use it).
    :param worker: this is one of ``--workers`` processes, whose parent says where the
        server listens (once, for all of them).
    :raises SetecError: if the address, database, key or authorizer cannot be set up.
    """
    from setec_core.plugins import Plugins

    if config.dev:
        for line in dev_banner(config):
            say(line)
    # Each plugin is built with the values of its own options.
    plugins = (plugins if plugins is not None else Plugins.load()).with_options(
        config.plugin_options
    )
    made = _first_missing(config.state_dir)
    start = _Start()
    try:
        with contextlib.ExitStack() as stack:
            _serve(config, plugins, start, stack, ready, access_lines, worker)
    except BaseException:
        # Only once this start held the state directory's lock (its database was
        # open), so no other server was using a directory it made a moment ago.
        if made is not None and start.opened and not start.served:
            shutil.rmtree(made, ignore_errors=True)
        raise


class _Start:
    """How far a start got: whether it opened the database, and began serving."""

    opened = False
    served = False


def _serve(
    config: ServerConfig,
    plugins: Plugins,
    start: _Start,
    stack: contextlib.ExitStack,
    ready: Callable[[str], None] | None,
    access_lines: Callable[[str], None] | None,
    worker: bool,
) -> None:
    # Everything opened is closed by ``stack`` in reverse: the server first, so that no
    # request reaches a closed database.
    from setec_cli.http_server import Runner, bind
    from setec_core.backup.loop import BackupLoop
    from setec_core.database import Database
    from setec_core.http import make_app
    from setec_core.leases import JobLease

    listener = None
    if config.listen_fd is None:
        [listener], _ = bind(config)
        stack.callback(_release, config, listener)
    # A sink that cannot be built stops the start, as in Go setec: a server that
    # silently takes no backups is worse than one that does not start.
    sink = plugins.backup_sink(config.backup) if config.backup else None
    stack.callback(_close_all, sink)
    db = Database.open(config.state_dir, key=config.key, storage=config.storage, plugins=plugins)
    stack.callback(db.close)
    start.opened = True
    authorizer = plugins.authorizer(config.authorizer, server=config.server)
    stack.callback(_close_all, authorizer)
    app = make_app(
        db,
        authorizer,
        max_request_bytes=config.max_request_bytes,
        tls=config.tls,
        allowed_hosts=config.host_names(),
        access_lines=access_lines,
        max_watches=config.max_watches,
        watch_timeout_cap=config.watch_timeout_cap,
    )
    # Serve what other processes over the store write (replicas, --workers, admin
    # commands), and hold this replica's presence lease while running.
    app.metrics.watch_follower(db.follow())
    backups = None
    if sink is not None:
        # One replica at a time takes the backups; another takes over within the
        # lease's ttl when it stops renewing (docs/replicas.md, "Jobs").
        lease = JobLease(db.storage, "backup", db.replica, 2 * config.backup_interval + 10)
        backups = BackupLoop(
            db, sink, interval=config.backup_interval, keep=config.backup_keep, lease=lease
        )
        stack.callback(backups.stop)
        app.metrics.watch_backups(backups)
    purges = _purge_loop(db, config, stack)
    say(
        f"key {db.key.uri}, storage {db.storage.uri}, authorizer {config.authorizer}, "
        f"{len(db)} secrets, replica {db.replica}"
    )
    if listener is not None:
        # From here the socket is the Runner's, which closes it.
        config = replace(config, listen_fd=listener.detach())
    runner = Runner(app, config, reload=authorizer.reload)
    stack.callback(runner.close)
    app.metrics.watch_front(runner.front.stats)
    url = runner.start()
    start.served = True
    if not worker:
        say(f"listening on {url}")
        if config.dev and config.unix_socket is None:
            dev_export_hint(url)
    if purges is not None:
        if config.recovery_window > 0:
            window = format_duration(config.recovery_window)
            say(f"deleted secrets are kept {window} before they are purged (undelete until then)")
        else:
            say("secrets deleted with an earlier --recovery-window are purged when theirs ends")
        purges.start()
    if backups is not None:
        keep = "keeping all"
        if config.backup_keep:
            keep = f"keeping the newest {config.backup_keep}"
        say(
            f"backups to {backups.sink.uri}: now, then every {config.backup_interval:g} s "
            f"if the store changed, {keep}"
        )
        backups.start()
    if ready is not None:
        ready(url)
    if not runner.wait():
        raise SetecError("the HTTP server stopped unexpectedly; see the log above")
    say("stopped: in-flight requests finished, database closed")


def _purge_loop(
    db: Database, config: ServerConfig, stack: contextlib.ExitStack
) -> PurgeLoop | None:
    """Set the database's recovery window and make its purge job: with a window, or
    without one while secrets put aside by an earlier run are pending (they must still
    go on time). ``None`` when there is nothing to purge, ever."""
    from setec_core.leases import JobLease
    from setec_core.purge import LEASE, PurgeLoop, lease_ttl

    db.recovery_window = config.recovery_window
    if config.recovery_window <= 0 and db.next_purge() is None:
        return None
    # One replica at a time purges, as one backs up (docs/replicas.md, "Jobs").
    loop = PurgeLoop(db, lease=JobLease(db.storage, LEASE, db.replica, lease_ttl()))
    stack.callback(loop.stop)
    return loop


def _release(config: ServerConfig, listener: socket.socket) -> None:
    # Closes the socket unless the Runner took it (then this is a no-op), and removes a
    # unix socket's file, which a server given a bound socket leaves to whoever bound it.
    listener.close()
    if config.unix_socket is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(config.unix_socket)


def _first_missing(path: str) -> str | None:
    """The outermost directory of ``path`` (itself included) that does not exist yet:
    what creating it would make."""
    missing = None
    here = os.path.abspath(path)
    while not os.path.lexists(here):
        missing = here
        parent = os.path.dirname(here)
        if parent == here:
            break
        here = parent
    return missing


def _close_all(*things: Any) -> None:
    for thing in things:
        if thing is not None:
            try:
                thing.close()
            except Exception:
                log.exception("closing %s failed", type(thing).__name__)


def load_plugins(*groups: click.Group) -> Plugins:
    """Load the installed plugins and let them add their commands to ``groups``.

    Exits with a one-line error if a plugin is broken.
    """
    from setec_core.plugins import Plugins

    try:
        plugins = Plugins.load()
        for group in groups:
            plugins.add_commands(group)
    except SetecError as e:
        fail(str(e))
    return plugins


def main() -> None:
    """Entry point of ``setec-serve``."""
    plugins = load_plugins(cli)
    cli(prog_name=os.path.basename(sys.argv[0]) or "setec-serve", obj=plugins)
