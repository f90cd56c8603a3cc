"""Writing secret values to a file (``setec get -o``, ``setec export -o``): readable by
the user only from the moment it exists, replaced in one step, never through a symlink.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from setec_cli.formats import go_quote
from setec_cli.options import CommandError


def refuse_directory(path: str) -> None:
    """Refuse an output ``path`` that is a directory (not a symlink to one, which is
    replaced like any symlink), before anything is fetched.

    :raises CommandError: saying so, and that a file path is wanted (an empty
        ``path`` too).
    """
    if not path:
        raise CommandError("the output path is empty; give the path of a file to write")
    if os.path.isdir(path) and not os.path.islink(path):
        raise CommandError(
            f"cannot write {go_quote(path)}: it is a directory; give the path of a file "
            "to write (it is created, or replaced if it exists)"
        )


def write_private_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` as a new file of mode 0600.

    The data goes to a temporary file in the same directory (created 0600, never an
    existing file), is flushed to disk, and the temporary file is renamed over
    ``path``. So a symlink at ``path`` is replaced, never followed; a crash leaves the
    old file or the new one, never half of it; and a file that was there keeps neither
    its content nor its mode.

    :raises CommandError: if ``path`` is a directory, or naming the reason the file
        cannot be written (a missing directory, no permission); nothing is left behind.
    """
    refuse_directory(path)
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
