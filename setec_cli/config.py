"""Turning ``setec-serve`` flags into a checked server configuration.

Every rule about which flags go together lives here, so the messages are consistent and
the rules are testable without starting a server. Errors are :class:`ConfigError` with
a message that names the flag (and its environment variable) and says what to do.
"""

from __future__ import annotations

import os
import re
import shlex
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from setec_core.errors import ConfigError
from setec_core.server_info import ServerInfo
from setec_core.uris import redact

if TYPE_CHECKING:
    from setec_core.options import DeclaredOption
    from setec_core.plugins import Plugins

DEV_STATE_DIR = "setec-dev.state"
_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")
DEV_KEY = "dev://"
#: ``--listen`` when it is not given: :class:`~setec_core.server_info.ServerInfo`'s default.
DEFAULT_LISTEN = ServerInfo().listen
#: The most ``--workers`` one ``setec-serve`` runs.
MAX_WORKERS = 64


@dataclass(frozen=True)
class ServerConfig:
    """A checked server configuration (see ``setec-serve --help`` for each field)."""

    state_dir: str
    key: str
    storage: str | None
    authorizer: str
    host: str
    port: int
    max_request_bytes: int
    tls_cert: str | None
    tls_key: str | None
    threads: int
    read_timeout: float
    dev: bool
    backup: str | None = None
    backup_keep: int | None = None
    backup_interval: float = 60.0
    #: Seconds a deleted secret is kept aside before it is purged (0: deleted at once).
    recovery_window: float = 0.0
    unix_socket: str | None = None
    idle_timeout: float = 60.0
    max_connections: int = 0
    max_connections_per_source: int = 2048
    max_watches: int = 10_000
    watch_timeout_cap: float = 60.0
    allowed_hosts: tuple[str, ...] = ()
    #: Serving processes on this host (``--workers``; :mod:`setec_cli.workers`).
    workers: int = 1
    #: A socket already bound and listening at the ``--listen`` address, to serve on
    #: instead of binding: a worker's, handed down by the ``--workers`` parent.
    listen_fd: int | None = None
    #: The values of the plugins' options (``--policy-file``, ``--backup-region``, ...)
    #: by their ``dest``; each plugin is given its own. Not in the repr: a plugin's
    #: option may be a credential.
    plugin_options: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def tls(self) -> bool:
        """Whether the server speaks HTTPS."""
        return self.tls_cert is not None

    @property
    def server(self) -> ServerInfo:
        """What the authorizer is told about the server: where it listens, TLS, dev."""
        return ServerInfo(
            host=self.host,
            port=self.port,
            unix_socket=self.unix_socket,
            tls=self.tls,
            dev=self.dev,
        )

    @property
    def listen(self) -> str:
        """The listen address, for messages: ``HOST:PORT`` or ``unix:PATH``."""
        return self.server.listen

    def host_names(self) -> list[str]:
        """The names the ``Host`` header may carry besides IP literals and ``localhost``:
        ``--allowed-host``, the ``--listen`` host if it is a name, and the DNS names of
        the ``--tls-cert`` certificate."""
        from setec_core.http.hosts import certificate_names

        names = list(self.allowed_hosts)
        if self.unix_socket is None:
            names.append(self.host)
        if self.tls_cert is not None:
            names += certificate_names(self.tls_cert)
        return names


def parse_listen(value: str, *, dev: bool = False) -> tuple[str, int]:
    """Split ``HOST:PORT`` or ``[V6]:PORT`` into host and port (``unix:PATH`` is handled
    by :func:`resolve`). Port 0 picks a free port when the server binds.

    Go's ``:PORT`` (every interface) is refused with the two spellings it could mean:
    the default here is loopback, and a secrets server must not reach the network
    through a shorthand.

    :param dev: the server runs with ``--dev``, which listens on loopback only, so a
        suggestion offers only that.
    :raises ConfigError: naming the value if it is not of that form or its port is out
        of range.
    """
    host, sep, port_text = value.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    numeric = re.fullmatch(r"-?[0-9]+", port_text) is not None
    if sep and not host and not bracketed and port_text.isdigit() and numeric:
        loopback = f"127.0.0.1:{int(port_text)}"
        meant = (
            f"{loopback}?"
            if dev
            else f"{loopback} (loopback only) or 0.0.0.0:{int(port_text)} (every interface)?"
        )
        raise ConfigError(f"--listen {value!r} has no host; did you mean {meant}")
    # "::1:8080" is ambiguous (port 8080, or the address ::1:8080?): IPv6 needs brackets.
    ambiguous = ":" in host and not bracketed
    if not sep or not host or ambiguous or not port_text:
        raise ConfigError(
            f"--listen {value!r} is not HOST:PORT or unix:PATH (e.g. 127.0.0.1:8080, "
            "[::1]:8080, 100.101.102.103:443, unix:/run/setec/setec.sock)"
        )
    if not numeric:
        raise ConfigError(
            f"--listen {value!r}: port {port_text!r} is not a number (e.g. 127.0.0.1:8080)"
        )
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(
            f"--listen {value!r}: port {port} is out of range (1-65535, or 0 for a free port)"
        )
    return host, port


def check_state_dir(path: str) -> None:
    """Check that this user can use the state directory ``path`` before anything is
    made: write to it if it exists (and make it private, mode 0700, if others may read
    it), or create it in the nearest directory above that exists.

    Only what setec would otherwise fail on later, with a less helpful message, is
    refused: a directory of this user's that others may read is fine (the server makes
    it 0700), and root may write anywhere.

    :raises ConfigError: naming the directory, its owner and mode, and what to do.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        _check_creatable(path)
        return
    except OSError:
        return  # a file in the way, a loop: opening the state directory says which
    if not stat.S_ISDIR(st.st_mode):
        return
    mode = stat.S_IMODE(st.st_mode)
    if st.st_uid == os.geteuid():
        # The server makes a directory others may read 0700, writable by its owner.
        if mode & 0o077 or _writable(path):
            return
        raise ConfigError(
            f"cannot write to state directory {path!r}: its mode is {mode:04o}; make it "
            f"writable by you (chmod 700 {shlex.quote(path)}), or choose another --state-dir"
        )
    owner = _user_name(st.st_uid)
    if not _writable(path):
        raise ConfigError(
            f"cannot write to state directory {path!r}: permission denied (it belongs to "
            f"{owner}, mode {mode:04o}); run setec-serve as {owner}, or choose another "
            "--state-dir"
        )
    if mode & 0o077 and os.geteuid() != 0:
        raise ConfigError(
            f"cannot make state directory {path!r} private: other users may read it (mode "
            f"{mode:04o}) and only its owner, {owner}, can change that; run setec-serve as "
            f"{owner}, or choose another --state-dir"
        )


def _check_creatable(path: str) -> None:
    above = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(above) and os.path.dirname(above) != above:
        above = os.path.dirname(above)
    if os.path.isdir(above) and not _writable(above):
        raise ConfigError(
            f"cannot create state directory {path!r}: this user may not write to "
            f"{above!r}; choose another --state-dir"
        )


def _writable(path: str) -> bool:
    # Writing needs search permission too; the effective ids are those that count.
    effective = os.access in os.supports_effective_ids
    return os.access(path, os.W_OK | os.X_OK, effective_ids=effective)


def _user_name(uid: int) -> str:
    try:
        import pwd
    except ImportError:  # not a Unix system: there are no user names to look up
        return f"uid {uid}"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def backup_uri(options: Mapping[str, Any], plugins: Plugins) -> str | None:
    """Return the backup sink URI the flags name, or ``None`` if backups are off.

    ``--backup URI`` names any sink; Go setec's ``--backup-bucket B`` means
    ``--backup s3://B``. The options backup sinks declare (the ``s3`` sink's
    ``--backup-region`` and ``--backup-role``) reach the sink itself; here they are only
    checked to go with a ``--backup`` of their sink.

    :raises ConfigError: naming the flags that do not go together.
    """
    uri, bucket = options.get("backup"), options.get("backup_bucket")
    if uri and bucket:
        raise ConfigError(
            f"--backup {redact(uri)!r} and --backup-bucket {bucket!r} both name where "
            "backups go; give one (--backup-bucket B is the same as --backup s3://B)"
        )
    if bucket:
        if "/" in bucket or ":" in bucket:
            raise ConfigError(
                f"--backup-bucket {bucket!r} is not a bucket name; for a prefix use "
                "--backup s3://BUCKET/PREFIX"
            )
        uri = f"s3://{bucket}"
    given = [d for d in plugins.declared_options("backup sink") if _given(options, d)]
    if not uri:
        if given or options.get("backup_keep"):
            named = " and ".join([d.option.flag for d in given] or ["--backup-keep"])
            raise ConfigError(f"{named} need --backup (or --backup-bucket) to say where backups go")
        return None
    uri = str(uri)
    if given:
        sink = plugins.backup_sinks.by_uri(uri)
        stray = [d for d in given if not d.applies_to(sink)]
        if stray:
            # Name every option of the sinks they belong to, and those sinks' schemes.
            owners = [cls for d in stray for _, cls in d.owners]
            flags = [
                d.option.flag
                for d in plugins.declared_options("backup sink")
                if any(d.applies_to(cls) for cls in owners)
            ]
            schemes = sorted({f"{s}://" for cls in owners for s in cls.schemes})
            verb = "apply" if len(flags) > 1 else "applies"
            raise ConfigError(
                f"{' and '.join(flags)} {verb} to {' or '.join(schemes)} backups, not "
                f"{redact(uri)!r}"
            )
    return uri


def _given(options: Mapping[str, Any], declared: DeclaredOption) -> bool:
    value = options.get(declared.option.dest)
    return value is not None and value != declared.option.default


def resolve(options: Mapping[str, Any], plugins: Plugins) -> ServerConfig:
    """Check the flag values ``options`` (by underscore name) and fill in defaults.

    :param plugins: the installed plugins: what the messages list, and whose options
        ``options`` holds values for.
    :raises ConfigError: naming the flag that is missing, invalid or not allowed, or a
        state directory this user cannot use (:func:`check_state_dir`).
    :raises PluginError: if a key provider, storage backend, authorizer or backup sink
        is named that no installed plugin provides; the message lists those that are.
    """
    from setec_cli.plugin_flags import uri_forms

    dev = bool(options.get("dev"))
    state_dir = options.get("state_dir") or (DEV_STATE_DIR if dev else None)
    key = options.get("kms_key_name") or (DEV_KEY if dev else None)
    authorizer = options.get("authorizer") or ("dev" if dev else "tailscale")
    if state_dir is None:
        raise ConfigError(
            "--state-dir (or SETEC_STATE_DIR) must be given: the directory for the database "
            "and audit.log; or run with --dev to try setec out"
        )
    if key is None:
        raise ConfigError(
            "--kms-key-name (or SETEC_KMS_KEY_NAME) must be given: the KMS key that wraps "
            f"the data key ({uri_forms(plugins.key_providers)}); or run with --dev to use "
            "the public dev key"
        )
    listen = str(options.get("listen") or DEFAULT_LISTEN)
    unix_socket = None
    if listen.startswith("unix:"):
        unix_socket = listen[len("unix:") :]
        if not unix_socket or not os.path.isabs(unix_socket):
            raise ConfigError(
                f"--listen {listen!r} needs an absolute path after unix: "
                "(e.g. unix:/run/setec/setec.sock)"
            )
        if not os.path.isdir(os.path.dirname(unix_socket)):
            raise ConfigError(
                f"--listen {listen!r}: the directory {os.path.dirname(unix_socket)!r} does "
                "not exist; create it (mode 0700, owned by this user) first"
            )
        host, port = "localhost", 0
    else:
        host, port = parse_listen(listen, dev=dev)
    if dev and unix_socket is None and not ServerInfo(host=host, port=port).is_local:
        raise ConfigError(
            f"--dev serves only on loopback, and --listen {host!r} is not a loopback "
            "address; use 127.0.0.1:PORT, or drop --dev and configure a real key and "
            "authorizer"
        )
    storage = options.get("storage") or None
    # Named plugins are looked up now, so that a misspelt one is reported before anything
    # is built, bound or made on disk.
    plugins.key_providers.by_uri(plugins.key_providers.expand(str(key)))
    if storage:
        plugins.storage_backends.by_uri(str(storage))
    plugins.authorizers.by_name(str(authorizer))
    workers = options.get("workers")
    workers = 1 if workers is None else int(workers)
    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            f"--workers {workers} (or SETEC_WORKERS) is out of range: give 1 to {MAX_WORKERS}"
        )
    if workers > 1 and storage and str(storage).lower().startswith("memory:"):
        raise ConfigError(
            f"--workers {workers} needs a store the workers share, and --storage "
            f"{redact(str(storage))!r} lives inside one process; use --workers 1, or the "
            "state directory's SQLite store or a postgresql:// one"
        )
    tls_cert, tls_key = options.get("tls_cert"), options.get("tls_key")
    if bool(tls_cert) != bool(tls_key):
        raise ConfigError("--tls-cert and --tls-key must be given together")
    for flag, path in (("--tls-cert", tls_cert), ("--tls-key", tls_key)):
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{flag} {path!r} is not a readable file")
    backup = backup_uri(options, plugins)
    if backup:
        plugins.backup_sinks.by_uri(backup)
    check_state_dir(str(state_dir))
    return ServerConfig(
        state_dir=str(state_dir),
        key=str(key),
        storage=storage,
        authorizer=str(authorizer),
        host=host,
        port=port,
        max_request_bytes=int(options.get("max_request_bytes") or 1 << 20),
        tls_cert=tls_cert or None,
        tls_key=tls_key or None,
        threads=int(options.get("threads") or 32),
        read_timeout=float(options.get("read_timeout") or 10.0),
        dev=dev,
        backup=backup,
        backup_keep=options.get("backup_keep") or None,
        backup_interval=float(options.get("backup_interval") or 60.0),
        recovery_window=float(options.get("recovery_window") or 0.0),
        unix_socket=unix_socket,
        idle_timeout=float(options.get("idle_timeout") or 60.0),
        max_connections=int(options.get("max_connections") or 0),
        max_connections_per_source=int(options.get("max_connections_per_source") or 2048),
        max_watches=int(options.get("max_watches") or 10_000),
        watch_timeout_cap=float(options.get("watch_timeout_cap") or 60),
        allowed_hosts=allowed_hosts(options.get("allowed_host") or ()),
        workers=workers,
        plugin_options={
            d.option.dest: options.get(d.option.dest) for d in plugins.declared_options()
        },
    )


def allowed_hosts(values: Any) -> tuple[str, ...]:
    """Check the ``--allowed-host`` values: host names (``setec.example.ts.net``) or
    ``*.`` and a domain (``*.example.ts.net``), without a port; a value may also be a
    comma-separated list (for ``SETEC_ALLOWED_HOST``).

    :raises ConfigError: naming a value that is not a host name.
    """
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for value in values:
        for name in str(value).split(","):
            name = name.strip().lower().rstrip(".")
            if not name:
                continue
            bare = name.removeprefix("*.")
            labels = bare.split(".")
            if not all(label and _LABEL.fullmatch(label) for label in labels):
                raise ConfigError(
                    f"--allowed-host {name!r} is not a host name; give a name such as "
                    "setec.example.ts.net or *.example.ts.net, without a port or scheme"
                )
            out.append(name)
    return tuple(dict.fromkeys(out))
