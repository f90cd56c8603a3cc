"""Where a :class:`~setec_core.client.Store` keeps its values between runs, in Go's cache format.

A cache holds one blob: the Store's JSON (``{"name": {"secret": {"Value", "Version"},
"versions": {...}, "lastAccess": "unix-seconds"}}``), which is also valid
:class:`~setec_core.client.FileClient` input. :class:`FileCache` writes it atomically
with mode 0600, so a crash leaves the old blob or the new one, never half of one.

Unlike Go's FileCache, reading a cache file that does not exist yet is not an error: it
is an empty cache.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from abc import ABC, abstractmethod

from setec_core.errors import ConfigError


class Cache(ABC):
    """One blob of bytes that outlives the process (or not)."""

    @abstractmethod
    def read(self) -> bytes:
        """Return the last blob written, or ``b""`` if there is none.

        :raises OSError: if the blob exists but cannot be read.
        """

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Replace the blob with ``data``.

        :raises OSError: if it cannot be written; the old blob is then kept.
        """


class MemCache(Cache):
    """A cache in memory, for tests and for programs that want none on disk."""

    def __init__(self, initial: bytes | str = b"") -> None:
        self._data = initial.encode() if isinstance(initial, str) else bytes(initial)
        self._lock = threading.Lock()

    def read(self) -> bytes:
        with self._lock:
            return self._data

    def write(self, data: bytes) -> None:
        with self._lock:
            self._data = bytes(data)

    def __repr__(self) -> str:
        # The blob holds secret values.
        return f"MemCache(<{len(self._data)} bytes>)"


class FileCache(Cache):
    """A cache in the file ``path`` (mode 0600; its directory is created 0700).

    :raises ConfigError: if the directory cannot be created, or ``path`` exists and is
        not a regular file (a symlink is refused, not followed).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(parent, mode=0o700, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"cache directory {parent!r}: {e.strerror or e}; choose a writable path"
            ) from None
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        except OSError as e:
            raise ConfigError(f"cache path {self.path!r}: {e.strerror or e}") from None
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"cache path {self.path!r} exists and is not a regular file; "
                "remove it or choose another path"
            )

    def read(self) -> bytes:
        try:
            with open(self.path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""

    def write(self, data: bytes) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        fd, temp = tempfile.mkstemp(prefix=".setec-cache-", dir=directory)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def __repr__(self) -> str:
        return f"FileCache({self.path!r})"
