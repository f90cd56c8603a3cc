"""What an authorizer is given (a Peer and its headers), and the test fakes of
setec_core.testing against the Authorizer contract."""

from __future__ import annotations

import dataclasses
import logging

import pytest

from setec_core import Caller, Peer, make_caller
from setec_core.errors import AccessDenied
from setec_core.peer import PeerHeaders
from setec_core.testing import SUPERUSER, AuthorizerContract, FixedAuthorizer, HeaderAuthorizer

ENVIRON = {
    "REQUEST_METHOD": "POST",
    "REMOTE_ADDR": "127.0.0.1",
    "CONTENT_TYPE": "application/json",
    "CONTENT_LENGTH": "12",
    "HTTP_AUTHORIZATION": "Bearer secret-token",
    "HTTP_X_FORWARDED_FOR": "100.64.0.7",
    "wsgi.input": object(),
}


# --- Peer and its headers --------------------------------------------------------------


def test_headers_are_a_case_insensitive_view_of_the_environ() -> None:
    """Names match in any case, dashes for the environ's underscores; the two headers
    WSGI keeps unprefixed are found too; nothing but headers is visible."""
    headers = PeerHeaders(ENVIRON)
    assert headers["authorization"] == headers["AUTHORIZATION"] == "Bearer secret-token"
    assert headers.get("x-forwarded-for") == "100.64.0.7"
    assert headers.get("Content-Type") == "application/json"
    assert headers.get("Request-Method") is None
    assert headers.get("Wsgi.Input", "absent") == "absent"
    assert sorted(headers) == ["Authorization", "Content-Length", "Content-Type", "X-Forwarded-For"]
    assert len(headers) == 4
    with pytest.raises(KeyError):
        headers["Remote-Addr"]


def test_headers_repr_shows_names_never_values() -> None:
    """Header values carry credentials: a Peer's repr names its headers only."""
    peer = Peer("127.0.0.1", 1, headers=PeerHeaders(ENVIRON))
    assert "Authorization" in repr(peer)
    assert "secret-token" not in repr(peer)


def test_a_plain_mapping_becomes_peer_headers() -> None:
    """A Peer built with a dict (as tests do) gets the same case-insensitive headers;
    a header given twice is one value joined with ", ", as WSGI joins them."""
    peer = Peer("10.0.0.1", headers={"X-Setec-Test-Caller": "alice"})
    assert isinstance(peer.headers, PeerHeaders)
    assert peer.headers.get("x-setec-test-caller") == "alice"
    assert PeerHeaders.of([("Via", "a"), ("via", "b")]) == {"Via": "a, b"}
    assert Peer().headers == {}


def test_peer_is_immutable() -> None:
    """An authorizer cannot change what the next one, or the server, sees."""
    peer = Peer("10.0.0.1", 443, tls=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        peer.address = "127.0.0.1"  # type: ignore[misc]


def test_peer_is_hashable() -> None:
    """An authorizer may cache by peer: a Peer hashes, equal peers hash alike, and
    peers differing only in headers are not equal."""
    peer = Peer("10.0.0.1", 443, tls=True, headers={"Authorization": "Bearer a"})
    same = Peer("10.0.0.1", 443, tls=True, headers={"authorization": "Bearer a"})
    other = Peer("10.0.0.1", 443, tls=True, headers={"Authorization": "Bearer b"})
    assert hash(peer) == hash(same)
    assert {peer: "alice"}[same] == "alice"
    assert peer != other
    assert other not in {peer: "alice"}
    assert hash(peer_of_environ()) == hash(peer_of_environ())


def peer_of_environ() -> Peer:
    """The Peer the HTTP app builds for :data:`ENVIRON` (a view of the environ)."""
    return Peer("127.0.0.1", 40000, headers=PeerHeaders(ENVIRON))


@pytest.mark.parametrize(
    "name", ["Tailscale_User_Login", "tailscale_user-login", "X_Setec_Test_Caller", "_"]
)
def test_header_names_with_underscores_are_dropped(name: str) -> None:
    """WSGI spells ``Tailscale_User_Login`` as ``Tailscale-User-Login``; a Peer built
    from names drops any name with an underscore, so neither reaches an authorizer as
    the other, alone or beside it."""
    alone = Peer("127.0.0.1", headers={name: "mallory@example.com"})
    assert dict(alone.headers) == {}
    real = name.replace("_", "-")
    beside = Peer("127.0.0.1", headers={real: "alice@example.com", name: "mallory@example.com"})
    assert beside.headers.get(real) == "alice@example.com"
    assert PeerHeaders.of([(name, "mallory@example.com")]) == {}


def test_underscore_twins_cannot_name_a_test_caller() -> None:
    """The hole this closes, end to end: a hand-built Peer carrying only the underscore
    spelling of an identity header is not identified by it."""
    authorizer = HeaderAuthorizer({"mallory": ALICE})
    with pytest.raises(AccessDenied):
        authorizer.identify(Peer("127.0.0.1", headers={"X_Setec_Test_Caller": "mallory"}))


# --- the fakes meet the contract --------------------------------------------------------


class TestFixedAuthorizerContract(AuthorizerContract):
    """FixedAuthorizer, which identifies every peer as one caller."""

    @pytest.fixture
    def authorizer(self) -> FixedAuthorizer:
        return FixedAuthorizer(SUPERUSER)

    @pytest.fixture
    def known_peer(self) -> Peer:
        return Peer("127.0.0.1", 40000)


ALICE = make_caller((["get"], ["app/*"]), user="alice@example.com")


class TestHeaderAuthorizerContract(AuthorizerContract):
    """HeaderAuthorizer, which picks the caller named by a test header."""

    @pytest.fixture
    def authorizer(self) -> HeaderAuthorizer:
        return HeaderAuthorizer({"alice": ALICE})

    @pytest.fixture
    def known_peer(self) -> Peer:
        return Peer("127.0.0.1", 40000, headers={HeaderAuthorizer.HEADER: "alice"})

    @pytest.fixture
    def unknown_peer(self) -> Peer:
        return Peer("127.0.0.1", 40000, headers={HeaderAuthorizer.HEADER: "mallory"})


def test_fixed_authorizer_records_the_peer() -> None:
    """FixedAuthorizer keeps the last peer it was given, for tests of what a server
    passes, and raises its error when one is set."""
    authorizer = FixedAuthorizer(SUPERUSER)
    peer = Peer("127.0.0.1", 40000)
    assert authorizer.identify(peer) == SUPERUSER
    assert (authorizer.peer, authorizer.identified) == (peer, 1)
    authorizer.error = AccessDenied()
    with pytest.raises(AccessDenied):
        authorizer.identify(peer)


class LoggingHeaderAuthorizer(HeaderAuthorizer):
    """A HeaderAuthorizer with the bug the contract looks for: it logs, at DEBUG on a
    logger set to WARNING, the header value it refuses."""

    def identify(self, peer: Peer) -> Caller:
        try:
            return super().identify(peer)
        except AccessDenied:
            LEAKY_LOG.debug("refused caller %r", peer.headers.get(self.HEADER))
            raise


LEAKY_LOG = logging.getLogger("setec.tests.leaky_authorizer")


def test_the_contract_reads_the_log_for_quoted_headers(caplog: pytest.LogCaptureFixture) -> None:
    """The contract's check that refusals never quote a header reads every log record,
    DEBUG included, even of a logger whose own level would hide it; a header named in
    ``logged_headers`` may be logged."""
    LEAKY_LOG.setLevel(logging.WARNING)
    try:
        with pytest.raises(AssertionError, match="canary"):
            AuthorizerContract().test_refusals_never_quote_headers(
                LoggingHeaderAuthorizer({"alice": ALICE}),
                Peer("127.0.0.1", headers={HeaderAuthorizer.HEADER: "alice"}),
                (),
                caplog,
            )
        caplog.clear()
        AuthorizerContract().test_refusals_never_quote_headers(
            LoggingHeaderAuthorizer({"alice": ALICE}),
            Peer("127.0.0.1", headers={HeaderAuthorizer.HEADER: "alice"}),
            [HeaderAuthorizer.HEADER],
            caplog,
        )
    finally:
        LEAKY_LOG.setLevel(logging.NOTSET)
