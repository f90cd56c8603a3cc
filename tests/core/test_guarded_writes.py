"""Guarded writes in the library (docs/library.md, "Guarded writes"; on the wire
docs/api.md §9.4): every write takes ``if_active_version=`` and ``if_versions=``,
checked against the state the write replaces, atomically with it; a failed guard
changes nothing, is audited ``guard-failed``, and shows the current state only to a
caller who may ``info`` the secret. Across two Databases over one PostgreSQL store
the guard is checked against the record actually replaced, not a replica's stale
copy."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from setec_core import (
    AccessDenied,
    Database,
    InvalidRequestError,
    NotFound,
    SecretInfo,
    VersionConflict,
)
from setec_core.audit import FileAuditSink
from setec_core.testing import SUPERUSER, audit_entries, make_caller
from setec_core.testing.storage_contract import run_together

SU = SUPERUSER
VALUE = b"guarded-value-5f1c9e"
WRITER = make_caller((["put", "create-version", "activate", "delete"], ["*"]), user="writer")
READER_WRITER = make_caller(
    (["put", "create-version", "activate", "delete", "info"], ["*"]), user="rw"
)

Write = Callable[..., Any]

#: Each write, as a call that takes the guards, on a secret "s" with versions 1, 2, 3
#: (active 2): each succeeds on that state when unguarded.
WRITES: dict[str, Write] = {
    "put": lambda db, caller, **g: db.put(caller, "s", b"guarded-new-value", **g),
    "create-version": lambda db, caller, **g: db.create_version(caller, "s", 7, VALUE, **g),
    "activate": lambda db, caller, **g: db.activate(caller, "s", 3, **g),
    "delete-version": lambda db, caller, **g: db.delete_version(caller, "s", 1, **g),
    "delete": lambda db, caller, **g: db.delete(caller, "s", **g),
}


def three_versions(db: Database) -> None:
    """Make secret "s" with versions 1, 2 and 3, version 2 active."""
    for n in (1, 2, 3):
        db.put(SU, "s", VALUE + str(n).encode())
    db.activate(SU, "s", 2)


@pytest.fixture
def db3(db: Database) -> Database:
    """The in-memory database with :func:`three_versions`."""
    three_versions(db)
    return db


def shape(info: SecretInfo | None) -> tuple[str, tuple[int, ...], int] | None:
    """What a guard compares: name, versions and active version (an info may carry
    more, such as a description)."""
    return None if info is None else (info.name, info.versions, info.active_version)


def stored(db: Database) -> tuple[int, dict[str, bytes], list[tuple[bytes, bytes | None, int]]]:
    """Everything the store holds, to compare before and after."""
    snapshot = db.storage.export()
    records = sorted((r.key, r.data, r.revision) for r in snapshot.records)
    return snapshot.revision, dict(snapshot.meta), records


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
@pytest.mark.parametrize(
    "guard",
    [
        {"if_active_version": 2},
        {"if_versions": [3, 1, 2]},
        {"if_versions": (1, 2, 3), "if_active_version": 2},
        {"if_versions": {1, 2, 3}},
    ],
    ids=["active", "versions-unordered", "both", "a-set"],
)
def test_a_guard_that_holds_lets_the_write_through(
    db3: Database, write: Write, guard: dict[str, Any]
) -> None:
    """Each write goes through when its guard matches what info shows, audited ok."""
    before = stored(db3)
    write(db3, SU, **guard)
    assert stored(db3) != before
    assert audit_entries(db3)[-1]["outcome"] == "ok"


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
@pytest.mark.parametrize(
    "guard",
    [
        {"if_active_version": 3},
        {"if_active_version": 0},
        {"if_versions": [1, 2]},
        {"if_versions": [1, 2, 3, 4]},
        {"if_versions": []},
        {"if_versions": [1, 2, 3], "if_active_version": 1},
        {"if_versions": [1, 2], "if_active_version": 2},
    ],
    ids=[
        "active",
        "active-absent",
        "fewer",
        "more",
        "absent",
        "active-of-both",
        "versions-of-both",
    ],
)
def test_a_guard_that_fails_changes_nothing_and_is_audited(
    db3: Database, write: Write, guard: dict[str, Any]
) -> None:
    """A mismatch raises VersionConflict with the current state, leaves the store byte
    for byte as it was, and is audited under the write's action with outcome
    guard-failed and no value."""
    before = stored(db3)
    entries = len(audit_entries(db3))
    with pytest.raises(VersionConflict) as raised:
        write(db3, SU, **guard)
    assert stored(db3) == before
    assert shape(raised.value.current) == ("s", (1, 2, 3), 2)
    message = str(raised.value)
    assert message.startswith("guard failed for secret 's': ")
    assert message.endswith("; nothing was written")
    new = audit_entries(db3)[entries:]
    assert [e["outcome"] for e in new] == ["guard-failed"]
    assert new[0]["authorized"] is True
    assert new[0]["secret"] == "s"
    assert VALUE.decode() not in str(new)
    assert "guarded-new" not in str(new)


def test_the_message_says_what_differed(db3: Database) -> None:
    """The reason names the active version and versions found and those expected."""
    with pytest.raises(VersionConflict, match=r"its active version is 2 \(expected 3\);"):
        db3.activate(SU, "s", 3, if_active_version=3)
    with pytest.raises(
        VersionConflict,
        match=r"its active version is 2 \(expected 1\) and its versions are 1, 2, 3 "
        r"\(expected 1, 2\);",
    ):
        db3.activate(SU, "s", 3, if_active_version=1, if_versions=[2, 1])
    with pytest.raises(VersionConflict, match=r"it exists \(active version 2, versions 1, 2, 3\)"):
        db3.put(SU, "s", VALUE, if_versions=[])
    with pytest.raises(VersionConflict, match=r"'nope': it does not exist;") as raised:
        db3.delete(SU, "nope", if_active_version=1)
    assert raised.value.current is None


@pytest.mark.parametrize(
    "guard", [{"if_active_version": 0}, {"if_versions": []}], ids=["active-0", "versions-empty"]
)
def test_zero_and_empty_mean_the_secret_must_not_exist(db: Database, guard: dict[str, Any]) -> None:
    """A put guarded by 0 or [] creates a secret once; the second such put is refused,
    and the first value stays."""
    assert db.put(SU, "new", b"first-guarded", **guard) == 1
    with pytest.raises(VersionConflict) as raised:
        db.put(SU, "new", b"second-guarded", **guard)
    assert shape(raised.value.current) == ("new", (1,), 1)
    assert db.get(SU, "new").value == b"first-guarded"
    db.create_version(SU, "cv", 5, b"created-guarded", **guard)
    assert shape(db.info(SU, "cv")) == ("cv", (5,), 5)
    # Deleting what is expected not to exist: the guard holds, and nothing is there.
    db.delete(SU, "never", **guard)


def test_the_guard_comes_before_the_writes_own_refusals(db3: Database) -> None:
    """A guard that fails answers before not-found and version-claimed; one that holds
    leaves them to answer as always."""
    with pytest.raises(VersionConflict):
        db3.activate(SU, "s", 9, if_active_version=1)
    with pytest.raises(NotFound):
        db3.activate(SU, "s", 9, if_active_version=2)
    with pytest.raises(NotFound):
        db3.activate(SU, "missing", 1, if_active_version=0)


def test_an_unchanged_write_still_checks_its_guard(db3: Database) -> None:
    """A put of the latest value and an activate of the active version write nothing,
    but a guard that fails is still refused: the caller learns its view was stale."""
    with pytest.raises(VersionConflict):
        db3.put(SU, "s", VALUE + b"3", if_versions=[1, 2])
    with pytest.raises(VersionConflict):
        db3.activate(SU, "s", 2, if_active_version=1)
    assert db3.put(SU, "s", VALUE + b"3", if_versions=[1, 2, 3]) == 3


def test_current_is_shown_only_to_a_caller_who_may_info(db3: Database) -> None:
    """A caller without info gets no current state and a reason that says only that
    the guard failed, whether or not the secret exists; with info it gets both."""
    for name in ("s", "absent"):
        with pytest.raises(VersionConflict) as raised:
            db3.put(WRITER, name, VALUE, if_active_version=5)
        assert raised.value.current is None
        assert str(raised.value) == f"guard failed for secret {name!r}; nothing was written"
    with pytest.raises(VersionConflict) as raised:
        db3.put(READER_WRITER, "s", VALUE, if_active_version=5)
    assert shape(raised.value.current) == ("s", (1, 2, 3), 2)


def test_the_access_check_comes_before_the_guard(db3: Database) -> None:
    """A caller who may not write gets access denied, never a guard's answer, so a
    guard reveals nothing to it; the entry is audited denied."""
    reader = make_caller((["info", "get"], ["*"]), user="reader")
    for write in WRITES.values():
        with pytest.raises(AccessDenied):
            write(db3, reader, if_active_version=9)
    assert {e["outcome"] for e in audit_entries(db3)[-len(WRITES) :]} == {"denied"}


@pytest.mark.parametrize(
    ("guard", "reason"),
    [
        ({"if_active_version": "3"}, "if_active_version must be an integer from 0 to 4294967295"),
        ({"if_active_version": -1}, "not -1"),
        ({"if_active_version": 2**32}, "not 4294967296"),
        ({"if_active_version": True}, "not bool"),
        ({"if_versions": "123"}, "if_versions must be a collection of distinct integers"),
        ({"if_versions": 3}, "not int"),
        ({"if_versions": [1, 1]}, "it holds 1 more than once"),
        ({"if_versions": [0]}, "it holds 0"),
        ({"if_versions": [2**32]}, "it holds 4294967296"),
        ({"if_versions": [1.0]}, "it holds float"),
    ],
)
def test_a_malformed_guard_is_refused_before_anything_happens(
    db3: Database, guard: dict[str, Any], reason: str
) -> None:
    """A guard of the wrong type or range is InvalidRequestError naming the argument,
    not audited, nothing written."""
    before, entries = stored(db3), len(audit_entries(db3))
    for write in WRITES.values():
        with pytest.raises(InvalidRequestError, match=reason):
            write(db3, SU, **guard)
    assert stored(db3) == before
    assert len(audit_entries(db3)) == entries


def test_put_many_is_unguarded_and_unchanged(db3: Database) -> None:
    """put_many keeps its signature: no guards, all or nothing as before."""
    assert db3.put_many(SU, {"s": b"many-1", "t": b"many-2"}) == {"s": 4, "t": 1}


def test_concurrent_guarded_writers_exactly_one_wins(db3: Database) -> None:
    """Threads racing to change the same state: for each expected state exactly one
    write goes through and every other is a VersionConflict."""
    outcomes: list[str] = []
    lock = threading.Lock()

    def activate(n: int) -> None:
        # Every thread expects version 2 active and moves it away (to 1 or 3).
        try:
            db3.activate(SU, "s", 1 if n % 2 else 3, if_active_version=2, if_versions=[1, 2, 3])
            result = "won"
        except VersionConflict:
            result = "conflict"
        with lock:
            outcomes.append(result)

    assert run_together(12, activate) == []
    assert sorted(outcomes) == ["conflict"] * 11 + ["won"]

    puts: list[int] = []

    def put(n: int) -> None:
        with contextlib.suppress(VersionConflict):
            puts.append(db3.put(SU, "s", f"racing-value-{n}".encode(), if_versions=[1, 2, 3]))

    assert run_together(12, put) == []
    assert puts == [4]
    assert db3.info(SU, "s").versions == (1, 2, 3, 4)


# --- two Databases over one PostgreSQL store (replicas) ---------------------------------


@pytest.fixture
def replicas(tmp_path: Path, postgres_uri: str) -> Iterator[tuple[Database, Database]]:
    """Two Databases over one PostgreSQL store, each with its own state directory, as
    two replicas have them (no follower: each sees the other's commits only when a
    write of its own runs into them, or on refresh())."""
    a = Database.open(tmp_path / "a", key="dev://", storage=postgres_uri)
    b = Database.open(tmp_path / "b", key="dev://", storage=postgres_uri)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_stale_replica_checks_the_guard_against_the_record_it_replaces(
    replicas: tuple[Database, Database],
) -> None:
    """Replica a has not seen b's put: its guarded write, which would hold on a's stale
    copy, loses the store's compare-and-swap, is worked out again on what b committed,
    and is refused with b's state as current; the store keeps b's write only."""
    a, b = replicas
    a.put(SU, "shared", b"replica-guarded-1")
    b.refresh()
    assert b.put(SU, "shared", b"replica-guarded-2", if_versions=[1]) == 2
    assert a.info(SU, "shared").versions == (1,)  # a is stale
    with pytest.raises(VersionConflict) as raised:
        a.put(SU, "shared", b"replica-guarded-3", if_versions=[1])
    assert shape(raised.value.current) == ("shared", (1, 2), 1)
    with pytest.raises(VersionConflict):
        a.activate(SU, "shared", 1, if_active_version=2)
    a.activate(SU, "shared", 2, if_active_version=1)
    b.refresh()
    assert shape(b.info(SU, "shared")) == ("shared", (1, 2), 2)
    outcomes = [e["outcome"] for e in audit_entries_of(a)]
    assert outcomes[-4:] == ["conflict", "guard-failed", "guard-failed", "ok"]


def test_guarded_writers_on_two_replicas_exactly_one_wins(
    replicas: tuple[Database, Database],
) -> None:
    """Threads on both replicas create the same secret, each guarded by "must not
    exist": exactly one creates it, every other gets VersionConflict, and both replicas
    end up agreeing on its single version."""
    a, b = replicas
    won: list[tuple[int, int]] = []
    conflicts: list[int] = []

    def create(n: int) -> None:
        db = a if n % 2 else b
        try:
            won.append((n, db.put(SU, "race", f"replica-race-{n}".encode(), if_active_version=0)))
        except VersionConflict:
            conflicts.append(n)

    assert run_together(8, create) == []
    assert len(won) == 1
    assert len(conflicts) == 7
    winner = won[0][0]
    for db in (a, b):
        db.refresh()
        assert shape(db.info(SU, "race")) == ("race", (1,), 1)
        assert db.get(SU, "race").value == f"replica-race-{winner}".encode()


def audit_entries_of(db: Database) -> list[dict[str, Any]]:
    """The entries of a Database's file audit log."""
    sink = db.audit_log.sink
    assert isinstance(sink, FileAuditSink)
    return [json.loads(line) for line in sink.path.read_bytes().splitlines()]
