"""Serving the WSGI app in this process with setec's HTTP front
(:mod:`setec_core.http.front`): an event loop that owns every socket and reads each
request whole, and a pool of threads that run the app.

Why this front (measured in ``docs/performance.md``, "Choosing the HTTP front"): the
Database is a single writer that holds its audit log under an exclusive lock, so it must
live in the process that serves, and the server must stay responsive while hostile
clients trickle bytes, hold idle connections or never finish a TLS handshake. A
thread-per-connection server (cheroot, which served before) gives each such client a
worker; this front gives it a socket, with a deadline.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import signal
import socket
import ssl
from collections.abc import Callable
from typing import Any

from setec_cli.config import ServerConfig
from setec_core.errors import ConfigError, SetecError
from setec_core.http.front import (
    Front,
    Limits,
    Listener,
    listener_url,
    open_listener,
    server_ssl_context,
)
from setec_core.server_info import ServerInfo

log = logging.getLogger("setec.serve")

#: Seconds in-flight requests get to finish after SIGTERM before they are abandoned.
SHUTDOWN_TIMEOUT = 10


class Runner:
    """Serves ``app`` as ``config`` says until SIGTERM or SIGINT; SIGHUP calls ``reload``.

    Signal handlers only set flags: the work they ask for (stopping, reloading) runs in
    :meth:`wait`, on the main thread, outside any signal handler. A socket handed down
    in ``config.listen_fd`` is the Runner's from :meth:`start` on: it is closed at stop,
    or at once if starting fails.

    :raises ConfigError: from :meth:`start` if the address cannot be bound or the TLS
        files cannot be loaded.
    """

    def __init__(
        self, app: Any, config: ServerConfig, *, reload: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        limits = Limits(
            read_timeout=config.read_timeout,
            idle_timeout=config.idle_timeout,
            write_timeout=config.read_timeout,
            max_body_bytes=config.max_request_bytes,
            max_connections=config.max_connections,
            max_connections_per_source=config.max_connections_per_source,
        )
        self.front = Front(app, [listener_of(config)], threads=config.threads, limits=limits)
        self._reload = reload
        # Not a threading.Event: its set() takes a lock that its wait() holds for a
        # moment, and a signal handler runs on the waiting thread, so a signal landing
        # in that moment would deadlock (two SIGTERMs in quick succession did). A
        # SimpleQueue's put() may interrupt its own get().
        self._wakes: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._stopping = False
        self._reloading = False

    def start(self) -> str:
        """Install the signal handlers, bind, start serving in background threads, and
        return the URL the server listens on."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hup)
        cert, key = self.config.tls_cert, self.config.tls_key
        if cert is not None and key is not None:
            try:
                self.front.ssl_context = server_ssl_context(cert, key)
            except (OSError, ssl.SSLError) as e:
                if self.config.listen_fd is not None:
                    # The socket handed down was to be the front's, which will not take it.
                    os.close(self.config.listen_fd)
                raise ConfigError(
                    f"cannot load --tls-cert {self.config.tls_cert!r} / --tls-key "
                    f"{self.config.tls_key!r}: {e}"
                ) from None
        try:
            self.front.bind()
        except OSError as e:
            raise cannot_listen(self.config, e) from None
        return self.front.start()[0]

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stopping = True
        self._wakes.put(None)

    def _on_hup(self, signum: int, frame: object) -> None:
        self._reloading = True
        self._wakes.put(None)

    def wait(self) -> bool:
        """Serve until a stop signal, then stop accepting and let in-flight requests
        finish (up to :data:`SHUTDOWN_TIMEOUT` seconds).

        :returns: True after a requested stop, False if the HTTP server died.
        """
        healthy = True
        while True:
            with contextlib.suppress(queue.Empty):
                self._wakes.get(timeout=0.5)
                while True:
                    self._wakes.get_nowait()
            if self._stopping:
                log.info("stop signal received, stopping")
                break
            if self._reloading:
                self._reloading = False
                self._do_reload()
            if not self.front.is_alive():
                log.error("the HTTP server stopped unexpectedly")
                healthy = False
                break
        self.close()
        return healthy

    def _do_reload(self) -> None:
        if self._reload is None:
            return
        try:
            self._reload()
        except SetecError as e:
            # Our errors name the file and the problem; the old configuration stays.
            log.error("reload failed, keeping the previous configuration: %s", e)
        except Exception as e:  # a reload must never take the server down
            log.error("reload failed, keeping the previous configuration: %s", type(e).__name__)
        else:
            log.info("authorizer configuration reloaded")

    def stop(self) -> None:
        """Ask :meth:`wait` to return (as SIGTERM does)."""
        self._stopping = True
        self._wakes.put(None)

    def close(self) -> None:
        """Stop the front: no new connections, in-flight requests get
        :data:`SHUTDOWN_TIMEOUT` seconds to be answered. Safe to call more than once."""
        self.front.stop(SHUTDOWN_TIMEOUT)


def listener_of(config: ServerConfig) -> Listener:
    """Where ``config`` says to listen: its ``--listen`` address, served on the socket
    :attr:`~setec_cli.config.ServerConfig.listen_fd` if it was bound already."""
    if config.unix_socket is not None:
        return Listener(path=config.unix_socket, fd=config.listen_fd)
    return Listener(config.host, config.port, fd=config.listen_fd)


def bind(config: ServerConfig, count: int = 1) -> tuple[list[socket.socket], str]:
    """Bind and listen at ``config``'s ``--listen`` address for ``count`` processes to
    serve on (``--workers``); return the listening sockets and the URL they are reached
    at.

    A TCP address gets ``count`` sockets bound to one port with ``SO_REUSEPORT``, one per
    worker: the kernel then spreads new connections evenly over the workers, where one
    shared socket lets whichever worker wakes first accept a whole burst. A unix
    socket is one, shared.

    :raises ConfigError: if the address cannot be bound, naming it.
    """
    listener = listener_of(config)
    shared = count == 1 or listener.path is not None or not hasattr(socket, "SO_REUSEPORT")
    sockets: list[socket.socket] = []
    try:
        if not shared and listener.port:
            # SO_REUSEPORT would let these sockets join another server's on the same
            # port (one of this user's, with the option set): bind without it first,
            # which fails if anything listens there.
            open_listener(listener).close()
        sockets.append(open_listener(listener, reuse_port=not shared))
        if not shared:
            port = sockets[0].getsockname()[1]  # port 0 resolved by the first
            again = Listener(listener.host, port)
            sockets.extend(open_listener(again, reuse_port=True) for _ in range(count - 1))
    except OSError as e:
        for sock in sockets:
            sock.close()
        raise cannot_listen(config, e) from None
    return sockets, listener_url(sockets[0], listener, tls=config.tls)


def cannot_listen(config: ServerConfig, error: OSError) -> ConfigError:
    """The error for a ``--listen`` address that could not be bound: what went wrong and
    what to do, with the hint that fits ``error`` (a port in use, a port below 1024
    without the privilege to bind it, an address this host does not have).

    :param error: what binding raised.
    """
    where = f"cannot listen on {config.listen}"
    if config.unix_socket is None:
        if error.errno == errno.EADDRINUSE:
            other = "(port 0 picks a free one)"
            if config.port < 65535:
                nearby = ServerInfo(host=config.host, port=config.port + 1).listen
                other = f"such as --listen {nearby} {other}"
            return ConfigError(
                f"{where}: the port is in use (another server, perhaps another setec-serve, "
                f"listens there); stop it, or choose another port, {other}"
            )
        if error.errno == errno.EACCES and 0 < config.port < 1024:
            return ConfigError(
                f"{where}: ports below 1024 need privileges this user does not have; choose "
                "a port of 1024 or above (--listen "
                f"{ServerInfo(host=config.host, port=8443 if config.tls else 8080).listen}), "
                "or give setec-serve the CAP_NET_BIND_SERVICE capability"
            )
        if error.errno == errno.EADDRNOTAVAIL:
            return ConfigError(
                f"{where}: {config.host} is not an address of this host; choose one it has "
                "(127.0.0.1 for this host only, its tailnet address for the tailnet)"
            )
    return ConfigError(
        f"{where}: {error.strerror or error}; choose another --listen address or stop "
        "whatever uses it"
    )
