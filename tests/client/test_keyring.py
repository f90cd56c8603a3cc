"""Keyring: every version of one secret, over real HTTP to a local server, as Go's, with
two fixes: optional pruning of versions deleted on the server, and a clear error when
the active version is not held."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from setec_core.client import Client, Keyring
from setec_core.errors import AccessDenied, NotFound, SetecError, UnavailableError
from setec_core.model import SecretInfo, SecretValue
from setec_core.testing import SUPERUSER, audit_entries, make_caller
from setec_core.testing.server import LocalServer, new_server

SU = SUPERUSER
NAME = "kr/signing-key"
LEAK = b"keyring-secret-7b1d"  # grepped for in every error message and log line below


@pytest.fixture(autouse=True)
def no_values_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    caplog.set_level(logging.DEBUG)
    yield
    assert LEAK.decode() not in caplog.text


@pytest.fixture
def three_versions(server: LocalServer) -> None:
    """a1, a2, a3 with a3 active, as Go's keyring_test.go sets up."""
    for value in (b"a1", b"a2", b"a3"):
        version = server.db.put(SU, NAME, value)
    server.db.activate(SU, NAME, version)


class FailingReader:
    """A Client that fails ``get_version`` for the versions in ``fail`` (a stand-in for
    a server that goes away half-way through an update)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.fail: set[int] = set()
        self.fetched: list[int] = []

    def info(self, name: str) -> SecretInfo:
        return self.client.info(name)

    def get_version(self, name: str, version: int) -> SecretValue:
        if version in self.fail:
            raise UnavailableError("cannot connect to http://127.0.0.1:9: connection refused")
        self.fetched.append(version)
        return self.client.get_version(name, version)


# --- Go's tests -------------------------------------------------------------------------


@pytest.mark.usefixtures("three_versions")
def test_get_keyring(client: Client) -> None:
    """Active() is (3, "a3"); Get(1) and Get(2) are "a1" and "a2"."""
    keyring = client.get_keyring(NAME)
    assert keyring.active() == SecretValue(b"a3", 3)
    assert keyring.get(1) == b"a1"
    assert keyring.get(2) == b"a2"
    assert keyring.versions() == [1, 2, 3]
    assert keyring.active_version == 3
    assert len(keyring) == 3


@pytest.mark.usefixtures("three_versions")
def test_unseen_versions_are_none(client: Client) -> None:
    """Versions the keyring does not hold (4, 999) are None."""
    keyring = client.get_keyring(NAME)
    assert keyring.get(4) is None
    assert keyring.get(999) is None


@pytest.mark.usefixtures("three_versions")
def test_new_version_visible_after_update_but_not_active(
    server: LocalServer, client: Client
) -> None:
    """A new server-side version is not seen until update(); then it is
    held but not active."""
    keyring = client.get_keyring(NAME)
    server.db.put(SU, NAME, b"a4")
    assert keyring.get(4) is None
    keyring.update()
    assert keyring.get(4) == b"a4"
    assert keyring.active() == SecretValue(b"a3", 3)


@pytest.mark.usefixtures("three_versions")
def test_activation_visible_after_update(server: LocalServer, client: Client) -> None:
    """After a server-side activate and update(), active() follows."""
    keyring = client.get_keyring(NAME)
    server.db.activate(SU, NAME, 1)
    assert keyring.active().version == 3
    keyring.update()
    assert keyring.active() == SecretValue(b"a1", 1)


# --- update: only what is missing, all or nothing ---------------------------------------


@pytest.mark.usefixtures("three_versions")
def test_update_fetches_only_missing_versions(server: LocalServer, client: Client) -> None:
    """update() asks info once and fetches only the versions not held; each
    fetch is one audited get."""
    reader = FailingReader(client)
    keyring = Keyring.fetch(reader, NAME)
    assert reader.fetched == [1, 2, 3]
    server.db.put(SU, NAME, b"a4")
    keyring.update()
    assert reader.fetched == [1, 2, 3, 4]
    keyring.update()
    assert reader.fetched == [1, 2, 3, 4]
    gets = [
        e["secretVersion"]
        for e in audit_entries(server.db)
        if e["action"] == "get" and e.get("secret") == NAME
    ]
    assert gets == [1, 2, 3, 4]


@pytest.mark.usefixtures("three_versions")
def test_update_is_all_or_nothing(server: LocalServer, client: Client) -> None:
    """If one version fails to fetch, the keyring is left exactly as it was (no
    new versions, same active), and the error names the secret and the version."""
    reader = FailingReader(client)
    keyring = Keyring.fetch(reader, NAME)
    server.db.put(SU, NAME, b"a4")
    server.db.put(SU, NAME, b"a5")
    server.db.activate(SU, NAME, 5)
    reader.fail = {5}
    with pytest.raises(
        UnavailableError, match=r'get "kr/signing-key" version 5: cannot connect to '
    ):
        keyring.update()
    assert keyring.versions() == [1, 2, 3]
    assert keyring.active() == SecretValue(b"a3", 3)
    reader.fail = set()
    keyring.update()
    assert keyring.versions() == [1, 2, 3, 4, 5]
    assert keyring.active() == SecretValue(b"a5", 5)


def test_fetch_of_missing_secret(client: Client) -> None:
    """get_keyring of a secret that does not exist is NotFound naming it."""
    with pytest.raises(NotFound, match=r'info "kr/missing": not found'):
        client.get_keyring("kr/missing")


@pytest.mark.usefixtures("three_versions")
def test_needs_info_and_get(server: LocalServer) -> None:
    """Without info, fetching fails at info; with info but not get, it fails at
    the first version, naming it; both are AccessDenied."""
    with (
        new_server(server.db, caller=make_caller((["get"], ["*"]))) as s,
        pytest.raises(AccessDenied, match=r'info "kr/signing-key": access denied'),
    ):
        s.client().get_keyring(NAME)
    with (
        new_server(server.db, caller=make_caller((["info"], ["*"]))) as s,
        pytest.raises(AccessDenied, match=r'get "kr/signing-key" version 1: access'),
    ):
        s.client().get_keyring(NAME)


@pytest.mark.usefixtures("three_versions")
def test_errors_keep_the_original_as_cause(client: Client) -> None:
    """A renamed error keeps the client's error as its cause, for callers who need it."""
    reader = FailingReader(client)
    reader.fail = {2}
    with pytest.raises(UnavailableError) as info:
        Keyring.fetch(reader, NAME)
    assert isinstance(info.value.__cause__, UnavailableError)


# --- deleted versions ------------------------------------------------------------------


@pytest.mark.usefixtures("three_versions")
def test_deleted_versions_are_kept_by_default(server: LocalServer, client: Client) -> None:
    """As in Go, versions deleted on the server stay in the keyring (old
    signatures still verify)."""
    keyring = client.get_keyring(NAME)
    server.db.delete_version(SU, NAME, 1)
    keyring.update()
    assert keyring.get(1) == b"a1"
    assert keyring.versions() == [1, 2, 3]


@pytest.mark.usefixtures("three_versions")
def test_prune_forgets_deleted_versions(server: LocalServer, client: Client) -> None:
    """A fix over Go: with prune=True, update() forgets versions the server no longer
    lists; the active one is always kept."""
    keyring = Keyring.fetch(client, NAME, prune=True)
    server.db.delete_version(SU, NAME, 1)
    server.db.delete_version(SU, NAME, 2)
    keyring.update()
    assert keyring.get(1) is None
    assert keyring.versions() == [3]
    assert keyring.active() == SecretValue(b"a3", 3)


def test_active_without_the_active_version(client: Client) -> None:
    """A fix over Go: active() of a keyring that does not hold its active version
    raises NotFound naming the secret, rather than crashing."""
    keyring = Keyring(client, NAME)
    assert keyring.versions() == []
    assert keyring.active_version == 0
    with pytest.raises(NotFound, match=r'keyring "kr/signing-key" holds no versions; call upd'):
        keyring.active()


class LyingReader(FailingReader):
    """Info says version 7 is active but lists only 1; version 7 cannot be fetched."""

    def info(self, name: str) -> SecretInfo:
        return SecretInfo(name, (1,), 7)

    def get_version(self, name: str, version: int) -> SecretValue:
        if version == 7:
            raise NotFound()
        return SecretValue(b"only", version)


def test_active_version_not_listed_is_fetched_too(client: Client) -> None:
    """An active version missing from info's list is fetched anyway; if that fails the
    update fails (NotFound naming the version) and active() stays a clear error."""
    keyring = Keyring(LyingReader(client), NAME)
    with pytest.raises(NotFound, match=r'get "kr/signing-key" version 7: not found'):
        keyring.update()
    with pytest.raises(NotFound, match="holds no versions"):
        keyring.active()


# --- threads, repr, errors --------------------------------------------------------------


@pytest.mark.usefixtures("three_versions")
def test_thread_safety(server: LocalServer, client: Client) -> None:
    """Concurrent updates and reads never fail or see a half-applied update: the
    active version is always held."""
    keyring = client.get_keyring(NAME)
    stop = threading.Event()
    errors: list[BaseException] = []

    def read() -> None:
        while not stop.is_set():
            try:
                active = keyring.active()
                assert keyring.get(active.version) == active.value
            except BaseException as e:  # report any failure from the thread
                errors.append(e)
                return

    def update() -> None:
        for _ in range(5):
            try:
                keyring.update()
            except BaseException as e:  # report any failure from the thread
                errors.append(e)
                return

    readers = [threading.Thread(target=read) for _ in range(3)]
    for t in readers:
        t.start()
    for i in range(4, 9):
        server.db.activate(SU, NAME, server.db.put(SU, NAME, f"a{i}".encode()))
        updaters = [threading.Thread(target=update) for _ in range(3)]
        for t in updaters:
            t.start()
        for t in updaters:
            t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert keyring.versions() == list(range(1, 9))
    assert keyring.active() == SecretValue(b"a8", 8)


def test_repr_and_errors_show_no_values(server: LocalServer, client: Client) -> None:
    """repr shows the name and version numbers; errors name the secret and version;
    neither shows a value."""
    server.db.put(SU, NAME, LEAK)
    keyring = client.get_keyring(NAME)
    assert repr(keyring) == "Keyring('kr/signing-key', versions=[1], active=1)"
    assert LEAK.decode() not in repr(keyring.active())
    reader = FailingReader(client)
    reader.fail = {1}
    with pytest.raises(SetecError) as info:
        Keyring.fetch(reader, NAME)
    assert LEAK.decode() not in str(info.value)


# --- the docs example (docs/client.md, Keyring) -----------------------------------


def test_docs_example(server: LocalServer, client: Client) -> None:
    """docs/client.md: the Keyring example, as written."""
    admin = server.client()
    admin.put("billing/signing-key", b"key-1")  # version 1, active
    keyring = client.get_keyring("billing/signing-key")  # or Keyring.fetch(client, name)
    admin.create_version("billing/signing-key", 2, b"key-2")  # a new version, now active
    assert keyring.active().version == 1  # not seen until update()

    keyring.update()  # fetches version 2 only
    active = keyring.active()
    assert (active.version, active.value) == (2, b"key-2")  # sign with this
    assert keyring.get(1) == b"key-1"  # verify older signatures
    assert keyring.get(3) is None  # a version it does not hold
    assert keyring.versions() == [1, 2]
