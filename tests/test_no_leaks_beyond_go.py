"""No secret leaves through a side door of what this server adds to Go setec's API
(docs/api.md §9): every new endpoint and request field is driven through a real server
on loopback, over a SQLite store and a file audit log, with a distinctive value and
description, and neither turns up where it has no business.

A value (raw, or in base64) must never be in a log record, an access line, the audit
log, the metrics, an error body, an exception's message or a repr. A description is
shown to callers who may ``info`` the secret (info, list, a 409's ``Current``), and
nowhere else: not in logs, access lines, audit entries (which record its length),
metrics, nor in the store, where it is encrypted with the record."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from setec_core import Database, VersionConflict, make_caller
from setec_core.audit import AuditLog, FileAuditSink
from setec_core.client import Client
from setec_core.errors import RequestError, SetecError
from setec_core.testing import SUPERUSER, TEST_KEY, HeaderAuthorizer
from setec_core.testing.server import LocalServer

VALUE = b"leak-canary-value-9f3b2c"
OTHER = b"leak-canary-other-77e0a1"
DESCRIPTION = "leak-canary-description-71ad"
HEADERS = {"Sec-X-Tailscale-No-Browsers": "setec", "Content-Type": "application/json"}
CALLERS = {
    "su": SUPERUSER,
    # writes and deletes under app/, but may not info or get: guards and pending names
    # must tell it nothing more.
    "writer": make_caller((["put", "create-version", "delete"], ["app/*"]), user="w"),
    # may info app/, nothing else.
    "reader": make_caller((["info"], ["app/*"]), user="r"),
}


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


#: Every form of a value that must never leave except as a get's answer.
FORBIDDEN_VALUES = tuple(
    form
    for value in (VALUE, OTHER)
    for form in (value.decode(), _b64(value), repr(value), value.hex())
)


class Run:
    """A server over a SQLite store and a file audit log, what it wrote to its access
    log, and the answers it gave (outside get and get-many, none should hold a value)."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = tmp_path / "secrets.db"
        self.audit = tmp_path / "audit.log"
        self.db = Database.open(
            key=TEST_KEY,
            storage=f"sqlite://{self.store}",
            audit=AuditLog(FileAuditSink(self.audit)),
        )
        self.access: list[str] = []
        self.server = LocalServer(
            self.db,
            authorizer=HeaderAuthorizer(CALLERS),
            app_options={"access_lines": self.access.append, "watch_timeout_cap": 5},
        )
        #: Bodies of answers that should never hold a value (all but get's).
        self.bodies: list[bytes] = []

    def post(self, endpoint: str, body: dict[str, Any], caller: str = "su") -> requests.Response:
        """POST ``body`` to ``/api/ENDPOINT`` as ``caller``."""
        response = requests.post(
            f"{self.server.url}/api/{endpoint}",
            data=json.dumps(body).encode(),
            headers={**HEADERS, HeaderAuthorizer.HEADER: caller},
            timeout=20,
        )
        return response

    def quiet(self, endpoint: str, body: dict[str, Any], caller: str = "su") -> requests.Response:
        """:meth:`post`, keeping the answer to check it holds no value."""
        response = self.post(endpoint, body, caller)
        self.bodies.append(response.content)
        return response

    def client(self, caller: str = "su") -> Client:
        """Our client, as ``caller``."""
        session = requests.Session()
        session.headers[HeaderAuthorizer.HEADER] = caller
        return Client(self.server.url, session=session)


@pytest.fixture
def run(tmp_path: Path) -> Iterator[Run]:
    """A running :class:`Run`; the test closes it to read what it left."""
    running = Run(tmp_path)
    try:
        yield running
    finally:
        running.server.close()
        running.db.close()


def _drive(run: Run) -> list[str]:
    """Every addition beyond Go's API, by the wire and by our client, in ways that
    succeed and ways that fail; returns the texts of exceptions and reprs seen."""
    texts: list[str] = []
    # Extensions, guarded puts (holding and failing), set-info, info and list.
    assert run.quiet("extensions", {}).status_code == 200
    assert run.quiet("put", {"Name": "app/db", "Value": _b64(VALUE), "IfActiveVersion": 0}).ok
    assert run.quiet("set-info", {"Name": "app/db", "Description": DESCRIPTION}).ok
    assert run.quiet("set-info", {"Name": "app/db", "Description": DESCRIPTION}).ok  # unchanged
    missing = run.quiet("set-info", {"Name": "app/none", "Description": DESCRIPTION})
    assert missing.status_code == 404
    refused = run.quiet("set-info", {"Name": "app/db", "Description": DESCRIPTION}, "reader")
    assert refused.status_code == 403
    conflict = run.quiet("put", {"Name": "app/db", "Value": _b64(OTHER), "IfActiveVersion": 7})
    assert conflict.status_code == 409
    assert DESCRIPTION in conflict.text  # Current, for a caller who may info it
    blind = run.quiet("put", {"Name": "app/db", "Value": _b64(OTHER), "IfVersions": [5]}, "writer")
    assert (blind.status_code, blind.json()["Current"]) == (409, None)
    assert DESCRIPTION not in blind.text
    assert (
        run.quiet(
            "create-version",
            {"Name": "app/db", "Version": 5, "Value": _b64(OTHER), "IfActiveVersion": 2},
        ).status_code
        == 409
    )
    assert run.quiet(
        "create-version",
        {"Name": "app/db", "Version": 5, "Value": _b64(OTHER), "IfVersions": [1]},
    ).ok
    assert run.quiet("activate", {"Name": "app/db", "Version": 1, "IfActiveVersion": 5}).ok
    assert (
        run.quiet("delete-version", {"Name": "app/db", "Version": 5, "IfVersions": [9]}).status_code
        == 409
    )
    assert DESCRIPTION in run.quiet("info", {"Name": "app/db"}).text
    assert DESCRIPTION in run.quiet("list", {}).text
    # Batch gets and conditional gets: the values come back, to this caller only.
    many = run.post("get-many", {"Secrets": [{"Name": "app/db"}, {"Name": "app/db", "Version": 5}]})
    assert [s.get("Value") for s in many.json()["Secrets"]] == [_b64(VALUE), _b64(OTHER)]
    denied = run.quiet("get-many", {"Secrets": [{"Name": "app/db"}, {"Name": "x"}]}, "reader")
    assert [s["Status"] for s in denied.json()["Secrets"]] == [403, 403]
    # Watches: answered at once, denied, and one that waits and is woken.
    assert run.quiet("watch", {"Secrets": [{"Name": "app/db", "Version": 3}]}).ok
    assert run.quiet("watch", {"Secrets": [{"Name": "zzz", "Version": 0}]}, "reader").ok
    client = run.client()
    assert client.watch({"app/db": 1}, timeout=1) == []  # waited, timed out
    # Recoverable delete: put aside, a write refused (409 for a caller who may delete),
    # listed, undeleted, deleted again and purged.
    run.db.recovery_window = 3600
    assert run.quiet("delete", {"Name": "app/db", "IfActiveVersion": 1}).ok
    pending = run.quiet("put", {"Name": "app/db", "Value": _b64(OTHER)}, "writer")
    assert pending.status_code == 409
    assert "pending deletion" in pending.text
    assert "app/db" in run.quiet("list-deleted", {}).text
    assert run.quiet("undelete", {"Name": "app/db"}).ok
    assert run.quiet("watch", {"Secrets": [{"Name": "app/db", "Version": 0}]}).ok
    # Our client: its results, errors and reprs.
    values = client.get_many(["app/db", ("app/db", 5)])
    texts += [repr(values), repr(client.info("app/db")), repr(client.list())]
    for failing in (
        lambda: client.put("app/db", OTHER, if_active_version=9),
        lambda: client.create_version("app/db", 6, OTHER, if_versions=[1]),
        lambda: run.client("writer").put("app/db", OTHER, if_versions=[1]),
    ):
        with pytest.raises(VersionConflict) as conflict_info:
            failing()
        texts += [str(conflict_info.value), repr(conflict_info.value)]
    client.set_info("app/db", DESCRIPTION + "-2")
    client.delete("app/db")
    with pytest.raises(RequestError, match="pending deletion") as pending_info:
        run.client("writer").put("app/db", OTHER)
    texts += [str(pending_info.value), repr(client.list_deleted())]
    client.undelete("app/db")
    client.delete("app/db", purge=True)
    with pytest.raises(SetecError) as gone:
        client.undelete("app/db")
    texts.append(str(gone.value))
    return texts


def test_no_value_or_description_leaves_through_a_side_door(
    run: Run, caplog: pytest.LogCaptureFixture
) -> None:
    """Logs (root logger at DEBUG), access lines, the audit log, /metrics, error bodies,
    exception messages and reprs hold no value; none but info-level answers hold the
    description, and the store holds neither in plain text."""
    caplog.set_level(logging.DEBUG)
    texts = _drive(run)
    metrics = requests.get(f"{run.server.url}/metrics", timeout=10).text
    run.db.flush_access()
    run.server.close()
    run.db.close()
    audit = run.audit.read_text()
    # Something of each was captured, or the checks below prove nothing.
    for expected in ('"descriptionBytes":28', '"outcome":"guard-failed"', '"action":"undelete"'):
        assert expected in audit
    assert any('"/api/get-many"' in line for line in run.access), run.access[:3]
    assert "setec_watches" in metrics
    assert caplog.records
    everywhere = {
        "logs": caplog.text,
        "access lines": "\n".join(run.access),
        "audit log": audit,
        "metrics": metrics,
        "answers without values": b"\n".join(run.bodies).decode("utf-8", "replace"),
        "exceptions and reprs": "\n".join(texts),
    }
    for where, text in everywhere.items():
        for form in FORBIDDEN_VALUES:
            assert form not in text, f"a value ({form!r}) is in the {where}"
    for where in ("logs", "access lines", "audit log", "metrics"):
        assert DESCRIPTION not in everywhere[where], f"the description is in the {where}"
    stored = b"".join(p.read_bytes() for p in run.store.parent.glob(run.store.name + "*"))
    for plain in (VALUE, OTHER, DESCRIPTION.encode()):
        assert plain not in stored, f"{plain!r} is in the store unencrypted"
