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
from typing import Any

from cheroot import wsgi
from cheroot.ssl.builtin import BuiltinSSLAdapter

from setec_cli.config import ServerConfig
from setec_core.errors import ConfigError

log = logging.getLogger("setec.serve")

#: Seconds in-flight requests get to finish after SIGTERM before threads are abandoned.
SHUTDOWN_TIMEOUT = 10


class Runner:
    """Serves ``app`` as ``config`` says until SIGTERM or SIGINT.

    :raises ConfigError: from :meth:`start` if the address cannot be bound or the TLS
        files cannot be loaded.
    """

    def __init__(self, app: Any, config: ServerConfig) -> None:
        self.config = config
        self.server = wsgi.Server(
            (config.host, config.port),
            app,
            numthreads=config.threads,
            server_name="setec",
            timeout=max(1, round(config.read_timeout)),
            shutdown_timeout=SHUTDOWN_TIMEOUT,
        )
        # Request headers bigger than this get 413 from cheroot; the body limit is the
        # app's (--max-request-bytes).
        self.server.max_request_header_size = 64 * 1024
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> str:
        """Bind, start serving in a background thread, install the signal handlers,
        and return the URL the server listens on."""
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
            self.server.prepare()
        except OSError as e:
            raise ConfigError(
                f"cannot listen on {self.config.listen}: {e.strerror or e}; choose another "
                "--listen address or stop whatever uses it"
            ) from None
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self._thread = threading.Thread(target=self.server.serve, name="setec-http", daemon=True)
        self._thread.start()
        host, port = self.server.bind_addr[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"{'https' if self.config.tls else 'http'}://{host}:{port}"

    def _on_signal(self, signum: int, frame: object) -> None:
        log.info("%s received, stopping", signal.Signals(signum).name)
        self._stop.set()

    def wait(self) -> None:
        """Block until a stop signal, then stop accepting and let in-flight requests
        finish (up to :data:`SHUTDOWN_TIMEOUT` seconds)."""
        while not self._stop.wait(0.5):
            if self._thread is not None and not self._thread.is_alive():
                log.error("the HTTP server stopped unexpectedly")
                break
        self.server.stop()
        if self._thread is not None:
            self._thread.join(SHUTDOWN_TIMEOUT)

    def stop(self) -> None:
        """Ask :meth:`wait` to return (as SIGTERM does)."""
        self._stop.set()
