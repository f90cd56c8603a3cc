"""``Watcher``: a secret's handle plus a signal raised when a poll brings a new value."""

from __future__ import annotations

import threading

from setec_core.client.secret import Secret


class Watcher:
    """A secret's handle plus a one-slot signal raised when a poll brings a new value.

    The signal is level-triggered: several updates before you look count as one.
    """

    def __init__(self, handle: Secret) -> None:
        self.handle = handle
        self._ready = threading.Event()

    def _notify(self) -> None:
        self._ready.set()

    def get(self) -> bytes:
        """The current value."""
        return self.handle()

    def changed(self) -> bool:
        """Whether a new value arrived since the last call (and re-arm the signal)."""
        if self._ready.is_set():
            self._ready.clear()
            return True
        return False

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a new value arrives (or ``timeout`` seconds pass); return
        whether one did, re-arming the signal."""
        if self._ready.wait(timeout):
            self._ready.clear()
            return True
        return False
