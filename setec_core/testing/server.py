"""A real setec server on a loopback port, in this process (Go setectest's ``NewServer``).

>>> with new_server() as server:            # an in-memory database, a superuser caller
...     client = server.client()
...     client.put("app/key", b"s3cret")

It speaks real HTTP through the same front ``setec-serve`` uses
(:mod:`setec_core.http.front`), so it exercises the code a program meets in production:
the Client, its errors, the Store's poller. Imports werkzeug and httptools;
``setec_core.testing`` alone does not.
"""

from __future__ import annotations

from typing import Any

from setec_core.authz import Authorizer, Caller
from setec_core.database import Database
from setec_core.http import make_app
from setec_core.http.front import Front, Listener
from setec_core.testing.fakes import FixedAuthorizer


class LocalServer:
    """A setec server serving ``db`` on ``127.0.0.1`` at a free port.

    :param db: the database to serve; a new in-memory one (closed with the server) by
        default.
    :param authorizer: who the callers are; by default every request is ``caller``.
    :param caller: the caller of every request when no ``authorizer`` is given
        (:data:`~setec_core.testing.SUPERUSER` by default).
    :param threads: app threads (requests the app runs at once).
    :param app_options: passed to :func:`~setec_core.http.make_app`
        (``watch_timeout_cap``, ``max_watches``, ...).

    :attr:`url` is the base URL to give a :class:`~setec_core.client.Client`.
    """

    def __init__(
        self,
        db: Database | None = None,
        *,
        authorizer: Authorizer | None = None,
        caller: Caller | None = None,
        threads: int = 8,
        app_options: dict[str, Any] | None = None,
    ) -> None:
        from setec_core.testing import SUPERUSER, new_database

        self._owns_db = db is None
        self.db = db if db is not None else new_database()
        self.authorizer = (
            authorizer if authorizer is not None else FixedAuthorizer(caller or SUPERUSER)
        )
        self.app = make_app(self.db, self.authorizer, **(app_options or {}))
        self._front = Front(self.app, [Listener("127.0.0.1", 0)], threads=threads)
        self.url = self._front.start()[0]

    def client(self, **options: Any) -> Any:
        """A :class:`~setec_core.client.Client` of this server (``options`` are passed
        to it: ``token``, ``session``, ``timeout``)."""
        from setec_core.client import Client

        return Client(self.url, **options)

    def close(self) -> None:
        """Stop serving (and close the database if this server opened it)."""
        self._front.stop()
        if self._owns_db:
            self.db.close()

    def __enter__(self) -> LocalServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LocalServer({self.url!r})"


def new_server(
    db: Database | None = None,
    *,
    authorizer: Authorizer | None = None,
    caller: Caller | None = None,
    threads: int = 8,
    app_options: dict[str, Any] | None = None,
) -> LocalServer:
    """Start a :class:`LocalServer`; use it as a context manager or close it."""
    return LocalServer(
        db, authorizer=authorizer, caller=caller, threads=threads, app_options=app_options
    )
