"""``Client``: the setec HTTP API from Python, as Go's ``setec.Client`` speaks it.

Works against this project's server and Go setec's unchanged: every call is a POST of
compact JSON with all request fields present, ``Content-Type: application/json`` and
the browser guard header ``Sec-X-Tailscale-No-Browsers: setec``. Statuses map to the
wire sentinels (404 :class:`NotFound`, 403 :class:`AccessDenied`, 304
:class:`ValueNotChanged`, 412 :class:`VersionClaimed`); anything else but 200 is a
:class:`RequestError` carrying the status and the server's one-line reason.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

import requests

from setec_core.encoding import decode_base64, encode_base64
from setec_core.errors import (
    AccessDenied,
    InvalidRequestError,
    NotFound,
    RequestError,
    ResponseError,
    SetecError,
    UnavailableError,
    ValueNotChanged,
    VersionClaimed,
)
from setec_core.model import MAX_VERSION, SecretInfo, SecretValue

if TYPE_CHECKING:
    from setec_core.client.keyring import Keyring

#: Seconds to wait for the server to accept the connection, and for each read.
DEFAULT_TIMEOUT = (10.0, 60.0)

GUARD_HEADER = "Sec-X-Tailscale-No-Browsers"

# Visible ASCII: what an HTTP header value can carry unchanged (RFC 9110 field-vchar).
_TOKEN = re.compile(r"[\x21-\x7e]+")

_SENTINELS: dict[int, Callable[[], SetecError]] = {
    404: NotFound,
    403: AccessDenied,
    304: ValueNotChanged,
    412: VersionClaimed,
}


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

    def __repr__(self) -> str:
        # Never the token.
        return f"Client({self.server!r})"

    # --- the API ---------------------------------------------------------------------

    def list(self) -> list[SecretInfo]:
        """Every secret the caller may ``info``, sorted by name."""
        doc = self._call("list", {})
        if doc is None:
            return []
        if not isinstance(doc, list):
            raise ResponseError("unmarshaling response: expected a list of secrets")
        return [_info(item) for item in doc]

    def info(self, name: str) -> SecretInfo:
        """The versions of ``name`` and which one is active."""
        return _info(self._call("info", {"Name": name}))

    def get(self, name: str) -> SecretValue:
        """The active version of ``name``."""
        return self.get_version(name, 0)

    def get_version(self, name: str, version: int) -> SecretValue:
        """Version ``version`` of ``name`` (0: the active one)."""
        body = {"Name": name, "Version": _uint32(version), "UpdateIfChanged": False}
        return _value(self._call("get", body))

    def get_if_changed(self, name: str, old_version: int) -> SecretValue:
        """The active version of ``name`` if it is not ``old_version`` (0: always).

        :raises ValueNotChanged: if the active version is still ``old_version``; no
            value travels.
        """
        if old_version == 0:
            return self.get(name)
        body = {"Name": name, "Version": _uint32(old_version), "UpdateIfChanged": True}
        return _value(self._call("get", body))

    def put(self, name: str, value: bytes) -> int:
        """Store ``value`` as a new version of ``name`` (or return the latest version's
        number if it already holds this value); the active version does not change."""
        version = self._call("put", {"Name": name, "Value": _b64(value)})
        if type(version) is not int or not 0 < version <= MAX_VERSION:
            raise ResponseError("unmarshaling response: expected a version number")
        return version

    def create_version(self, name: str, version: int, value: bytes) -> None:
        """Create exactly ``version`` of ``name`` holding ``value`` and activate it.

        :raises VersionClaimed: if that version exists or existed.
        """
        body = {"Name": name, "Version": _uint32(version), "Value": _b64(value)}
        self._call("create-version", body)

    def activate(self, name: str, version: int) -> None:
        """Make ``version`` the active version of ``name``."""
        self._call("activate", {"Name": name, "Version": _uint32(version)})

    def delete_version(self, name: str, version: int) -> None:
        """Delete one inactive version of ``name``."""
        self._call("delete-version", {"Name": name, "Version": _uint32(version)})

    def delete(self, name: str) -> None:
        """Delete ``name`` and all its versions (no error if it does not exist)."""
        self._call("delete", {"Name": name})

    def get_keyring(self, name: str) -> Keyring:
        """Every version of ``name`` (see :class:`~setec_core.client.Keyring`)."""
        from setec_core.client.keyring import Keyring

        return Keyring.fetch(self, name)

    # --- the wire --------------------------------------------------------------------

    def _call(self, method: str, body: dict[str, Any]) -> Any:
        url = f"{self.server}/api/{method}"
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            response = self._session.post(
                url, data=data, headers=self._headers, timeout=self.timeout
            )
        except requests.RequestException as e:
            # requests' messages name the URL and the cause, never the body we sent (and
            # the URL carries no credentials: _check_server refuses them).
            raise UnavailableError(f"making HTTP request: {_cause(e)}") from None
        except ValueError as e:  # urllib3 refusing the host (a label over 63 octets...)
            raise InvalidRequestError(
                f"server URL {self.server!r} cannot be used: {type(e).__name__}"
            ) from None
        if response.status_code == 200:
            try:
                return json.loads(response.content)
            except (ValueError, RecursionError):
                # Not the decoder's message: it would quote the body, which holds values.
                raise ResponseError(
                    "unmarshaling response: the server's answer is not JSON"
                ) from None
        sentinel = _SENTINELS.get(response.status_code)
        if sentinel is not None:
            raise sentinel()
        reason = response.content.decode("utf-8", "replace").strip()
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


def _cause(error: requests.RequestException) -> str:
    # requests nests urllib3's reason several layers deep; one line is enough.
    return " ".join(str(error).split())[:300] or type(error).__name__


def _uint32(version: int) -> int:
    if isinstance(version, bool) or not isinstance(version, int):
        raise InvalidRequestError(f"version must be an int, not {type(version).__name__}")
    if not 0 <= version <= MAX_VERSION:
        raise InvalidRequestError(f"version {version} is not in 0..{MAX_VERSION}")
    return version


def _b64(value: bytes) -> str:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise InvalidRequestError(
            f"a secret value must be bytes, not {type(value).__name__}; "
            "encode text first, e.g. value.encode()"
        )
    return encode_base64(bytes(value))


# Go matches keys by Unicode simple folding: ASCII letters, plus the long s (U+017F) and
# the Kelvin sign (U+212A), whose orbits hold "s" and "k".
_FOLD = str.maketrans(string.ascii_lowercase + "\u017f\u212a", string.ascii_uppercase + "SK")

# Slices: a null sets them to nil. Any other field keeps its value on a null.
_NULL_RESETS = frozenset({"VALUE", "VERSIONS"})


def _fields(doc: Any, what: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise ResponseError(f"unmarshaling response: expected {what}")
    # Go's decoder matches keys case-insensitively, and the last one wins.
    fields: dict[str, Any] = {}
    for key, item in doc.items():
        folded = key.translate(_FOLD)
        if item is not None or folded in _NULL_RESETS:
            fields[folded] = item
    return fields


def _version_of(raw: Any) -> int:
    if type(raw) is not int or not 0 <= raw <= MAX_VERSION:
        raise ResponseError("unmarshaling response: a version is not a uint32")
    return raw


def _value(doc: Any) -> SecretValue:
    fields = _fields(doc, "a secret value")
    raw = fields.get("VALUE")
    if raw is None:
        value = b""
    elif type(raw) is str:
        try:
            value = decode_base64(raw)  # Go's rules (setec_core.encoding)
        except ValueError:
            raise ResponseError("unmarshaling response: Value is not base64") from None
    else:
        raise ResponseError("unmarshaling response: Value is not base64")
    return SecretValue(value=value, version=_version_of(fields.get("VERSION", 0)))


def _info(doc: Any) -> SecretInfo:
    fields = _fields(doc, "secret info")
    name = fields.get("NAME", "")
    versions = fields.get("VERSIONS")
    if versions is None:
        versions = []
    if type(name) is not str or not isinstance(versions, list):
        raise ResponseError("unmarshaling response: malformed secret info")
    return SecretInfo(
        name=name,
        versions=tuple(sorted(_version_of(v) for v in versions)),
        active_version=_version_of(fields.get("ACTIVEVERSION", 0)),
    )
