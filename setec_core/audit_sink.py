"""Where audit lines go: :class:`FileAuditSink` (a file, in production) and
:class:`MemoryAuditSink` (tests and in-memory databases), under the :class:`AuditSink`
interface. :mod:`setec_core.audit` re-exports all three.

A *persistent* sink keeps its lines across restarts and can read them back. For such a
sink the Database records the head of the chain in the store and checks, at the next
open, that the sink still holds it; a sink that is not persistent (memory) is never
checked, since nothing of it survives the process anyway.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import stat
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

from setec_core.errors import AuditError, ConfigError

log = logging.getLogger("setec.audit")

_TAIL_CHUNK = 1 << 16


class AuditSink(ABC):
    """Where audit lines go: a file in production, memory in tests.

    Implement :meth:`write`, :meth:`sync` and :meth:`close`. A sink whose lines survive
    a restart should also set :attr:`persistent` and implement :meth:`last_line`,
    :meth:`size` and :meth:`read`, so that the chain continues and the store can check
    that no line was cut.
    """

    #: The sink keeps its lines across restarts and implements :meth:`last_line`,
    #: :meth:`size` and :meth:`read`.
    persistent: ClassVar[bool] = False

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

    def size(self) -> int | None:
        """Return how many bytes the sink holds, or ``None`` if it cannot tell (then
        no head is recorded for it)."""
        return None

    def read(self, start: int, end: int) -> bytes:
        """Return the bytes from offset ``start`` to ``end`` (fewer at the end).

        :raises OSError: if they cannot be read.
        """
        raise OSError(errno.EOPNOTSUPP, f"{type(self).__name__} cannot read back")


class FileAuditSink(AuditSink):
    """An append-only file, mode 0600, held under an exclusive lock so that two
    servers cannot interleave lines in one log.

    A torn last line (a crash mid-write, before its fsync returned, so before its
    operation could complete) is cut off at open and reported in the log.

    :raises ConfigError: if the file cannot be opened or is in use by another process.
    """

    persistent = True

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

    def size(self) -> int:
        return self._size

    def read(self, start: int, end: int) -> bytes:
        parts = []
        while start < end:
            chunk = os.pread(self._fd, end - start, start)
            if not chunk:
                break
            parts.append(chunk)
            start += len(chunk)
        return b"".join(parts)

    def write(self, data: bytes) -> None:
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, "short write")
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)
            except OSError as e:
                # The path goes to the log only: the reason is also /healthz's, which
                # anyone who reaches the server may read.
                log.error("audit log %s could not be restored: %s", self.path, e.strerror)
                raise AuditError(
                    f"the audit log failed a write and could not be restored "
                    f"({e.strerror}); refusing every operation until restart"
                ) from None
            raise
        self._size += len(data)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def replace_audit_file(sink: FileAuditSink, aside: Path) -> FileAuditSink:
    """Give ``sink``'s file the name ``aside`` and put a new, empty file in its place;
    return the new file's sink (the caller still syncs and closes ``sink``).

    The new file is created and locked under a temporary name before it takes the log's
    name, and the old one is linked to ``aside`` before it loses it, so at no instant
    is the log's name missing, or held by a file nobody has locked (a server starting
    meanwhile finds it in use).

    :raises ConfigError: if ``aside`` exists, or the files cannot be made.
    """
    temp = sink.path.with_name(sink.path.name + ".new")
    temp.unlink(missing_ok=True)
    new = FileAuditSink(temp)
    try:
        os.link(sink.path, aside)
        os.replace(temp, sink.path)
    except OSError as e:
        new.close()
        temp.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot move audit log {str(sink.path)!r} aside to {str(aside)!r}: {e.strerror}"
        ) from None
    new.path = sink.path
    fd = os.open(sink.path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return new


class MemoryAuditSink(AuditSink):
    """Keeps audit lines in memory; :meth:`entries` decodes them. For tests and
    in-memory databases."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self.syncs = 0
        self.closed = False

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)

    def sync(self) -> None:
        self.syncs += 1

    def close(self) -> None:
        self.closed = True

    def size(self) -> int:
        return self._size

    def read(self, start: int, end: int) -> bytes:
        return self.getvalue()[start:end]

    def getvalue(self) -> bytes:
        """Return everything written so far."""
        return b"".join(self._chunks)

    def entries(self) -> list[dict[str, Any]]:
        """Return every line written so far, decoded."""
        return [json.loads(line) for line in self.getvalue().splitlines()]
