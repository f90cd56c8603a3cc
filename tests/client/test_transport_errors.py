"""What a Client, a Store and their logs say when a request gets no answer: one line
naming the server and what failed, checked against real sockets on loopback (a closed
port, an unresolvable name, TLS servers with certificates this machine does not trust,
servers that never answer, close or reset the connection), and never urllib3's
wrapping of it."""

from __future__ import annotations

import contextlib
import inspect
import logging
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from console_scripts import run_setec
from tls_certs import self_signed

from setec_core.client import Client, Store
from setec_core.client.store import DEFAULT_STARTUP_TIMEOUT
from setec_core.client.transport import BAD_PROXY_URL, describe_failure
from setec_core.errors import ConfigError, PollError, RequestError, UnavailableError
from setec_core.http import make_app
from setec_core.http.front import Front, Listener, server_ssl_context
from setec_core.testing import SUPERUSER, new_database
from setec_core.testing.clock import FakeTicker
from setec_core.testing.fakes import FixedAuthorizer
from setec_core.testing.server import LocalServer, new_server
from setec_core.wire import PutRequest, encode_request

VALUE = b"transport-secret-value-5e81"
#: What requests and urllib3 put in their messages, which ours must not repeat.
URLLIB3_WORDS = ("HTTPConnectionPool", "Max retries", "Caused by", "NewConnectionError")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def message(call: Callable[[], object], kind: type[Exception] = UnavailableError) -> str:
    """The message of the ``kind`` error ``call`` raises, checked to be one clean line."""
    with pytest.raises(kind) as caught:
        call()
    text = str(caught.value)
    assert "\n" not in text
    assert not any(word in text for word in URLLIB3_WORDS), text
    assert VALUE.decode() not in text
    return text


class RawServer:
    """A loopback TCP server that hands each connection to ``handle``, in a thread."""

    def __init__(self, handle: Callable[[socket.socket], None], backlog: int = 8) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(backlog)
        self.sock.settimeout(0.1)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self._handle = handle
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:  # the accept timed out (look at _stop again), or closed
                continue
            # OSError: the client went away first, and there is nothing to check here.
            with conn, contextlib.suppress(OSError):
                self._handle(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


def read_head(conn: socket.socket) -> None:
    """Read a request up to the end of its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        part = conn.recv(4096)
        if not part:
            return
        data += part


def read_all(conn: socket.socket) -> None:
    """Read everything the client sends until it pauses for 0.2 s."""
    conn.settimeout(0.2)
    try:
        while conn.recv(65536):
            pass
    except TimeoutError:
        pass


def reset(conn: socket.socket, read: Callable[[socket.socket], None]) -> None:
    """``read`` from ``conn``, then have its close send a TCP reset (RST) instead of an
    orderly FIN."""
    read(conn)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.fixture
def raw_server() -> Iterator[Callable[[Callable[[socket.socket], None]], RawServer]]:
    servers: list[RawServer] = []

    def start(handle: Callable[[socket.socket], None]) -> RawServer:
        servers.append(RawServer(handle))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


# --- Nobody there ---------------------------------------------------------------------


def test_closed_port_is_connection_refused() -> None:
    """A port nobody listens on: ``cannot connect to URL: connection refused``."""
    url = f"http://127.0.0.1:{closed_port()}"
    assert message(lambda: Client(url).list()) == f"cannot connect to {url}: connection refused"


def test_unresolvable_name_says_which_host() -> None:
    """A host name that does not resolve (the .invalid domain never does, RFC 6761):
    ``cannot resolve host NAME: ...``, and quickly."""
    started = time.monotonic()
    text = message(lambda: Client("https://nosuch.invalid:8443").list())
    # "no such host" with a DNS server, a temporary failure without any network.
    assert text in (
        "cannot resolve host nosuch.invalid: no such host",
        "cannot resolve host nosuch.invalid: the DNS lookup failed for now (no network, or "
        "no answer from the DNS server)",
    )
    assert time.monotonic() - started < 10


def test_connection_never_accepted_is_a_connect_timeout() -> None:
    """A host that never completes the handshake (here: a listener whose accept queue
    is full, so the kernel drops new connections) fails within the connect timeout."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(0)
    port = sock.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: later handshakes are dropped
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        url = f"http://127.0.0.1:{port}"
        started = time.monotonic()
        text = message(lambda: Client(url, timeout=(0.5, 30)).list())
        assert text == f"cannot connect to {url}: no answer within 0.5 s"
        assert time.monotonic() - started < 5
    finally:
        for filler in fillers:
            filler.close()
        sock.close()


def test_unreachable_proxy_is_named_as_the_proxy() -> None:
    """A proxy that refuses the connection: the line says the proxy failed, without
    naming it (a proxy URL may carry a password)."""
    session = requests.Session()
    session.trust_env = False
    proxy = f"http://user:proxy-pass@127.0.0.1:{closed_port()}"
    session.proxies = {"http": proxy, "https": proxy}
    text = message(lambda: Client("http://secrets.example", session=session).list())
    assert text == "cannot connect to http://secrets.example through its proxy: connection refused"


PROXY_PASSWORD = "PASSW0RD-9c1e"

#: Proxy URLs requests or urllib3 cannot parse, each of which they quote whole in their
#: message: a port out of range, a port that is not a number, a scheme they do not
#: proxy through, no scheme (requests: "could be missing the host"), a broken IPv6 host.
UNPARSABLE_PROXIES = (
    f"http://user:{PROXY_PASSWORD}@127.0.0.1:99999",
    f"http://user:{PROXY_PASSWORD}@127.0.0.1:abc",
    f"ftp://user:{PROXY_PASSWORD}@127.0.0.1:21",
    f"user:{PROXY_PASSWORD}@127.0.0.1:3128",
    f"http://user:{PROXY_PASSWORD}@[::1:3128",
)


@pytest.mark.parametrize("proxy", UNPARSABLE_PROXIES)
def test_unparsable_proxy_url_is_never_quoted(proxy: str) -> None:
    """A proxy URL requests cannot parse: a fixed line saying the proxy URL is not
    valid and where it comes from, never the URL or its password."""
    session = requests.Session()
    session.trust_env = False
    session.proxies = {"http": proxy, "https": proxy}
    text = message(lambda: Client("https://secrets.example", session=session).list())
    assert text == f"cannot connect to https://secrets.example: {BAD_PROXY_URL}"
    assert PROXY_PASSWORD not in text


def test_store_retries_with_an_unparsable_proxy_log_no_password(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Store behind an HTTPS_PROXY whose port is out of range: neither its retry log
    lines nor the error it gives up with carry the proxy's password."""
    caplog.set_level(logging.DEBUG)
    for variable in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(variable, UNPARSABLE_PROXIES[0])
    for variable in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    url = "https://secrets.example"
    text = message(lambda: Store(Client(url), ["app/a"], timeout=0.3, poll_interval=None))
    assert PROXY_PASSWORD not in text
    assert BAD_PROXY_URL in text
    lines = store_lines(caplog)
    assert lines
    assert set(lines) == {
        f'error fetching "app/a": cannot connect to {url}: {BAD_PROXY_URL} (retrying)'
    }
    assert not any(PROXY_PASSWORD in r.getMessage() for r in caplog.records)


def test_setec_with_an_unparsable_proxy_prints_no_password() -> None:
    """``setec list`` with HTTPS_PROXY=http://user:PASSWORD@127.0.0.1:99999: exit 1 and
    one line saying the proxy URL is not valid; the password is nowhere in the output."""
    proxy = UNPARSABLE_PROXIES[0]
    env = {"HTTPS_PROXY": proxy, "https_proxy": proxy, "NO_PROXY": "", "no_proxy": ""}
    proc = run_setec("-s", "https://secrets.example.com", "list", env=env)
    assert proc.returncode == 1
    assert proc.stdout == b""
    assert (
        proc.stderr
        == (
            "Error: failed to list secrets: cannot connect to https://secrets.example.com: "
            f"{BAD_PROXY_URL}\n"
        ).encode()
    )
    assert PROXY_PASSWORD.encode() not in proc.stderr


def test_server_url_urllib3_cannot_parse_is_named() -> None:
    """A server URL urllib3 refuses (a space in the host): the line names the server's
    URL, which carries no password, and says what is wrong with it, not the proxy."""
    text = message(lambda: Client("https://exa mple.com").list())
    assert text == (
        "server URL 'https://exa mple.com' is not a valid URL: Failed to parse: Host "
        "'exa mple.com' contains invalid character ' '"
    )


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        (
            f"Failed to parse: http://user:{PROXY_PASSWORD}@127.0.0.1:99999",
            "Failed to parse: http://***@127.0.0.1:99999",
        ),
        (f"proxy 'user:{PROXY_PASSWORD}@proxy:3128' refused", "proxy '***@proxy:3128' refused"),
        (f"via socks5h://{PROXY_PASSWORD}@proxy:1080", "via socks5h://***@proxy:1080"),
        (f"http://u:{PROXY_PASSWORD}@x/y@proxy:3128 then", "http://***@proxy:3128 then"),
        ("Exceeded 30 redirects.", "Exceeded 30 redirects."),
        ("write to ops@example.com", "write to ops@example.com"),
    ],
)
def test_unrecognised_failure_masks_user_info(said: str, shown: str) -> None:
    """A failure no rule recognises gets requests' message, with the user name and
    password of anything URL-shaped in it masked."""
    line = describe_failure(requests.RequestException(said), "https://secrets.example", 5)
    assert line == f"request to https://secrets.example failed: {shown}"
    assert PROXY_PASSWORD not in line


# --- Connected, then nothing useful ----------------------------------------------------


def test_server_that_never_answers_times_out(
    raw_server: Callable[[Callable[[socket.socket], None]], RawServer],
) -> None:
    """A server that reads the request and never answers: ``no answer from URL within
    N s``, N the read timeout."""
    stop = threading.Event()

    def hang(conn: socket.socket) -> None:
        read_head(conn)
        stop.wait(10)

    server = raw_server(hang)
    try:
        text = message(lambda: Client(server.url, timeout=(5, 0.3)).get("x"))
    finally:
        stop.set()
    assert text == f"no answer from {server.url} within 0.3 s"


def test_server_that_closes_without_answering(
    raw_server: Callable[[Callable[[socket.socket], None]], RawServer],
) -> None:
    """A server that reads the request and closes the connection: the line says so, and
    hints at https:// (a TLS server answers a plain request this way too)."""
    server = raw_server(read_all)
    assert message(lambda: Client(server.url, timeout=5).list()) == (
        f"{server.url} closed the connection without answering (if it serves TLS, use https://)"
    )


def test_connection_reset_mid_request(
    raw_server: Callable[[Callable[[socket.socket], None]], RawServer],
) -> None:
    """A server that resets the connection after reading the request (all of it: the
    client is waiting for the answer, not sending, when the reset arrives)."""
    server = raw_server(lambda conn: reset(conn, read_all))
    assert message(lambda: Client(server.url, timeout=5).get("x")) == (
        f"the connection to {server.url} was reset before the server answered"
    )


def test_reset_while_sending_a_large_value_hints_at_the_size_limit(
    raw_server: Callable[[Callable[[socket.socket], None]], RawServer],
) -> None:
    """A put of a large value cut off by the server (as one refusing its size may do)
    says the size may be why, giving the request's size; never the value."""
    server = raw_server(lambda conn: reset(conn, read_head))
    big = VALUE * 100_000
    text = message(lambda: Client(server.url, timeout=5).put("big", big))
    # urllib3 reads the answer after a failed send (a server may refuse a body early),
    # so the reset shows as either.
    assert text.startswith(
        (
            f"the connection to {server.url} was reset before the server answered; ",
            f"{server.url} closed the connection without answering; ",
        )
    )
    size = len(encode_request(PutRequest("big", big)))
    assert text.endswith(
        f"; the request was {size} bytes, which may be over the server's size limit "
        "(setec-serve's default: 1 MiB, about 768 KiB of value)"
    )


# --- TLS ------------------------------------------------------------------------------


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real setec server (the HTTP front with TLS) on 127.0.0.1 with a self-signed
    certificate for 127.0.0.1 and localhost; yields its URL and the certificate."""
    cert, key = self_signed(tmp_path, dns_names=["localhost"])
    db = new_database()
    front = Front(
        make_app(db, FixedAuthorizer(SUPERUSER), tls=True),
        [Listener("127.0.0.1", 0)],
        ssl_context=server_ssl_context(str(cert), str(key)),
        threads=2,
    )
    url = front.start()[0]
    yield url, cert
    front.stop()
    db.close()


def test_untrusted_certificate_names_host_and_remedy(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A self-signed certificate: the line names the host, says the certificate is not
    trusted, and points at REQUESTS_CA_BUNDLE; doing what it says works."""
    url, cert = tls_server
    text = message(lambda: Client(url, timeout=5).list())
    assert text == (
        f"cannot connect to {url}: the TLS certificate of 127.0.0.1 is not trusted "
        "(self-signed certificate); if the server is yours, point REQUESTS_CA_BUNDLE at "
        "the CA certificate that signed it"
    )
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    assert Client(url, timeout=5).list() == []


def test_certificate_for_another_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A trusted certificate issued for another address: the line says it is not valid
    for the host the URL names."""
    cert, key = self_signed(tmp_path, ip="127.0.0.9")
    context = server_ssl_context(str(cert), str(key))
    db = new_database()
    front = Front(
        make_app(db, FixedAuthorizer(SUPERUSER)), [Listener("127.0.0.1", 0)], ssl_context=context
    )
    url = front.start()[0]
    try:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
        text = message(lambda: Client(url, timeout=5).list())
    finally:
        front.stop()
        db.close()
    assert text.startswith(
        f"cannot connect to {url}: the TLS certificate it presented is not valid for 127.0.0.1 ("
    )
    assert text.endswith("); use the name the certificate was issued for")


def test_plain_http_to_a_tls_server_hints_at_https(tls_server: tuple[str, Path]) -> None:
    """http:// to a server that speaks only TLS: the line suggests https://."""
    url, _ = tls_server
    plain = url.replace("https://", "http://")
    assert "(if it serves TLS, use https://)" in message(lambda: Client(plain, timeout=5).list())


def test_https_to_a_plain_server_hints_at_http(server: LocalServer) -> None:
    """https:// to a server that does not speak TLS: the line suggests http://."""
    url = server.url.replace("http://", "https://")
    assert message(lambda: Client(url, timeout=5).list()) == (
        f"cannot connect to {url}: TLS handshake failed: the server does not speak TLS on "
        "this port (try http://)"
    )


def test_missing_ca_bundle_is_a_config_error(
    tls_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """REQUESTS_CA_BUNDLE naming a file that does not exist is a ConfigError naming it
    (requests raises a bare OSError)."""
    url, _ = tls_server
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    text = message(lambda: Client(url, timeout=5).list(), ConfigError)
    assert text.startswith(f"cannot connect to {url}: ")
    assert "/nonexistent/ca.pem" in text


# --- The Store and its logs -----------------------------------------------------------


def store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("setec.client")]


def test_store_gives_up_naming_server_error_and_time(caplog: pytest.LogCaptureFixture) -> None:
    """A Store pointed at a closed port gives up at its timeout: the error names the
    server, how long it tried, the one-line failure of the secrets it lacks and how to
    wait longer; each retry is logged with the same line."""
    caplog.set_level(logging.WARNING)
    url = f"http://127.0.0.1:{closed_port()}"
    refused = f"cannot connect to {url}: connection refused"
    text = message(lambda: Store(Client(url), ["app/a", "app/b"], timeout=0.3, poll_interval=None))
    assert text == (
        f'gave up after 0.3 s waiting for 2 secrets from {url} ("app/a", "app/b": {refused}); '
        "pass timeout=None to wait as long as it takes"
    )
    lines = store_lines(caplog)
    assert lines
    assert set(lines) == {f'error fetching "app/a": {refused} (retrying)'}


def test_store_waits_a_minute_by_default() -> None:
    """Without a timeout a Store gives up after DEFAULT_STARTUP_TIMEOUT, a minute."""
    assert DEFAULT_STARTUP_TIMEOUT == 60.0
    assert inspect.signature(Store).parameters["timeout"].default == DEFAULT_STARTUP_TIMEOUT


def test_store_timeout_none_waits_until_the_secret_exists(server: LocalServer) -> None:
    """``timeout=None`` lifts the deadline: the Store waits for a secret that does not
    exist yet, and starts once it is put."""
    stores: list[Store] = []
    waiting = threading.Thread(
        target=lambda: stores.append(
            Store(server.client(), ["later"], timeout=None, poll_interval=None)
        ),
        daemon=True,
    )
    waiting.start()
    time.sleep(1.0)
    assert waiting.is_alive()
    server.client().put("later", VALUE)
    waiting.join(10)
    assert not waiting.is_alive()
    assert stores[0].secret("later")() == VALUE  # type: ignore[misc]
    stores[0].close()


def test_failed_poll_is_logged_as_one_line(caplog: pytest.LogCaptureFixture) -> None:
    """When the server goes away, the poller logs one line with the one-line failure,
    naming the secrets that failed alike once."""
    caplog.set_level(logging.WARNING)
    ticker = FakeTicker()
    with new_server() as server:
        for name in ("p/a", "p/b"):
            server.client().put(name, VALUE)
        url = server.url
        store = Store(server.client(timeout=2), ["p/a", "p/b"], ticker=ticker)
    try:
        ticker.poll()
        refused = f"cannot connect to {url}: connection refused"
        expected = f'update poll failed: "p/a", "p/b": {refused}'
        assert store_lines(caplog) == [f"{expected} (continuing)"]
        with pytest.raises(PollError) as caught:
            store.refresh()
        assert str(caught.value) == expected
    finally:
        store.close()


# --- The size limit -------------------------------------------------------------------


def test_value_over_the_limit_says_how_large_a_value_fits(server: LocalServer) -> None:
    """A put of 1.2 MB gets the server's 413, whose reason gives the request limit and
    about how large a value fits in it."""
    with pytest.raises(RequestError) as caught:
        server.client().put("big", b"x" * 1_200_000)
    assert caught.value.status == 413
    assert caught.value.reason == (
        "request body too large: the limit is 1048576 bytes (about 768 KiB of secret value)"
    )


def test_requests_without_a_value_do_not_mention_one() -> None:
    """A 413 on a request that carries no value (a get with a huge name) gives only the
    limit."""
    with new_server() as server:
        response = requests.post(
            f"{server.url}/api/get",
            data=b'{"Name":"' + b"a" * 20_000 + b'"}',
            headers={"Content-Type": "application/json", "Sec-X-Tailscale-No-Browsers": "setec"},
            timeout=5,
        )
    assert (response.status_code, response.text) == (
        413,
        "request body too large: the limit is 16384 bytes\n",
    )
