"""The contract every :class:`~setec_core.authz.Authorizer` must meet, as pytest tests.

Subclass :class:`AuthorizerContract` in your plugin's tests (the class name starting
with ``Test``) and override the ``authorizer`` and ``known_peer`` fixtures; override
``unknown_peer`` to check refusals, and ``bad_options`` to check that
:meth:`~setec_core.authz.Authorizer.from_options` refuses what it must::

    class TestMyAuthorizer(AuthorizerContract):
        @pytest.fixture
        def authorizer(self):
            return MyAuthorizer.from_options({"my_key_file": KEYS})

        @pytest.fixture
        def known_peer(self):
            return Peer("10.0.0.7", 51234, headers={"Authorization": "Bearer " + TOKEN})

        @pytest.fixture
        def unknown_peer(self):
            return Peer("10.0.0.7", 51234, headers={"Authorization": "Bearer nobody"})

        @pytest.fixture
        def bad_options(self):
            return [({},), ({"my_key_file": "/nonexistent"},)]

The tests use only the :class:`~setec_core.authz.Authorizer` interface, and
:class:`~setec_core.peer.Peer` objects such as the HTTP app builds. Among them, a
table of malformed headers and addresses (what any client can send), to which
``identify`` must answer with a caller or a :class:`~setec_core.errors.SetecError`,
never another exception (which the server would answer with a 500 and log as a bug),
and the underscore spellings of identity headers, which must never change who is
identified. No refusal, and no log record, may quote a header value; override
``logged_headers`` to name headers that carry no credential and that the authorizer
logs on purpose.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pytest

from setec_core.authz import Authorizer, Caller
from setec_core.errors import AccessDenied, ConfigError, SetecError
from setec_core.peer import Peer

CANARY = "setec_contract-canary-credential-5f1c"
"""A credential-looking value; no refusal message may quote it."""

GARBAGE = [
    "",
    " ",
    "\x00\x01\x7f",
    "caf\xe9 \xff\xfe",
    "x" * 65536,
    "a, b, c",
    "Bearer",
    "Bearer ",
    "bearer \x00\xff",
    "Bearer " + "A" * 70000,
    "Basic Zm9vOmJhcg==",
    "=?utf-8?q?=FF=FE?=",
    "=?x-unknown-charset?q?abc?=",
    "=?utf-8?b?!!!?=",
    "=?",
    "null",
    "[]",
    "{}",
    "1e999",
    '{"a": [1, {"b": null}]}',
    "[" * 5000,
    '{"x": ' * 3000,
    "1.2.3.4, 5.6.7.8",
    "::ffff:127.0.0.1",
    "999.999.999.999",
]
"""Header values a client can send (WSGI delivers headers as latin-1 text)."""

UNDERSCORE_TWINS = [
    "Tailscale_User_Login",
    "Tailscale_User_Name",
    "Tailscale_User_Profile_Pic",
    "Tailscale_App_Capabilities",
    "Tailscale_Funnel_Request",
    "X_Forwarded_For",
    "X_Real_Ip",
    "Sec_X_Tailscale_No_Browsers",
]
"""Header names a client can send that WSGI spells like real identity headers
(``HTTP_TAILSCALE_USER_LOGIN``): a proxy such as ``tailscale serve`` strips only the
hyphenated spelling, so a :class:`~setec_core.peer.Peer` drops these. The tests add the
twins of the known peer's own headers too."""

GARBAGE_ADDRESSES = [
    ("", None),
    ("not an address", 1),
    ("999.1.1.1", 80),
    ("::ffff:", 80),
    ("fe80::1%eth0", 80),
    ("127.0.0.1:80", None),
    ("\x00", 0),
    ("1" * 1000, 65535),
    ("100.64.0.1", 70000),
]
"""Peer addresses and ports no well-behaved server reports, but a proxy might."""

_KEBAB = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")


def identify_or_refuse(authorizer: Authorizer, peer: Peer) -> Caller | SetecError:
    """Return the caller ``authorizer`` identifies ``peer`` as, or the
    :class:`~setec_core.errors.SetecError` it refuses with; any other exception fails
    the test."""
    try:
        caller = authorizer.identify(peer)
    except SetecError as e:
        return e
    assert isinstance(caller, Caller), f"identify returned {type(caller).__name__}"
    return caller


def with_headers(peer: Peer, headers: Mapping[str, str]) -> Peer:
    """Return ``peer`` with ``headers`` set (replacing those of the same names)."""
    merged = {name.lower(): (name, value) for name, value in peer.headers.items()}
    merged.update({name.lower(): (name, value) for name, value in headers.items()})
    return dataclasses.replace(peer, headers=dict(merged.values()))


def without_header(peer: Peer, name: str) -> Peer:
    """Return ``peer`` without header ``name`` (in any case)."""
    kept = {n: v for n, v in peer.headers.items() if n.lower() != name.lower()}
    return dataclasses.replace(peer, headers=kept)


def who(outcome: Caller | SetecError) -> object:
    """What :func:`identify_or_refuse` decided, comparable across calls: the caller's
    principal and rules, or the refusal's class."""
    if isinstance(outcome, Caller):
        return (outcome.principal, outcome.rules)
    return type(outcome)


@contextmanager
def capture_every_log(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Make ``caplog`` see every record of every logger, DEBUG included, while the
    block runs: loggers with a level of their own are set to DEBUG until the test ends,
    and those that do not propagate get ``caplog``'s handler."""
    caplog.set_level(logging.DEBUG)
    attached: list[logging.Logger] = []
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if not isinstance(logger, logging.Logger):
            continue  # a placeholder for the loggers below it
        if logger.level > logging.DEBUG:
            caplog.set_level(logging.DEBUG, logger=name)
        if not logger.propagate and caplog.handler not in logger.handlers:
            logger.addHandler(caplog.handler)
            attached.append(logger)
    try:
        yield
    finally:
        for logger in attached:
            logger.removeHandler(caplog.handler)


class AuthorizerContract:
    """Identification, refusals, malformed requests, options, reload and close."""

    @pytest.fixture
    def authorizer(self) -> Authorizer:
        """Return the authorizer under test. Override this fixture."""
        raise NotImplementedError("override the 'authorizer' fixture")

    @pytest.fixture
    def known_peer(self) -> Peer:
        """Return a peer the authorizer identifies. Override this fixture."""
        raise NotImplementedError("override the 'known_peer' fixture")

    @pytest.fixture
    def unknown_peer(self) -> Peer | None:
        """Return a peer the authorizer must refuse with AccessDenied, or None to skip
        that test."""
        return None

    @pytest.fixture
    def logged_headers(self) -> Collection[str]:
        """Return the names of headers whose values the authorizer may write to its log
        because they carry no credential (tailscale-serve logs a malformed
        ``Tailscale-App-Capabilities``, the tailnet's grants, for the operator to fix);
        none by default. Refusals never quote them all the same."""
        return ()

    @pytest.fixture
    def bad_options(self) -> Sequence[tuple[Any, ...]]:
        """Return argument tuples for ``from_options`` that it must refuse with
        ConfigError; none (the default) skips that test."""
        return ()

    # --- identity ----------------------------------------------------------------------

    def test_name_is_kebab_case(self, authorizer: Authorizer) -> None:
        """The class's name, which ``--authorizer`` selects, is kebab-case."""
        assert _KEBAB.fullmatch(type(authorizer).name)

    def test_known_peer_is_a_caller(self, authorizer: Authorizer, known_peer: Peer) -> None:
        """The known peer is a Caller whose principal is a user or tags, not both and not
        neither (docs/api.md §7.1)."""
        caller = authorizer.identify(known_peer)
        assert isinstance(caller, Caller)
        principal = caller.principal
        assert bool(principal.user) != bool(principal.tags), principal

    def test_identify_is_repeatable(self, authorizer: Authorizer, known_peer: Peer) -> None:
        """Identifying the same peer twice gives the same principal and rules."""
        first = authorizer.identify(known_peer)
        second = authorizer.identify(known_peer)
        assert (second.principal, second.rules) == (first.principal, first.rules)

    def test_identify_from_many_threads(self, authorizer: Authorizer, known_peer: Peer) -> None:
        """The server identifies requests on many threads at once; each gets the caller."""
        expected = authorizer.identify(known_peer)
        seen: list[object] = []

        def worker() -> None:
            for _ in range(10):
                try:
                    caller = authorizer.identify(known_peer)
                    seen.append((caller.principal, caller.rules))
                except Exception as e:  # reported below, with the others
                    seen.append(e)

        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert seen == [(expected.principal, expected.rules)] * 40

    # --- refusals ----------------------------------------------------------------------

    def test_unknown_peer_is_denied(
        self, authorizer: Authorizer, unknown_peer: Peer | None
    ) -> None:
        """A peer the authorizer does not know is AccessDenied (403)."""
        if unknown_peer is None:
            pytest.skip("no unknown_peer fixture given")
        with pytest.raises(AccessDenied):
            authorizer.identify(unknown_peer)

    @pytest.mark.parametrize("value", GARBAGE, ids=range(len(GARBAGE)))
    def test_malformed_headers_are_a_caller_or_a_setec_error(
        self, authorizer: Authorizer, known_peer: Peer, value: str
    ) -> None:
        """Whatever a header holds, in place of each header the known peer sends and of
        the usual credential headers, identify answers a Caller or a SetecError."""
        names = {*known_peer.headers, "Authorization", "X-Forwarded-For", "Forwarded"}
        for name in sorted(names):
            identify_or_refuse(authorizer, with_headers(known_peer, {name: value}))
        identify_or_refuse(authorizer, dataclasses.replace(known_peer, headers={}))

    @pytest.mark.parametrize(("address", "port"), GARBAGE_ADDRESSES)
    def test_malformed_addresses_are_a_caller_or_a_setec_error(
        self, authorizer: Authorizer, known_peer: Peer, address: str, port: int | None
    ) -> None:
        """Whatever address and port the server reports, identify answers a Caller or a
        SetecError."""
        identify_or_refuse(authorizer, dataclasses.replace(known_peer, address=address, port=port))
        identify_or_refuse(authorizer, dataclasses.replace(known_peer, unix=True, address=""))

    def test_refusals_never_quote_headers(
        self,
        authorizer: Authorizer,
        known_peer: Peer,
        logged_headers: Collection[str],
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A refusal's message goes to the client and the log: it never quotes a header
        value, which may be a credential; nor does any log record, at any level, of any
        logger (but for the ``logged_headers`` fixture's)."""
        names = {*known_peer.headers, "Authorization"}
        loggable = {name.lower() for name in logged_headers}
        with capture_every_log(caplog):
            for name in sorted(names):
                caplog.clear()
                for value in (CANARY, f"Bearer {CANARY}"):
                    peer = with_headers(known_peer, {name: value})
                    outcome = identify_or_refuse(authorizer, peer)
                    # The messages say what leaked without pytest's assertion
                    # rewriting, which a plugin's installed module may not get.
                    if isinstance(outcome, SetecError):
                        assert CANARY not in str(outcome), (
                            f"the refusal quotes the canary of {name}"
                        )
                        assert CANARY not in repr(outcome), f"the refusal's repr quotes {name}"
                if name.lower() in loggable:
                    continue
                for record in caplog.records:
                    assert CANARY not in record.getMessage(), (
                        f"logger {record.name} logged the canary value of {name}"
                    )
                assert CANARY not in caplog.text, f"the log holds the canary value of {name}"

    def test_underscore_twins_never_change_the_caller(
        self, authorizer: Authorizer, known_peer: Peer
    ) -> None:
        """A header name with an underscore, which WSGI spells as its hyphenated twin
        (docs/api.md §1.1), never changes who is identified: beside the real header it
        is ignored, and in place of the known peer's own header it identifies no one the
        peer without that header would not be."""
        expected = who(identify_or_refuse(authorizer, known_peer))
        twins = {name.replace("-", "_"): name for name in known_peer.headers if "-" in name}
        twins.update((twin, twin.replace("_", "-")) for twin in UNDERSCORE_TWINS)
        for twin, real in sorted(twins.items()):
            values = {"mallory@example.com", CANARY, known_peer.headers.get(real, "")}
            for value in sorted(values):
                peer = with_headers(known_peer, {twin: value})
                assert who(identify_or_refuse(authorizer, peer)) == expected, (twin, value)
            if real in known_peer.headers:
                bare = without_header(known_peer, real)
                alone = with_headers(bare, {twin: known_peer.headers[real]})
                bare_outcome = who(identify_or_refuse(authorizer, bare))
                assert who(identify_or_refuse(authorizer, alone)) == bare_outcome, twin

    # --- configuration and lifecycle ---------------------------------------------------

    def test_bad_options_are_config_errors(
        self, authorizer: Authorizer, bad_options: Sequence[tuple[Any, ...]]
    ) -> None:
        """from_options refuses each bad configuration with ConfigError (which
        setec-serve reports as a usage error), never another exception."""
        if not bad_options:
            pytest.skip("no bad_options fixture given")
        for arguments in bad_options:
            with pytest.raises(ConfigError):
                type(authorizer).from_options(*arguments)

    def test_reload_keeps_the_callers(self, authorizer: Authorizer, known_peer: Peer) -> None:
        """After reload() (SIGHUP) with the configuration unchanged, the known peer is the
        same caller."""
        before = authorizer.identify(known_peer)
        authorizer.reload()
        after = authorizer.identify(known_peer)
        assert (after.principal, after.rules) == (before.principal, before.rules)

    def test_close_is_idempotent(self, authorizer: Authorizer) -> None:
        """close() may be called twice (the server closes on every way out)."""
        authorizer.close()
        authorizer.close()
