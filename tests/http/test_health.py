"""The health pages through the WSGI app: ``/healthz`` as Go has it, ``/readyz`` and
``/livez`` for Kubernetes' probes (docs/server.md, "Operating it"), the version header
they carry, and the process metrics on ``/metrics``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from importlib import metadata
from pathlib import Path

import pytest
from store_tampering import tamper
from werkzeug.test import Client

from setec_core import AccessDenied, Database
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.builtin.dev_key import DevKeyProvider
from setec_core.builtin.sqlite_storage import SqliteStorage
from setec_core.errors import StorageUnavailable
from setec_core.http import make_app
from setec_core.http.health import STORE_DISAGREES, VERSION_HEADER
from setec_core.storage import MetaWrite, RecordWrite
from setec_core.testing import SUPERUSER, FixedAuthorizer, new_database
from setec_core.testing.fakes import FaultyStorage

PAGES = ("/healthz", "/readyz", "/livez")
GUARD = {"Sec-X-Tailscale-No-Browsers": "setec"}


class OutageStorage(FaultyStorage):
    """A store whose server can be taken away: while ``down``, reading its revision and
    committing raise StorageUnavailable, as the PostgreSQL backend does in an outage."""

    down = False

    def _check(self) -> None:
        if self.down:
            raise StorageUnavailable("store postgresql://db.test/setec: connection refused")

    def revision(self) -> int:
        self._check()
        return super().revision()

    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        self._check()
        return super().commit(writes, meta)

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        self._check()
        return super().wait_for_change(revision, timeout)


@pytest.fixture
def db() -> Iterator[Database]:
    """A new in-memory database."""
    with new_database() as db:
        yield db


def answers(client: Client) -> dict[str, tuple[int, bytes]]:
    """Each health page's status and body."""
    got = {}
    for page in PAGES:
        response = client.get(page)
        got[page] = (response.status_code, response.data)
    return got


def wait_for(condition: Callable[[], object], what: str, timeout: float = 5) -> None:
    """Wait until ``condition()`` is true, or fail saying ``what`` did not happen."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_healthy_server_is_ok_on_every_page(db: Database) -> None:
    """A healthy server answers ``ok`` on the three pages, as plain text, and HEAD is
    GET without the body."""
    client = Client(make_app(db, FixedAuthorizer(SUPERUSER)))
    assert answers(client) == {page: (200, b"ok\n") for page in PAGES}
    for page in PAGES:
        assert client.get(page).headers["Content-Type"] == "text/plain; charset=utf-8"
        head = client.head(page)
        assert (head.status_code, head.data, head.headers["Content-Length"]) == (200, b"", "3")


def test_the_health_pages_carry_the_version_and_the_api_does_not(db: Database) -> None:
    """``Setec-Version`` names the installed version on the health pages, HEAD and 503s
    included, and on no other answer (the API's stay as lean as Go's)."""
    client = Client(make_app(db, FixedAuthorizer(SUPERUSER)))
    version = metadata.version("pysetec")
    for page in PAGES:
        assert client.get(page).headers[VERSION_HEADER] == version
        assert client.head(page).headers[VERSION_HEADER] == version
    put = client.post("/api/put", json={"Name": "a", "Value": "eA=="}, headers=GUARD)
    assert put.status_code == 200
    for other in (put, client.get("/metrics"), client.get("/"), client.get("/nope")):
        assert VERSION_HEADER not in other.headers
    db.audit_log.close()
    assert client.get("/livez").headers[VERSION_HEADER] == version


def test_the_health_pages_need_no_identity_or_guard_header(db: Database) -> None:
    """Probes send no credentials and no browser guard header: the pages answer without
    asking the authorizer, even one that refuses everyone."""
    authz = FixedAuthorizer(SUPERUSER, error=AccessDenied())
    client = Client(make_app(db, authz))
    assert answers(client) == {page: (200, b"ok\n") for page in PAGES}
    assert authz.identified == 0


def test_the_health_pages_keep_the_host_and_method_rules(db: Database) -> None:
    """A Host the server does not answer to is 421 on the new pages too (a rebinding
    page learns nothing), and a method other than GET or HEAD is 400."""
    client = Client(make_app(db, FixedAuthorizer(SUPERUSER)))
    for page in ("/readyz", "/livez"):
        foreign = client.get(page, headers={"Host": "attacker.example"})
        assert foreign.status_code == 421
        assert VERSION_HEADER not in foreign.headers
        post = client.post(page)
        assert (post.status_code, post.data) == (400, b"invalid method\n")
        assert client.get(page + "/").status_code == 404


def test_a_failed_audit_log_fails_every_page(db: Database) -> None:
    """Once the audit log refuses writes the server refuses everything until restarted:
    503 ``unhealthy: REASON`` on all three pages, so the liveness probe restarts it."""
    client = Client(make_app(db, FixedAuthorizer(SUPERUSER)))
    db.audit_log.close()
    got = answers(client)
    assert {status for status, _ in got.values()} == {503}
    assert len(set(got.values())) == 1, got
    assert got["/healthz"][1].startswith(b"unhealthy: ")
    assert b"closed" in got["/healthz"][1]


def test_a_degraded_server_is_ready_and_alive(tmp_path: Path) -> None:
    """While the store cannot be read the server serves reads from memory: /healthz and
    /readyz answer 200 ``degraded: ...`` (ready: reads work), /livez 200 ``ok`` (a
    restart cannot bring the store back, and would stop the reads). When the store is
    back, every page says ``ok`` again."""
    storage = OutageStorage(SqliteStorage(tmp_path / "secrets.db"))
    db = Database(storage, DevKeyProvider(""), AuditLog(MemoryAuditSink()))
    try:
        db.put(SUPERUSER, "x", b"health-outage")
        follower = db.follow(interval=0.05)
        client = Client(make_app(db, FixedAuthorizer(SUPERUSER)))
        storage.down = True
        wait_for(lambda: follower.failure, "the follower did not notice the outage")
        got = answers(client)
        assert got["/healthz"] == got["/readyz"]
        assert got["/readyz"][0] == 200
        assert got["/readyz"][1].startswith(b"degraded: the store has not been read for ")
        assert got["/livez"] == (200, b"ok\n")
        read = client.post("/api/get", json={"Name": "x"}, headers=GUARD)
        assert read.status_code == 200
        storage.down = False
        wait_for(lambda: not follower.failure, "the follower did not recover", timeout=10)
        assert answers(client) == {page: (200, b"ok\n") for page in PAGES}
    finally:
        db.close()


def test_a_store_that_no_longer_agrees_fails_every_page(tmp_path: Path) -> None:
    """A store changed behind the server's back (re-encrypted by another process, or
    tampered with) is not an outage to wait out: 503 on all three pages, with the same
    reason as /healthz's, so that the liveness probe restarts the server."""
    state = tmp_path / "a"
    with Database.open(state, key="dev://", storage=f"sqlite://{tmp_path / 'secrets.db'}") as db:
        db.put(SUPERUSER, "x", b"health-tamper")
        follower = db.follow(interval=0.05)
        client = Client(make_app(db, FixedAuthorizer(SUPERUSER)))
        tamper(
            tmp_path,
            ("UPDATE meta SET value = ? WHERE name = 'integrity'", (b"\\x00" * 200,)),
            ("UPDATE revision_counter SET revision = revision + 1", ()),
        )
        wait_for(lambda: follower.fatal, "the follower did not find the entry")
        expected = (503, f"unhealthy: {STORE_DISAGREES}\n".encode())
        assert answers(client) == {page: expected for page in PAGES}


def test_metrics_have_the_process_and_runtime_collectors(db: Database) -> None:
    """/metrics has prometheus-client's process, platform and GC metrics beside setec's,
    from the app's own registry (two apps in one process each have them)."""
    first = Client(make_app(db, FixedAuthorizer(SUPERUSER))).get("/metrics").text
    second = Client(make_app(db, FixedAuthorizer(SUPERUSER))).get("/metrics").text
    for text in (first, second):
        for name in (
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "python_info{",
            'python_gc_objects_collected_total{generation="0"} ',
            "setec_audit_healthy 1.0",
        ):
            assert name in text, name
