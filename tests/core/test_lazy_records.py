"""Records read at open are indexed by name and decoded on first use (LazyState): the
name read from the start of a record is always the decoded record's name, a lazily
decoded secret reads back exactly as an eagerly decoded one, and neither form shows a
value in its repr."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from setec_core import Database
from setec_core.errors import CorruptStoreError
from setec_core.model import LazyState, SecretState, record_name
from setec_core.testing import SUPERUSER

VALUE = b"lazy-record-value-7d1c"


def state(name: str) -> SecretState:
    return SecretState(name, {1: b"old", 2: VALUE}, 2, 3, frozenset({3}))


@pytest.mark.parametrize(
    ("name", "read"),
    [
        ("prod/db/password", "prod/db/password"),
        ("naïve/ключ/名前", "naïve/ключ/名前"),  # raw UTF-8: no escapes
        ('has"quote', None),  # escaped: needs the full decode
        ("back\\slash", None),
        ("tab\there", None),
        ("", ""),
    ],
)
def test_record_name_reads_the_name_or_defers(name: str, read: str | None) -> None:
    """The name at the start of an encoded record is read without decoding when it
    has no JSON escapes, and left to the full decode (None) when it has."""
    assert record_name(state(name).encode()) == read


@given(st.text(max_size=40))
def test_record_name_never_disagrees_with_decode(name: str) -> None:
    """For any name, the cheap read is either None or exactly the decoded name."""
    data = state(name).encode()
    read = record_name(data)
    assert read is None or read == SecretState.decode(data, 1).name == name


@pytest.mark.parametrize("data", [b"", b"[]", b'{"name":"x', b'{"active":1}', b'{"name":"\xff"}'])
def test_record_name_of_other_shapes_is_none(data: bytes) -> None:
    """Anything not shaped like an encoded record gets None (the full decode then
    reports what is wrong)."""
    assert record_name(data) is None


def test_lazy_state_decodes_once_and_keeps_one_copy() -> None:
    """resolve() gives the state decode() gives, the same object every time, and drops
    the plaintext once decoded; the repr shows no value."""
    data = state("a/b").encode()
    lazy = LazyState(data, 7)
    assert VALUE.decode() not in repr(lazy)
    first = lazy.resolve()
    assert first is lazy.resolve()
    assert first.versions == {1: b"old", 2: VALUE}
    assert (first.name, first.active, first.latest, first.deleted, first.revision) == (
        "a/b",
        2,
        3,
        frozenset({3}),
        7,
    )
    assert lazy._data is None
    assert "decoded=True" in repr(lazy)
    assert VALUE.decode() not in repr(lazy)


def test_lazy_state_of_a_malformed_record_fails_on_use() -> None:
    """A record whose name reads but whose rest does not decode is reported, as a
    CorruptStoreError that quotes none of it, when first used."""
    lazy = LazyState(b'{"name":"x","versions":{"1":"' + VALUE + b'"}}', 1)
    with pytest.raises(CorruptStoreError) as caught:
        lazy.resolve()
    assert VALUE.decode() not in str(caught.value)


def test_a_reopened_store_serves_every_secret_as_written(tmp_path: Path) -> None:
    """A store reopened (records indexed lazily, or eagerly for escaped names) serves
    the same values, versions and listing as the database that wrote it, and accepts
    writes on top of lazily indexed secrets."""
    names = ["plain/one", 'quoted"name', "ünï/cödé", "back\\slash", "plain/two"]
    with Database.open(tmp_path / "s", key="dev://") as db:
        for i, name in enumerate(names):
            db.put(SUPERUSER, name, b"v1-%d" % i)
            db.put(SUPERUSER, name, VALUE + b"-%d" % i)
            db.activate(SUPERUSER, name, 2)
        db.delete_version(SUPERUSER, names[0], 1)
        before = {n: db.info(SUPERUSER, n) for n in names}
    with Database.open(tmp_path / "s", key="dev://") as db:
        assert [i.name for i in db.list(SUPERUSER)] == sorted(names)
        for i, name in enumerate(names):
            assert db.info(SUPERUSER, name) == before[name]
            assert db.get(SUPERUSER, name).value == VALUE + b"-%d" % i
        assert db.put(SUPERUSER, "plain/two", b"v3") == 3
        assert db.get(SUPERUSER, "plain/two", 3).value == b"v3"
        db.delete(SUPERUSER, "plain/one")
        assert "plain/one" not in [i.name for i in db.list(SUPERUSER)]


def test_concurrent_first_uses_all_get_the_state() -> None:
    """Threads using the same secrets for the first time at once all get its state,
    whichever of them decodes it, and none trips over another dropping the
    plaintext (the thread switch interval is made tiny so that they interleave)."""
    import sys
    import threading

    lazies = [LazyState(state(f"s/{i}").encode(), i) for i in range(3000)]
    failures: list[BaseException] = []
    seen: list[list[SecretState]] = []
    start = threading.Barrier(8)

    def use() -> None:
        start.wait()
        try:
            seen.append([lazy.resolve() for lazy in lazies])
        except BaseException as e:  # reported below, not lost in the thread
            failures.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=use) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []
    assert len(seen) == 8
    for states in seen:
        assert [s.name for s in states] == [f"s/{i}" for i in range(3000)]
        assert all(s.versions[2] == VALUE for s in states)
