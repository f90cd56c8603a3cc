"""What last access (docs/api.md §9.5) may cost: the times kept in memory name only
secrets that exist, whatever callers ask for, and recording them at close is best
effort (a store that cannot take them, however it fails, loses the times and nothing
else: close still closes the audit log and the store)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from setec_core import Database
from setec_core.audit import AuditLog, MemoryAuditSink
from setec_core.builtin.memory_storage import MemoryStorage
from setec_core.errors import AccessDenied, NotFound
from setec_core.last_access import LAST_ACCESS_META
from setec_core.storage import MetaWrite, RecordWrite
from setec_core.testing import SUPERUSER, TEST_KEY, make_caller, new_database


class BrokenMetaStorage(MemoryStorage):
    """A memory store whose backend fails, with its own exception rather than a
    StorageError, on any commit of the last-access entry (a third-party backend's
    driver error, say)."""

    closed = False

    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        """Fail a commit of the last-access entry; commit anything else."""
        if any(m.name == LAST_ACCESS_META for m in meta):
            raise RuntimeError("the driver lost its connection")
        return super().commit(writes, meta)

    def close(self) -> None:
        """Note that the Database closed the store."""
        self.closed = True
        super().close()


def test_a_backend_error_recording_last_access_does_not_stop_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend's own exception from the last-access flush at close is logged (its type,
    not its message); close goes on to close the audit log and the store instead of
    raising halfway."""
    storage = BrokenMetaStorage()
    sink = MemoryAuditSink()
    db = Database.open(key=TEST_KEY, storage=storage, audit=AuditLog(sink))
    db.put(SUPERUSER, "app/db", b"v")
    db.get(SUPERUSER, "app/db")  # something to flush
    db.close()
    assert storage.closed, "close stopped before closing the store"
    assert "could not record last-access times" in caplog.text
    assert "RuntimeError" in caplog.text
    assert "lost its connection" not in caplog.text


def test_reads_of_missing_denied_or_pending_secrets_record_nothing() -> None:
    """Gets, conditional gets and batch gets of names that do not exist, that the caller
    may not read, or that are pending deletion add nothing to the in-memory times: a
    caller cannot grow them with names of its choosing."""
    reader = make_caller((["get"], ["app/*"]), user="r")
    with new_database() as db:
        db.recovery_window = 3600
        db.put(SUPERUSER, "app/pending", b"v")
        db.put(SUPERUSER, "other/denied", b"v")
        db.delete(SUPERUSER, "app/pending")
        db._accessed.clear()
        names = [f"app/missing-{i}" for i in range(100)] + ["app/pending", "other/denied"]
        for name in names:
            for read in (lambda n: db.get(reader, n), lambda n: db.get_if_changed(reader, n, 1)):
                try:
                    read(name)
                except (NotFound, AccessDenied):
                    pass
                else:
                    raise AssertionError(f"{name} was served")
        results = db.get_many(reader, [(n, 0) for n in names[:98]] + [(n, 0) for n in names[100:]])
        assert all(isinstance(r, NotFound | AccessDenied) for r in results)
        assert db._accessed == {}
