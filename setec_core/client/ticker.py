"""When a :class:`~setec_core.client.Store` polls: a :class:`Ticker`.

The default, :class:`JitterTicker`, ticks every interval give or take 10% (uniformly),
so that a fleet of programs started together does not poll in lockstep. Tests use
:class:`~setec_core.testing.FakeTicker`, whose ``poll()`` makes exactly one poll happen
and returns when it has finished.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod


class Ticker(ABC):
    """Tells a Store's poller when to poll."""

    @abstractmethod
    def wait(self, stop: threading.Event) -> bool:
        """Block until the next tick; return ``False`` (at once) if ``stop`` is set
        first."""

    def done(self) -> None:  # noqa: B027 - optional hook, nothing to do by default
        """Called by the poller after each poll it made for a tick."""


class JitterTicker(Ticker):
    """Ticks every ``interval`` seconds, each wait drawn from ±10% of it."""

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"poll interval must be positive, not {interval!r}")
        self.interval = interval
        self._random = random.Random()  # noqa: S311 - jitter, not security

    def next_wait(self) -> float:
        """The next wait: ``interval`` plus a uniform jitter in [-10%, +10%)."""
        tenth = self.interval / 10
        return self.interval + self._random.uniform(-tenth, tenth)

    def wait(self, stop: threading.Event) -> bool:
        return not stop.wait(self.next_wait())
