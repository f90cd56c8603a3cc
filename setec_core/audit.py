"""The audit log: one JSON line per access, durable before any value leaves.

Each line carries Go setec's keys in Go's order: ``id``, ``time``, ``principal``
{``hostname``, ``ip``, ``user`` | ``tags``}, ``action``, ``authorized``, ``secret``
(omitted when empty) and ``secretVersion`` (omitted when 0). Ours follow:

* ``outcome``: what the Database did, an :class:`Outcome`: ``ok``, ``denied``,
  ``not-found``, ``unchanged``, ``version-claimed``, ``invalid``, ``guard-failed`` (a
  guarded write that found the secret changed), ``recoverable`` (a delete that put
  the secret aside), ``pending-deletion`` (a write to a secret put aside) or ``error``
  (a write the storage refused after it was audited);
* ``servedVersion``: the version whose value a get returned (omitted otherwise);
* ``descriptionBytes``: on ``set-info`` entries, the length in UTF-8 bytes of the
  description asked for (0: cleared); never its text;
* ``request``: the caller's request id, when it has one;
* ``commits``: how many commits the store had made when the line was written (lines
  of a Database's log only);
* ``continues``: on the first line of a file that continues an earlier one only;
* ``prev``: the link to the previous line. Once the log has a key (a Database gives it
  the store's audit key) this is ``hmac-sha256:`` and the HMAC of the previous line
  under that key, so nobody without the key can add, edit, remove or rewrite lines
  unseen; a log without a key writes plain SHA-256 links, as earlier versions did.
  :mod:`setec_core.audit_chain` describes the chain, and its :func:`verify` checks it.

:meth:`AuditLog.write` returns only once the line is on disk (fsync). Concurrent
writers share one fsync (group commit): while one thread syncs, the others append
their lines and wait, and the next sync covers them all. If a write or sync fails the
operation is refused with :class:`~setec_core.errors.AuditError` (fail-closed). After a
failed fsync the log refuses every later write too, because Linux may have dropped the
unsynced pages and cleared the error, so nothing after it could be trusted.

An :class:`AuditLog` works without a key (plain links) for programs that keep an audit
log of their own; a :class:`~setec_core.Database` always keys the log it is given, and
a log whose file already ends in keyed lines refuses to write until it has its key.
"""

from __future__ import annotations

import contextlib
import enum
import getpass
import hashlib
import logging
import os
import random
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from setec_core.audit_chain import (
    GENESIS,
    KEYED,
    AuditHead,
    AuditReport,
    ChainKey,
    TailCheck,
    check_tail,
    claim_of,
    continues_of,
    link_of,
    replica_of,
    verify,
)
from setec_core.audit_sink import AuditSink, FileAuditSink, MemoryAuditSink
from setec_core.authz import Principal
from setec_core.encoding import json_string, json_text
from setec_core.errors import AuditError

__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditHead",
    "AuditLog",
    "AuditReport",
    "AuditSink",
    "FileAuditSink",
    "MemoryAuditSink",
    "Outcome",
    "format_time",
    "local_principal",
    "verify",
]

log = logging.getLogger("setec.audit")


class Outcome(enum.StrEnum):
    """What the Database did with a request: the ``outcome`` of its audit entry. A
    ``str``, written as its value."""

    OK = "ok"
    DENIED = "denied"
    NOT_FOUND = "not-found"
    UNCHANGED = "unchanged"
    """A write that changed nothing: a put of the latest value, an activate of the
    active version."""
    VERSION_CLAIMED = "version-claimed"
    INVALID = "invalid"
    ERROR = "error"
    """A write audited ``ok`` that the store then refused: the operation failed."""
    CONFLICT = "conflict"
    """A write audited ``ok`` that lost a race with another server process's write of
    the same secret: it was not applied, and is tried again on the state that process
    left (the next entry for the secret says how that went)."""
    GUARD_FAILED = "guard-failed"
    """A guarded write (docs/api.md §9.4) that found the secret not as its caller
    expected: nothing was written."""
    RECOVERABLE = "recoverable"
    """A delete that put the secret aside for the recovery window (recoverable delete,
    docs/api.md "Recoverable delete"): it can be undeleted until it is purged."""
    PENDING_DELETION = "pending-deletion"
    """A write refused because its secret is pending deletion: nothing was written."""


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
    #: ``set-info`` only: the description's length, which is audited instead of its text.
    description_bytes: int | None = None

    def _body(self) -> str:
        # Everything after "time", as JSON members (no braces); see AuditLog.write.
        # Built by hand rather than by json.dumps of a dict, which cost more than the
        # rest of a get: the principal's part is cached (callers repeat), and strings
        # need escaping only when they hold a quote, a backslash or a control character.
        parts = [
            _principal_json(self.principal),
            f',"action":{json_string(_cap(self.action))},"authorized":',
            "true" if self.authorized else "false",
        ]
        if self.secret:
            parts.append(f',"secret":{json_string(_cap(self.secret))}')
        if self.secret_version:
            parts.append(f',"secretVersion":{int(self.secret_version)}')
        if self.outcome:
            parts.append(f',"outcome":{json_string(self.outcome)}')
        if self.served_version:
            parts.append(f',"servedVersion":{int(self.served_version)}')
        if self.description_bytes is not None:
            parts.append(f',"descriptionBytes":{int(self.description_bytes)}')
        if self.request_id:
            parts.append(f',"request":{json_string(_cap(self.request_id))}')
        return "".join(parts)


#: The most characters of any one string in an entry (a secret name is at most 1,024
#: bytes, so never cut), and the most tags of a principal: whatever an identity service
#: or a header claims, one entry stays a few kilobytes.
MAX_FIELD_CHARS = 1024
MAX_TAGS = 64


def _cap(text: str) -> str:
    if len(text) <= MAX_FIELD_CHARS:
        return text
    return f"{text[:MAX_FIELD_CHARS]}...[{len(text) - MAX_FIELD_CHARS} more characters cut]"


_principals: dict[Principal, str] = {}


def _principal_json(principal: Principal) -> str:
    """``"principal":{...}`` for ``principal``, capped, remembered for the next entry."""
    text = _principals.get(principal)
    if text is None:
        text = '"principal":' + json_text(_capped_principal(principal.to_json()))
        if len(_principals) >= 4096:
            _principals.clear()  # a bound, not a policy: callers are few in practice
        _principals[principal] = text
    return text


def _capped_principal(doc: dict[str, Any]) -> dict[str, Any]:
    for key, value in doc.items():
        if isinstance(value, str):
            doc[key] = _cap(value)
        elif isinstance(value, list):
            tags = [_cap(str(tag)) for tag in value[:MAX_TAGS]]
            if len(value) > MAX_TAGS:
                tags.append(f"...[{len(value) - MAX_TAGS} more tags cut]")
            doc[key] = tags
    return doc


def local_principal() -> Principal:
    """The principal of entries setec writes on its own behalf (a checkpoint at close,
    an admin command): this host's name, ip ``local``, and the user running it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (a bare container)
        user = f"uid {os.getuid()}"
    return Principal(hostname=socket.gethostname(), ip="local", user=user)


_second: tuple[int, str] = (-1, "")


def format_time(ns: int) -> str:
    """Format nanoseconds since the epoch as Go's RFC 3339 with nanoseconds, in UTC,
    trailing zeros of the fraction trimmed (``2024-05-05T12:34:56.1234Z``)."""
    global _second
    secs, frac = divmod(ns, 1_000_000_000)
    cached_secs, out = _second
    if cached_secs != secs:
        # strftime once a second, not once an entry.
        out = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
        _second = (secs, out)
    if frac:
        out += "." + f"{frac:09d}".rstrip("0")
    return out + "Z"


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


class _Deferred:
    """A writer that does not wait for its lines (see :meth:`AuditLog.deferred`): the
    thread that syncs them tells its :class:`Deferral` the outcome instead."""

    __slots__ = ("deferral",)

    def __init__(self, deferral: Deferral) -> None:
        self.deferral = deferral


class Deferral:
    """The audit entries a thread wrote inside :meth:`AuditLog.deferred`, on their way
    to disk. :meth:`then` runs a callback once all of them are durable, or as soon as
    one of them cannot be made so (with the reason)."""

    __slots__ = ("_lock", "_outstanding", "_then", "failure")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outstanding = 0
        self._then: Callable[[str], None] | None = None
        #: Why an entry could not be made durable (``""`` while none has failed).
        self.failure = ""

    def _add(self) -> None:
        with self._lock:
            self._outstanding += 1

    def _resolve(self, failure: str) -> None:
        with self._lock:
            self._outstanding -= 1
            if failure and not self.failure:
                self.failure = failure
            then = self._then if self._outstanding == 0 else None
            if then is not None:
                self._then = None
        if then is not None:
            then(self.failure)

    @property
    def pending(self) -> bool:
        """Whether some entry is not durable yet."""
        return self._outstanding > 0

    def then(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(failure)`` once every entry is durable (``failure`` is
        ``""``) or could not be made so (the reason): at once if that is already so,
        else from the thread that syncs them. Call it once."""
        with self._lock:
            if self._outstanding:
                self._then = callback
                return
        callback(self.failure)


_DONE = "done"
_LEAD = "lead"
# Entry ids tell entries apart, as Go setec's do (which come from math/rand): drawn
# from a generator seeded from the system's randomness, with no system call per entry.
_ids = random.Random(secrets.token_bytes(32))  # noqa: S311 - an identifier, not a secret
# A forked process (a worker of setec-serve --workers) would draw the same ids as its
# parent and its siblings; as the random module does for its own generator, reseed.
os.register_at_fork(after_in_child=lambda: _ids.seed(secrets.token_bytes(32)))


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

    Keyed (:meth:`use_key`), each line's ``prev`` is the HMAC of the line before under
    the audit key, and the log keeps its durable head (:attr:`durable_head`): the byte
    range and link of the last line an fsync covered, which the Database records in the
    store.

    :param sink: where lines go; the log continues the chain from its last line.
    :param key: the audit key, if known now (else :meth:`use_key`).
    :param continues: for a new, empty sink that continues an earlier file: the link
        that file would have passed on (its first line names it in ``continues``).
    """

    def __init__(
        self, sink: AuditSink, key: bytes | None = None, *, continues: bytes | None = None
    ) -> None:
        self._sink = sink
        last = sink.last_line()
        size = sink.size() if sink.persistent else None
        # Only the baton holder reads or advances these (and use_key, before any write).
        self._last = last
        self._size = size
        self._chain: ChainKey | None = None
        self._continues = continues if last is None else None
        self._prev = hashlib.sha256(last).hexdigest() if last else GENESIS
        link = link_of(last) if last else None
        self._ends_keyed = link is not None and link.startswith(KEYED)
        #: The ``commits`` of the last line in the sink (None: it has none).
        self._last_claim = claim_of(last) if last else None
        self._head: AuditHead | None = None
        self._claim = ""  # ',"replica":R,"commits":N' as a Database has told us R and N
        self._replica = ""  # ',"replica":R' once named
        self._replica_name = ""
        self._claim_value: int | None = None
        self._pending_claim: int | None = None  # the claim of the last line stamped
        self._lock = threading.Lock()
        self._syncing = False  # somebody holds the baton
        self._pending: list[str] = []  # stamped lines, up to their "prev" value
        self._queue: list[_Waiter | _Deferred] = []  # owners of pending lines, in order
        # Deferred writers (deferred()) do not lead: a flusher thread, made on the first
        # one, syncs for them, woken by whoever hands it the baton.
        self._local = threading.local()
        self._flusher: threading.Thread | None = None
        self._flusher_go = threading.Lock()
        self._flusher_go.acquire()
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
        if key is not None:
            self.use_key(key)

    @property
    def failure(self) -> str:
        """Why the log refuses writes (a failed fsync, or closed), or ``""`` if it
        accepts them. Health checks report this."""
        return self._broken

    @classmethod
    def open(cls, path: str | os.PathLike[str], key: bytes | None = None) -> AuditLog:
        """Open (creating, mode 0600) the audit log file at ``path``.

        :param key: the audit key, if known now (a Database gives it later).
        :raises ConfigError: if it cannot be opened or another process holds it.
        """
        return cls(FileAuditSink(path), key)

    @property
    def sink(self) -> AuditSink:
        """The sink this log writes to."""
        return self._sink

    def use_key(self, key: bytes) -> None:
        """Key the chain with ``key`` from the next line on. Call it before the log is
        shared with other threads (the Database does, while it opens).

        :raises AuditError: if a write is in progress.
        """
        with self._lock:
            if self._syncing:
                raise AuditError("the audit log's key must be set before it is in use")
            chain = ChainKey(key)
            last = self._last
            if last is None:
                self._prev = chain.start(self._continues or b"")
            else:
                self._prev = chain.link(last)
                if self._size is not None:
                    self._head = AuditHead(self._size - len(last) - 1, self._size, self._prev)
            self._chain = chain

    @property
    def keyed(self) -> bool:
        """Whether lines are keyed (:meth:`use_key` was called)."""
        return self._chain is not None

    @property
    def ends_keyed(self) -> bool:
        """Whether the last line in the sink is keyed (then only the holder of its key
        may continue the log)."""
        return self._ends_keyed

    @property
    def durable_head(self) -> AuditHead | None:
        """The last line an fsync covered, once keyed and if the sink is persistent;
        ``None`` before either, or while the sink is empty."""
        return self._head

    @property
    def last_claim(self) -> int | None:
        """The ``commits`` value of the last line written (or found in the sink)."""
        return self._last_claim

    def claim_commits(self, commits: int) -> None:
        """Write ``"commits": commits`` into every line from now on: the store has made
        that many commits, durably (a Database calls this after each commit)."""
        with self._lock:
            self._claim = f'{self._replica},"commits":{commits}'
            self._claim_value = commits

    @property
    def last_replica(self) -> str:
        """The ``replica`` of the last line found in the sink, or ``""``."""
        return replica_of(self._last) if self._last else ""

    @property
    def replica(self) -> str:
        """The name of the replica this log belongs to, or ``""`` if it has none."""
        return self._replica_name

    def name_replica(self, name: str) -> None:
        """Write ``"replica": name`` into every line from now on: the server process
        (one of several over one store) whose log this is. A Database calls this when
        it opens, before the log is shared."""
        with self._lock:
            self._replica_name = name
            self._replica = f',"replica":{json_string(name)}' if name else ""
            claim = "" if self._claim_value is None else f',"commits":{self._claim_value}'
            self._claim = self._replica + claim

    def check_tail(self, recorded: AuditHead) -> TailCheck:
        """Check the sink against the head a store ``recorded``: the recorded line is
        still there and every line after it links under the key (see
        :func:`setec_core.audit_chain.check_tail`).

        :raises AuditError: if the log has no key, or its sink is not persistent.
        """
        size = self._sink.size()
        if self._chain is None or size is None or not self._sink.persistent:
            raise AuditError("only a keyed log over a persistent sink can be checked")
        try:
            return check_tail(self._sink.read, size, self._chain, recorded)
        except OSError as e:
            return TailCheck(f"audit.log cannot be read back ({e.strerror or e})")

    def check_last_link(self) -> str:
        """Check, with the key, the link of the last line in the sink (if keyed) to the
        line before it: whether the log was written under this key at all.

        :returns: ``""`` if it links (or is not keyed), else one line saying what is wrong.
        """
        last, size, chain = self._last, self._sink.size(), self._chain
        if not self._ends_keyed or last is None or size is None or chain is None:
            return ""
        end = size - len(last) - 1
        before = b""
        try:
            start = end
            while start > 0 and b"\n" not in before[:-1]:
                start = max(0, start - 65536)
                before = self._sink.read(start, end)
        except OSError as e:
            return f"audit.log cannot be read back ({e.strerror or e})"
        previous = before[:-1].rsplit(b"\n", 1)[-1] if before else None
        expected = chain.link(previous) if previous is not None else None
        if expected is None:
            expected = chain.start(continues_of(last) or b"")
        if link_of(last) != expected:
            return (
                "audit.log ends in a line keyed under another key: it belongs to another "
                "store, or this store's audit key was replaced"
            )
        return ""

    @contextlib.contextmanager
    def deferred(self) -> Iterator[Deferral]:
        """Within this block, this thread's :meth:`write` returns as soon as its entries
        are stamped, without waiting for them to be durable; the :class:`Deferral` it
        yields says when they are (:meth:`Deferral.then`).

        For reads served over HTTP: the HTTP front sends the answer, whose value the
        entries record, only once they are durable (or a 500 if they cannot be made
        so), so nothing leaves before its audit entry is on disk, and no app thread
        waits for an fsync.
        """
        deferral = Deferral()
        self._local.deferral = deferral
        try:
            yield deferral
        finally:
            self._local.deferral = None

    def write(self, *entries: AuditEntry) -> None:
        """Append ``entries`` and return once they are durable (inside
        :meth:`deferred`: once they are stamped).

        :raises AuditError: if they could not be written and synced; the caller must
            refuse the operation they record.
        """
        if not entries:
            return
        bodies = [e._body() for e in entries]
        deferral: Deferral | None = getattr(self._local, "deferral", None)
        waiter: _Waiter | None = None
        wake_flusher = False
        with self._lock:
            if self._broken:
                raise AuditError(self._broken)
            if self._ends_keyed and self._chain is None:
                raise AuditError(
                    "the audit log is keyed and this log has no key: it can only be "
                    "continued with its key (open it through its Database)"
                )
            # id and time are stamped under the lock, so lines are in time order;
            # "prev" goes last so a reader can check the chain line by line.
            claim = self._claim
            for body in bodies:
                self._pending.append(
                    f'{{"id":{_ids.getrandbits(64) or 1},"time":"{format_time(time.time_ns())}",'
                    f'{body}{claim},"prev":"'
                )
            self._pending_claim = self._claim_value
            if deferral is not None:
                deferral._add()
                self._queue.append(_Deferred(deferral))
                if not self._syncing:
                    self._syncing = True
                    wake_flusher = True
            elif self._syncing:
                waiter = _Waiter()
                self._queue.append(waiter)
            else:
                self._syncing = True
        if deferral is not None:
            if wake_flusher:
                self._wake_flusher()
            return
        if waiter is not None:
            outcome = waiter.park()
            if outcome == _DONE:
                return
            if outcome != _LEAD:
                raise AuditError(outcome)
        self._lead()

    def _wake_flusher(self) -> None:
        # Hand the baton to the flusher thread (made the first time).
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush, name="setec-audit-flusher", daemon=True
            )
            self._flusher.start()
        self._flusher_go.release()

    def _flush(self) -> None:
        # The flusher: leads whenever it is handed the baton, until the log closes.
        while True:
            self._flusher_go.acquire()
            if self._closed and not self._syncing:
                return
            try:
                self._lead(own=False)
            except BaseException as e:  # _lead has told everyone; the thread goes on
                log.error("the audit flusher failed: %s", type(e).__name__)

    def _lead(self, *, own: bool = True) -> None:
        # The caller holds the baton. Everything pending now belongs to it and to the
        # writers queued so far; one write and one fsync cover them all. ``own``: the
        # caller has entries of its own in the batch (the flusher has none), and so
        # hears of a failure by an exception.
        with self._lock:
            pending, self._pending = self._pending, []
            batch, self._queue = self._queue, []
            claimed = self._pending_claim
        failure, broken = "", False
        unexpected: BaseException | None = None
        lines: list[bytes] = []
        started = time.perf_counter()
        try:
            prev = self._prev
            chain = self._chain
            if chain is None:
                for stamped in pending:
                    line = f'{stamped}{prev}"}}'.encode()
                    prev = hashlib.sha256(line).hexdigest()
                    lines.append(line)
            else:
                if self._last is None and self._continues is not None:
                    # The first line of a file continuing another names what it follows.
                    pending[0] = f'{pending[0][:-8]}"continues":"{self._continues.hex()}","prev":"'
                lines, prev = chain.seal_lines(pending, prev)
            data = b"\n".join(lines) + b"\n"
            try:
                self._sink.write(data)
            except OSError as e:
                # The sink cut the partial write off, so the chain stays at its old head
                # and the log can go on; only this batch's operations are refused.
                failure = f"cannot write the audit log: {e.strerror or e}"
            except AuditError as e:
                failure, broken = str(e), True
            else:
                self._prev = prev
                self._last = lines[-1]
                self._last_claim = claimed
                self._ends_keyed = chain is not None
                if self._size is not None:
                    self._size += len(data)
                try:
                    self._sink.sync()
                except OSError as e:
                    failure = (
                        f"the audit log could not be synced ({e.strerror or e}); "
                        "refusing every operation until the server is restarted"
                    )
                    broken = True
                else:
                    if chain is not None and self._size is not None:
                        end = self._size
                        self._head = AuditHead(end - len(lines[-1]) - 1, end, prev)
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
        successor: _Waiter | None = None
        to_flusher = False
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
                first = self._queue[0]
                if isinstance(first, _Waiter):
                    successor = first
                    self._queue.pop(0)
                else:
                    to_flusher = True  # a deferred writer cannot lead: the flusher does
            else:
                self._syncing = False
        # Hand the baton on first, so that the next write overlaps with the wake-ups.
        if successor is not None:
            successor.outcome = _LEAD
            successor.lock.release()
        elif to_flusher:
            self._wake_flusher()
        # Wake the parked writers as a chain, each waking the next, so that they do not
        # all become runnable at once and fight over the GIL; then tell the deferred.
        waiters = [w for w in batch if isinstance(w, _Waiter)]
        for i, waiter in enumerate(waiters):
            waiter.outcome = failure or _DONE
            waiter.next = waiters[i + 1] if i + 1 < len(waiters) else None
        if waiters:
            waiters[0].wake()
        for item in batch:
            if isinstance(item, _Deferred):
                try:
                    item.deferral._resolve(failure)
                except Exception as e:  # a callback's bug must not strand the others
                    log.error("an audit deferral callback failed: %s", type(e).__name__)
        if unexpected is not None:
            log.error("%s", failure)
            if own:
                raise unexpected
        if failure:
            if broken:
                log.error("%s", failure)
            if own:
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
        if self._flusher is not None:
            self._flusher_go.release()  # it sees the log closed and ends
            self._flusher.join(5)
        if problems:
            raise AuditError("closing the audit log failed: " + "; ".join(problems))
