"""A pytest contract that every :class:`~setec_core.storage.StorageBackend` must pass.

Subclass :class:`StorageBackendContract` in a test module whose class name starts with
``Test`` and override the ``storage`` fixture. A backend that keeps its data across
instances subclasses :class:`PersistentStorageContract` instead and overrides
``reopen`` too::

    class TestMyBackend(PersistentStorageContract):
        @pytest.fixture
        def storage(self, tmp_path):
            yield MyBackend.from_uri(f"my://{tmp_path}/store")

        @pytest.fixture
        def reopen(self):
            def reopen(old):
                old.close()
                return MyBackend.from_uri(old.uri)

            return reopen

A backend that several processes may open at once (a database server) also subclasses
:class:`SharedStorageContract` and overrides ``two_handles``: two instances opened on
one store, which must see each other's commits, serialise their writes, wake each
other's :meth:`~setec_core.storage.StorageBackend.wait_for_change` and share leases.

The tests use only the :class:`~setec_core.storage.StorageBackend` interface.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from setec_core.errors import ConflictError, StorageError
from setec_core.storage import Lease, MetaWrite, Record, RecordWrite, StorageBackend

Reopen = Callable[[StorageBackend], StorageBackend]
Pair = tuple[StorageBackend, StorageBackend]


def key(n: int) -> bytes:
    """Return a 32-byte record key, shaped like the keyed hashes setec stores."""
    return hashlib.sha256(n.to_bytes(8, "big")).digest()


K1, K2, K3 = key(1), key(2), key(3)

WAKE_SECONDS = 1.0
"""How soon a waiter must wake after another handle commits, or after close()."""


def state(store: StorageBackend) -> tuple[int, list[Record], dict[str, bytes]]:
    """Return everything observable about ``store``: revision, all records (tombstones
    included, by key) and meta."""
    records = sorted(store.changes_since(0), key=lambda r: r.key)
    return store.revision(), records, dict(store.export().meta)


def live(store: StorageBackend) -> dict[bytes, tuple[bytes | None, int]]:
    """Return ``key -> (data, revision)`` for every record :meth:`read_all` yields."""
    return {r.key: (r.data, r.revision) for r in store.read_all()}


class StorageBackendContract:
    """The behaviour every storage backend must have. Subclass it and override the
    ``storage`` fixture."""

    @pytest.fixture
    def storage(self) -> StorageBackend:
        """Override: return or yield a fresh, empty backend. The contract closes it."""
        pytest.fail("override the 'storage' fixture to return a fresh, empty backend")

    @pytest.fixture
    def opened(self) -> Iterator[list[StorageBackend]]:
        """Every store a test opened, closed after the test."""
        stores: list[StorageBackend] = []
        yield stores
        for s in stores:
            s.close()

    @pytest.fixture
    def store(self, storage: StorageBackend, opened: list[StorageBackend]) -> StorageBackend:
        """The backend under test."""
        opened.append(storage)
        return storage

    # --- basics ------------------------------------------------------------------

    def test_new_store_is_empty(self, store: StorageBackend) -> None:
        """A new store has revision 0, no records, no changes and no meta."""
        assert store.revision() == 0
        assert list(store.read_all()) == []
        assert list(store.changes_since(0)) == []
        assert store.read(K1) is None
        assert store.get_meta("schema") is None
        snap = store.export()
        assert (snap.revision, dict(snap.meta), list(snap.records)) == (0, {}, [])

    def test_commit_returns_next_revision_and_stamps_records(self, store: StorageBackend) -> None:
        """Each commit returns the revision plus one and stamps it on every record it writes."""
        assert store.commit([RecordWrite(K1, b"a", 0), RecordWrite(K2, b"b", 0)]) == 1
        assert store.commit([RecordWrite(K3, b"c", 0)]) == 2
        assert store.revision() == 2
        assert live(store) == {K1: (b"a", 1), K2: (b"b", 1), K3: (b"c", 2)}

    def test_read_returns_the_current_record(self, store: StorageBackend) -> None:
        """read() returns the latest data and revision of a key, and None for another key."""
        store.commit([RecordWrite(K1, b"old", 0)])
        store.commit([RecordWrite(K1, b"new", 1)])
        assert store.read(K1) == Record(K1, b"new", 2)
        assert store.read(K2) is None

    def test_empty_data_is_a_live_record(self, store: StorageBackend) -> None:
        """A record whose data is b"" is live, not a tombstone."""
        store.commit([RecordWrite(K1, b"", 0)])
        assert store.read(K1) == Record(K1, b"", 1)
        assert live(store) == {K1: (b"", 1)}

    def test_keys_and_data_are_arbitrary_bytes(self, store: StorageBackend) -> None:
        """Keys and data round-trip byte for byte: NULs, high bytes and 64 KiB of data."""
        big = bytes(range(256)) * 256
        cases = {b"\x00": b"\x00", b"\x00\x00": big, b"\xff" * 64: b"\x00\xff\n", b"k": big[:1]}
        store.commit([RecordWrite(k, d, 0) for k, d in cases.items()])
        assert {k: d for k, (d, _) in live(store).items()} == cases
        assert all(store.read(k) == Record(k, d, 1) for k, d in cases.items())

    def test_empty_commit_is_a_no_op(self, store: StorageBackend) -> None:
        """A commit with no writes and no meta returns the current revision and changes nothing."""
        store.commit([RecordWrite(K1, b"a", 0)])
        before = state(store)
        assert store.commit() == 1
        assert state(store) == before

    # --- compare-and-swap --------------------------------------------------------

    def test_create_with_wrong_expect_conflicts(self, store: StorageBackend) -> None:
        """Creating an absent key with expect != 0 raises ConflictError and changes nothing."""
        store.commit([RecordWrite(K2, b"x", 0)])
        before = state(store)
        with pytest.raises(ConflictError):
            store.commit([RecordWrite(K1, b"a", 1)])
        assert state(store) == before

    def test_create_over_live_record_conflicts(self, store: StorageBackend) -> None:
        """Writing a live key with expect=0 raises ConflictError and changes nothing."""
        store.commit([RecordWrite(K1, b"a", 0)])
        before = state(store)
        with pytest.raises(ConflictError):
            store.commit([RecordWrite(K1, b"b", 0)])
        assert state(store) == before

    def test_update_with_stale_expect_conflicts(self, store: StorageBackend) -> None:
        """Updating with an out-of-date revision raises ConflictError and changes nothing."""
        store.commit([RecordWrite(K1, b"a", 0)])
        store.commit([RecordWrite(K1, b"b", 1)])
        before = state(store)
        with pytest.raises(ConflictError):
            store.commit([RecordWrite(K1, b"c", 1)])
        assert state(store) == before

    def test_delete_with_wrong_expect_conflicts(self, store: StorageBackend) -> None:
        """Deleting with the wrong revision raises ConflictError and leaves the record live."""
        store.commit([RecordWrite(K1, b"a", 0)])
        before = state(store)
        for wrong in (0, 2):
            with pytest.raises(ConflictError):
                store.commit([RecordWrite(K1, None, wrong)])
        assert state(store) == before
        assert store.read(K1) == Record(K1, b"a", 1)

    def test_meta_expect_none_when_present_conflicts(self, store: StorageBackend) -> None:
        """A MetaWrite expecting no entry, when one exists, conflicts and changes nothing."""
        store.commit(meta=[MetaWrite("dek", b"one", None)])
        before = state(store)
        with pytest.raises(ConflictError):
            store.commit(meta=[MetaWrite("dek", b"two", None)])
        assert state(store) == before
        assert store.get_meta("dek") == b"one"

    def test_meta_expect_mismatch_conflicts(self, store: StorageBackend) -> None:
        """A MetaWrite expecting the wrong value, or any value when absent, conflicts."""
        store.commit(meta=[MetaWrite("dek", b"one", None)])
        before = state(store)
        with pytest.raises(ConflictError):
            store.commit(meta=[MetaWrite("dek", b"two", b"other")])
        with pytest.raises(ConflictError):
            store.commit(meta=[MetaWrite("schema", b"1", b"0")])
        assert state(store) == before

    def test_one_conflict_in_a_batch_changes_nothing(self, store: StorageBackend) -> None:
        """If one write of a commit conflicts, none of its writes or meta is applied."""
        store.commit([RecordWrite(K1, b"a", 0)])
        before = state(store)
        batch = [RecordWrite(K2, b"b", 0), RecordWrite(K3, None, 0), RecordWrite(K1, b"c", 7)]
        with pytest.raises(ConflictError):
            store.commit(batch, [MetaWrite("dek", b"k", None)])
        assert state(store) == before
        assert store.read(K2) is None

    def test_meta_conflict_discards_record_writes(self, store: StorageBackend) -> None:
        """A conflicting MetaWrite discards the record writes of the same commit."""
        store.commit(meta=[MetaWrite("dek", b"one", None)])
        before = state(store)
        with pytest.raises(ConflictError):
            store.commit([RecordWrite(K1, b"a", 0)], [MetaWrite("dek", b"two", b"nope")])
        assert state(store) == before

    # --- tombstones ----------------------------------------------------------------

    def test_tombstones_are_hidden_from_reads(self, store: StorageBackend) -> None:
        """A deleted record is absent from read(), read_all() and export()."""
        store.commit([RecordWrite(K1, b"a", 0), RecordWrite(K2, b"b", 0)])
        assert store.commit([RecordWrite(K1, None, 1)]) == 2
        assert store.read(K1) is None
        assert live(store) == {K2: (b"b", 1)}
        assert [r.key for r in store.export().records] == [K2]

    def test_changes_since_includes_tombstones_in_order(self, store: StorageBackend) -> None:
        """changes_since() yields records and tombstones newer than its argument, oldest first."""
        ka, kb, kc = (
            b"\x01" * 32,
            b"\x02" * 32,
            b"\x03" * 32,
        )  # key order differs from revision order
        store.commit([RecordWrite(kc, b"c", 0)])
        store.commit([RecordWrite(kb, b"b", 0)])
        store.commit([RecordWrite(kc, None, 1)])
        store.commit([RecordWrite(ka, b"a", 0)])
        changes = list(store.changes_since(0))
        assert [(r.key, r.data, r.revision) for r in changes] == [
            (kb, b"b", 2),
            (kc, None, 3),
            (ka, b"a", 4),
        ]
        assert [r.revision for r in store.changes_since(2)] == [3, 4]
        assert list(store.changes_since(4)) == []

    def test_recreate_deleted_key_with_expect_zero(self, store: StorageBackend) -> None:
        """A deleted key counts as absent: it is re-created with expect=0, not its old revision."""
        store.commit([RecordWrite(K1, b"a", 0)])
        store.commit([RecordWrite(K1, None, 1)])
        with pytest.raises(ConflictError):
            store.commit([RecordWrite(K1, b"b", 2)])
        assert store.commit([RecordWrite(K1, b"b", 0)]) == 3
        assert store.read(K1) == Record(K1, b"b", 3)

    def test_delete_of_absent_key_writes_a_tombstone(self, store: StorageBackend) -> None:
        """Deleting an absent key with expect=0 succeeds and leaves a tombstone."""
        assert store.commit([RecordWrite(K1, None, 0)]) == 1
        assert store.read(K1) is None
        assert list(store.changes_since(0)) == [Record(K1, None, 1)]

    # --- meta and snapshots --------------------------------------------------------

    def test_meta_is_set_and_replaced_by_meta_writes(self, store: StorageBackend) -> None:
        """MetaWrite creates an entry, replaces it given the old value, and bumps the revision."""
        assert store.commit(meta=[MetaWrite("dek", b"one", None)]) == 1
        assert store.commit(meta=[MetaWrite("dek", b"two", b"one")]) == 2
        assert store.get_meta("dek") == b"two"
        assert store.get_meta("other") is None

    def test_export_is_a_consistent_snapshot(self, store: StorageBackend) -> None:
        """export() holds the revision, every live record and all meta, as of one moment."""
        store.commit(
            [RecordWrite(K1, b"a", 0), RecordWrite(K2, b"b", 0)], [MetaWrite("m", b"1", None)]
        )
        store.commit([RecordWrite(K2, None, 1), RecordWrite(K3, b"c", 0)])
        snap = store.export()
        assert snap.revision == 2
        assert dict(snap.meta) == {"m": b"1"}
        assert sorted(snap.records, key=lambda r: r.key) == sorted(
            [Record(K1, b"a", 1), Record(K3, b"c", 2)], key=lambda r: r.key
        )
        store.commit([RecordWrite(K1, b"z", 1)], [MetaWrite("m", b"2", b"1")])
        assert Record(K1, b"a", 1) in snap.records
        assert dict(snap.meta) == {"m": b"1"}

    def test_compact_changes_nothing_visible(self, store: StorageBackend) -> None:
        """compact() keeps every record, tombstone, meta entry and the revision."""
        store.commit([RecordWrite(K1, b"a", 0), RecordWrite(K2, b"b", 0)])
        store.commit([RecordWrite(K2, None, 1)], [MetaWrite("m", b"1", None)])
        before = store.export()
        changes = list(store.changes_since(0))
        store.compact()
        after = store.export()
        assert after.revision == before.revision
        assert dict(after.meta) == dict(before.meta)
        assert sorted(after.records, key=lambda r: r.key) == sorted(
            before.records, key=lambda r: r.key
        )
        assert list(store.changes_since(0)) == changes
        assert store.commit([RecordWrite(K3, b"c", 0)]) == before.revision + 1

    # --- concurrency ---------------------------------------------------------------

    def test_concurrent_cas_increments_lose_nothing(self, store: StorageBackend) -> None:
        """8 threads doing CAS increments on one key (retrying conflicts) reach the exact count."""
        threads, per_thread = 8, 25

        def work(_: int) -> None:
            for _ in range(per_thread):
                while True:
                    current = store.read(K1)
                    count = int(current.data or b"0") if current else 0
                    expect = current.revision if current else 0
                    try:
                        store.commit([RecordWrite(K1, str(count + 1).encode(), expect)])
                        break
                    except ConflictError:
                        continue

        assert run_together(threads, work) == []
        record = store.read(K1)
        assert record is not None
        assert record.data == str(threads * per_thread).encode()
        assert store.revision() == threads * per_thread == record.revision

    # --- replicas: change wake-ups and leases -----------------------------------------

    def test_wait_for_change_times_out_when_nothing_changes(self, store: StorageBackend) -> None:
        """wait_for_change returns False after about its timeout when nothing is
        committed, and at once with True when the revision already differs."""
        store.commit([RecordWrite(K1, b"a", 0)])
        start = time.monotonic()
        assert store.wait_for_change(1, 0.3) is False
        assert 0.25 <= time.monotonic() - start < 0.3 + WAKE_SECONDS
        start = time.monotonic()
        assert store.wait_for_change(0, 5.0) is True
        assert time.monotonic() - start < WAKE_SECONDS

    def test_wait_for_change_wakes_on_a_commit(self, store: StorageBackend) -> None:
        """A thread blocked in wait_for_change returns True soon after a commit
        through the same handle."""
        woke = waiter(store, 0, 10.0)
        time.sleep(0.2)
        store.commit([RecordWrite(K1, b"a", 0)])
        assert woke.result(WAKE_SECONDS) is True

    def test_close_stops_a_waiter(self, storage: StorageBackend) -> None:
        """A thread blocked in wait_for_change raises StorageError (or returns) soon
        after another thread closes the store, rather than wait out its timeout."""
        woke = waiter(storage, 0, 30.0)
        time.sleep(0.2)
        storage.close()
        outcome = woke.outcome(WAKE_SECONDS)
        assert outcome is not None, "the waiter was still blocked after close()"
        assert isinstance(outcome, (StorageError, bool)), outcome

    def test_a_lease_is_exclusive_until_released(self, store: StorageBackend) -> None:
        """A lease goes to one holder; another gets None until the holder releases it,
        then gets it with a higher fence. A release by a non-holder does nothing."""
        first = store.acquire_lease("backup", "a", 30.0)
        assert first is not None
        assert (first.name, first.holder) == ("backup", "a")
        assert 25.0 < first.expires <= 30.0
        assert store.acquire_lease("backup", "b", 30.0) is None
        store.release_lease("backup", "b")
        assert store.acquire_lease("backup", "b", 30.0) is None
        store.release_lease("backup", "a")
        second = store.acquire_lease("backup", "b", 30.0)
        assert second is not None
        assert second.holder == "b"
        assert second.fence > first.fence

    def test_a_holder_renews_its_lease_with_the_same_fence(self, store: StorageBackend) -> None:
        """Acquiring a lease one already holds renews it: a new expiry, the same fence."""
        first = store.acquire_lease("backup", "a", 1.0)
        renewed = store.acquire_lease("backup", "a", 60.0)
        assert first is not None
        assert renewed is not None
        assert renewed.fence == first.fence
        assert renewed.expires > 50.0
        assert [(x.holder, x.fence) for x in store.leases("backup")] == [("a", first.fence)]

    def test_an_expired_lease_passes_on_with_a_higher_fence(self, store: StorageBackend) -> None:
        """After its ttl a lease is no longer listed, and another holder takes it with a
        higher fence; the old holder then cannot renew it."""
        first = store.acquire_lease("backup", "a", 1.0)
        assert first is not None
        assert store.acquire_lease("backup", "b", 10.0) is None
        time.sleep(1.3)
        assert store.leases() == []
        second = store.acquire_lease("backup", "b", 10.0)
        assert second is not None
        assert second.fence > first.fence
        assert store.acquire_lease("backup", "a", 10.0) is None

    def test_leases_lists_the_live_ones_under_a_prefix(self, store: StorageBackend) -> None:
        """leases(prefix) lists, by name, the unexpired leases whose names start with
        the prefix, and only those."""
        for name, holder, ttl in [
            ("replica/b", "b", 30.0),
            ("replica/a", "a", 30.0),
            ("replica/gone", "c", 0.2),
            ("replicas", "d", 30.0),
            ("backup", "a", 30.0),
        ]:
            assert store.acquire_lease(name, holder, ttl) is not None
        time.sleep(0.4)
        assert [(x.name, x.holder) for x in store.leases("replica/")] == [
            ("replica/a", "a"),
            ("replica/b", "b"),
        ]
        assert [x.name for x in store.leases()] == ["backup", "replica/a", "replica/b", "replicas"]
        assert all(isinstance(x, Lease) and 0 < x.expires <= 30.0 for x in store.leases())

    def test_leases_change_no_revision_record_or_meta(self, store: StorageBackend) -> None:
        """Taking, renewing and releasing leases leaves the revision, the records
        (changes_since) and the metadata as they were."""
        store.commit([RecordWrite(K1, b"a", 0)], [MetaWrite("m", b"1", None)])
        before = state(store)
        store.acquire_lease("backup", "a", 30.0)
        store.acquire_lease("backup", "a", 30.0)
        store.release_lease("backup", "a")
        store.acquire_lease("replica/x", "x", 30.0)
        assert state(store) == before

    def test_a_lease_needs_a_positive_ttl(self, store: StorageBackend) -> None:
        """A ttl of 0 or less is a ValueError, and takes no lease."""
        for ttl in (0.0, -1.0):
            with pytest.raises(ValueError, match="more than 0 seconds"):
                store.acquire_lease("backup", "a", ttl)
        assert store.leases() == []


class PersistentStorageContract(StorageBackendContract):
    """The storage contract plus persistence: what a store holds survives closing and
    reopening it. Subclass it for a persistent backend and override ``storage`` and
    ``reopen``.
    """

    @pytest.fixture
    def reopen(self) -> Reopen:
        """Override: return a function that closes the given store and returns a new
        instance over the same location."""
        pytest.fail("override the 'reopen' fixture for a persistent backend")

    @pytest.fixture
    def reopened(self, reopen: Reopen, opened: list[StorageBackend]) -> Reopen:
        """``reopen``, closing what it returns after the test."""

        def do(old: StorageBackend) -> StorageBackend:
            new = reopen(old)
            opened.append(new)
            return new

        return do

    def test_records_and_revision_survive_reopen(
        self, store: StorageBackend, reopened: Reopen
    ) -> None:
        """Records and the global revision are the same after the store is reopened."""
        store.commit([RecordWrite(K1, b"a", 0), RecordWrite(K2, b"\x00" * 1000, 0)])
        store.commit([RecordWrite(K1, b"b", 1)])
        again = reopened(store)
        assert again.revision() == 2
        assert live(again) == {K1: (b"b", 2), K2: (b"\x00" * 1000, 1)}

    def test_tombstones_survive_reopen(self, store: StorageBackend, reopened: Reopen) -> None:
        """A tombstone is still hidden from reads and listed by changes_since() after reopen."""
        store.commit([RecordWrite(K1, b"a", 0)])
        store.commit([RecordWrite(K1, None, 1)])
        again = reopened(store)
        assert again.read(K1) is None
        assert list(again.changes_since(0)) == [Record(K1, None, 2)]

    def test_meta_survives_reopen(self, store: StorageBackend, reopened: Reopen) -> None:
        """Meta entries are the same after reopen, and export() shows exactly them."""
        store.commit(meta=[MetaWrite("dek", b"wrapped", None), MetaWrite("schema", b"1", None)])
        again = reopened(store)
        assert again.get_meta("dek") == b"wrapped"
        assert dict(again.export().meta) == {"dek": b"wrapped", "schema": b"1"}

    def test_cas_continues_after_reopen(self, store: StorageBackend, reopened: Reopen) -> None:
        """After reopen, writes expect the revisions from before and the counter carries on."""
        store.commit([RecordWrite(K1, b"a", 0)])
        again = reopened(store)
        with pytest.raises(ConflictError):
            again.commit([RecordWrite(K1, b"b", 0)])
        assert again.commit([RecordWrite(K1, b"b", 1)]) == 2


class Waiter:
    """A thread running one ``wait_for_change`` call; see :func:`waiter`."""

    def __init__(self, store: StorageBackend, revision: int, timeout: float) -> None:
        self._done = threading.Event()
        self._outcome: bool | BaseException | None = None
        # A daemon: a waiter that close() failed to stop must not keep pytest running.
        self._thread = threading.Thread(
            target=self._run, args=(store, revision, timeout), daemon=True
        )
        self._thread.start()

    def _run(self, store: StorageBackend, revision: int, timeout: float) -> None:
        try:
            self._outcome = store.wait_for_change(revision, timeout)
        except BaseException as e:  # reported by outcome(): a thread cannot fail the test
            self._outcome = e
        finally:
            self._done.set()

    def outcome(self, within: float) -> bool | BaseException | None:
        """What the call returned or raised, waiting up to ``within`` seconds for it;
        ``None`` if it is still blocked."""
        self._done.wait(within)
        return self._outcome

    def result(self, within: float) -> bool:
        """What the call returned within ``within`` seconds.

        :raises AssertionError: if it was still blocked, or raised (chained).
        """
        outcome = self.outcome(within)
        if isinstance(outcome, BaseException):
            raise AssertionError(f"wait_for_change raised {outcome!r}") from outcome
        assert outcome is not None, f"wait_for_change did not return within {within} s"
        return outcome


def waiter(store: StorageBackend, revision: int, timeout: float) -> Waiter:
    """Start ``store.wait_for_change(revision, timeout)`` in a thread; read what it
    returned with :meth:`Waiter.result`."""
    return Waiter(store, revision, timeout)


def run_together(count: int, target: Callable[[int], None]) -> list[BaseException]:
    """Run ``target(0)`` ... ``target(count - 1)`` in threads started together (for
    races a test wants to provoke); return what they raised."""
    start = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(n: int) -> None:
        try:
            start.wait()
            target(n)
        except BaseException as e:  # reported by the caller: a thread cannot fail the test
            errors.append(e)

    workers = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    return errors


class SharedStorageContract:
    """Two handles on one store, as several server processes sharing a database have:
    what one commits the other sees, and their concurrent commits serialise. Subclass
    it for a backend that several processes may open at once, and override
    ``two_handles``::

        class TestMyBackendShared(SharedStorageContract):
            @pytest.fixture
            def two_handles(self, tmp_path):
                uri = f"my://{tmp_path}/store"
                return MyBackend.from_uri(uri), MyBackend.from_uri(uri)
    """

    @pytest.fixture
    def two_handles(self) -> Pair:
        """Override: return or yield two backends opened on the same fresh, empty store
        (two instances, as two processes would open it). The contract closes them."""
        pytest.fail("override the 'two_handles' fixture to return two handles on one store")

    @pytest.fixture
    def pair(self, two_handles: Pair) -> Iterator[Pair]:
        """The two handles under test, closed after the test."""
        a, b = two_handles
        assert a is not b, "two_handles must return two instances"
        yield a, b
        a.close()
        b.close()

    def test_a_commit_through_one_is_seen_by_the_other(self, pair: Pair) -> None:
        """Records, deletions (as tombstones in changes_since), meta and the revision
        committed through one handle are read through the other at once."""
        a, b = pair
        assert a.commit([RecordWrite(K1, b"a", 0), RecordWrite(K2, b"b", 0)]) == 1
        assert b.revision() == 1
        assert b.read(K1) == Record(K1, b"a", 1)
        assert b.commit([RecordWrite(K1, None, 1)], [MetaWrite("dek", b"d", None)]) == 2
        assert a.revision() == 2
        assert a.read(K1) is None
        assert a.get_meta("dek") == b"d"
        assert list(a.changes_since(1)) == [Record(K1, None, 2)]
        assert live(a) == live(b) == {K2: (b"b", 1)}
        with pytest.raises(ConflictError):
            a.commit([RecordWrite(K2, b"stale", 0)])
        assert a.commit([RecordWrite(K2, b"c", 1)]) == 3
        snap = b.export()
        assert (snap.revision, dict(snap.meta), list(snap.records)) == (
            3,
            {"dek": b"d"},
            [Record(K2, b"c", 3)],
        )

    def test_concurrent_writers_lose_and_duplicate_nothing(self, pair: Pair) -> None:
        """Threads on both handles each increment a record of their own (whose revision
        they know from their commits) and a shared one (compare-and-swap, re-read and
        retried on ConflictError): every commit gets its own revision, the shared values
        in revision order count 1, 2, 3..., and every record ends at the revision of the
        last commit that wrote it."""
        threads, rounds = 4, 10
        shared = key(1000)
        own = [key(2000 + n) for n in range(threads)]
        commits: list[tuple[int, int, bytes, int]] = []  # (revision, thread, key, value)

        def work(n: int) -> None:
            store = pair[n % 2]
            mine = 0
            for i in range(1, rounds + 1):
                # Nobody else writes this record: a conflict on it would be a bug.
                mine = store.commit([RecordWrite(own[n], str(i).encode(), mine)])
                commits.append((mine, n, own[n], i))
                while True:
                    current = store.read(shared)
                    count = int(current.data or b"0") if current else 0
                    expect = current.revision if current else 0
                    try:
                        revision = store.commit(
                            [RecordWrite(shared, str(count + 1).encode(), expect)]
                        )
                    except ConflictError:
                        continue
                    commits.append((revision, n, shared, count + 1))
                    break

        assert run_together(threads, work) == []
        total = 2 * threads * rounds
        commits.sort()
        assert [c[0] for c in commits] == list(range(1, total + 1))
        assert [value for _, _, k, value in commits if k == shared] == list(
            range(1, threads * rounds + 1)
        )
        a, b = pair
        assert a.revision() == b.revision() == total
        for k in [shared, *own]:
            last = max(revision for revision, _, written, _ in commits if written == k)
            want = threads * rounds if k == shared else rounds
            assert a.read(k) == b.read(k) == Record(k, str(want).encode(), last)
        assert list(a.changes_since(0)) == list(b.changes_since(0))

    def test_a_meta_race_has_exactly_one_winner(self, pair: Pair) -> None:
        """Threads on both handles racing to create one meta entry, then to replace it,
        have one winner each time; the others get ConflictError and change nothing."""
        threads = 6

        def race(expect: bytes | None, round_: int) -> tuple[list[bytes], list[int]]:
            won: list[bytes] = []
            lost: list[int] = []

            def attempt(n: int) -> None:
                value = f"round {round_}, thread {n}".encode()
                try:
                    pair[n % 2].commit(meta=[MetaWrite("dek", value, expect)])
                except ConflictError:
                    lost.append(n)
                else:
                    won.append(value)

            assert run_together(threads, attempt) == []
            return won, lost

        first, lost = race(None, 1)
        assert (len(first), len(lost)) == (1, threads - 1)
        assert pair[0].get_meta("dek") == pair[1].get_meta("dek") == first[0]
        second, lost = race(first[0], 2)
        assert (len(second), len(lost)) == (1, threads - 1)
        assert pair[0].get_meta("dek") == pair[1].get_meta("dek") == second[0]
        assert pair[0].revision() == pair[1].revision() == 2

    def test_revisions_seen_by_either_handle_only_grow(self, pair: Pair) -> None:
        """While commits go through both handles, a reader never sees the revision go
        down, and what one handle has shown the other shows too: changes_since through
        the other lists every commit up to it, in order, none skipped or repeated."""
        commits = 40
        done = threading.Event()
        seen: list[list[int]] = [[], []]

        def write() -> None:
            try:
                for i in range(commits):
                    pair[i % 2].commit([RecordWrite(key(i), b"x", 0)])
            finally:
                done.set()

        def watch(observed: list[int]) -> None:
            last = 0
            while True:
                finished = done.is_set()
                one, other = pair if len(observed) % 2 else pair[::-1]
                revision = one.revision()
                assert revision >= last
                # Each commit writes one new record: changes_since lists one per commit.
                newer = [r.revision for r in other.changes_since(last)]
                assert newer == list(range(last + 1, last + 1 + len(newer)))
                assert last + len(newer) >= revision
                observed.append(revision)
                last += len(newer)
                if finished:
                    return

        def role(n: int) -> None:
            if n == 0:
                write()
            else:
                watch(seen[n - 1])

        assert run_together(3, role) == []
        for observed in seen:
            assert observed == sorted(observed)
            assert observed[-1] == commits

    def test_a_commit_wakes_a_waiter_on_the_other_handle(self, pair: Pair) -> None:
        """A thread blocked in wait_for_change on one handle returns True within a
        second of a commit through the other, and the new revision is then readable
        through its own handle; with nothing committed it times out with False."""
        a, b = pair
        assert b.wait_for_change(0, 0.3) is False
        for revision in range(3):
            woke = waiter(b, revision, 10.0)
            time.sleep(0.2)
            start = time.monotonic()
            a.commit([RecordWrite(key(revision), b"x", 0)])
            assert woke.result(WAKE_SECONDS) is True
            assert time.monotonic() - start < WAKE_SECONDS
            assert b.revision() == revision + 1
        assert b.wait_for_change(3, 0.3) is False

    def test_a_lease_write_wakes_no_waiter(self, pair: Pair) -> None:
        """Lease writes through one handle do not move the revision, so a waiter on the
        other, told the current revision, does not see a change."""
        a, b = pair
        a.commit([RecordWrite(K1, b"a", 0)])
        woke = waiter(b, 1, 0.6)
        a.acquire_lease("backup", "a", 30.0)
        a.release_lease("backup", "a")
        assert woke.result(0.6 + WAKE_SECONDS) is False
        assert a.revision() == b.revision() == 1

    def test_leases_are_shared_and_exclusive(self, pair: Pair) -> None:
        """A lease held through one handle is refused to another holder through the
        other, listed by both, and taken through the other once released, with a
        higher fence."""
        a, b = pair
        held = a.acquire_lease("backup", "replica-a", 30.0)
        assert held is not None
        assert b.acquire_lease("backup", "replica-b", 30.0) is None
        assert [(x.name, x.holder, x.fence) for x in b.leases()] == [
            ("backup", "replica-a", held.fence)
        ]
        a.release_lease("backup", "replica-a")
        assert a.leases() == b.leases() == []
        taken = b.acquire_lease("backup", "replica-b", 30.0)
        assert taken is not None
        assert taken.fence > held.fence
        assert [x.holder for x in a.leases("backup")] == ["replica-b"]

    def test_a_lease_race_has_exactly_one_winner(self, pair: Pair) -> None:
        """Threads on both handles racing for one free lease: exactly one gets it."""
        threads = 6
        won: list[Lease] = []

        def attempt(n: int) -> None:
            lease = pair[n % 2].acquire_lease("backup", f"holder-{n}", 30.0)
            if lease is not None:
                won.append(lease)

        assert run_together(threads, attempt) == []
        assert len(won) == 1
        assert [x.holder for x in pair[0].leases()] == [won[0].holder]

    def test_an_expired_lease_passes_to_the_other_handle(self, pair: Pair) -> None:
        """Once a lease taken through one handle expires, another holder takes it
        through the other handle with a higher fence."""
        a, b = pair
        first = a.acquire_lease("backup", "replica-a", 1.0)
        assert first is not None
        assert b.acquire_lease("backup", "replica-b", 10.0) is None
        time.sleep(1.3)
        second = b.acquire_lease("backup", "replica-b", 10.0)
        assert second is not None
        assert second.fence > first.fence
