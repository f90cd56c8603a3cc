"""Fakes that subclass setec's interfaces, for injecting faults in tests."""

from __future__ import annotations

import errno
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from setec_core.audit import MemoryAuditSink
from setec_core.authz import Authorizer, Caller
from setec_core.backup import BackupSink, check_name
from setec_core.errors import AccessDenied, NotFound, StorageError
from setec_core.peer import Peer
from setec_core.server_info import DEFAULT_SERVER, ServerInfo
from setec_core.storage import Lease, MetaWrite, Record, RecordWrite, Snapshot, StorageBackend


class FaultyStorage(StorageBackend):
    """Wraps a real backend and fails the next ``fail_commits`` commits with
    :class:`StorageError` (before anything reaches the inner backend)."""

    name = "faulty"
    schemes = ()

    def __init__(self, inner: StorageBackend, fail_commits: int = 0) -> None:
        self.inner = inner
        self.fail_commits = fail_commits
        self.commits = 0

    @classmethod
    def from_uri(cls, uri: str) -> FaultyStorage:
        """Not selectable by URI: build it around another backend."""
        raise NotImplementedError("wrap a backend: FaultyStorage(inner)")

    @property
    def uri(self) -> str:
        return self.inner.uri

    def read_all(self) -> Iterator[Record]:
        return self.inner.read_all()

    def read(self, key: bytes) -> Record | None:
        return self.inner.read(key)

    def commit(self, writes: Sequence[RecordWrite] = (), meta: Sequence[MetaWrite] = ()) -> int:
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise StorageError("injected storage failure")
        self.commits += 1
        return self.inner.commit(writes, meta)

    def get_meta(self, name: str) -> bytes | None:
        return self.inner.get_meta(name)

    def revision(self) -> int:
        return self.inner.revision()

    def changes_since(self, revision: int) -> Iterator[Record]:
        return self.inner.changes_since(revision)

    def export(self) -> Snapshot:
        return self.inner.export()

    def wait_for_change(self, revision: int, timeout: float) -> bool:
        return self.inner.wait_for_change(revision, timeout)

    def acquire_lease(self, name: str, holder: str, ttl: float) -> Lease | None:
        return self.inner.acquire_lease(name, holder, ttl)

    def release_lease(self, name: str, holder: str) -> None:
        self.inner.release_lease(name, holder)

    def leases(self, prefix: str = "") -> list[Lease]:
        return self.inner.leases(prefix)

    def close(self) -> None:
        self.inner.close()


class MemoryBackupSink(BackupSink):
    """A backup sink in memory (``memory-backup://``) that can fail on purpose: the
    next ``fail_puts`` puts raise :class:`StorageError` and store nothing. ``puts``
    counts the puts that succeeded."""

    name = "memory-backup"
    schemes = ("memory-backup",)

    def __init__(self, fail_puts: int = 0) -> None:
        self.blobs: dict[str, bytes] = {}
        self.fail_puts = fail_puts
        self.puts = 0
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, *, read_only: bool = False) -> MemoryBackupSink:
        """Return a new, empty sink (each URI use is a separate one)."""
        return cls()

    @property
    def uri(self) -> str:
        return "memory-backup://"

    def put(self, name: str, data: bytes) -> None:
        check_name(name)
        with self._lock:
            if self.fail_puts > 0:
                self.fail_puts -= 1
                raise StorageError("injected backup failure")
            if name in self.blobs:
                raise StorageError(f"backup {name!r} already exists")
            self.blobs[name] = bytes(data)
            self.puts += 1

    def list(self) -> list[str]:
        with self._lock:
            return sorted(self.blobs)

    def get(self, name: str) -> bytes:
        check_name(name)
        with self._lock:
            try:
                return self.blobs[name]
            except KeyError:
                raise NotFound(f"no backup {name!r}") from None

    def delete(self, name: str) -> None:
        check_name(name)
        with self._lock:
            self.blobs.pop(name, None)


class FailingAuditSink(MemoryAuditSink):
    """An in-memory audit sink whose writes or syncs fail (``EIO``) while
    :attr:`fail_writes` or :attr:`fail_syncs` is set. A failed write keeps nothing.

    Each sync first waits (up to 10 s) for the event :attr:`gate`, which is set until
    you clear it: to hold entries between written and durable."""

    def __init__(self, *, fail_writes: bool = False, fail_syncs: bool = False) -> None:
        super().__init__()
        self.fail_writes = fail_writes
        self.fail_syncs = fail_syncs
        self.gate = threading.Event()
        self.gate.set()

    def write(self, data: bytes) -> None:
        if self.fail_writes:
            raise OSError(errno.EIO, "injected write failure")
        super().write(data)

    def sync(self) -> None:
        self.gate.wait(10)
        if self.fail_syncs:
            raise OSError(errno.EIO, "injected sync failure")
        super().sync()


class FixedAuthorizer(Authorizer):
    """Identifies every request as ``caller``, or fails as told: for testing the HTTP
    front without a Tailscale or a policy file.

    Set :attr:`caller` to switch callers between requests, or :attr:`error` to an
    exception instance that :meth:`identify` should raise instead. :attr:`identified`
    counts the calls, and :attr:`peer` is the last :class:`~setec_core.peer.Peer` seen.
    """

    name = "fixed"

    def __init__(self, caller: Caller, error: BaseException | None = None) -> None:
        self.caller = caller
        self.error = error
        self.identified = 0
        self.peer: Peer | None = None

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> FixedAuthorizer:
        """Not selectable by name: build it with a caller."""
        raise NotImplementedError("build it with a caller: FixedAuthorizer(caller)")

    def identify(self, peer: Peer) -> Caller:
        """Return :attr:`caller`, or raise :attr:`error` if it is set."""
        self.identified += 1
        self.peer = peer
        if self.error is not None:
            raise self.error
        return self.caller


class HeaderAuthorizer(Authorizer):
    """Identifies the caller by the ``X-Setec-Test-Caller`` request header, looking it
    up in ``callers``: for tests that need several callers through one server, such as
    browser tests (a browser context can add a header to all its requests). Unknown or
    missing names are denied. Never use it outside tests: anyone can set a header.
    """

    name = "test-header"
    HEADER = "X-Setec-Test-Caller"

    def __init__(self, callers: Mapping[str, Caller]) -> None:
        self.callers = dict(callers)

    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], server: ServerInfo = DEFAULT_SERVER
    ) -> HeaderAuthorizer:
        """Not selectable by name: build it with callers."""
        raise NotImplementedError("build it with callers: HeaderAuthorizer({name: caller})")

    def identify(self, peer: Peer) -> Caller:
        """Return the caller named by the header.

        :raises AccessDenied: if the header is missing or names no caller.
        """
        caller = self.callers.get(peer.headers.get(self.HEADER, ""))
        if caller is None:
            raise AccessDenied("access denied: unknown test caller")
        return caller
