"""Writing secret values to a file (``setec get -o``, ``setec export -o``, ``setec
inject -o``): readable by the user only from the moment it exists, replaced in one
step, never through a symlink, and never in place of anything but a regular file.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile

from setec_cli.formats import go_quote
from setec_cli.options import CommandError

#: What a path that is not a regular file is, as the messages say it.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
)

#: How many symlinks a path may lead through before the walk stops (Linux's limit).
_MAX_LINKS = 40

_WANT_A_FILE = "give the path of a regular file (without -o, the output goes to standard output)"


def check_target(path: str) -> None:
    """Refuse an output ``path`` that the file would replace and should not, before
    anything is fetched and again just before the file is written.

    Accepted: nothing at ``path``, a regular file, or a symlink to a regular file or to
    nothing (the link is replaced, never followed). Refused: a directory, a device (a
    root user's ``-o /dev/null`` would replace it with a file holding the secret), a
    named pipe, a socket, a symlink to any of those, and a symlink that leads through
    ``/proc`` (``/dev/stdout``, ``/dev/fd/1``: a process's open file, which the
    rename would not write to but replace).

    :raises CommandError: naming ``path``, what it is, and that a regular file is
        wanted (an empty ``path`` too).
    """
    if not path:
        raise CommandError("the output path is empty; give the path of a file to write")
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # nothing there, or nothing we may look at: writing says why if it fails
    if stat.S_ISREG(mode):
        return
    where = f"cannot write {go_quote(path)}"
    if stat.S_ISDIR(mode):
        raise CommandError(
            f"{where}: it is a directory; give the path of a file to write (it is "
            "created, or replaced if it exists)"
        )
    if not stat.S_ISLNK(mode):
        raise CommandError(f"{where}: it is {_kind(mode)}; {_WANT_A_FILE}")
    if _leads_through_proc(path):
        raise CommandError(
            f"{where}: it leads to a process's open file through /proc (as /dev/stdout "
            f"does); {_WANT_A_FILE}"
        )
    try:
        target = os.stat(path).st_mode
    except OSError:
        return  # a link to nothing (or a loop): only the link is replaced
    if not stat.S_ISREG(target):
        raise CommandError(f"{where}: it is a symlink to {_kind(target)}; {_WANT_A_FILE}")


def _kind(mode: int) -> str:
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def _leads_through_proc(path: str) -> bool:
    """Whether the symlink at ``path``, or one it leads to, is in /proc: there,
    ``/proc/PID/fd/N`` links to a process's open file whatever it is (a terminal, a
    pipe, a file a shell redirected to), so where it points says nothing about what
    writing there would replace."""
    current = os.path.abspath(path)
    for _ in range(_MAX_LINKS):
        # The directories on the way are resolved (/dev/fd is itself a link to
        # /proc/self/fd); the last component is the link being followed.
        directory = os.path.realpath(os.path.dirname(current))
        current = os.path.join(directory, os.path.basename(current))
        if current == "/proc" or current.startswith("/proc/"):
            return True
        try:
            link = os.readlink(current)
        except OSError:
            return False  # not a link: the walk has arrived
        current = os.path.join(directory, link)
    return False


def write_private_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` as a new file of mode 0600.

    The data goes to a temporary file in the same directory (created 0600, never an
    existing file), is flushed to disk, and the temporary file is renamed over
    ``path``. So a symlink at ``path`` is replaced, never followed; a crash leaves the
    old file or the new one, never half of it; and a file that was there keeps neither
    its content nor its mode.

    :raises CommandError: if ``path`` is refused by :func:`check_target` (a directory,
        a device, a link to one...), or naming the reason the file cannot be written (a
        missing directory, no permission); nothing is left behind.
    """
    check_target(path)
    directory = os.path.dirname(os.path.abspath(path))
    temp = None
    try:
        fd, temp = tempfile.mkstemp(prefix=".setec-", dir=directory)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
        temp = None
    except OSError as e:
        # strerror only: the exception's text could name the temporary file, which
        # means nothing to the user.
        raise CommandError(
            f"cannot write {go_quote(path)}: {e.strerror or type(e).__name__}"
        ) from None
    finally:
        if temp is not None:
            with contextlib.suppress(OSError):
                os.unlink(temp)
