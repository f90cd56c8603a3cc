"""Long polls that another thread can cut short: :class:`Cancellation`.

A watch (docs/api.md §9.2) parks a request on the server for up to a minute. requests
has no way to abort a request in flight, so a program closing its Store would wait for
the server's answer. Instead, the Client's own session sends requests through a
:class:`TrackingAdapter`: a request made while a :class:`Cancellation` is *attached*
to the calling thread records the connection it goes out on, and
:meth:`Cancellation.cancel` shuts that connection's socket down, which ends the
blocked read at once (the server sees the client go and drops the watch).

A session of your own (``Client(session=...)``) has its own adapters, which record
nothing: a cancelled watch then runs on to its timeout in the background, its answer
ignored.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_current = threading.local()


class Cancellation:
    """Lets one thread cut short the long polls another thread makes while it is
    attached (:meth:`attached`). Once cancelled, it stays cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._connections: list[HTTPConnection] = []

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled

    def cancel(self) -> None:
        """Shut down the connection of any request in flight under this cancellation,
        and make later ones fail before they are sent."""
        with self._lock:
            self._cancelled = True
            connections, self._connections = self._connections, []
        for connection in connections:
            _shut(connection)

    @contextmanager
    def attached(self) -> Iterator[None]:
        """Within this block, requests the calling thread sends through a
        :class:`TrackingAdapter` can be cancelled."""
        previous = getattr(_current, "cancellation", None)
        _current.cancellation = self
        try:
            yield
        finally:
            _current.cancellation = previous
            with self._lock:
                self._connections.clear()

    def _track(self, connection: HTTPConnection) -> None:
        with self._lock:
            if not self._cancelled:
                self._connections.append(connection)
                return
        _shut(connection)


def _shut(connection: HTTPConnection) -> None:
    sock = connection.sock
    if sock is None:
        return
    # Already closed by the other side or by urllib3: nothing to end.
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


class _Tracking:
    """Mixed into urllib3's connections: each request records its connection with the
    calling thread's attached Cancellation, if any."""

    def request(self, *args: Any, **kwargs: Any) -> None:
        cancellation: Cancellation | None = getattr(_current, "cancellation", None)
        if cancellation is not None:
            cancellation._track(self)  # type: ignore[arg-type]
        super().request(*args, **kwargs)  # type: ignore[misc]
        # Cancelled while connecting (no socket to shut down yet): end it now, before
        # the wait for the answer.
        if cancellation is not None and cancellation.cancelled:
            _shut(self)  # type: ignore[arg-type]


class _TrackingHTTPConnection(_Tracking, HTTPConnection):
    pass


class _TrackingHTTPSConnection(_Tracking, HTTPSConnection):
    pass


class _TrackingHTTPPool(HTTPConnectionPool):
    ConnectionCls = _TrackingHTTPConnection


class _TrackingHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _TrackingHTTPSConnection


class TrackingAdapter(HTTPAdapter):
    """requests' :class:`~requests.adapters.HTTPAdapter`, whose direct connections a
    :class:`Cancellation` can shut down (through a proxy they are not tracked)."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        """Build the pool manager as requests does, with tracking connection pools."""
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _TrackingHTTPPool,
            "https": _TrackingHTTPSPool,
        }
