"""The records the app routes and answers with: :class:`Route`, :class:`RequestContext`
and :class:`Answer`, and :class:`Refused`, which ends a request early."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from setec_core.http.status import one_line
from setec_core.wire import Endpoint

if TYPE_CHECKING:
    from setec_core.watch import Watch

JSON = "application/json"
TEXT = "text/plain; charset=utf-8"
#: The metric label and access-log path of every path the app does not serve.
OTHER = "other"

POST = frozenset({"POST"})
GET_OR_HEAD = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class Answer:
    """What the app answers one request: status, body and the body's content type.

    Deliberately not werkzeug's ``Response``: the app writes the status line and
    headers itself, the security headers precomputed, because building a werkzeug
    ``Response`` and its headers cost more per request than the database get it
    answers (docs/architecture.md, "The HTTP layer"). Its ``repr`` leaves out the body,
    which holds the value of a get.

    :param headers: headers to send besides those every answer gets (the health pages'
        ``Setec-Version``); none by default.
    :param pending: a :class:`~setec_core.watch.Watch` to wait for, whose result is the
        answer (:mod:`setec_core.http.pending`); then ``status`` and ``body`` are
        placeholders.
    """

    status: int
    body: bytes = field(repr=False)
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    pending: Watch | None = None


def error_answer(code: int, reason: str) -> Answer:
    """Return Go's ``http.Error``: the reason on one line and a newline, as plain text."""
    return Answer(code, (one_line(reason) + "\n").encode(), TEXT)


class Refused(Exception):  # noqa: N818 - control flow inside the app, never escapes it
    """Ends a request early with a status and a one-line reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(slots=True)
class RequestContext:
    """One request as the app handles it: what the checks, the handlers and the access
    log share.

    :param environ: the WSGI environ; left out of the ``repr``, as it holds the
        request's headers (credentials among them).
    :param method: the request method, upper-cased as werkzeug's ``Request`` has it (a
        WSGI server may pass ``get`` as the client sent it).
    :param path: the path, decoded as werkzeug decodes it (UTF-8, leading slashes
        collapsed to one).
    :param route: the route serving :attr:`path`, or ``None`` (404).
    :param request_id: the id sent back as ``X-Request-Id`` and written to the logs
        and the audit entries.
    :param caller: the caller the authorizer identified, as the access log names it.
    :param secret: the name of the secret the request names, for the access log.
    """

    environ: dict[str, Any] = field(repr=False)
    method: str
    path: str
    route: Route | None
    request_id: str
    caller: str | None = None
    secret: str | None = None

    @property
    def label(self) -> str:
        """The path as metrics and the access log name it: the route's, or ``other``."""
        return OTHER if self.route is None else self.route.path


@dataclass(frozen=True, slots=True)
class Route:
    """One path the app serves.

    :param path: the exact path (no patterns: the API has none).
    :param handler: makes the answer once the checks every route shares have passed
        (:meth:`~setec_core.http.app.SetecApp.dispatch_request`).
    :param body_limit: the largest request body it takes (413 above).
    :param methods: the methods it takes; any other gets 400 with :attr:`method_refusal`.
    :param method_refusal: the reason of that 400 (Go's texts differ by route).
    :param endpoint: the API endpoint served here, or ``None`` for the other pages. An
        API route is counted before any check, and takes only JSON bodies carrying the
        browser guard header.
    """

    path: str
    handler: Callable[[RequestContext], Answer]
    body_limit: int
    methods: frozenset[str] = GET_OR_HEAD
    method_refusal: str = "invalid method"
    endpoint: Endpoint[Any, Any] | None = None
