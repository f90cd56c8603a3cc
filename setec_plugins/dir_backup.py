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
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import urllib.parse
from collections.abc import Iterator
from typing import Any

from setec_core.backup import BackupSink, check_name, is_valid_name
from setec_core.errors import ConfigError, NotFound, StorageError
from setec_core.hookspecs import hookimpl
from setec_core.uris import redact

_FORM = "dir:///ABSOLUTE/PATH (for example dir:///var/backups/setec)"
TEMP_PREFIX = ".tmp-"
"""The prefix of the temporary files a put writes first; no backup name segment may
start with it."""


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

    def _path(self, name: str) -> str:
        check_name(name)
        if any(segment.startswith(TEMP_PREFIX) for segment in name.split("/")):
            raise StorageError(
                f"invalid backup name {name!r}: the dir backup sink keeps names starting "
                f"with {TEMP_PREFIX!r} for its temporary files"
            )
        return os.path.join(self._root, *name.split("/"))

    # --- writing -----------------------------------------------------------------

    def put(self, name: str, data: bytes) -> None:
        final = self._path(name)
        folder = os.path.dirname(final)
        # A concurrent delete may prune a day directory between making it and writing
        # into it; try again a few times rather than fail the backup.
        for attempt in range(3):
            self._make_dirs(folder)
            try:
                self._write_new(name, folder, final, data)
                return
            except FileNotFoundError as e:
                if attempt == 2:
                    raise _os_error("write backup", final, e) from None

    def _make_dirs(self, folder: str) -> None:
        # Component by component, without following symbolic links: list() does not
        # follow them, so a backup written through one would be invisible to listing,
        # retention and restore.
        here = self._root
        relative = os.path.relpath(folder, self._root)
        for part in [] if relative == "." else relative.split(os.sep):
            here = os.path.join(here, part)
            try:
                st = os.lstat(here)
            except FileNotFoundError:
                try:
                    os.mkdir(here, 0o700)
                    os.chmod(here, 0o700)
                    _fsync_dir(os.path.dirname(here))
                    continue
                except FileExistsError:
                    st = os.lstat(here)  # made by a concurrent put
                except OSError as e:
                    raise _os_error("create backup directory", here, e) from None
            except OSError as e:
                raise _os_error("create backup directory", here, e) from None
            if stat.S_ISLNK(st.st_mode):
                raise StorageError(
                    f"cannot write backup under {here}: it is a symbolic link, which "
                    "backup listing does not follow; make it a directory"
                )
            if not stat.S_ISDIR(st.st_mode):
                raise StorageError(f"cannot write backup under {here}: Not a directory")

    def _write_new(self, name: str, folder: str, final: str, data: bytes) -> None:
        temp = os.path.join(folder, TEMP_PREFIX + secrets.token_hex(8))
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
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
                os.link(temp, final)
            except FileExistsError:
                raise StorageError(
                    f"backup {name!r} already exists in {self.uri}; backups are never replaced"
                ) from None
            _fsync_dir(folder)
        except OSError as e:
            raise _os_error("write backup", final, e) from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(temp)

    # --- reading -----------------------------------------------------------------

    def list(self) -> list[str]:
        return sorted(self._walk(self._root, ""))

    def _walk(self, folder: str, prefix: str) -> Iterator[str]:
        try:
            with os.scandir(folder) as entries:
                found = [
                    (e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
                    for e in entries
                ]
        except OSError as e:
            raise _os_error("list backups in", folder, e) from None
        for entry, is_dir, is_file in found:
            if entry.startswith(TEMP_PREFIX):
                continue
            name = prefix + entry
            if is_dir:
                yield from self._walk(os.path.join(folder, entry), name + "/")
            elif is_file and is_valid_name(name):
                yield name

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            # O_NONBLOCK: a FIFO planted under the directory must not hang the server.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise NotFound(f"no backup {name!r} in {self.uri}") from None
        except OSError as e:
            raise _os_error("read backup", path, e) from None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise NotFound(f"no backup {name!r} in {self.uri}")
            with os.fdopen(os.dup(fd), "rb") as f:
                return f.read()
        except OSError as e:
            raise _os_error("read backup", path, e) from None
        finally:
            os.close(fd)

    # --- deleting ----------------------------------------------------------------

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            os.unlink(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except OSError as e:
            raise _os_error("delete backup", path, e) from None
        folder = os.path.dirname(path)
        with contextlib.suppress(OSError):
            _fsync_dir(folder)
        # Prune the day (month, year) directories this left empty.
        while folder != self._root:
            try:
                os.rmdir(folder)
            except OSError:
                break
            folder = os.path.dirname(folder)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as e:
        # Some file systems cannot fsync a directory; the data itself is on disk.
        if e.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


@hookimpl
def setec_register_backup_sinks(register: Any) -> None:
    """Register the ``dir://`` backup sink."""
    register(DirBackupSink)
