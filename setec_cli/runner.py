"""Serving the WSGI app: cheroot's thread-pool HTTP server, in this process.

Why cheroot (measured in ``docs/performance.md``, "Choosing the WSGI server"): the
Database is a single writer that holds its audit log under an exclusive lock, so it must
live in the process that serves. cheroot runs the app in this process on a pool of
threads, speaks TLS with the standard library, times out slow clients, and stops
gracefully. granian and gunicorn were faster on a constant response but serve from
worker *processes* forked or spawned by a supervisor, which would put the Database in a
child and give SIGHUP to the supervisor (it restarts workers); waitress collapsed under
64 connections once the app did real work.
"""

from __future__ import annotations

import logging
import signal
import ssl
import threading
from collections.abc import Callable
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from setec_cli.config import ServerConfig
from setec_core.errors import ConfigError, SetecError

log = logging.getLogger("setec.serve")

#: Seconds in-flight requests get to finish after SIGTERM before threads are abandoned.
SHUTDOWN_TIMEOUT = 10


class Runner:
    """Serves ``app`` as ``config`` says until SIGTERM or SIGINT; SIGHUP calls ``reload``.

    Signal handlers only set flags: the work they ask for (stopping, reloading) runs in
    :meth:`wait`, on the main thread, outside any signal handler.

    :raises ConfigError: from :meth:`start` if the address cannot be bound or the TLS
        files cannot be loaded.
    """

    def __init__(
        self, app: Any, config: ServerConfig, *, reload: Callable[[], None] | None = None
    ) -> None:
        self.config = config
        self.server = wsgi.Server(
            (config.host, config.port),
            app,
            numthreads=config.threads,
            server_name="setec",
            timeout=max(1, round(config.read_timeout)),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        # Request headers bigger than this get 413 from cheroot.
        self.server.max_request_header_size = 64 * 1024
        # The app enforces --max-request-bytes too; cheroot must as well, because after
        # an early answer (say, 400 for a wrong method) it drains the unread body into
        # memory to keep the connection: unbounded, that is a memory exhaustion.
        self.server.max_request_body_size = config.max_request_bytes
        self._reload = reload
        self._wake = threading.Event()
        self._stopping = False
        self._reloading = False
        self._thread: threading.Thread | None = None
        self._prepared = False

    def start(self) -> str:
        """Install the signal handlers, bind, start serving in a background thread, and
        return the URL the server listens on."""
        # Handlers first: cheroot starts its (non-daemon) worker threads in prepare(),
        # and a Ctrl-C arriving as a KeyboardInterrupt after that would leave them
        # running and the process hanging.
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, self._on_hup)
        if self.config.tls:
            try:
                self.server.ssl_adapter = BuiltinSSLAdapter(
                    self.config.tls_cert, self.config.tls_key
                )
            except (OSError, ssl.SSLError) as e:
                raise ConfigError(
                    f"cannot load --tls-cert {self.config.tls_cert!r} / --tls-key "
                    f"{self.config.tls_key!r}: {e}"
                ) from None
        try:
            self._prepared = True
            self.server.prepare()
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {self.config.listen}: {e.strerror or e}; choose another "
                "--listen address or stop whatever uses it"
            ) from None
        self._thread = threading.Thread(target=self.server.serve, name="setec-http", daemon=True)
        self._thread.start()
        host, port = self.server.bind_addr[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{'https' if self.config.tls else 'http'}://{host}:{port}"

    def _on_stop(self, signum: int, frame: object) -> None:
        self._stopping = True
        self._wake.set()

    def _on_hup(self, signum: int, frame: object) -> None:
        self._reloading = True
        self._wake.set()

    def wait(self) -> bool:
        """Serve until a stop signal, then stop accepting and let in-flight requests
        finish (up to :data:`SHUTDOWN_TIMEOUT` seconds).

        :returns: True after a requested stop, False if the HTTP server died.
        """
        healthy = True
        while True:
            self._wake.wait(0.5)
            self._wake.clear()
            if self._stopping:
                log.info("stop signal received, stopping")
                break
            if self._reloading:
                self._reloading = False
                self._do_reload()
            if self._thread is not None and not self._thread.is_alive():
                log.error("the HTTP server stopped unexpectedly")
                healthy = False
                break
        self.close()
        if self._thread is not None:
            self._thread.join(SHUTDOWN_TIMEOUT)
            if self._thread.is_alive():
                log.warning("requests still running after %d s were abandoned", SHUTDOWN_TIMEOUT)
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
        self._wake.set()

    def close(self) -> None:
        """Stop the HTTP server and its worker threads, if they were started. Safe to
        call more than once."""
        if self._prepared:
            self._prepared = False
            self.server.stop()
