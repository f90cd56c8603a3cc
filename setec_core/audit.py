"""The audit log: one JSON line per access, durable before any value leaves.

Each line carries Go setec's keys in Go's order (SPEC.md §3.1): ``id``, ``time``,
``principal`` {``hostname``, ``ip``, ``user`` | ``tags``}, ``action``, ``authorized``,
``secret`` (omitted when empty) and ``secretVersion`` (omitted when 0). Ours follow:

* ``outcome``: what the Database did: ``ok``, ``denied``, ``not-found``,
  ``unchanged``, ``version-claimed``, ``invalid`` or ``error`` (a write the storage
  refused after it was audited);
* ``servedVersion``: the version whose value a get returned (omitted otherwise);
* ``request``: the caller's request id, when it has one;
* ``prev``: SHA-256 (hex) of the previous line's bytes, or 64 zeros on the first
  line. :func:`verify` follows this chain, so an edited, inserted or removed line is
  found as long as a line after it is left alone. The chain is not keyed: removing or
  editing the *last* lines, or rewriting a line and recomputing every hash after it,
  leaves a valid chain. Copy the head (:attr:`AuditReport.head`) somewhere the
  server's host cannot write (a log shipper, a ticket) to detect that.

:meth:`AuditLog.write` returns only once the line is on disk (fsync). Concurrent
writers share one fsync (group commit): while one thread syncs, the others append
their lines and wait, and the next sync covers them all. If a write or sync fails the
operation is refused with :class:`~setec_core.errors.AuditError` (fail-closed). After a
failed fsync the log refuses every later write too, because Linux may have dropped the
unsynced pages and cleared the error, so nothing after it could be trusted.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets as _random
import stat
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from setec_core.authz import Principal
from setec_core.errors import AuditError, ConfigError

log = logging.getLogger("setec.audit")

GENESIS = "0" * 64
_TAIL_CHUNK = 1 << 16


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """What happened, before ``id``, ``time`` and ``prev`` are assigned at write time."""

    principal: Principal
    action: str
    authorized: bool
    secret: str = ""
    secret_version: int = 0
    outcome: str = ""
    served_version: int = 0
    request_id: str = ""

    def _body(self) -> str:
        # Everything after "time", as JSON members (no braces); see AuditLog.write.
        doc: dict[str, Any] = {
            "principal": self.principal.to_json(),
            "action": self.action,
            "authorized": self.authorized,
        }
        if self.secret:
            doc["secret"] = self.secret
        if self.secret_version:
            doc["secretVersion"] = self.secret_version
        if self.outcome:
            doc["outcome"] = self.outcome
        if self.served_version:
            doc["servedVersion"] = self.served_version
        if self.request_id:
            doc["request"] = self.request_id
        text = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
        try:
            text.encode()
        except UnicodeEncodeError:
            # A lone surrogate (from a library caller; the HTTP API rejects them) has no
            # UTF-8 form: JSON's \u escapes keep the line valid and the entry whole.
            text = json.dumps(doc, separators=(",", ":"))
        return text[1:-1]


def format_time(ns: int) -> str:
    """Format nanoseconds since the epoch as Go's RFC 3339 with nanoseconds, in UTC,
    trailing zeros of the fraction trimmed (``2024-05-05T12:34:56.1234Z``)."""
    secs, frac = divmod(ns, 1_000_000_000)
    out = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    if frac:
        out += "." + f"{frac:09d}".rstrip("0")
    return out + "Z"


class AuditSink(ABC):
    """Where audit lines go: a file in production, memory in tests."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data`` (whole lines) to the sink.

        :raises OSError: if the write failed; the sink must be as it was before.
        :raises AuditError: if the write failed and the sink could not be restored.
        """

    @abstractmethod
    def sync(self) -> None:
        """Make everything written so far durable.

        :raises OSError: if it could not be made durable.
        """

    @abstractmethod
    def close(self) -> None:
        """Release the sink (after :meth:`sync`; :class:`AuditLog` calls both).

        :raises OSError: if closing failed.
        """

    def last_line(self) -> bytes | None:
        """Return the last complete line already in the sink (without its newline),
        or ``None`` if it is empty. The chain continues from it."""
        return None


class FileAuditSink(AuditSink):
    """An append-only file, mode 0600, held under an exclusive lock so that two
    servers cannot interleave lines in one log.

    A torn last line (a crash mid-write, before its fsync returned, so before its
    operation could complete) is cut off at open and reported in the log.

    :raises ConfigError: if the file cannot be opened or is in use by another process.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            raise ConfigError(
                f"cannot open audit log {str(self.path)!r}: {e.strerror}; "
                "make its directory writable by this user"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(f"audit log {str(self.path)!r} is not a regular file")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(
                    f"audit log {str(self.path)!r} is in use (by another process, or "
                    "already open in this one); is another setec server running on "
                    "this state directory?"
                ) from None
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
            self._fd = fd
            self._size = st.st_size
            self._last = self._recover_tail()
        except BaseException:
            os.close(fd)
            raise

    def _recover_tail(self) -> bytes | None:
        if self._size == 0:
            return None
        start = max(0, self._size - _TAIL_CHUNK)
        tail = os.pread(self._fd, self._size - start, start)
        while b"\n" not in tail[:-1] and start > 0:
            start = max(0, start - _TAIL_CHUNK)
            tail = os.pread(self._fd, self._size - start, start)
        if not tail.endswith(b"\n"):
            cut = tail.rfind(b"\n") + 1
            torn = len(tail) - cut
            os.ftruncate(self._fd, self._size - torn)
            os.fsync(self._fd)
            self._size -= torn
            log.warning(
                "audit log %s ended in a partial line (%d bytes) from an interrupted "
                "write; removed it",
                self.path,
                torn,
            )
            tail = tail[:cut]
        lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
        return lines[-1] if lines[-1] else None

    def last_line(self) -> bytes | None:
        return self._last

    def write(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as e:
                raise AuditError(
                    f"audit log {str(self.path)!r} failed a write and could not be "
                    f"restored ({e.strerror}); refusing every operation until restart"
                ) from None
            raise
        self._size += len(data)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


class MemoryAuditSink(AuditSink):
    """Keeps audit lines in memory; :meth:`entries` decodes them. For tests and
    in-memory databases."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self.syncs = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self._chunks.append(data)

    def sync(self) -> None:
        self.syncs += 1

    def close(self) -> None:
        self.closed = True

    def getvalue(self) -> bytes:
        """Return everything written so far."""
        return b"".join(self._chunks)

    def entries(self) -> list[dict[str, Any]]:
        """Return every line written so far, decoded."""
        return [json.loads(line) for line in self.getvalue().splitlines()]


class _Waiter:
    """One writer parked until a sync covers its lines.

    A raw lock, held from birth and released by whoever decides its fate, wakes exactly
    this thread and nobody else: no shared condition to retake, no thundering herd.
    """

    __slots__ = ("lock", "next", "outcome")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()
        self.outcome = ""  # _DONE, _LEAD, or the error message
        self.next: _Waiter | None = None  # whom to wake after this one

    def wake(self) -> None:
        """Wake this writer; it wakes the next in its chain itself."""
        self.lock.release()

    def park(self) -> str:
        """Block until woken; pass the wake-up on down the chain; return the outcome."""
        self.lock.acquire()
        if self.next is not None:
            self.next.wake()
        return self.outcome


_DONE = "done"
_LEAD = "lead"


class AuditLog:
    """Writes audit entries durably, hash-chained, with group commit.

    Group commit works by passing a baton. Writers stamp their entries (id, time)
    under a short lock and append them to a pending list; no I/O happens under that
    lock, so a writer is never stuck behind another's system call. The writer that
    finds nobody holding the baton takes it, chains and writes everything pending,
    and fsyncs; writers that arrive meanwhile park. When the fsync returns, the holder
    releases every writer whose lines it covered and hands the baton to the first one
    that came later, which writes and syncs the next batch. A lone writer never waits
    for another thread.

    :param sink: where lines go; the log continues the chain from its last line.
    """

    def __init__(self, sink: AuditSink) -> None:
        self._sink = sink
        last = sink.last_line()
        # Only the baton holder reads or advances the chain head.
        self._prev = hashlib.sha256(last).hexdigest() if last else GENESIS
        self._lock = threading.Lock()
        self._syncing = False  # somebody holds the baton
        self._pending: list[str] = []  # stamped lines, up to their "prev" value
        self._queue: list[_Waiter] = []  # owners of pending lines, in order
        self._broken = ""
        self._closed = False
        #: Number of fsyncs done, entries written to the sink, and the last fsync's
        #: duration in seconds (for metrics and benchmarks).
        self.fsyncs = 0
        self.entries_written = 0
        self.last_sync_seconds = 0.0
        #: Called with each fsync's duration in seconds, by the thread that synced,
        #: outside any lock (the server feeds a latency histogram with it).
        self.on_sync: Callable[[float], None] | None = None
        self._observer_failed = False

    @property
    def failure(self) -> str:
        """Why the log refuses writes (a failed fsync, or closed), or ``""`` if it
        accepts them. Health checks report this."""
        return self._broken

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> AuditLog:
        """Open (creating, mode 0600) the audit log file at ``path``.

        :raises ConfigError: if it cannot be opened or another process holds it.
        """
        return cls(FileAuditSink(path))

    @property
    def sink(self) -> AuditSink:
        """The sink this log writes to."""
        return self._sink

    def write(self, *entries: AuditEntry) -> None:
        """Append ``entries`` and return once they are durable.

        :raises AuditError: if they could not be written and synced; the caller must
            refuse the operation they record.
        """
        if not entries:
            return
        bodies = [e._body() for e in entries]
        waiter = None
        with self._lock:
            if self._broken:
                raise AuditError(self._broken)
            # id and time are stamped under the lock, so lines are in time order;
            # "prev" goes last so a reader can check the chain line by line.
            for body in bodies:
                self._pending.append(
                    f'{{"id":{_random.randbits(64) or 1},"time":"{format_time(time.time_ns())}",'
                    f'{body},"prev":"'
                )
            if self._syncing:
                waiter = _Waiter()
                self._queue.append(waiter)
            else:
                self._syncing = True
        if waiter is not None:
            outcome = waiter.park()
            if outcome == _DONE:
                return
            if outcome != _LEAD:
                raise AuditError(outcome)
        self._lead()

    def _lead(self) -> None:
        # The caller holds the baton. Everything pending now belongs to it and to the
        # writers queued so far; one write and one fsync cover them all.
        with self._lock:
            pending, self._pending = self._pending, []
            batch, self._queue = self._queue, []
        failure, broken = "", False
        unexpected: BaseException | None = None
        lines: list[bytes] = []
        started = time.perf_counter()
        try:
            prev = self._prev
            for stamped in pending:
                line = f'{stamped}{prev}"}}'.encode()
                prev = hashlib.sha256(line).hexdigest()
                lines.append(line)
            try:
                self._sink.write(b"\n".join(lines) + b"\n")
            except OSError as e:
                # The sink cut the partial write off, so the chain stays at its old head
                # and the log can go on; only this batch's operations are refused.
                failure = f"cannot write the audit log: {e.strerror or e}"
            except AuditError as e:
                failure, broken = str(e), True
            else:
                self._prev = prev
                try:
                    self._sink.sync()
                except OSError as e:
                    failure = (
                        f"the audit log could not be synced ({e.strerror or e}); "
                        "refusing every operation until the server is restarted"
                    )
                    broken = True
        except BaseException as e:  # a bug, MemoryError, Ctrl-C: never strand the baton
            unexpected = e
            failure = (
                f"the audit log failed unexpectedly ({type(e).__name__}); "
                "refusing every operation until the server is restarted"
            )
            broken = True
        elapsed = time.perf_counter() - started
        if not failure and self.on_sync is not None:
            try:
                self.on_sync(elapsed)
            except Exception as e:  # a broken observer must not strand the parked writers
                if not self._observer_failed:
                    self._observer_failed = True  # once: it would fail on every sync
                    log.error("the audit sync observer failed: %s", type(e).__name__)
        successor = None
        with self._lock:
            if not failure:
                self.entries_written += len(lines)
                self.last_sync_seconds = elapsed
                self.fsyncs += 1
            if broken:
                # Linux may have dropped the unsynced pages and cleared the error, so
                # nothing written after this could be trusted: refuse everyone.
                self._broken = failure
                batch += self._queue
                self._queue, self._pending = [], []
                self._syncing = False
            elif self._queue:
                successor = self._queue.pop(0)
            else:
                self._syncing = False
        # Wake the next holder first so its write overlaps with the wake-ups below.
        if successor is not None:
            successor.outcome = _LEAD
            successor.lock.release()
        # Wake the batch as a chain, each writer waking the next, so that they do not
        # all become runnable at once and fight over the GIL.
        for i, waiter in enumerate(batch):
            waiter.outcome = failure or _DONE
            waiter.next = batch[i + 1] if i + 1 < len(batch) else None
        if batch:
            batch[0].wake()
        if unexpected is not None:
            log.error("%s", failure)
            raise unexpected
        if failure:
            if broken:
                log.error("%s", failure)
            raise AuditError(failure)

    def close(self) -> None:
        """Sync and close the sink; both are attempted even if the sync fails.

        Writers already waiting are written and synced first; later writes are refused.

        :raises AuditError: naming whichever failed.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            waiter = None
            if self._syncing:
                # Queue behind everyone already stamped; nobody can queue after us
                # because the log now refuses writes, so when we are woken the baton
                # is free or handed to us, and nothing is pending.
                waiter = _Waiter()
                self._queue.append(waiter)
            else:
                self._syncing = True
            self._broken = self._broken or "the audit log is closed"
        if waiter is not None:
            waiter.park()
        problems = []
        with self._lock:
            for step in (self._sink.sync, self._sink.close):
                try:
                    step()
                except OSError as e:
                    problems.append(f"{step.__name__}: {e.strerror or e}")
            self._syncing = False
        if problems:
            raise AuditError("closing the audit log failed: " + "; ".join(problems))


@dataclass
class AuditReport:
    """What :func:`verify` found.

    :param entries: how many lines were read.
    :param head: the hash of the last line (what the next line's ``prev`` will be).
    :param problems: one message per broken link, naming the line number.
    """

    entries: int = 0
    head: str = GENESIS
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True if the chain is unbroken."""
        return not self.problems


def verify(path: str | os.PathLike[str]) -> AuditReport:
    """Check the hash chain of the audit log at ``path``.

    Finds an edited, inserted or removed line (including the first), a torn line and
    a line that is not JSON. Lines removed from the end cannot be detected from the
    file alone: compare :attr:`AuditReport.head` with a copy kept elsewhere.

    :raises ConfigError: if the file cannot be read.
    """
    report = AuditReport()
    prev = GENESIS
    try:
        with Path(path).open("rb") as f:
            for number, raw in enumerate(f, start=1):
                report.entries = number
                line = raw.rstrip(b"\n")
                if not raw.endswith(b"\n"):
                    report.problems.append(f"line {number}: torn (no newline at the end)")
                try:
                    claimed = json.loads(line).get("prev")
                except (ValueError, AttributeError):
                    report.problems.append(f"line {number}: not a JSON object")
                    claimed = None
                if claimed != prev:
                    what = (
                        "the first line does not start a chain"
                        if number == 1
                        else ("does not follow the line before it")
                    )
                    report.problems.append(
                        f"line {number}: {what} (a line before it was edited, inserted or removed)"
                    )
                prev = hashlib.sha256(line).hexdigest()
    except OSError as e:
        raise ConfigError(f"cannot read audit log {str(path)!r}: {e.strerror}") from None
    report.head = prev
    return report
