"""``Secret``: a handle to a secret's current value, as Go's ``setec.Secret``."""

from __future__ import annotations

from collections.abc import Callable


class Secret:
    """A handle to the current value of one secret: call it for the bytes.

    A Store hands out one handle per name and keeps it current, so keep the handle,
    not the bytes: ``db_pass = store.secret("prod/db-pass")``, then ``db_pass()`` at
    each use. Calling never touches the network. Its ``repr`` never shows the value.
    """

    __slots__ = ("_read", "name")

    def __init__(self, read: Callable[[], bytes], name: str = "") -> None:
        self._read = read
        #: The secret's name, for messages (empty for static secrets).
        self.name = name

    def __call__(self) -> bytes:
        return self._read()

    def get(self) -> bytes:
        """The current value (the same as calling the handle)."""
        return self._read()

    def get_string(self) -> str:
        """The current value decoded as UTF-8 (undecodable bytes become U+FFFD)."""
        return self._read().decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"Secret({self.name!r})" if self.name else "Secret(<static>)"
