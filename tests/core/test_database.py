"""Database operations at library level (docs/api.md §4), with our fixes over Go."""

from __future__ import annotations

import threading

import pytest

from setec_core import (
    MAX_VERSION,
    AccessDenied,
    Database,
    InvalidRequestError,
    InvalidVersionError,
    NotFound,
    SecretInfo,
    SecretValue,
    StorageError,
    ValueNotChanged,
    VersionClaimed,
    make_caller,
)
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.plugins import Plugins
from setec_core.testing import SUPERUSER, FaultyStorage, audit_entries, new_database

SU = SUPERUSER


def test_empty_list(db: Database) -> None:
    """Listing an empty database gives nothing."""
    assert db.list(SU) == []


def test_first_put_creates_version_one(db: Database) -> None:
    """After one put the list shows version 1, active."""
    assert db.put(SU, "test", b"foo") == 1
    assert db.list(SU) == [SecretInfo("test", (1,), 1)]


def test_second_put_does_not_activate(db: Database) -> None:
    """A second put adds version 2; version 1 stays active."""
    db.put(SU, "test", b"foo")
    assert db.put(SU, "test", b"bar") == 2
    assert db.list(SU) == [SecretInfo("test", (1, 2), 1)]
    assert db.get(SU, "test") == SecretValue(b"foo", 1)


def test_list_sorted_by_name(db: Database) -> None:
    """List is sorted by name (byte order), versions ascending."""
    for name in ["zeta", "alpha", "Beta", "alpha/x", "ünïcode"]:
        db.put(SU, name, b"v")
    assert [i.name for i in db.list(SU)] == ["Beta", "alpha", "alpha/x", "zeta", "ünïcode"]


def test_activate_changes_active(db: Database) -> None:
    """Activate moves the active version."""
    db.put(SU, "test", b"foo")
    db.put(SU, "test", b"bar")
    db.activate(SU, "test", 2)
    assert db.list(SU) == [SecretInfo("test", (1, 2), 2)]
    assert db.get(SU, "test") == SecretValue(b"bar", 2)


def test_ten_puts_all_versions_retrievable(db: Database) -> None:
    """Ten distinct puts give ten versions; each is retrievable and,
    once activated, is what get returns."""
    versions = [db.put(SU, "s", str(i).encode()) for i in range(10)]
    assert versions == list(range(1, 11))
    assert db.get(SU, "s").value == b"0"
    for i, v in enumerate(versions):
        assert db.get(SU, "s", v) == SecretValue(str(i).encode(), v)
        db.activate(SU, "s", v)
        assert db.get(SU, "s") == SecretValue(str(i).encode(), v)


def test_put_dedups_against_latest(db: Database) -> None:
    """An equal value returns the latest version; dedup compares with the
    latest version, not any or the active one."""
    assert db.put(SU, "s", b"a") == 1
    assert db.put(SU, "s", b"a") == 1
    assert db.put(SU, "s", b"b") == 2
    assert db.put(SU, "s", b"b") == 2
    assert db.put(SU, "s", b"a") == 3  # equals v1 (active) but not the latest
    assert db.info(SU, "s").versions == (1, 2, 3)


def test_values_do_not_alias(db: Database) -> None:
    """The stored value does not alias the caller's buffer."""
    buf = bytearray(b"hello")
    db.put(SU, "s", buf)
    buf[0] = ord("J")
    assert db.get(SU, "s").value == b"hello"
    db.put(SU, "t", memoryview(b"view"))
    assert db.get(SU, "t").value == b"view"


def test_create_version_on_new_secret(db: Database) -> None:
    """create-version makes a new secret with exactly that version, active."""
    db.create_version(SU, "a", 1, b"one")
    assert db.info(SU, "a") == SecretInfo("a", (1,), 1)
    db.create_version(SU, "b", 100, b"hundred")
    assert db.info(SU, "b") == SecretInfo("b", (100,), 100)


def test_create_version_timestamp(db: Database) -> None:
    """A Unix-timestamp version (2100-01-01) is accepted and activated."""
    db.put(SU, "s", b"x")
    db.create_version(SU, "s", 4102448460, b"future")
    assert db.get(SU, "s") == SecretValue(b"future", 4102448460)


def test_create_existing_version_is_claimed(db: Database) -> None:
    """Creating an existing version fails; value and active are unchanged."""
    db.put(SU, "s", b"one")
    db.put(SU, "s", b"two")
    with pytest.raises(VersionClaimed):
        db.create_version(SU, "s", 2, b"other")
    assert db.get(SU, "s", 2).value == b"two"
    assert db.info(SU, "s").active_version == 1


def test_create_in_between_version(db: Database) -> None:
    """An unused lower version can be created and becomes active."""
    db.create_version(SU, "s", 200, b"x")
    db.create_version(SU, "s", 100, b"y")
    assert db.info(SU, "s") == SecretInfo("s", (100, 200), 100)


def test_create_version_zero(db: Database) -> None:
    """create-version 0 is an invalid version."""
    with pytest.raises(InvalidVersionError, match="version > 0"):
        db.create_version(SU, "s", 0, b"x")


def test_version_history_scenario(db: Database) -> None:
    """put->1; create 100, 10 (each active); put -> 101 inactive; delete 101
    and 100; 100 stays claimed; the next put is 102."""
    assert db.put(SU, "s", b"p1") == 1
    db.create_version(SU, "s", 100, b"c100")
    assert db.info(SU, "s").active_version == 100
    db.create_version(SU, "s", 10, b"c10")
    assert db.info(SU, "s").active_version == 10
    assert db.put(SU, "s", b"p101") == 101
    assert db.info(SU, "s").active_version == 10
    db.delete_version(SU, "s", 101)
    db.delete_version(SU, "s", 100)
    assert db.info(SU, "s") == SecretInfo("s", (1, 10), 10)
    with pytest.raises(VersionClaimed):
        db.create_version(SU, "s", 100, b"again")
    assert db.put(SU, "s", b"p102") == 102


def test_delete_missing_secret_succeeds(db: Database) -> None:
    """Deleting a secret that does not exist succeeds."""
    db.delete(SU, "nothing")
    assert db.list(SU) == []


def test_delete_secret(db: Database) -> None:
    """After delete, every version is gone."""
    db.put(SU, "s", b"a")
    db.put(SU, "s", b"b")
    db.delete(SU, "s")
    with pytest.raises(NotFound):
        db.get(SU, "s", 1)
    with pytest.raises(NotFound):
        db.info(SU, "s")


def test_delete_missing_version(db: Database) -> None:
    """Deleting a version that never existed is not found."""
    db.put(SU, "s", b"a")
    with pytest.raises(NotFound):
        db.delete_version(SU, "s", 1000)


def test_delete_active_version_refused(db: Database) -> None:
    """The active version cannot be deleted; an inactive one can, and the
    active one still exists afterwards."""
    db.put(SU, "s", b"a")
    db.put(SU, "s", b"b")
    with pytest.raises(InvalidRequestError, match="active version"):
        db.delete_version(SU, "s", 1)
    db.delete_version(SU, "s", 2)
    with pytest.raises(NotFound):
        db.get(SU, "s", 2)
    assert db.get(SU, "s") == SecretValue(b"a", 1)


def test_delete_then_put_restarts_history(db: Database) -> None:
    """After delete, put starts at 1 and deleted numbers are creatable again."""
    db.put(SU, "s", b"a")
    db.put(SU, "s", b"b")
    db.delete_version(SU, "s", 2)
    db.delete(SU, "s")
    assert db.put(SU, "s", b"c") == 1
    db.create_version(SU, "s", 2, b"d")
    assert db.get(SU, "s") == SecretValue(b"d", 2)


# --- get variants --------------------------------------------------------------------


def test_get_missing(db: Database) -> None:
    """A get of a missing secret or version is not found (docs/api.md §4.2)."""
    with pytest.raises(NotFound):
        db.get(SU, "nope")
    db.put(SU, "s", b"a")
    with pytest.raises(NotFound):
        db.get(SU, "s", 2)


def test_get_if_changed(db: Database) -> None:
    """Unchanged raises ValueNotChanged; after activate, the
    new active value comes back."""
    db.put(SU, "s", b"a")
    db.put(SU, "s", b"b")
    with pytest.raises(ValueNotChanged):
        db.get_if_changed(SU, "s", 1)
    db.activate(SU, "s", 2)
    assert db.get_if_changed(SU, "s", 1) == SecretValue(b"b", 2)


def test_get_if_changed_returns_lower_active(db: Database) -> None:
    """The test is 'different', not 'newer' (docs/api.md §4.2)."""
    db.put(SU, "s", b"a")
    db.put(SU, "s", b"b")
    assert db.get_if_changed(SU, "s", 2) == SecretValue(b"a", 1)


def test_get_if_changed_version_zero_is_plain_get(db: Database) -> None:
    """Version 0 with UpdateIfChanged is a plain get of the active value, audited."""
    db.put(SU, "s", b"a")
    assert db.get_if_changed(SU, "s", 0) == SecretValue(b"a", 1)
    assert audit_entries(db)[-1]["action"] == "get"


def test_get_if_changed_missing(db: Database) -> None:
    """A conditional get of a missing secret is not found (docs/api.md §4.2)."""
    with pytest.raises(NotFound):
        db.get_if_changed(SU, "nope", 3)


# --- access control ------------------------------------------------------------------


@pytest.fixture
def ok_caller() -> object:
    """Rights of TestServerStatus: get, info and delete on ok/*."""
    return make_caller((["get", "info", "delete"], ["ok/*"]), user="elite@example.com")


def test_acl_get_denied(db: Database, ok_caller: object) -> None:
    """Get outside the granted names is denied."""
    db.put(SU, "no/test", b"x")
    with pytest.raises(AccessDenied):
        db.get(ok_caller, "no/test", 1)  # type: ignore[arg-type]


def test_acl_missing_version_is_not_found(db: Database, ok_caller: object) -> None:
    """A granted get of a missing version is not found."""
    db.put(SU, "ok/test", b"x")
    with pytest.raises(NotFound):
        db.get(ok_caller, "ok/test", 7)  # type: ignore[arg-type]


def test_acl_put_denied(db: Database, ok_caller: object) -> None:
    """Put without put permission is denied and writes nothing."""
    db.put(SU, "ok/test", b"x")
    with pytest.raises(AccessDenied):
        db.put(ok_caller, "ok/test", b"y")  # type: ignore[arg-type]
    assert db.info(SU, "ok/test").versions == (1,)


def test_acl_delete_version(db: Database, ok_caller: object) -> None:
    """delete-version of the active version fails; of another succeeds."""
    db.put(SU, "ok/test", b"x")
    db.put(SU, "ok/test", b"y")
    with pytest.raises(InvalidRequestError):
        db.delete_version(ok_caller, "ok/test", 1)  # type: ignore[arg-type]
    db.delete_version(ok_caller, "ok/test", 2)  # type: ignore[arg-type]
    assert db.info(SU, "ok/test").versions == (1,)


@pytest.mark.parametrize(
    ("method", "args", "action"),
    [
        ("info", ("s",), "info"),
        ("get", ("s",), "get"),
        ("get_if_changed", ("s", 5), "get"),
        ("put", ("s", b"v"), "put"),
        ("create_version", ("s", 5, b"v"), "create-version"),
        ("activate", ("s", 1), "activate"),
        ("delete_version", ("s", 1), "delete"),
        ("delete", ("s",), "delete"),
    ],
)
def test_each_action_needs_its_grant(
    db: Database, method: str, args: tuple[object, ...], action: str
) -> None:
    """Each operation needs its own action; all other grants are not enough."""
    db.put(SU, "s", b"a")
    others = [
        a for a in ["get", "info", "put", "create-version", "activate", "delete"] if a != action
    ]
    with pytest.raises(AccessDenied):
        getattr(db, method)(make_caller((others, ["*"])), *args)
    # With only its own action granted, the check passes (the call may then fail for
    # another reason, never for access).
    try:
        getattr(db, method)(make_caller(([action], ["s"])), *args)
    except AccessDenied:  # pragma: no cover - the failure this test exists to catch
        pytest.fail(f"{method} was denied with {action!r} granted")
    except (NotFound, ValueNotChanged, InvalidRequestError):
        pass


def test_list_filters_by_info(db: Database) -> None:
    """List shows only names the caller may info; never raises (docs/api.md §4.1)."""
    for name in ["a/1", "a/2", "b/1"]:
        db.put(SU, name, b"v")
    assert [i.name for i in db.list(make_caller((["info"], ["a/*"])))] == ["a/1", "a/2"]
    assert [i.name for i in db.list(make_caller((["get"], ["*"])))] == []
    assert db.list(make_caller()) == []


# --- client mistakes (400 on the wire, where Go answers 500) ----------------------------


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("put", ("", b"v")),
        ("create_version", ("", 1, b"v")),
        ("activate", ("", 1)),
    ],
)
def test_empty_name_refused_before_access(
    db: Database, method: str, args: tuple[object, ...]
) -> None:
    """An empty name is refused before the access check and not audited."""
    with pytest.raises(InvalidRequestError, match="empty"):
        getattr(db, method)(make_caller(), *args)
    assert audit_entries(db) == []


def test_create_version_zero_before_access(db: Database) -> None:
    """create-version 0 is invalid even for a caller with no rights, unaudited."""
    with pytest.raises(InvalidVersionError):
        db.create_version(make_caller(), "s", 0, b"v")
    assert audit_entries(db) == []


@pytest.mark.parametrize("method", ["activate", "delete_version"])
def test_version_zero_is_invalid(db: Database, method: str) -> None:
    """Activate and delete-version of version 0 are client mistakes (audited)."""
    db.put(SU, "s", b"v")
    with pytest.raises(InvalidVersionError):
        getattr(db, method)(SU, "s", 0)
    assert audit_entries(db)[-1]["outcome"] == "invalid"


@pytest.mark.parametrize("version", [-1, MAX_VERSION + 1, 2**64, True, 1.0, "1"])
def test_version_out_of_range(db: Database, version: object) -> None:
    """Versions are uint32; anything else is a client mistake naming the value."""
    db.put(SU, "s", b"v")
    with pytest.raises(InvalidRequestError, match="version"):
        db.get(SU, "s", version)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("put", ("_internal/x", b"v")),
        ("create_version", ("_internal/x", 3, b"v")),
        ("activate", ("_internal/x", 1)),
        ("delete_version", ("_internal/x", 1)),
        ("delete", ("_internal/x",)),
    ],
)
def test_internal_names_reserved(db: Database, method: str, args: tuple[object, ...]) -> None:
    """Every write of an _internal/ name is refused, create-version included (Go lets
    create-version through); the refusal is audited."""
    with pytest.raises(InvalidRequestError, match="reserved"):
        getattr(db, method)(SU, *args)
    assert audit_entries(db)[-1]["outcome"] == "invalid"
    assert db.list(SU) == []


def test_value_must_be_bytes(db: Database) -> None:
    """A str value is refused with advice to encode it."""
    with pytest.raises(InvalidRequestError, match="encode"):
        db.put(SU, "s", "text")  # type: ignore[arg-type]


def test_lone_surrogate_name_refused(db: Database) -> None:
    """A name that is not valid Unicode is a client mistake, not a crash."""
    with pytest.raises(InvalidRequestError, match="Unicode"):
        db.put(SU, "bad\ud800", b"v")


# --- fixes of Go's put ------------------------------------------------------------------


def test_put_empty_after_deleted_latest_makes_new_version(db: Database) -> None:
    """Put of an empty value after the latest version was deleted creates a real
    version, not a phantom deleted one as in Go."""
    db.put(SU, "s", b"a")
    db.put(SU, "s", b"b")
    db.delete_version(SU, "s", 2)
    v = db.put(SU, "s", b"")
    assert v == 3
    assert db.get(SU, "s", 3) == SecretValue(b"", 3)


def test_put_at_max_version_refused(db: Database) -> None:
    """A put after version 4294967295 is refused, never wrapped to 0 as in Go."""
    db.create_version(SU, "s", MAX_VERSION, b"last")
    with pytest.raises(InvalidRequestError, match="4294967295"):
        db.put(SU, "s", b"more")
    assert db.info(SU, "s").versions == (MAX_VERSION,)


def test_empty_value_allowed(db: Database) -> None:
    """Empty values are stored like any other (docs/api.md §4.4)."""
    assert db.put(SU, "s", b"") == 1
    assert db.get(SU, "s") == SecretValue(b"", 1)


# --- no-ops and failures --------------------------------------------------------------


def test_noops_do_not_commit() -> None:
    """A deduplicated put, re-activating the active version and deleting a missing
    secret do not write to storage."""
    with new_database() as db:
        db.put(SU, "s", b"a")
        before = db.revision
        db.put(SU, "s", b"a")
        db.activate(SU, "s", 1)
        db.delete(SU, "missing")
        assert db.revision == before


def test_failed_commit_changes_nothing() -> None:
    """A write the storage refuses leaves the database exactly as before, and the audit
    log records the refused write as an error."""
    plugins = Plugins.load()
    inner = plugins.storage("memory://")
    faulty = FaultyStorage(inner)
    sink = MemoryAuditSink()
    with Database(faulty, plugins.key_provider("dev://t"), AuditLog(sink)) as db:
        db.put(SU, "s", b"a")
        before = (db.list(SU), db.get(SU, "s"), inner.export().records, db.revision)
        faulty.fail_commits = 1
        with pytest.raises(StorageError, match="injected"):
            db.put(SU, "s", b"b")
        assert (db.list(SU), db.get(SU, "s"), inner.export().records, db.revision) == before
        puts = [e["outcome"] for e in sink.entries() if e["action"] == "put"]
        assert puts == ["ok", "ok", "error"]
        # and the next write goes through normally
        assert db.put(SU, "s", b"b") == 2


def test_put_many_is_all_or_nothing(db: Database) -> None:
    """put_many refuses the whole batch if any item is denied or invalid."""
    caller = make_caller((["put"], ["ok/*"]))
    with pytest.raises(AccessDenied):
        db.put_many(caller, {"ok/a": b"1", "no/b": b"2"})
    with pytest.raises(InvalidRequestError):
        db.put_many(SU, {"ok/a": b"1", "": b"2"})
    assert db.list(SU) == []
    assert db.put_many(SU, {"a": b"1", "b": b"2"}) == {"a": 1, "b": 1}
    assert db.put_many(SU, {"a": b"1", "b": b"3"}) == {"a": 1, "b": 2}


# --- concurrency ----------------------------------------------------------------------


def test_concurrent_puts_and_gets() -> None:
    """Many threads may call the database at once: every put gets a distinct version,
    every value reads back, and no thread sees an error."""
    with new_database() as db:
        errors: list[BaseException] = []
        results: dict[int, list[int]] = {}

        def worker(n: int) -> None:
            try:
                mine = []
                for i in range(40):
                    mine.append(db.put(SU, "shared", f"{n}-{i}".encode()))
                    db.put(SU, f"own/{n}", f"{i}".encode())
                    db.get(SU, "shared")
                    db.list(SU)
                results[n] = mine
            except BaseException as e:  # collected and asserted below
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        all_versions = sorted(v for vs in results.values() for v in vs)
        assert all_versions == list(range(1, 8 * 40 + 1))
        for vs in results.values():
            assert vs == sorted(vs)
        assert len(db.list(SU)) == 9
        for n in range(8):
            assert db.get(SU, f"own/{n}") == SecretValue(b"0", 1)
            assert db.info(SU, f"own/{n}").versions == tuple(range(1, 41))


def test_secret_value_repr_hides_value(db: Database) -> None:
    """A SecretValue's repr shows its size, never its bytes."""
    db.put(SU, "s", b"hunter2-repr-check")
    text = repr(db.get(SU, "s"))
    assert "hunter2" not in text
    assert "18 bytes" in text


def test_empty_put_many_writes_nothing(db: Database) -> None:
    """An empty batch writes no audit line and commits nothing."""
    before = db.revision
    assert db.put_many(SU, {}) == {}
    assert audit_entries(db) == []
    assert db.revision == before


def test_close_twice_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    """Closing a database again does nothing and logs no error."""
    db = new_database()
    db.close()
    db.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_failed_write_error_entry_keeps_version() -> None:
    """The error entry after a refused commit names the version the ok entry named."""
    plugins = Plugins.load()
    faulty = FaultyStorage(plugins.storage("memory://"))
    sink = MemoryAuditSink()
    with Database(faulty, plugins.key_provider("dev://t"), AuditLog(sink)) as db:
        db.put(SU, "s", b"a")
        faulty.fail_commits = 1
        with pytest.raises(StorageError):
            db.create_version(SU, "s", 9, b"b")
        ok, error = sink.entries()[-2:]
        assert (ok["outcome"], ok["secretVersion"]) == ("ok", 9)
        assert (error["outcome"], error["secretVersion"]) == ("error", 9)


def test_open_has_no_default_key(tmp_path: object) -> None:
    """Database.open needs an explicit key: no silent fallback to the public dev key."""
    with pytest.raises(TypeError, match="key"):
        Database.open(tmp_path)  # type: ignore[call-arg]


def test_database_keys_its_audit_log() -> None:
    """A Database keys the log it is given (memory too): every line links with an HMAC
    and says how many commits the store had made."""
    with new_database() as db:
        db.put(SU, "s", b"keyed")
        db.get(SU, "s")
        first, second = audit_entries(db)
    assert first["prev"].startswith("hmac-sha256:")
    assert (first["commits"], second["commits"]) == (0, 1)
