"""``Updater``: a value built from a secret, rebuilt when the secret changes.

    client = Updater(store, "prod/api-key", lambda key: ApiClient(key.decode()))
    client.get().call(...)      # the ApiClient of the current key

The value is rebuilt lazily, on the first :meth:`Updater.get` after a poll brought a
new version; if rebuilding fails, the old value stays and :attr:`Updater.error` says
why. A replaced value that has a ``close()`` method is closed.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from setec_core.client.store import Store

log = logging.getLogger("setec.client.updater")

T = TypeVar("T")


class Updater(Generic[T]):
    """``new_value(secret bytes)`` for the current version of secret ``name``.

    :raises ConfigError: if ``name`` is not in ``store`` and lookups are disabled.
    :raises Exception: whatever ``new_value`` raises for the initial value.
    """

    def __init__(self, store: Store, name: str, new_value: Callable[[bytes], T]) -> None:
        self.name = name
        self._watcher = store.watcher(name)
        self._new_value = new_value
        self._lock = threading.Lock()
        self._value = new_value(self._watcher.get())
        #: The error of the latest rebuild, or ``None`` after a success.
        self.error: Exception | None = None

    def get(self) -> T:
        """The current value, rebuilt first if the secret changed since the last call."""
        with self._lock:
            if self._watcher.changed():
                try:
                    fresh = self._new_value(self._watcher.get())
                except Exception as e:
                    # Only the type: the message of an error about the secret's bytes
                    # (a parse error, say) may quote them.
                    log.warning(
                        'error updating value for "%s": %s (keeping old value)',
                        self.name,
                        type(e).__name__,
                    )
                    self.error = e
                else:
                    old, self._value, self.error = self._value, fresh, None
                    close = getattr(old, "close", None)
                    if callable(close):
                        try:
                            close()
                        except Exception as e:
                            log.warning(
                                'closing the old value of "%s" failed: %s',
                                self.name,
                                type(e).__name__,
                            )
            return self._value

    def __repr__(self) -> str:
        return f"Updater({self.name!r})"


class StaticUpdater(Generic[T]):
    """An Updater-shaped holder of a value that never changes (for tests and for
    configuration that does not come from setec)."""

    def __init__(self, value: T) -> None:
        self._value = value
        self.error: Exception | None = None

    def get(self) -> T:
        """The value."""
        return self._value

    def __repr__(self) -> str:
        return "StaticUpdater(...)"
