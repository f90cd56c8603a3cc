"""``Client``: the setec HTTP API from Python, as Go's ``setec.Client`` speaks it.

Works against this project's server and Go setec's unchanged: every call is a POST of
compact JSON with all of Go's request fields present (a write's guards only when
given, and then only to a server offering them), ``Content-Type: application/json`` and
the browser guard header ``Sec-X-Tailscale-No-Browsers: setec``. Statuses map to the
wire sentinels (404 :class:`NotFound`, 403 :class:`AccessDenied`, 304
:class:`ValueNotChanged`, 412 :class:`VersionClaimed`) and a failed guard's 409 to
:class:`VersionConflict`; anything else but 200 is a
:class:`RequestError` carrying the status and the server's one-line reason. A request
that gets no answer at all is an :class:`UnavailableError` saying why in one line
(``cannot connect to https://secrets.example.ts.net: connection refused``; the cases are
in :mod:`setec_core.client.transport`).

Bodies are encoded and decoded by :mod:`setec_core.wire`, the description of each
endpoint the server uses too.
"""

from __future__ import annotations

import builtins
import math
import re
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import requests

from setec_core.client.longpoll import Cancellation, TrackingAdapter
from setec_core.client.transport import describe_failure
from setec_core.description import check_description
from setec_core.errors import (
    AccessDenied,
    ConfigError,
    InvalidRequestError,
    NotFound,
    RequestError,
    ResponseError,
    ServerBusyError,
    SetecError,
    UnavailableError,
    UnsupportedError,
    VersionConflict,
)
from setec_core.guard import guard_of
from setec_core.model import MAX_GET_MANY, MAX_VERSION, DeletedSecret, SecretInfo, SecretValue
from setec_core.quoting import escape_unprintable
from setec_core.wire import (
    AskedSecret,
    CreateVersionRequest,
    DeleteRequest,
    Endpoint,
    ExtensionsRequest,
    GetManyRequest,
    GetRequest,
    ListRequest,
    NameRequest,
    PutRequest,
    Request,
    SetInfoRequest,
    VersionRequest,
    WatchedSecret,
    WatchRequest,
    encode_request,
    sentinel_error,
)
from setec_core.wire.conflict import CONFLICT_STATUS, decode_conflict
from setec_core.wire.endpoint import (
    ACTIVATE,
    CREATE_VERSION,
    DELETE,
    DELETE_VERSION,
    EXTENSIONS,
    GET,
    GET_MANY,
    INFO,
    LIST,
    LIST_DELETED,
    PUT,
    SET_INFO,
    UNDELETE,
    WATCH,
)
from setec_core.wire.extensions import RECOVERABLE_DELETE
from setec_core.wire.reply import Change

if TYPE_CHECKING:
    from setec_core.client.keyring import Keyring

#: Seconds to wait for the server to accept the connection, and for each read.
DEFAULT_TIMEOUT = (10.0, 60.0)

#: Seconds a watch asks the server to wait for a change (the server's own cap, 60 s by
#: default, may make it shorter).
DEFAULT_WATCH_TIMEOUT = 60.0

#: The most names one watch may carry (docs/api.md §9.2).
MAX_WATCH_NAMES = 1000

# Seconds a watch's read waits beyond the time the server may park it: the server
# answers a timeout a little before it, so this covers a slow network and a busy host.
_WATCH_READ_MARGIN = 15.0

GUARD_HEADER = "Sec-X-Tailscale-No-Browsers"

# Visible ASCII: what an HTTP header value can carry unchanged (RFC 9110 field-vchar).
_TOKEN = re.compile(r"[\x21-\x7e]+")

Q = TypeVar("Q", bound=Request)
R = TypeVar("R")
#: What :meth:`Client.get_many` takes: a name, or a (name, version) pair.
K = TypeVar("K", bound=str | tuple[str, int])


@runtime_checkable
class StoreClient(Protocol):
    """What a :class:`~setec_core.client.Store` needs: ``get`` and ``get_if_changed``.
    :class:`Client` and :class:`~setec_core.client.FileClient` both provide it."""

    def get(self, name: str) -> SecretValue:
        """The active version of ``name``. :raises NotFound, AccessDenied:"""
        ...

    def get_if_changed(self, name: str, old_version: int) -> SecretValue:
        """The active version of ``name`` unless it is ``old_version``.

        :raises ValueNotChanged: if the active version is ``old_version``.
        """
        ...


@runtime_checkable
class VersioningStoreClient(StoreClient, Protocol):
    """A :class:`StoreClient` that also reads and creates explicit versions (what
    :meth:`Store.versioned_secret <setec_core.client.Store.versioned_secret>` needs)."""

    def info(self, name: str) -> SecretInfo:
        """The versions of ``name``."""
        ...

    def get_version(self, name: str, version: int) -> SecretValue:
        """One version of ``name``."""
        ...

    def create_version(self, name: str, version: int, value: bytes) -> None:
        """Create ``version`` of ``name`` and make it active."""
        ...


@runtime_checkable
class WatchingStoreClient(StoreClient, Protocol):
    """A :class:`StoreClient` that may also watch secrets for changes (a long poll,
    docs/api.md §9.2), if its server offers it: a :class:`Client` does."""

    def offers(self, extension: str) -> bool:
        """Whether the server offers ``extension``."""
        ...

    def watch(
        self,
        versions: Mapping[str, int],
        timeout: float = ...,
        *,
        cancel: Cancellation | None = None,
    ) -> list[Change]:
        """The secrets whose active version differs from ``versions``, once one does
        (``[]`` after ``timeout`` seconds)."""
        ...


@runtime_checkable
class BatchStoreClient(StoreClient, Protocol):
    """A :class:`StoreClient` that may also fetch many secrets a request, if its server
    offers it (docs/api.md §9.3): a :class:`Client` does. A Store starts with it."""

    def offers(self, extension: str) -> bool:
        """Whether the server offers ``extension``."""
        ...

    def get_many(self, secrets: Iterable[K]) -> dict[K, SecretValue | SetecError]:
        """Each secret's value, or the :class:`NotFound` or :class:`AccessDenied` its
        get would raise."""
        ...


class Client:
    """A client of one setec server.

    :param server: the server's base URL, e.g. ``https://secrets.example.ts.net``.
    :param token: a bearer token, for servers using the ``policy`` authorizer.
    :param session: a :class:`requests.Session` to send requests with (for custom TLS
        roots, proxies or retries); a new one by default.
    :param timeout: seconds, as requests takes it: one number, or (connect, read).

    Thread-safe: a Store's poller and your threads may share one Client.
    """

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        session: requests.Session | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.server = _check_server(server)
        self.timeout = timeout
        if session is None:
            session = requests.Session()
            # requests re-reads the environment (proxies, CA bundle, .netrc) on every
            # request when trust_env is set: half a millisecond each here, which a
            # Store polling 1,000 secrets pays 1,000 times. Read it once instead. A
            # session you pass in is used exactly as you configured it.
            env = session.merge_environment_settings(self.server, {}, None, None, None)
            session.proxies.update(env["proxies"])
            session.verify = env["verify"]
            session.trust_env = False
            # So that a Store's close can cut short a watch parked on the server
            # (setec_core.client.longpoll).
            session.mount("http://", TrackingAdapter())
            session.mount("https://", TrackingAdapter())
        self._session = session
        self._headers = {"Content-Type": "application/json", GUARD_HEADER: "setec"}
        if token:
            # Checked here: requests would refuse it later with a message quoting the
            # header, token and all, and http.client with a UnicodeEncodeError.
            if not _TOKEN.fullmatch(token):
                raise InvalidRequestError(
                    "the bearer token must be printable ASCII without spaces "
                    "(as setec-serve new-token makes them)"
                )
            self._headers["Authorization"] = f"Bearer {token}"
        self._extensions: frozenset[str] | None = None
        self._extensions_lock = threading.Lock()

    def __repr__(self) -> str:
        # Never the token.
        return f"Client({self.server!r})"

    # --- the API ---------------------------------------------------------------------

    def list(self) -> list[SecretInfo]:
        """Every secret the caller may ``info``, sorted by name."""
        return self._call(LIST, ListRequest())

    def info(self, name: str) -> SecretInfo:
        """The versions of ``name`` and which one is active."""
        return self._call(INFO, NameRequest(name))

    def get(self, name: str) -> SecretValue:
        """The active version of ``name``."""
        return self.get_version(name, 0)

    def get_version(self, name: str, version: int) -> SecretValue:
        """Version ``version`` of ``name`` (0: the active one)."""
        return self._call(GET, GetRequest(name, _uint32(version), False))

    def get_if_changed(self, name: str, old_version: int) -> SecretValue:
        """The active version of ``name`` if it is not ``old_version`` (0: always).

        :raises ValueNotChanged: if the active version is still ``old_version``; no
            value travels.
        """
        if old_version == 0:
            return self.get(name)
        return self._call(GET, GetRequest(name, _uint32(old_version), True))

    def put(
        self,
        name: str,
        value: bytes,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> int:
        """Store ``value`` as a new version of ``name`` (or return the latest version's
        number if it already holds this value); the active version does not change.

        Every write takes two guards (docs/client.md, "Guarded writes"):
        ``if_active_version`` (the active version must be this one; 0: the secret must
        not exist) and ``if_versions`` (its versions must be exactly these; empty: it
        must not exist). A guarded write needs a server offering ``cas``.

        :raises VersionConflict: if a guard does not hold; nothing was written, and
            ``.current`` is the secret's info if you may ``info`` it.
        :raises UnsupportedError: for a guarded write to a server without ``cas`` (a
            Go server would ignore the guard); nothing was sent.
        """
        guards = self._guards(if_active_version, if_versions)
        return self._call(PUT, PutRequest(name, _bytes(value), *guards))

    def create_version(
        self,
        name: str,
        version: int,
        value: bytes,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> None:
        """Create exactly ``version`` of ``name`` holding ``value`` and activate it.
        Takes the guards of :meth:`put`.

        :raises VersionClaimed: if that version exists or existed.
        :raises VersionConflict: if a guard does not hold.
        """
        guards = self._guards(if_active_version, if_versions)
        request = CreateVersionRequest(name, _uint32(version), _bytes(value), *guards)
        self._call(CREATE_VERSION, request)

    def activate(
        self,
        name: str,
        version: int,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> None:
        """Make ``version`` the active version of ``name``. Takes the guards of
        :meth:`put`."""
        guards = self._guards(if_active_version, if_versions)
        self._call(ACTIVATE, VersionRequest(name, _uint32(version), *guards))

    def delete_version(
        self,
        name: str,
        version: int,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
    ) -> None:
        """Delete one inactive version of ``name``. Takes the guards of :meth:`put`."""
        guards = self._guards(if_active_version, if_versions)
        self._call(DELETE_VERSION, VersionRequest(name, _uint32(version), *guards))

    def delete(
        self,
        name: str,
        *,
        if_active_version: int | None = None,
        if_versions: Collection[int] | None = None,
        purge: bool = False,
    ) -> None:
        """Delete ``name`` and all its versions (no error if it does not exist). Takes
        the guards of :meth:`put`.

        A server with a recovery window puts the secret aside instead, to be brought
        back with :meth:`undelete` until it is purged (:meth:`list_deleted` says when).
        With ``purge``, it goes for good at once, put aside or not; only a server that
        offers ``recoverable-delete`` is sent that (a Go server would ignore it).

        :raises UnsupportedError: for ``purge`` against a server without
            ``recoverable-delete``; nothing was sent.
        """
        guards = self._guards(if_active_version, if_versions)
        if purge:
            self.require(RECOVERABLE_DELETE, "purging a deleted secret")
        self._call(DELETE, DeleteRequest(name, *guards, purge=True if purge else None))

    def undelete(self, name: str) -> None:
        """Bring back ``name``, which a delete put aside, exactly as it was: every
        version and the active one (the ``delete`` right grants it).

        :raises NotFound: if no secret of that name is pending deletion.
        :raises UnsupportedError: if the server does not offer ``recoverable-delete``;
            nothing was sent.
        """
        self.require(RECOVERABLE_DELETE, "undelete")
        self._call(UNDELETE, NameRequest(name))

    def list_deleted(self) -> builtins.list[DeletedSecret]:
        """The secrets pending deletion that the caller may ``delete``, sorted by name,
        with when each was deleted and when it goes for good.

        :raises UnsupportedError: if the server does not offer ``recoverable-delete``;
            nothing was sent.
        """
        self.require(RECOVERABLE_DELETE, "a list of deleted secrets")
        return self._call(LIST_DELETED, ListRequest())

    def _guards(
        self, if_active_version: object, if_versions: object
    ) -> tuple[int | None, tuple[int, ...] | None]:
        # Checked before anything is sent; then the server must honour guards, since a
        # Go server would carry the write out unguarded.
        guard = guard_of(if_active_version, if_versions)
        if guard is None:
            return None, None
        self.require("cas", "a write guarded by an expected version")
        versions = None if guard.versions is None else tuple(sorted(guard.versions))
        return guard.active_version, versions

    def get_keyring(self, name: str) -> Keyring:
        """Every version of ``name`` (see :class:`~setec_core.client.Keyring`)."""
        from setec_core.client.keyring import Keyring

        return Keyring.fetch(self, name)

    # --- beyond Go setec ----------------------------------------------------------------

    def extensions(self) -> frozenset[str]:
        """The names of what the server offers beyond Go setec's API (docs/api.md §9),
        asked once per Client and remembered; empty for a Go setec server (which
        answers 404).

        :raises UnavailableError: if the server cannot be reached (not remembered: the
            next call asks again).
        """
        with self._extensions_lock:
            if self._extensions is None:
                try:
                    names = self._call(EXTENSIONS, ExtensionsRequest()).names
                except NotFound:
                    names = ()
                self._extensions = frozenset(names)
            return self._extensions

    def offers(self, extension: str) -> bool:
        """Whether the server offers ``extension`` (see :meth:`extensions`)."""
        return extension in self.extensions()

    def require(self, extension: str, what: str) -> None:
        """Refuse to go on unless the server offers ``extension``.

        :param what: what the caller was about to do, for the message
            (``"a put guarded by an expected version"``).
        :raises UnsupportedError: naming the server, what was refused and why.
        """
        if not self.offers(extension):
            raise UnsupportedError(
                f"{self.server} does not offer {what} (its API has no {extension!r} "
                "extension: a Go setec server, or an older setec for Python); "
                "nothing was sent"
            )

    def get_many(self, secrets: Iterable[K]) -> dict[K, SecretValue | SetecError]:
        """The values of several secrets in as few round trips as the server allows:
        :data:`~setec_core.model.MAX_GET_MANY` (100) a request from a server that
        offers ``get-many`` (docs/api.md §9.3), one get each from one that does not
        (Go setec, or an older setec for Python).

        Each secret's get is audited on the server as a single get of it would be.

        :param secrets: names (their active version) or ``(name, version)`` pairs
            (version 0: the active one), as many as you like; each is asked for once,
            however often it is given (``"a"`` and ``("a", 0)`` are one).
        :returns: each item given, in the order given, mapped to its
            :class:`~setec_core.model.SecretValue`, or to the :class:`NotFound` or
            :class:`AccessDenied` that :meth:`get_version` of it would raise (not
            raised here: check with ``isinstance``).
        :raises InvalidRequestError: for an item that is neither a name nor a
            ``(name, version)`` pair, or a version out of range; nothing is sent.
        :raises UnavailableError: if the server cannot be reached.
        :raises RequestError: if the server refuses a request whole, as it would the
            get of one of its secrets (a name over 1,024 bytes: 400; an audit log that
            cannot write: 500).
        """
        keys: dict[K, tuple[str, int]] = {}
        for item in secrets:
            pair = _asked_pair(item)  # first: an unhashable item is refused, not a TypeError
            keys[item] = pair
        wanted = list(dict.fromkeys(keys.values()))
        found: dict[tuple[str, int], SecretValue | SetecError] = {}
        if wanted and self.offers("get-many"):
            for start in range(0, len(wanted), MAX_GET_MANY):
                found.update(self._get_batch(wanted[start : start + MAX_GET_MANY]))
        else:
            for name, version in wanted:
                try:
                    found[name, version] = self.get_version(name, version)
                except (NotFound, AccessDenied) as e:
                    found[name, version] = e
        return {item: found[pair] for item, pair in keys.items()}

    def _get_batch(
        self, asked: Sequence[tuple[str, int]]
    ) -> dict[tuple[str, int], SecretValue | SetecError]:
        request = GetManyRequest(tuple(AskedSecret(name, version) for name, version in asked))
        answers = self._call(GET_MANY, request).items
        # Answers come in the order asked; one that does not match its question is a
        # server's bug, not something to guess around.
        if len(answers) != len(asked) or any(
            answer[0] != name for (name, _), answer in zip(asked, answers, strict=False)
        ):
            raise ResponseError("unmarshaling response: the answers are not the secrets asked")
        return {pair: answer[2] for pair, answer in zip(asked, answers, strict=True)}

    def watch(
        self,
        versions: Mapping[str, int],
        timeout: float = DEFAULT_WATCH_TIMEOUT,
        *,
        cancel: Cancellation | None = None,
    ) -> builtins.list[Change]:  # "list" alone is the method above
        """Wait until the active version of one of the secrets differs from the one
        given, or ``timeout`` seconds pass (a long poll, docs/api.md §9.2).

        :param versions: secret name -> the active version you hold (0: none); 1 to
            :data:`MAX_WATCH_NAMES` names.
        :param timeout: seconds to wait at most (rounded up to whole seconds); the
            server may cap it (60 s by default). The read timeout of this request is
            that long plus a margin, whatever the Client's own read timeout.
        :param cancel: a :class:`~setec_core.client.longpoll.Cancellation` another
            thread may use to cut the wait short; the watch then returns ``[]``.
        :returns: the secrets whose active version differs, each a
            :class:`~setec_core.wire.Change` (``version`` 0: it no longer exists;
            ``error`` ``"access denied"``: you may not read it); ``[]`` if nothing
            changed in time.
        :raises UnsupportedError: if the server does not offer ``watch`` (Go setec):
            poll with :meth:`get_if_changed` instead.
        :raises ServerBusyError: if the server holds as many watches as it allows
            (503); ``retry_after`` says when to come back.
        :raises InvalidRequestError: for no names, too many, a bad version or timeout.
        """
        if not versions or len(versions) > MAX_WATCH_NAMES:
            raise InvalidRequestError(
                f"a watch names 1 to {MAX_WATCH_NAMES} secrets, not {len(versions)}"
            )
        if not timeout > 0 or math.isinf(timeout):
            raise InvalidRequestError(f"watch timeout must be a positive number, not {timeout}")
        self.require("watch", "watching secrets for changes")
        seconds = math.ceil(timeout)
        request = WatchRequest(
            tuple(WatchedSecret(name, _uint32(v)) for name, v in versions.items()), seconds
        )
        connect = self.timeout[0] if isinstance(self.timeout, tuple) else self.timeout
        limits = (connect, seconds + _WATCH_READ_MARGIN)
        if cancel is None:
            return list(self._call(WATCH, request, timeout=limits).changed)
        if cancel.cancelled:
            return []
        with cancel.attached():
            try:
                return list(self._call(WATCH, request, timeout=limits).changed)
            except SetecError:
                if cancel.cancelled:  # the cut connection, not the server
                    return []
                raise

    def set_info(self, name: str, description: str) -> None:
        """Set the description of ``name`` (docs/api.md §9.5); ``""`` clears it. It
        makes no version; :meth:`info` and :meth:`list` show it.

        :param description: one line of at most 1,000 bytes of UTF-8, without control
            characters.
        :raises InvalidRequestError: for a description the server would refuse (checked
            here; nothing is sent).
        :raises UnsupportedError: if the server does not offer ``set-info`` (Go setec);
            nothing is sent.
        :raises AccessDenied: without the ``set-info`` right on ``name``.
        :raises NotFound: if there is no such secret.
        """
        check_description(description)
        self.require("set-info", "secret descriptions")
        self._call(SET_INFO, SetInfoRequest(name, description))

    # --- the wire --------------------------------------------------------------------

    def _call(
        self,
        endpoint: Endpoint[Q, R],
        request: Q,
        *,
        timeout: float | tuple[float, float] | None = None,
    ) -> R:
        url = f"{self.server}{endpoint.path}"
        data = encode_request(request)
        timeout = self.timeout if timeout is None else timeout
        try:
            response = self._session.post(url, data=data, headers=self._headers, timeout=timeout)
        except requests.RequestException as e:
            # One line naming the base URL (which carries no credentials: _check_server
            # refuses them), never the body we sent; not chained, as requests' own
            # message repeats every layer of urllib3's.
            size = len(data) if endpoint.carries_value else 0
            line = describe_failure(e, self.server, timeout, value_request_bytes=size)
            raise UnavailableError(line) from None
        except ValueError as e:  # urllib3 refusing the host (a label over 63 octets...)
            raise InvalidRequestError(
                f"server URL {self.server!r} cannot be used: {type(e).__name__}"
            ) from None
        except OSError as e:  # requests: a CA bundle or client certificate file is missing
            raise ConfigError(f"cannot connect to {self.server}: {_one_line(e)}") from None
        if response.status_code == 200:
            return endpoint.reply.decode(response.content)
        reason = response.content.decode("utf-8", "replace").strip()
        sentinel = sentinel_error(response.status_code, reason)
        if sentinel is not None:
            raise sentinel
        if response.status_code == CONFLICT_STATUS and _is_json(response):
            _raise_conflict(request, response.content)
        if response.status_code == 503 and "Retry-After" in response.headers:
            retry_after = _seconds(response.headers["Retry-After"])
            raise ServerBusyError(response.status_code, reason[:500], retry_after)
        raise RequestError(response.status_code, reason[:500])


def _is_json(response: requests.Response) -> bool:
    content_type = response.headers.get("Content-Type", "")
    return content_type.split(";")[0].strip().lower() == "application/json"


def _raise_conflict(request: object, body: bytes) -> None:
    # A guard failed (docs/api.md §9.4). A 409 that is not our JSON (a proxy's page)
    # is left to the caller's generic error.
    try:
        reason, current = decode_conflict(body)
    except ResponseError:
        return
    # The server's reason names the secret; shown safely on a terminal, and on one line.
    text = escape_unprintable(" ".join(reason.split()))[:500]
    if not text:
        text = f"guard failed for secret {getattr(request, 'name', '')!r}; nothing was written"
    raise VersionConflict(text, current)


def _check_server(server: str) -> str:
    """The base URL without a trailing slash, or a clear error."""
    if not server:
        raise InvalidRequestError("no server address is set")
    authority = server.split("://", 1)[-1].split("/", 1)[0]
    if "@" in authority:
        # Not echoed: a user name and password would end up in every error and log line.
        raise InvalidRequestError(
            "the server URL must not carry a user name or password; use a bearer token "
            "(token=...) or a requests.Session with the credentials"
        )
    try:
        parts = urlsplit(server)
        parts.port  # noqa: B018 - parsing the port is the check
    except ValueError as e:
        raise InvalidRequestError(f"server URL {server!r} is not a valid URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidRequestError(
            f"server URL {server!r} must be http:// or https:// and a host, "
            "e.g. https://secrets.example.ts.net"
        )
    return server[:-1] if server.endswith("/") else server


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:300] or type(error).__name__


def _seconds(header: str) -> float | None:
    """A ``Retry-After`` of delay-seconds, or ``None`` (an HTTP date, or nonsense)."""
    text = header.strip()
    return float(text) if text.isascii() and text.isdigit() else None


def _asked_pair(item: object) -> tuple[str, int]:
    """A name or ``(name, version)`` pair of :meth:`Client.get_many` as the pair."""
    if isinstance(item, str):
        return item, 0
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item[0], _uint32(item[1])
    raise InvalidRequestError(
        f"get_many takes names or (name, version) pairs, not {type(item).__name__}"
    )


def _uint32(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidRequestError(f"version must be an int, not {type(version).__name__}")
    if not 0 <= version <= MAX_VERSION:
        raise InvalidRequestError(f"version {version} is not in 0..{MAX_VERSION}")
    return version


def _bytes(value: bytes) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidRequestError(
            f"a secret value must be bytes, not {type(value).__name__}; "
            "encode text first, e.g. value.encode()"
        )
    return bytes(value)
