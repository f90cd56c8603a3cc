"""Fixed secrets where code expects a :class:`~setec_core.client.Secret` handle
(Go's static helpers): for tests, and for programs that take a secret either from a Store or
from a file or flag.

    key = static_secret(b"test-key")            # key() == b"test-key", forever
    password = static_text_file("/run/secrets/db-password")   # read once, trimmed
"""

from __future__ import annotations

import os

from setec_core.client.secret import Secret
from setec_core.errors import ConfigError


def static_secret(value: bytes | bytearray | memoryview | str) -> Secret:
    """A handle that always returns ``value`` (text is encoded as UTF-8; a bytearray or
    memoryview is copied).

    :raises TypeError: if ``value`` is neither bytes nor str.
    """
    if isinstance(value, str):
        data = value.encode("utf-8")
    elif isinstance(value, bytes | bytearray | memoryview):
        data = bytes(value)  # a copy: later changes to a bytearray do not leak in
    else:
        raise TypeError(f"a static secret must be bytes or str, not {type(value).__name__}")
    return Secret(lambda: data)


def static_file(path: str | os.PathLike[str]) -> Secret:
    """A handle that returns the exact bytes of the file at ``path``, read once now.

    :raises ConfigError: if the file cannot be read; the message names the path.
    """
    data = _read(path)
    return Secret(lambda: data)


def static_text_file(path: str | os.PathLike[str]) -> Secret:
    """As :func:`static_file`, with leading and trailing ASCII whitespace (spaces, tabs,
    line breaks) removed, so that a trailing newline is not part of the secret.

    :raises ConfigError: if the file cannot be read; the message names the path.
    """
    data = _read(path).strip()
    return Secret(lambda: data)


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(
            f"reading static secret {os.fspath(path)}: {e.strerror or type(e).__name__}"
        ) from None
