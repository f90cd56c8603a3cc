"""The WSGI application: Go setec's HTTP API (docs/api.md) over a :class:`Database`.

Every ``/api/*`` request goes through the pipeline of docs/api.md §2 in order, and the
first failure decides the answer:

0. the ``Host`` header must name this server (421; :mod:`setec_core.http.hosts`, the
defence against DNS rebinding, for every route);
1. count the call; 2. the method must be POST (400); 3. the body must be JSON, by
``Content-Type`` (400; parameters such as ``charset`` are accepted); 4. the header
``Sec-X-Tailscale-No-Browsers: setec`` must be present (403), because browsers cannot
set ``Sec-`` headers from script; 5. the authorizer identifies the caller (403 or 503);
6. the body, at most ``max_request_bytes`` for put and create-version and
:data:`SMALL_BODY_BYTES` for the rest (413), is decoded with Go's JSON rules (400);
7. the Database does the work, auditing it, and :mod:`setec_core.http.status` maps its
errors; 8. the result is encoded as compact JSON.

Besides the API: the dashboard at ``GET /`` and its stylesheet, ``/healthz`` and
``/metrics``, each answering ``HEAD`` as ``GET`` without the body. Any other path is
404. Every response carries the browser security headers of Go setec (and HSTS when
served over TLS).
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from werkzeug.wrappers import Request

from setec_core import wire
from setec_core.authz import Authorizer, Caller
from setec_core.database import Database
from setec_core.encoding import json_string, json_text
from setec_core.errors import SetecError
from setec_core.http import dashboard
from setec_core.http.hosts import HostCheck
from setec_core.http.metrics import ServerMetrics
from setec_core.http.status import log_bug, one_line, status_for, too_large

log = logging.getLogger("setec.http")
access_log = logging.getLogger("setec.http.access")

DEFAULT_MAX_REQUEST_BYTES = 1 << 20
#: The largest body of the API methods that carry no value (get, info, list, activate,
#: delete, delete-version): a name is at most 1,024 bytes, which JSON escapes to at most
#: 6 KiB. A tight cap keeps anyone from making the server decode a megabyte of JSON
#: just to learn it may not read a secret.
SMALL_BODY_BYTES = 16 * 1024
#: The API methods whose bodies carry a secret value, up to ``max_request_bytes``.
VALUE_ROUTES = frozenset({"/api/put", "/api/create-version"})
#: The API methods that only read: their audit entries may be made durable after the
#: app returns, by a server that holds the answer back until they are (DEFER_AUDIT).
READ_ROUTES = frozenset({"/api/list", "/api/get", "/api/info"})
#: Set (true) in the environ by a server that sends an answer only once the
#: :class:`~setec_core.audit.Deferral` the app leaves under :data:`AUDIT_DEFERRAL` says
#: its audit entries are durable, and a 500 instead if they cannot be made so (the HTTP
#: front does). Under any other server every audit entry is durable before the app
#: returns, as always.
DEFER_AUDIT = "setec.defer_audit"
AUDIT_DEFERRAL = "setec.audit_deferral"
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

Handler = Callable[[Database, Caller, Any], object]


def _get(db: Database, caller: Caller, req: wire.GetRequest) -> object:
    # docs/api.md §4.2: version 0 is the active version, whatever UpdateIfChanged says.
    if req.version == 0:
        return db.get(caller, req.name)
    if req.update_if_changed:
        return db.get_if_changed(caller, req.name, req.version)
    return db.get(caller, req.name, req.version)


#: route -> (request type, operation). Void operations return None, encoded as ``{}``.
API: dict[str, tuple[type[Any], Handler]] = {
    "/api/list": (wire.ListRequest, lambda db, c, r: db.list(c)),
    "/api/get": (wire.GetRequest, _get),
    "/api/info": (wire.NameRequest, lambda db, c, r: db.info(c, r.name)),
    "/api/put": (wire.PutRequest, lambda db, c, r: db.put(c, r.name, r.value)),
    "/api/create-version": (
        wire.CreateVersionRequest,
        lambda db, c, r: db.create_version(c, r.name, r.version, r.value),
    ),
    "/api/activate": (wire.VersionRequest, lambda db, c, r: db.activate(c, r.name, r.version)),
    "/api/delete-version": (
        wire.VersionRequest,
        lambda db, c, r: db.delete_version(c, r.name, r.version),
    ),
    "/api/delete": (wire.NameRequest, lambda db, c, r: db.delete(c, r.name)),
}


@dataclass(frozen=True, slots=True)
class Response:
    """What the app answers: status, body and its content type. The app turns it into
    WSGI headers itself, with the security headers precomputed, because building
    werkzeug Response headers cost more per request than the database get."""

    status_code: int
    body: bytes
    content_type: str = "application/json"


#: "200 OK" and friends, computed once.
STATUS_LINES = {s.value: f"{s.value} {s.phrase}" for s in HTTPStatus}

TEXT = "text/plain; charset=utf-8"

# Request ids only tell requests apart in logs (they are sent to the client too, so
# they must not count requests): 64 bits from a generator seeded from the system's
# randomness, without a system call per request as secrets.token_hex makes.
_ids = random.Random(secrets.token_bytes(32))  # noqa: S311 - an identifier, not a secret


def new_request_id() -> str:
    """Return a new request id: 16 hex digits."""
    return f"{_ids.getrandbits(64):016x}"


class _Reply(Exception):  # noqa: N818 - control flow inside the app, never escapes it
    """Ends a request early with a status and a one-line reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


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
    ) -> None:
        self.db = db
        self.authorizer = authorizer
        self.max_request_bytes = max_request_bytes
        self.hosts = HostCheck(allowed_hosts)
        self._access_lines = access_lines
        self.metrics = metrics if metrics is not None else ServerMetrics(db)
        self._security = list(SECURITY_HEADERS.items())
        if tls:
            self._security.append(("Strict-Transport-Security", HSTS))
        self._routes: dict[str, Callable[[Request, dict[str, Any]], Response]] = {
            "/": self._dashboard,
            "/static/style.css": self._style,
            "/healthz": self._healthz,
            "/metrics": self._metrics,
        }

    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        started = time.perf_counter()
        request = Request(environ)
        path = request.path
        route = path if path in API or path in self._routes else "other"
        facts: dict[str, Any] = {"request": new_request_id()}
        in_flight = self.metrics.requests_in_flight
        ticket = id(facts)  # unique among the requests alive now
        in_flight[ticket] = None
        try:
            response = self._respond(request, path, facts)
        except Exception as e:  # the last line of defence: no traceback reaches the client
            log_bug(log, f"request {facts['request']} to {route} failed", e)
            response = self._error(500, "internal error")
        finally:
            del in_flight[ticket]
        code, body = response.status_code, response.body
        headers = [("X-Request-Id", facts["request"]), *self._security]
        if code != 304:  # a 304 has no body and, per RFC 9110, no content headers
            headers.append(("Content-Type", response.content_type))
            headers.append(("Content-Length", str(len(body))))
        if request.method == "HEAD":
            body = b""
        seconds = time.perf_counter() - started
        self.metrics.observe(route, code, seconds)
        self._log_access(request, route, code, seconds, facts)
        start_response(STATUS_LINES.get(code, f"{code} Unknown"), headers)
        return [body]

    def body_limit(self, method: str, path: str) -> int:
        """The largest request body ``path`` accepts (the HTTP front asks before it reads
        a body, and answers 413 above it)."""
        if path in VALUE_ROUTES:
            return self.max_request_bytes
        return min(SMALL_BODY_BYTES, self.max_request_bytes)

    # --- routing ---------------------------------------------------------------------

    def _respond(self, request: Request, path: str, facts: dict[str, Any]) -> Response:
        if path in API:
            self.metrics.call(path)
        refusal = self._check_host(request)
        if refusal is not None:
            return refusal
        if path in API:
            try:
                return self._api(request, path, facts)
            except _Reply as r:
                return self._error(r.code, r.reason)
        handler = self._routes.get(path)
        if handler is None:
            return self._error(404, "not found")
        try:
            return handler(request, facts)
        except _Reply as r:
            return self._error(r.code, r.reason)

    def _api(self, request: Request, path: str, facts: dict[str, Any]) -> Response:
        environ = request.environ
        if environ["REQUEST_METHOD"] != "POST":
            raise _Reply(400, "only POST requests allowed")
        # The exact value Go requires is the common case; werkzeug parses the rest
        # (parameters such as charset are accepted).
        content_type = environ.get("CONTENT_TYPE")
        if content_type != "application/json" and request.mimetype != "application/json":
            raise _Reply(400, "request body must be json")
        if environ.get("HTTP_SEC_X_TAILSCALE_NO_BROWSERS") != "setec":
            raise _Reply(403, "access denied")
        caller = self._identify(request, facts)
        kind, operation = API[path]
        body = self._read_body(request)
        try:
            decoded = wire.decode(body, kind)
            facts["secret"] = getattr(decoded, "name", None)
            if path in READ_ROUTES and environ.get(DEFER_AUDIT):
                # The front sends the answer only once its audit entries are durable
                # (DEFER_AUDIT), so this thread need not wait for their fsync.
                with self.db.audit_log.deferred() as deferral:
                    environ[AUDIT_DEFERRAL] = deferral
                    result = operation(self.db, caller, decoded)
            else:
                result = operation(self.db, caller, decoded)
        except Exception as e:
            return self._failure(e, facts)
        return Response(200, wire.encode(result))

    def _check_host(self, request: Request) -> Response | None:
        host = request.environ.get("HTTP_HOST")
        if host is None:
            if request.environ.get("SERVER_PROTOCOL") == "HTTP/1.0":
                return None
            return self._error(400, "missing Host header")
        if self.hosts.allows(host):
            return None
        shown = host if len(host) <= 100 else host[:100] + "..."
        return self._error(
            421,
            f"host {shown!r} is not a name this server answers to; if it is, start the "
            "server with --allowed-host NAME",
        )

    def _identify(self, request: Request, facts: dict[str, Any]) -> Caller:
        try:
            caller = self.authorizer.identify(request)
        except Exception as e:
            code, reason, loud = status_for(e)
            if code >= 500:
                # Whatever went wrong, the client learns only that it was not identified.
                if not isinstance(e, SetecError):
                    log_bug(log, f"cannot identify the caller of request {facts['request']}", e)
                elif loud:
                    log.error("cannot identify the caller of request %s: %s", facts["request"], e)
                reason = reason if code == 503 else "unable to identify caller"
            elif code == 403:
                reason = one_line(str(e)) or "access denied"
            raise _Reply(code, reason) from None
        caller = Caller(caller.principal, caller.rules, facts["request"])
        facts["caller"] = caller.principal.user or ",".join(caller.principal.tags)
        return caller

    def _read_body(self, request: Request) -> bytes:
        # Read the body ourselves rather than through werkzeug's get_data: werkzeug
        # silently truncates a chunked body at the limit, and a read error's message
        # (cheroot's bad-chunk errors quote the bytes) could carry a secret value into
        # a log. Nothing read here reaches an error message or a log line.
        environ = request.environ
        limit = self.body_limit(request.method, request.path)
        raw_length = (environ.get("CONTENT_LENGTH") or "").strip()
        stream = environ["wsgi.input"]
        if raw_length:
            if environ.get("HTTP_TRANSFER_ENCODING"):
                # RFC 9112, section 6.1: the two framings disagree; guessing invites smuggling.
                raise _Reply(400, "request has both Transfer-Encoding and Content-Length")
            if not raw_length.isdigit():
                raise _Reply(400, "invalid Content-Length")
            length = int(raw_length)
            if length > limit:
                raise _Reply(413, too_large(limit))
            wanted, chunked = length, False
        elif environ.get("wsgi.input_terminated"):
            # Chunked: the server ends the stream; read one byte past the limit to know.
            wanted, chunked = limit + 1, True
        else:
            return b""
        parts: list[bytes] = []
        got = 0
        try:
            while got < wanted:
                part = stream.read(min(wanted - got, 1 << 16))
                if not part:
                    break
                parts.append(part)
                got += len(part)
        except Exception as e:  # the client's framing or connection failed
            # cheroot enforces its own copy of the limit on chunked bodies and says so
            # only in the message (MaxSizeExceeded, or a bare OSError).
            if "Too Large" in str(e):
                raise _Reply(413, too_large(limit)) from None
            raise _Reply(400, "could not read the request body") from None
        if chunked and got > limit:
            raise _Reply(413, too_large(limit))
        if not chunked and got < wanted:
            raise _Reply(400, "request body shorter than its Content-Length")
        return b"".join(parts)

    def _failure(self, error: Exception, facts: dict[str, Any]) -> Response:
        code, reason, loud = status_for(error)
        if code == 304:
            # Not changed: an empty body. Go sends a JSON content type too; we follow RFC
            # 9110 and send none, and Go clients only read the status.
            return Response(304, b"")
        if not isinstance(error, SetecError):
            log_bug(log, f"request {facts['request']} failed", error)
        elif loud:
            # Our own messages name secrets, never values.
            log.error(
                "request %s failed: %s: %s",
                facts["request"],
                type(error).__name__,
                one_line(str(error)),
            )
        return self._error(code, reason)

    # --- the other routes ------------------------------------------------------------

    def _dashboard(self, request: Request, facts: dict[str, Any]) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise _Reply(400, "invalid method")
        caller = self._identify(request, facts)
        try:
            infos = self.db.list(caller)
        except Exception as e:
            return self._failure(e, facts)
        who = caller.principal.user or ", ".join(caller.principal.tags) or "an unnamed caller"
        return Response(200, dashboard.render(infos, who), "text/html; charset=utf-8")

    def _style(self, request: Request, facts: dict[str, Any]) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise _Reply(400, "invalid method")
        return Response(200, dashboard.STYLE_CSS, "text/css; charset=utf-8")

    def _healthz(self, request: Request, facts: dict[str, Any]) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise _Reply(400, "invalid method")
        failure = self.db.audit_log.failure
        if failure:
            return self._error(503, f"unhealthy: {failure}")
        return Response(200, b"ok\n", TEXT)

    def _metrics(self, request: Request, facts: dict[str, Any]) -> Response:
        if request.method not in ("GET", "HEAD"):
            raise _Reply(400, "invalid method")
        return Response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    # --- helpers ---------------------------------------------------------------------

    @staticmethod
    def _error(code: int, reason: str) -> Response:
        # Go's http.Error: the reason and a newline, as plain text.
        return Response(code, (one_line(reason) + "\n").encode(), TEXT)

    def _log_access(
        self, request: Request, route: str, code: int, seconds: float, facts: dict[str, Any]
    ) -> None:
        sink = self._access_lines
        if sink is None and not access_log.isEnabledFor(logging.INFO):
            return
        # One JSON object per request, built by hand: only the peer, the caller and the
        # secret's name come from outside and need JSON's escaping (json.dumps of a
        # whole dict per request cost more than the database get). Names of secrets are
        # logged (they are not secret); values never are: the body is not read here.
        line = (
            f'{{"request": "{facts["request"]}", "method": {json_string(request.method)}, '
            f'"path": "{route}", "status": {code}, "ms": {seconds * 1000:.3f}, '
            f'"peer": {json_text(request.remote_addr)}'
        )
        if "caller" in facts:
            line += f', "caller": {json_string(facts["caller"])}'
        name = facts.get("secret")
        if name:
            # A name can be 1,024 bytes; the log line need not be.
            if len(name) > LOGGED_NAME_CHARS:
                name = name[:LOGGED_NAME_CHARS] + "…"
            line += f', "secret": {json_string(name)}'
        if sink is not None:
            sink(line + "}")
        else:
            access_log.info("%s}", line)
