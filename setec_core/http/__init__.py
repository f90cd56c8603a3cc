"""The HTTP front of the setec server: a werkzeug WSGI app over a :class:`Database`.

Importing this package imports werkzeug and prometheus-client; ``import setec_core``
alone does not.

>>> from setec_core.http import make_app
>>> app = make_app(db, authorizer)          # a WSGI app (see make_app for the server)
>>> app.wsgi_app = Middleware(app.wsgi_app)  # wrap it, as in Flask

Any WSGI server can serve it that drops request header names containing ``_``, as
setec's front (:mod:`setec_core.http.front`) does: WSGI spells ``Tailscale_User_Login``
like ``Tailscale-User-Login``, so under a server that keeps them a client could forge
the identity headers a proxy strips only in their hyphenated spelling.

The app (:mod:`setec_core.http.app`) routes by one table of
:class:`~setec_core.http.route.Route` records built from :data:`setec_core.wire.ENDPOINTS`
and answers with :class:`~setec_core.http.route.Answer` records, not werkzeug's
``Response`` (docs/architecture.md, "The HTTP layer", says why).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from setec_core.authz import Authorizer
from setec_core.database import Database
from setec_core.http.app import DEFAULT_MAX_REQUEST_BYTES, SetecApp
from setec_core.http.metrics import ServerMetrics
from setec_core.http.status import STATUS_TABLE, status_for
from setec_core.watch import DEFAULT_MAX_WATCHES, DEFAULT_TIMEOUT_CAP

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "STATUS_TABLE",
    "ServerMetrics",
    "SetecApp",
    "make_app",
    "status_for",
]


def make_app(
    db: Database,
    authorizer: Authorizer,
    *,
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    tls: bool = False,
    allowed_hosts: Iterable[str] = (),
    access_lines: Callable[[str], None] | None = None,
    max_watches: int = DEFAULT_MAX_WATCHES,
    watch_timeout_cap: float = DEFAULT_TIMEOUT_CAP,
) -> SetecApp:
    """Return the WSGI app serving ``db`` to callers identified by ``authorizer``.

    Serve it with :class:`~setec_core.http.front.Front`, or with another WSGI server
    only if that server drops request header names containing ``_`` (as the front
    does): in the environ ``Tailscale_User_Login`` reads as ``Tailscale-User-Login``,
    so a client could forge the identity headers a proxy such as ``tailscale serve``
    strips only in their hyphenated spelling (:func:`~setec_core.http.app.peer_of`).

    :param max_request_bytes: put and create-version bodies above this get 413.
    :param tls: set when serving over TLS, to send Strict-Transport-Security.
    :param allowed_hosts: names the ``Host`` header may carry besides IP literals and
        ``localhost`` (:mod:`setec_core.http.hosts`).
    :param access_lines: where access-log lines go, instead of the
        ``setec.http.access`` logger.
    :param max_watches: watches (``/api/watch``) held at once; more get 503.
    :param watch_timeout_cap: the longest a watch waits, in seconds.
    """
    return SetecApp(
        db,
        authorizer,
        max_request_bytes=max_request_bytes,
        tls=tls,
        allowed_hosts=allowed_hosts,
        access_lines=access_lines,
        max_watches=max_watches,
        watch_timeout_cap=watch_timeout_cap,
    )
