"""Small concurrency tools of the Store: shared calls, coalesced polls, deadlines."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from setec_core.errors import UnavailableError

T = TypeVar("T")


class SingleFlight:
    """Concurrent calls with the same key share one execution and its outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def do(self, key: str, work: Callable[[], T]) -> T:
        """Run ``work`` unless a call with ``key`` is running; then wait for that one.
        Returns its result or raises its exception."""
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if leader:
            try:
                call.result = work()
            except BaseException as e:
                call.error = e
            finally:
                with self._lock:
                    del self._calls[key]
                call.done.set()
        else:
            call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[no-any-return]


class _Call:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class Coalescer:
    """Runs ``work`` for one caller at a time; callers arriving meanwhile wait for the
    running call and share its outcome (Go's Store.Refresh coalescing)."""

    def __init__(self, work: Callable[[], None]) -> None:
        self._work = work
        self._cond = threading.Condition()
        self._running = False
        self._generation = 0
        self._error: BaseException | None = None

    def run(self) -> None:
        """Run the work, or wait for the run in progress; raise what it raised."""
        with self._cond:
            if self._running:
                generation = self._generation
                while self._running and self._generation == generation:
                    self._cond.wait()
                if self._error is not None:
                    raise self._error
                return
            self._running = True
        error: BaseException | None = None
        try:
            self._work()
        except BaseException as e:
            error = e
        with self._cond:
            self._running = False
            self._generation += 1
            self._error = error
            self._cond.notify_all()
        if error is not None:
            raise error


def call_before(deadline: float | None, call: Callable[[], T]) -> T:
    """``call()``, but give up when ``deadline`` (monotonic) passes: the request may be
    stuck on a server that accepted the connection and never answers, and the Client's
    own read timeout can be much longer than what the caller gave the Store."""
    if deadline is None:
        return call()
    left = deadline - time.monotonic()
    if left <= 0:
        raise UnavailableError("no time left to ask")
    box: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            box.append((True, call()))
        except BaseException as e:
            box.append((False, e))

    worker = threading.Thread(target=run, name="setec-store-fetch", daemon=True)
    worker.start()
    worker.join(left)
    if not box:
        raise UnavailableError("the server did not answer in time")
    ok, result = box[0]
    if not ok:
        raise result
    return result  # type: ignore[no-any-return]
