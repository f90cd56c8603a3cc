"""``Client``: the setec HTTP API from Python, as Go's ``setec.Client`` speaks it.

Works against this project's server and Go setec's unchanged: every call is a POST of
compact JSON with all request fields present, ``Content-Type: application/json`` and
the browser guard header ``Sec-X-Tailscale-No-Browsers: setec``. Statuses map to the
wire sentinels (404 :class:`NotFound`, 403 :class:`AccessDenied`, 304
:class:`ValueNotChanged`, 412 :class:`VersionClaimed`); anything else but 200 is a
:class:`RequestError` carrying the status and the server's one-line reason. A request
that gets no answer at all is an :class:`UnavailableError` saying why in one line
(``cannot connect to https://secrets.example.ts.net: connection refused``; the cases are
in :mod:`setec_core.client.transport`).

Bodies are encoded and decoded by :mod:`setec_core.wire`, the description of each
endpoint the server uses too.
"""

from __future__ import annotations

import re
import threading
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable
from urllib.parse import urlsplit

import requests

from setec_core.client.transport import describe_failure
from setec_core.errors import (
    ConfigError,
    InvalidRequestError,
    NotFound,
    RequestError,
    UnavailableError,
    UnsupportedError,
)
from setec_core.model import MAX_VERSION, SecretInfo, SecretValue
from setec_core.wire import (
    CreateVersionRequest,
    Endpoint,
    ExtensionsRequest,
    GetRequest,
    ListRequest,
    NameRequest,
    PutRequest,
    Request,
    VersionRequest,
    encode_request,
    sentinel_error,
)
from setec_core.wire.endpoint import (
    ACTIVATE,
    CREATE_VERSION,
    DELETE,
    DELETE_VERSION,
    EXTENSIONS,
    GET,
    INFO,
    LIST,
    PUT,
)

if TYPE_CHECKING:
    from setec_core.client.keyring import Keyring

#: Seconds to wait for the server to accept the connection, and for each read.
DEFAULT_TIMEOUT = (10.0, 60.0)

GUARD_HEADER = "Sec-X-Tailscale-No-Browsers"

# Visible ASCII: what an HTTP header value can carry unchanged (RFC 9110 field-vchar).
_TOKEN = re.compile(r"[\x21-\x7e]+")

Q = TypeVar("Q", bound=Request)
R = TypeVar("R")


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

    def put(self, name: str, value: bytes) -> int:
        """Store ``value`` as a new version of ``name`` (or return the latest version's
        number if it already holds this value); the active version does not change."""
        return self._call(PUT, PutRequest(name, _bytes(value)))

    def create_version(self, name: str, version: int, value: bytes) -> None:
        """Create exactly ``version`` of ``name`` holding ``value`` and activate it.

        :raises VersionClaimed: if that version exists or existed.
        """
        self._call(CREATE_VERSION, CreateVersionRequest(name, _uint32(version), _bytes(value)))

    def activate(self, name: str, version: int) -> None:
        """Make ``version`` the active version of ``name``."""
        self._call(ACTIVATE, VersionRequest(name, _uint32(version)))

    def delete_version(self, name: str, version: int) -> None:
        """Delete one inactive version of ``name``."""
        self._call(DELETE_VERSION, VersionRequest(name, _uint32(version)))

    def delete(self, name: str) -> None:
        """Delete ``name`` and all its versions (no error if it does not exist)."""
        self._call(DELETE, NameRequest(name))

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

    # --- the wire --------------------------------------------------------------------

    def _call(self, endpoint: Endpoint[Q, R], request: Q) -> R:
        url = f"{self.server}{endpoint.path}"
        data = encode_request(request)
        try:
            response = self._session.post(
                url, data=data, headers=self._headers, timeout=self.timeout
            )
        except requests.RequestException as e:
            # One line naming the base URL (which carries no credentials: _check_server
            # refuses them), never the body we sent; not chained, as requests' own
            # message repeats every layer of urllib3's.
            size = len(data) if endpoint.carries_value else 0
            line = describe_failure(e, self.server, self.timeout, value_request_bytes=size)
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
        raise RequestError(response.status_code, reason[:500])


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
