"""The ``dir://`` backup sink: backups as files under a local directory.

``dir:///ABSOLUTE/PATH`` keeps each backup as a file at ``PATH/NAME``, so
``2026/11/23/db-2026-11-23T10:54:35.123Z.json`` is a file three directories down. The
directory is created (mode 0700) if it is missing; the directories under it are created
0700 and the files 0600.

A backup is written to a temporary file in its final directory (named ``.tmp-...``),
flushed to disk, then hard-linked to its name, which fails if the name exists, so a
stored backup is never replaced and never seen half-written; the directory is flushed
afterwards. Temporary files left by a crash are ignored by :meth:`DirBackupSink.list`;
they can be removed at any time the server is not writing a backup.

Whoever can write in the directory can plant anything there, so no symbolic link below
it is ever followed: every read, write, delete and listing opens the path one
component at a time from the directory (``O_NOFOLLOW``, relative to the directory
above), and a link is no backup. Listing walks the tree without recursion and does not
descend deeper than a backup name can reach.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import urllib.parse
from collections.abc import Sequence
from typing import Any

from setec_core.backup import MAX_NAME_LENGTH, BackupSink, check_name, is_valid_name
from setec_core.errors import ConfigError, NotFound, StorageError
from setec_core.hookspecs import hookimpl
from setec_core.uris import redact

_FORM = "dir:///ABSOLUTE/PATH (for example dir:///var/backups/setec)"
TEMP_PREFIX = ".tmp-"
"""The prefix of the temporary files a put writes first; no backup name segment may
start with it."""


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def _path_from_uri(uri: str) -> str:
    scheme, sep, rest = uri.partition("://")
    if scheme.lower() != "dir" or not sep:
        raise ConfigError(f"not a dir backup URI: {redact(uri)!r}; expected {_FORM}")
    parts = urllib.parse.urlsplit("dir://" + rest)
    if parts.netloc:
        raise ConfigError(
            f"dir backup URI {redact(uri)!r} names a host; expected {_FORM}, with three "
            "slashes before an absolute path"
        )
    if parts.query or parts.fragment or "?" in rest or "#" in rest:
        raise ConfigError(
            f"dir backup URI {redact(uri)!r} has a query or fragment; expected {_FORM}"
        )
    if not parts.path.startswith("/"):
        raise ConfigError(f"dir backup URI {redact(uri)!r} has no absolute path; expected {_FORM}")
    return os.path.normpath(parts.path)


def _os_error(action: str, path: str, e: OSError) -> StorageError:
    reason = e.strerror or type(e).__name__
    return StorageError(f"cannot {action} {path}: {reason}")


class DirBackupSink(BackupSink):
    """Keeps backups as files under a local directory.

    :param path: the absolute path of the directory; created (0700) if missing.
    :raises ConfigError: if ``path`` is relative, is not a directory, or cannot be
        created or written.
    """

    name = "dir"
    schemes = ("dir",)

    def __init__(self, path: str, *, read_only: bool = False) -> None:
        if not os.path.isabs(path):
            raise ConfigError(
                f"backup directory {path!r} is not an absolute path; expected {_FORM}"
            )
        self._root = os.path.normpath(path)
        if read_only:
            # Listing or restoring: a missing directory is a typo, not a new sink, and a
            # read-only mount or a reader-only operator is fine.
            if not os.path.isdir(self._root):
                raise ConfigError(
                    f"backup directory {self._root} does not exist or is not a directory; "
                    "check --backup"
                )
            return
        try:
            os.makedirs(self._root, 0o700, exist_ok=True)
        except FileExistsError:
            pass  # not a directory: said below
        except OSError as e:
            raise ConfigError(
                f"cannot create backup directory {self._root}: {e.strerror}; create it "
                "(mode 0700) or choose another --backup directory"
            ) from None
        if not os.path.isdir(self._root):
            raise ConfigError(
                f"backup location {self._root} exists but is not a directory; "
                "choose a directory for --backup"
            )
        if not os.access(self._root, os.W_OK | os.X_OK):
            raise ConfigError(
                f"backup directory {self._root} is not writable by this user; fix its "
                "owner or mode, or choose another --backup directory"
            )

    @classmethod
    def from_uri(cls, uri: str, *, read_only: bool = False) -> DirBackupSink:
        """Build from ``dir:///ABSOLUTE/PATH`` (``read_only``: the directory must exist;
        nothing is created and write access is not needed).

        :raises ConfigError: if the URI has a host, a query, or a relative path, or the
            directory is unusable.
        """
        return cls(_path_from_uri(uri), read_only=read_only)

    @property
    def uri(self) -> str:
        return f"dir://{self._root}"

    @property
    def path(self) -> str:
        """The absolute path of the backup directory."""
        return self._root

    def _parts(self, name: str) -> list[str]:
        check_name(name)
        parts = name.split("/")
        if any(segment.startswith(TEMP_PREFIX) for segment in parts):
            raise StorageError(
                f"invalid backup name {name!r}: the dir backup sink keeps names starting "
                f"with {TEMP_PREFIX!r} for its temporary files"
            )
        return parts

    def _walk(self, parts: Sequence[str], *, create: bool = False) -> int:
        """Return a descriptor of the directory ``parts`` below the root, opened one
        component at a time, never through a symbolic link (``create``: making the
        missing ones, mode 0700). The caller closes it.

        :raises _BlockedError: naming the component that could not be opened or made.
        """
        here = self._root
        try:
            fd = os.open(here, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise _BlockedError(here, e) from None
        try:
            for part in parts:
                here = os.path.join(here, part)
                try:
                    child = self._child(fd, part, create)
                except OSError as e:
                    raise _BlockedError(here, e) from None
                os.close(fd)
                fd = child
        except BaseException:
            os.close(fd)
            raise
        return fd

    @staticmethod
    def _child(fd: int, part: str, create: bool) -> int:
        try:
            return os.open(part, _DIRECTORY, dir_fd=fd)
        except FileNotFoundError:
            if not create:
                raise
        try:
            os.mkdir(part, 0o700, dir_fd=fd)
        except FileExistsError:
            return os.open(part, _DIRECTORY, dir_fd=fd)  # made by a concurrent put
        child = os.open(part, _DIRECTORY, dir_fd=fd)
        try:
            os.fchmod(child, 0o700)  # whatever the umask
            _fsync(fd)
        except BaseException:
            os.close(child)
            raise
        return child

    # --- writing -----------------------------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        parts = self._parts(name)
        final = os.path.join(self._root, *parts)
        # A concurrent delete may prune a day directory between making it and writing
        # into it; try again a few times rather than fail the backup.
        for attempt in range(3):
            try:
                folder = self._walk(parts[:-1], create=True)
            except _BlockedError as b:
                if b.error.errno == errno.ENOENT and b.path != self._root and attempt < 2:
                    continue  # a directory above was pruned while this one was made
                raise self._unwritable(b) from None
            try:
                self._write_new(name, folder, parts[-1], final, data)
                return
            except FileNotFoundError as e:
                if attempt == 2:
                    raise _os_error("write backup", final, e) from None
            finally:
                os.close(folder)

    def _unwritable(self, blocked: _BlockedError) -> StorageError:
        here, error = blocked.path, blocked.error
        if error.errno in (errno.ENOTDIR, errno.ELOOP):
            # list() does not follow symbolic links, so a backup written through one
            # would be invisible to listing, retention and restore.
            with contextlib.suppress(OSError):
                if stat.S_ISLNK(os.lstat(here).st_mode):
                    return StorageError(
                        f"cannot write backup under {here}: it is a symbolic link, which "
                        "backup listing does not follow; make it a directory"
                    )
            return StorageError(f"cannot write backup under {here}: Not a directory")
        return _os_error("create backup directory", here, error)

    def _write_new(self, name: str, folder: int, last: str, final: str, data: bytes) -> None:
        temp = TEMP_PREFIX + secrets.token_hex(8)
        try:
            fd = os.open(temp, _NEW_FILE, 0o600, dir_fd=folder)
        except FileNotFoundError:
            raise
        except OSError as e:
            raise _os_error("write backup", final, e) from None
        try:
            try:
                os.fchmod(fd, 0o600)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(temp, last, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
            except FileExistsError:
                raise StorageError(
                    f"backup {name!r} already exists in {self.uri}; backups are never replaced"
                ) from None
            _fsync(folder)
        except OSError as e:
            raise _os_error("write backup", final, e) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=folder)

    # --- reading -----------------------------------------------------------------

    def list(self) -> list[str]:
        return sorted(self._scan(stamps=False))

    def list_stamps(self) -> dict[str, str]:
        """The stamp of a file is its device, inode, size, and modification and change
        times (in nanoseconds): replacing the file, even by one of the same size with
        its times forged, changes the inode or the change time."""
        return dict(sorted(self._scan(stamps=True).items()))

    def _scan(self, *, stamps: bool) -> dict[str, str]:
        # Iterative, and each directory opened afresh from the root without following
        # links: however deep or however swapped around the tree is, this neither
        # recurses nor leaves the root.
        found: dict[str, str] = {}
        pending: list[tuple[str, ...]] = [()]
        while pending:
            parts = pending.pop()
            prefix = "".join(part + "/" for part in parts)
            try:
                fd = self._walk(parts)
            except _BlockedError as b:
                if parts and b.error.errno in (errno.ENOENT, errno.ENOTDIR):
                    continue  # removed, or swapped for something else, meanwhile
                raise _os_error("list backups in", b.path, b.error) from None
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        name = prefix + entry.name
                        if entry.name.startswith(TEMP_PREFIX) or not is_valid_name(name):
                            continue
                        if entry.is_dir(follow_symlinks=False):
                            # A name is at most MAX_NAME_LENGTH characters: nothing
                            # below this one could be a backup.
                            if len(name) + 2 <= MAX_NAME_LENGTH:
                                pending.append((*parts, entry.name))
                        elif entry.is_file(follow_symlinks=False):
                            try:
                                st = entry.stat(follow_symlinks=False) if stamps else None
                            except FileNotFoundError:
                                continue  # deleted since the directory was read
                            found[name] = "" if st is None else _stamp(st)
            except OSError as e:
                raise _os_error("list backups in", os.path.join(self._root, *parts), e) from None
            finally:
                os.close(fd)
        return found

    def _open(self, name: str) -> tuple[int, str]:
        """Open the backup ``name`` for reading, never through a symbolic link."""
        parts = self._parts(name)
        path = os.path.join(self._root, *parts)
        missing = NotFound(f"no backup {name!r} in {self.uri}")
        try:
            folder = self._walk(parts[:-1])
        except _BlockedError as b:
            if b.error.errno in (errno.ENOENT, errno.ENOTDIR):
                raise missing from None
            raise _os_error("read backup", b.path, b.error) from None
        try:
            # O_NONBLOCK: a FIFO planted under the directory must not hang the server.
            fd = os.open(parts[-1], _READ, dir_fd=folder)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise missing from None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise NotFound(
                    f"no backup {name!r} in {self.uri}: it is a symbolic link, which is "
                    "never followed"
                ) from None
            raise _os_error("read backup", path, e) from None
        finally:
            os.close(folder)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise missing
        except BaseException:
            os.close(fd)
            raise
        return fd, path

    def get(self, name: str) -> bytes:
        fd, path = self._open(name)
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                return f.read()
        except OSError as e:
            raise _os_error("read backup", path, e) from None
        finally:
            os.close(fd)

    def get_head(self, name: str, size: int) -> bytes:
        if size < 1:
            raise ValueError("size must be at least 1")
        fd, path = self._open(name)
        try:
            with os.fdopen(os.dup(fd), "rb") as f:
                return f.read(size)
        except OSError as e:
            raise _os_error("read backup", path, e) from None
        finally:
            os.close(fd)

    # --- deleting ----------------------------------------------------------------

    def delete(self, name: str) -> None:
        parts = self._parts(name)
        path = os.path.join(self._root, *parts)
        try:
            folder = self._walk(parts[:-1])
        except _BlockedError as b:
            if b.error.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            raise _os_error("delete backup", b.path, b.error) from None
        try:
            # Removes a symbolic link itself, never what it points at.
            os.unlink(parts[-1], dir_fd=folder)
            with contextlib.suppress(OSError):
                _fsync(folder)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as e:
            raise _os_error("delete backup", path, e) from None
        finally:
            os.close(folder)
        # Prune the day (month, year) directories this left empty.
        for depth in range(len(parts) - 1, 0, -1):
            try:
                parent = self._walk(parts[: depth - 1])
            except _BlockedError:
                break
            try:
                os.rmdir(parts[depth - 1], dir_fd=parent)
            except OSError:
                break
            finally:
                os.close(parent)


class _BlockedError(Exception):
    """A directory below the root could not be opened (or made): ``path`` and why."""

    def __init__(self, path: str, error: OSError) -> None:
        super().__init__(path)
        self.path = path
        self.error = error


def _stamp(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _fsync(fd: int) -> None:
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems cannot fsync a directory; the data itself is on disk.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise


@hookimpl
def setec_register_backup_sinks(register: Any) -> None:
    """Register the ``dir://`` backup sink."""
    register(DirBackupSink)
