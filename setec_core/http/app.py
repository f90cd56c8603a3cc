"""The WSGI application: Go setec's HTTP API (docs/api.md) over a :class:`Database`.

The shape of werkzeug's Shortly example: one table of :class:`Route` records (path to
handler), :meth:`SetecApp.dispatch_request` that makes the checks every route shares,
handlers of a few lines that call the Database, and
:meth:`SetecApp.wsgi_app` apart from ``__call__`` so that middleware can wrap it
(``app.wsgi_app = Middleware(app.wsgi_app)``, as in Flask). The API routes come from
:data:`setec_core.wire.ENDPOINTS`, the description of each endpoint the client uses too;
each endpoint's operation is the method ``on_<name>`` (``on_create_version``), which
takes the caller and the decoded request and returns the result to encode, and the app
refuses to start without one. The other pages are ``page_<name>`` methods, which take
the :class:`~setec_core.http.route.RequestContext` and return the whole answer.
The records are in :mod:`setec_core.http.route`; the app answers with
:class:`~setec_core.http.route.Answer`, not werkzeug's ``Response`` (docs/architecture.md,
"The HTTP layer", says why).

Every ``/api/*`` request goes through the pipeline of docs/api.md §2 in order, and the
first failure decides the answer:

0. the ``Host`` header must name this server (421; :mod:`setec_core.http.hosts`, the
defence against DNS rebinding, for every route);
1. count the call; 2. the method must be POST (400); 3. the body must be JSON, by
``Content-Type`` (400; parameters such as ``charset`` are accepted); 4. the header
``Sec-X-Tailscale-No-Browsers: setec`` must be present (403), because browsers cannot
set ``Sec-`` headers from script; 5. the authorizer identifies the caller from a
:class:`~setec_core.peer.Peer` (403 or 503); 6. the body, at most ``max_request_bytes``
for put and create-version, what 100 names take for a batch get, and
:data:`SMALL_BODY_BYTES` for the rest (413), is decoded
with Go's JSON rules (400); 7. the Database does the work, auditing it, and
:mod:`setec_core.http.status` maps its errors; 8. the result is encoded as compact JSON.

Besides the API: the dashboard at ``GET /`` and its stylesheet, ``/healthz``,
``/readyz`` and ``/livez`` (:mod:`setec_core.http.health`) and ``/metrics``, each
answering ``HEAD`` as ``GET`` without the body. Any other path is 404. Every
response carries the browser security headers of Go setec (and HSTS when served over
TLS).
"""

from __future__ import annotations

import functools
import io
import logging
import os
import random
import secrets
import time
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any

from werkzeug.http import parse_options_header

from setec_core import wire
from setec_core.authz import Authorizer, Caller
from setec_core.database import Database
from setec_core.encoding import json_string, json_text
from setec_core.errors import SetecError, VersionConflict
from setec_core.http import dashboard
from setec_core.http.body import read_body
from setec_core.http.health import HealthPages
from setec_core.http.hosts import HostCheck
from setec_core.http.metrics import ServerMetrics
from setec_core.http.pending import PARK_ANSWERS, PENDING_ANSWER, ParkedAnswer, Response
from setec_core.http.route import (
    JSON,
    POST,
    TEXT,
    Answer,
    Refused,
    RequestContext,
    Route,
    error_answer,
)
from setec_core.http.status import log_bug, one_line, status_for, too_large
from setec_core.model import DeletedSecret, SecretInfo, SecretValue
from setec_core.peer import Peer, PeerHeaders
from setec_core.watch import (
    DEFAULT_MAX_WATCHES,
    DEFAULT_TIMEOUT_CAP,
    TooManyWatchesError,
    Watch,
    Watches,
)
from setec_core.wire.conflict import encode_conflict
from setec_core.wire.endpoint import WATCH
from setec_core.wire.extensions import offered

log = logging.getLogger("setec.http")
access_log = logging.getLogger("setec.http.access")

DEFAULT_MAX_REQUEST_BYTES = 1 << 20
#: The largest body of the API methods that carry no value (get, info, list, activate,
#: delete, delete-version): a name is at most 1,024 bytes, which JSON escapes to at most
#: 6 KiB. A tight cap keeps anyone from making the server decode a megabyte of JSON
#: just to learn it may not read a secret.
SMALL_BODY_BYTES = 16 * 1024
#: Set (true) in the environ by a server that sends an answer only once the
#: :class:`~setec_core.audit.Deferral` the app leaves under :data:`AUDIT_DEFERRAL` says
#: its audit entries are durable, and a 500 instead if they cannot be made so (the HTTP
#: front does). Then the endpoints that only read (list, get, info) leave their audit
#: entries to be made durable after the app returns. Under any other server every
#: audit entry is durable before the app returns, as always.
DEFER_AUDIT = "setec.defer_audit"
AUDIT_DEFERRAL = "setec.audit_deferral"
#: Set to ``"unix"`` in the environ by a server whose connection is a unix socket (the
#: HTTP front does); the :class:`~setec_core.peer.Peer` says so to the authorizer.
TRANSPORT = "setec.transport"
#: Secret names in access-log lines are cut to this many characters.
LOGGED_NAME_CHARS = 256

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; "
        "block-all-mixed-content; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
HSTS = "max-age=63072000; includeSubDomains"

#: "200 OK" and friends, computed once.
STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}

# Request ids only tell requests apart in logs (they are sent to the client too, so
# they must not count requests): 64 bits from a generator seeded from the system's
# randomness, without a system call per request as secrets.token_hex makes.
_ids = random.Random(secrets.token_bytes(32))  # noqa: S311 - an identifier, not a secret
# A forked process (a worker of setec-serve --workers) would draw the same ids as its
# parent and its siblings; as the random module does for its own generator, reseed.
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.token_bytes(32)))


def new_request_id() -> str:
    """Return a new request id: 16 hex digits."""
    return f"{_ids.getrandbits(64):016x}"


class SetecApp:
    """The WSGI app serving ``db`` to callers identified by ``authorizer``.

    :param db: the open database; the app does not close it.
    :param authorizer: identifies each request's caller.
    :param max_request_bytes: larger request bodies get 413.
    :param tls: whether the app is served over TLS (adds Strict-Transport-Security).
    :param metrics: the metrics to update; a fresh :class:`ServerMetrics` by default.
    :param allowed_hosts: names the ``Host`` header may carry besides IP literals and
        ``localhost`` (see :mod:`setec_core.http.hosts`).
    :param access_lines: where access-log lines go (one JSON object each, as text),
        instead of INFO records of the ``setec.http.access`` logger (``setec-serve``
        batches them to stderr, which costs a fraction of a log record).
    """

    def __init__(
        self,
        db: Database,
        authorizer: Authorizer,
        *,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        tls: bool = False,
        metrics: ServerMetrics | None = None,
        allowed_hosts: Iterable[str] = (),
        access_lines: Callable[[str], None] | None = None,
        max_watches: int = DEFAULT_MAX_WATCHES,
        watch_timeout_cap: float = DEFAULT_TIMEOUT_CAP,
    ) -> None:
        self.db = db
        self.authorizer = authorizer
        self.max_request_bytes = max_request_bytes
        self.hosts = HostCheck(allowed_hosts)
        self._access_lines = access_lines
        self.metrics = metrics if metrics is not None else ServerMetrics(db)
        #: This process's watches (docs/api.md §9.2).
        self.watches = Watches(db, max_watches=max_watches, timeout_cap=watch_timeout_cap)
        self.metrics.watch_watches(self.watches)
        self.health = HealthPages(db)
        self._security = list(SECURITY_HEADERS.items())
        if tls:
            self._security.append(("Strict-Transport-Security", HSTS))
        self._small_body = small = min(SMALL_BODY_BYTES, max_request_bytes)
        pages = [
            Route("/", self.page_dashboard, small),
            Route("/static/style.css", self.page_style, small),
            Route("/healthz", self.page_healthz, small),
            Route("/readyz", self.page_readyz, small),
            Route("/livez", self.page_livez, small),
            Route("/metrics", self.page_metrics, small),
        ]
        #: What /api/extensions answers: fixed for the app's life.
        self.extensions = wire.Extensions(offered(wire.ENDPOINTS))
        #: path -> route: every path the app serves.
        self.url_map: dict[str, Route] = {
            r.path: r for r in (*pages, *map(self._api_route, wire.ENDPOINTS))
        }

    def _api_route(self, endpoint: wire.Endpoint[Any, Any]) -> Route:
        # Each endpoint's operation is the method on_<name> (on_create_version, ...);
        # a missing one stops the app here, at start-up.
        operation = getattr(self, "on_" + endpoint.name.replace("-", "_"))
        return Route(
            endpoint.path,
            functools.partial(self._serve_api, endpoint, operation),
            self._body_limit_of(endpoint),
            methods=POST,
            method_refusal="only POST requests allowed",
            endpoint=endpoint,
        )

    def _body_limit_of(self, endpoint: wire.Endpoint[Any, Any]) -> int:
        # A value (or a watch's many names): as large as the operator allows. A batch
        # get: what its most names take at their longest, within that. Anything else:
        # a few kilobytes.
        if endpoint.carries_value or endpoint.many_names:
            return self.max_request_bytes
        if endpoint.body_bytes is not None:
            return max(self._small_body, min(endpoint.body_bytes, self.max_request_bytes))
        return self._small_body

    # --- WSGI ------------------------------------------------------------------------

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return self.wsgi_app(environ, start_response)

    def wsgi_app(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        """Answer one request (the WSGI entry point, which ``__call__`` calls: wrap this
        one with middleware)."""
        started = time.perf_counter()
        # Upper-cased as werkzeug's Request did: a server may pass "get" as sent.
        method = (environ.get("REQUEST_METHOD") or "GET").upper()
        path = _path(environ)
        ctx = RequestContext(environ, method, path, self.url_map.get(path), new_request_id())
        in_flight = self.metrics.requests_in_flight
        ticket = id(ctx)  # unique among the requests alive now
        in_flight[ticket] = None
        try:
            answer = self.dispatch_request(ctx)
        except Exception as e:  # the last line of defence: no traceback reaches the client
            log_bug(log, f"request {ctx.request_id} to {ctx.label} failed", e)
            answer = error_answer(500, "internal error")
        finally:
            del in_flight[ticket]
        if answer.pending is not None:
            parked = ParkedAnswer(answer.pending, functools.partial(self._watched, ctx, started))
            # The body is decoded: a waiting answer keeps its names, not the body (up to
            # --max-request-bytes), which the environ would hold for the whole wait.
            environ["wsgi.input"] = io.BytesIO()
            if environ.get(PARK_ANSWERS):
                # The server holds the request without this thread and asks for the
                # answer later (setec_core.http.pending); what follows is ignored.
                environ[PENDING_ANSWER] = parked
                start_response(STATUS_LINES[200], [])
                return []
            code, headers, body = parked.wait()
        else:
            code, headers, body = self._respond(ctx, answer, started)
        start_response(STATUS_LINES.get(code, f"{code} Unknown"), headers)
        return [body]

    def _respond(self, ctx: RequestContext, answer: Answer, started: float) -> Response:
        # The status, headers and body of ``answer``, counted and logged.
        code, body = answer.status, answer.body
        headers = [("X-Request-Id", ctx.request_id), *self._security]
        if code != 304:  # a 304 has no body and, per RFC 9110, no content headers
            headers.append(("Content-Type", answer.content_type))
            headers.append(("Content-Length", str(len(body))))
        if answer.headers:
            headers.extend(answer.headers)
        if ctx.method == "HEAD":
            body = b""
        seconds = time.perf_counter() - started
        self.metrics.observe(ctx.label, code, seconds)
        self._log_access(ctx, code, seconds)
        return code, headers, body

    def _watched(self, ctx: RequestContext, started: float, watch: Watch) -> Response:
        # The answer of a watch that waited: what changed by now (nothing on timeout).
        try:
            answer = Answer(200, WATCH.reply.encode(watch.result()))
        except Exception as e:
            answer = self._failure(e, ctx)
        return self._respond(ctx, answer, started)

    def body_limit(self, method: str, path: str) -> int:
        """The largest request body ``path`` accepts (the HTTP front asks before it reads
        a body, and answers 413 above it)."""
        route = self.url_map.get(path)
        return self._small_body if route is None else route.body_limit

    def too_large_reason(self, method: str, path: str) -> str:
        """The reason of a 413 for a body over :meth:`body_limit` (the HTTP front asks
        too): for put and create-version it also says about how large a value fits."""
        route = self.url_map.get(path)
        endpoint = None if route is None else route.endpoint
        value = endpoint is not None and endpoint.carries_value
        return too_large(self.body_limit(method, path), carries_value=value)

    # --- the checks every route shares -----------------------------------------------

    def dispatch_request(self, ctx: RequestContext) -> Answer:
        """Make the checks of docs/api.md §2 that come before the route's own work
        (steps 0 to 4), then run its handler."""
        route = ctx.route
        if route is not None and route.endpoint is not None:
            self.metrics.call(route.path)  # step 1 comes first, before step 0
        refusal = self._check_host(ctx.environ)
        if refusal is not None:
            return refusal
        if route is None:
            return error_answer(404, "not found")
        try:
            if ctx.method not in route.methods:
                raise Refused(400, route.method_refusal)
            if route.endpoint is not None:
                _check_api_request(ctx.environ)
            return route.handler(ctx)
        except Refused as r:
            return error_answer(r.code, r.reason)

    def _check_host(self, environ: dict[str, Any]) -> Answer | None:
        host = environ.get("HTTP_HOST")
        if host is None:
            if environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
                return None
            return error_answer(400, "missing Host header")
        if self.hosts.allows(host):
            return None
        shown = host if len(host) <= 100 else host[:100] + "..."
        return error_answer(
            421,
            f"host {shown!r} is not a name this server answers to; if it is, start the "
            "server with --allowed-host NAME",
        )

    # --- the API (docs/api.md §4) ----------------------------------------------------

    def _serve_api(
        self,
        endpoint: wire.Endpoint[Any, Any],
        operation: Callable[[Caller, Any], Any],
        ctx: RequestContext,
    ) -> Answer:
        """Steps 5 to 8 of docs/api.md §2 for ``endpoint``."""
        environ = ctx.environ
        caller = self._identify(ctx)
        limit = self.body_limit(ctx.method, ctx.path)
        body = read_body(environ, limit, carries_value=endpoint.carries_value)
        try:
            request = wire.decode(body, endpoint.request)
            ctx.secret = getattr(request, "name", None)
            if endpoint.read_only and environ.get(DEFER_AUDIT):
                # The front sends the answer only once its audit entries are durable
                # (DEFER_AUDIT), so this thread need not wait for their fsync.
                with self.db.audit_log.deferred() as deferral:
                    environ[AUDIT_DEFERRAL] = deferral
                    result = operation(caller, request)
            else:
                result = operation(caller, request)
        except Exception as e:
            return self._failure(e, ctx)
        if isinstance(result, Watch):
            return Answer(200, b"", pending=result)
        return Answer(200, endpoint.reply.encode(result))

    def on_list(self, caller: Caller, request: wire.ListRequest) -> list[SecretInfo]:
        """``/api/list`` (docs/api.md §4.1)."""
        return self.db.list(caller)

    def on_get(self, caller: Caller, request: wire.GetRequest) -> SecretValue:
        """``/api/get`` (docs/api.md §4.2): version 0 is the active version, whatever
        UpdateIfChanged says."""
        if request.version == 0:
            return self.db.get(caller, request.name)
        if request.update_if_changed:
            return self.db.get_if_changed(caller, request.name, request.version)
        return self.db.get(caller, request.name, request.version)

    def on_info(self, caller: Caller, request: wire.NameRequest) -> SecretInfo:
        """``/api/info`` (docs/api.md §4.3)."""
        return self.db.info(caller, request.name)

    def on_put(self, caller: Caller, request: wire.PutRequest) -> int:
        """``/api/put`` (docs/api.md §4.4), guarded if the request says so (§9.4)."""
        return self.db.put(
            caller,
            request.name,
            request.value,
            if_active_version=request.if_active_version,
            if_versions=request.if_versions,
        )

    def on_create_version(self, caller: Caller, request: wire.CreateVersionRequest) -> None:
        """``/api/create-version`` (docs/api.md §4.5), guarded if the request says so."""
        self.db.create_version(
            caller,
            request.name,
            request.version,
            request.value,
            if_active_version=request.if_active_version,
            if_versions=request.if_versions,
        )

    def on_activate(self, caller: Caller, request: wire.VersionRequest) -> None:
        """``/api/activate`` (docs/api.md §4.6), guarded if the request says so."""
        self.db.activate(
            caller,
            request.name,
            request.version,
            if_active_version=request.if_active_version,
            if_versions=request.if_versions,
        )

    def on_delete_version(self, caller: Caller, request: wire.VersionRequest) -> None:
        """``/api/delete-version`` (docs/api.md §4.7), guarded if the request says so."""
        self.db.delete_version(
            caller,
            request.name,
            request.version,
            if_active_version=request.if_active_version,
            if_versions=request.if_versions,
        )

    def on_delete(self, caller: Caller, request: wire.DeleteRequest) -> None:
        """``/api/delete`` (docs/api.md §4.8), guarded if the request says so; with
        ``Purge``, for good at once even under a recovery window (docs/api.md,
        "Recoverable delete")."""
        self.db.delete(
            caller,
            request.name,
            if_active_version=request.if_active_version,
            if_versions=request.if_versions,
            purge=bool(request.purge),
        )

    # --- beyond Go setec (docs/api.md §9) ---------------------------------------------

    def on_extensions(self, caller: Caller, request: wire.ExtensionsRequest) -> wire.Extensions:
        """``/api/extensions`` (docs/api.md §9.1): what this server offers beyond Go's
        API. Any identified caller may ask; nothing is audited, as no secret is named."""
        return self.extensions

    def on_watch(self, caller: Caller, request: wire.WatchRequest) -> wire.Changes | Watch:
        """``/api/watch`` (docs/api.md §9.2): what changed already, or a
        :class:`~setec_core.watch.Watch` to wait on. Not audited: it tells no more than
        ``info`` would, and the get that follows a change is audited."""
        return self.watches.start(caller, request)

    def on_get_many(self, caller: Caller, request: wire.GetManyRequest) -> wire.ManyValues:
        """``/api/get-many`` (docs/api.md §9.3): a get of each secret asked, answered
        in the order asked, each with its value or why not (403, 404), and audited as
        that get would be."""
        asked = [(s.name, s.version) for s in request.asked]
        results = self.db.get_many(caller, asked)
        return wire.ManyValues(tuple((n, v, r) for (n, v), r in zip(asked, results, strict=True)))

    def on_undelete(self, caller: Caller, request: wire.NameRequest) -> None:
        """``/api/undelete`` (docs/api.md, "Recoverable delete"): bring back a secret a
        delete put aside; the ``delete`` right grants it."""
        self.db.undelete(caller, request.name)

    def on_list_deleted(self, caller: Caller, request: wire.ListRequest) -> list[DeletedSecret]:
        """``/api/list-deleted`` (docs/api.md, "Recoverable delete"): the secrets
        pending deletion the caller may ``delete``; one audit entry, as list writes."""
        return self.db.list_deleted(caller)

    def on_set_info(self, caller: Caller, request: wire.SetInfoRequest) -> None:
        """``/api/set-info`` (docs/api.md §9.5): set a secret's description; audited
        with its length, never its text."""
        self.db.set_info(caller, request.name, request.description)

    def _identify(self, ctx: RequestContext) -> Caller:
        try:
            caller = self.authorizer.identify(peer_of(ctx.environ))
        except Exception as e:
            code, reason, loud = status_for(e)
            if code >= 500:
                # Whatever went wrong, the client learns only that it was not identified.
                if not isinstance(e, SetecError):
                    log_bug(log, f"cannot identify the caller of request {ctx.request_id}", e)
                elif loud:
                    log.error("cannot identify the caller of request %s: %s", ctx.request_id, e)
                reason = reason if code == 503 else "unable to identify caller"
            elif code == 403:
                # one_line says "error" for an empty text; a refusal says what it is.
                reason = one_line(str(e)) if str(e).strip() else "access denied"
            raise Refused(code, reason) from None
        caller = Caller(caller.principal, caller.rules, ctx.request_id)
        ctx.caller = caller.principal.user or ",".join(caller.principal.tags)
        return caller

    def _failure(self, error: Exception, ctx: RequestContext) -> Answer:
        code, reason, loud = status_for(error)
        if code == 304:
            # Not changed: an empty body. Go sends a JSON content type too; we follow RFC
            # 9110 and send none, and Go clients only read the status.
            return Answer(304, b"")
        if isinstance(error, TooManyWatchesError):
            # Not an error to log: a full server says so and when to come back.
            return Answer(
                503,
                (one_line(str(error)) + "\n").encode(),
                TEXT,
                (("Retry-After", str(error.retry_after)),),
            )
        if isinstance(error, VersionConflict):
            # A failed guard (docs/api.md §9.4): JSON, so that the caller can read the
            # state it now has to reckon with.
            return Answer(code, encode_conflict(reason, error.current))
        if not isinstance(error, SetecError):
            log_bug(log, f"request {ctx.request_id} failed", error)
        elif loud:
            # Our own messages name secrets, never values.
            log.error(
                "request %s failed: %s: %s",
                ctx.request_id,
                type(error).__name__,
                one_line(str(error)),
            )
        return error_answer(code, reason)

    # --- the other pages -------------------------------------------------------------

    def page_dashboard(self, ctx: RequestContext) -> Answer:
        """The dashboard (docs/api.md §1.4): the caller's secrets, never a value."""
        caller = self._identify(ctx)
        try:
            infos = self.db.list(caller)
        except Exception as e:
            return self._failure(e, ctx)
        who = caller.principal.user or ", ".join(caller.principal.tags) or "an unnamed caller"
        return Answer(200, dashboard.render(infos, who), "text/html; charset=utf-8")

    def page_style(self, ctx: RequestContext) -> Answer:
        """The dashboard's stylesheet."""
        return Answer(200, dashboard.STYLE_CSS, "text/css; charset=utf-8")

    def page_healthz(self, ctx: RequestContext) -> Answer:
        """``ok``; 503 once the audit log has failed or the store no longer agrees (the
        server refuses everything); 200 with a ``degraded`` line while the store cannot
        be read (reads are served from memory, writes get 503; docs/replicas.md)."""
        return self.health.healthz()

    def page_readyz(self, ctx: RequestContext) -> Answer:
        """Whether to send requests here (Kubernetes' readiness): as ``/healthz``."""
        return self.health.readyz()

    def page_livez(self, ctx: RequestContext) -> Answer:
        """Whether a restart would help (Kubernetes' liveness): 503 as ``/healthz``
        when it would, else ``ok``, even while degraded."""
        return self.health.livez()

    def page_metrics(self, ctx: RequestContext) -> Answer:
        """The Prometheus metrics (:class:`ServerMetrics`)."""
        return Answer(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    # --- helpers ---------------------------------------------------------------------

    def _log_access(self, ctx: RequestContext, code: int, seconds: float) -> None:
        sink = self._access_lines
        if sink is None and not access_log.isEnabledFor(logging.INFO):
            return
        # One JSON object per request, built by hand: only the method, the peer, the
        # caller and the secret's name come from outside and need JSON's escaping
        # (json.dumps of a whole dict per request cost more than the database get).
        # Names of secrets are logged (they are not secret); values never are: the
        # body is not read here.
        line = (
            f'{{"request": "{ctx.request_id}", "method": {json_string(ctx.method)}, '
            f'"path": "{ctx.label}", "status": {code}, "ms": {seconds * 1000:.3f}, '
            f'"peer": {json_text(ctx.environ.get("REMOTE_ADDR"))}'
        )
        if ctx.caller is not None:
            line += f', "caller": {json_string(ctx.caller)}'
        name = ctx.secret
        if name:
            # A name can be 1,024 bytes; the log line need not be.
            if len(name) > LOGGED_NAME_CHARS:
                name = name[:LOGGED_NAME_CHARS] + "…"
            line += f', "secret": {json_string(name)}'
        if sink is not None:
            sink(line + "}")
        else:
            access_log.info("%s}", line)


def _path(environ: dict[str, Any]) -> str:
    """The request's path as werkzeug's ``Request.path`` has it: the latin-1 text of
    WSGI read back as UTF-8 (bad bytes replaced), leading slashes collapsed to one."""
    raw = environ.get("PATH_INFO") or ""
    if not raw.isascii():
        raw = raw.encode("latin-1").decode("utf-8", "replace")
    return "/" + raw.lstrip("/")


def peer_of(environ: dict[str, Any]) -> Peer:
    """Return the :class:`~setec_core.peer.Peer` of the request ``environ`` describes,
    as the app gives it to the authorizer: ``REMOTE_ADDR`` and ``REMOTE_PORT``, TLS from
    the URL scheme, a unix socket from :data:`TRANSPORT`, and a read-only view of its
    ``HTTP_`` keys (and ``CONTENT_TYPE``, ``CONTENT_LENGTH``) as headers.

    The environ cannot tell ``Tailscale_User_Login`` from ``Tailscale-User-Login`` (both
    are ``HTTP_TAILSCALE_USER_LOGIN``), so the server in front must drop header names
    containing ``_``, as setec's front does; else a client could forge the identity
    headers a proxy strips only in their hyphenated spelling."""
    port = str(environ.get("REMOTE_PORT") or "")
    return Peer(
        environ.get("REMOTE_ADDR") or "",
        int(port) if port.isascii() and port.isdigit() else None,
        environ.get(TRANSPORT) == "unix",
        environ.get("wsgi.url_scheme") == "https",
        PeerHeaders(environ),
    )


def _check_api_request(environ: dict[str, Any]) -> None:
    """Steps 3 and 4 of docs/api.md §2: a JSON body and the browser guard header."""
    # The exact value Go requires is the common case; werkzeug parses the rest
    # (parameters such as charset are accepted, the type matched in any case).
    content_type = environ.get("CONTENT_TYPE")
    if content_type != JSON and parse_options_header(content_type)[0].lower() != JSON:
        raise Refused(400, "request body must be json")
    if environ.get("HTTP_SEC_X_TAILSCALE_NO_BROWSERS") != "setec":
        raise Refused(403, "access denied")
