"""What the KMS key providers share: how long to keep trying an unreachable KMS, and
the backoff between tries.

A KMS is asked only when the server starts (and when keys are rotated), so riding out a
short outage there is cheap; refusals (a disabled key, no permission) are never retried.
"""

from __future__ import annotations

import logging
import os
import random
import time

from setec_core.errors import ConfigError

log = logging.getLogger("setec.keys")

#: Seconds a KMS call keeps retrying an unreachable or busy KMS (default 30).
RETRY_ENV = "SETEC_KMS_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0


def retry_budget() -> float:
    """The retry budget from ``SETEC_KMS_RETRY_SECONDS``.

    :raises ConfigError: if it is set to something other than a number >= 0.
    """
    raw = os.environ.get(RETRY_ENV)
    if raw is None or raw == "":
        return DEFAULT_RETRY_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise ConfigError(f"{RETRY_ENV}={raw!r} is not a number of seconds (>= 0)")
    return value


class Backoff:
    """Jittered exponential backoff (0.1 s doubling to 5 s) within ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self._deadline = time.monotonic() + seconds
        self._delay = 0.1

    def pause(self, what: str, last: str) -> bool:
        """Log that ``what`` failed with ``last`` and sleep before the next try; return
        ``False`` (without sleeping) once the budget is spent."""
        left = self._deadline - time.monotonic()
        if left <= 0:
            return False
        log.warning("%s failed (%s); retrying for up to %.0f s more", what, last, left)
        time.sleep(min(left, self._delay * random.uniform(0.5, 1.0)))  # noqa: S311 - jitter
        self._delay = min(self._delay * 2, 5.0)
        return True
