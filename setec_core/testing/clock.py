"""Deterministic time for Store tests (Go setectest's ``NewFakeTicker``, and a clock).

>>> ticker, clock = FakeTicker(), FakeClock(1)
>>> store = Store(client, ["app/key"], ticker=ticker, time_now=clock)
>>> ticker.poll()           # one poll, finished when this returns
>>> clock.advance(30)       # lastAccess and expiry see 30 s pass
"""

from __future__ import annotations

import threading

from setec_core.client.ticker import Ticker


class FakeTicker(Ticker):
    """A ticker that ticks only when told: :meth:`poll` sends one tick and blocks until
    the Store has finished the poll it caused."""

    def __init__(self) -> None:
        self._ticks = threading.Semaphore(0)
        self._done = threading.Semaphore(0)
        self.polls = 0

    def wait(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            if self._ticks.acquire(timeout=0.02):
                return True
        return False

    def done(self) -> None:
        self.polls += 1
        self._done.release()

    def poll(self, timeout: float = 10.0) -> None:
        """Make the Store poll once; return when the poll is over.

        :raises TimeoutError: if no poller took the tick and finished within ``timeout``
            seconds (the Store is closed, or was built without this ticker).
        """
        self._ticks.release()
        if not self._done.acquire(timeout=timeout):
            raise TimeoutError(f"the Store did not finish a poll within {timeout} s")


class FakeClock:
    """A clock that stands still until :meth:`advance`; call it for the time (Unix
    seconds), as a Store calls its ``time_now``."""

    def __init__(self, start: float = 1.0) -> None:
        self._now = float(start)
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        with self._lock:
            self._now += seconds

    def __repr__(self) -> str:
        return f"FakeClock({self._now})"
