"""Watches: waiting until a secret's active version changes, without polling
(``/api/watch``, docs/api.md §9.2).

:class:`Watches` is one server process's set of watches: it checks a request, answers
at once when it can (a name the caller may not read, a version that differs already),
and otherwise hands back a :class:`Watch`, subscribed to the Database's
:class:`~setec_core.changes.ChangeFeed`, that the server holds until a change or its
timeout. How the server holds it (no thread under setec's front, a blocked thread under
another WSGI server) is :mod:`setec_core.http.pending`.

A watch writes no audit entry and tells no more than ``info`` would to a caller allowed
``get`` or ``info`` on the name: the active version, or 0 once the secret is gone.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from setec_core.acl import Action
from setec_core.authz import Caller
from setec_core.database import _check_name
from setec_core.errors import InvalidRequestError, UnavailableError
from setec_core.wire import Change, Changes, WatchRequest
from setec_core.wire.request import MAX_WATCHED_NAMES

if TYPE_CHECKING:
    from setec_core.changes import Subscription
    from setec_core.database import Database

#: The most names one watch may carry.
MAX_NAMES = MAX_WATCHED_NAMES
#: What one watched name is counted as holding besides its UTF-8 bytes: its string,
#: tuple and subscription entry, roughly, in CPython.
NAME_OVERHEAD_BYTES = 200
#: The memory all the watches of one process may hold in the names they watch, by
#: default. The cap on watches alone would let 10,000 watches of 1,000 names of
#: 1,024 bytes hold gigabytes; beyond this budget a watch that would wait is refused
#: with 503 and Retry-After, as beyond the cap (a watch answered at once still is).
DEFAULT_MAX_HELD_BYTES = 256 * 1024 * 1024
#: Watches one server process holds at once, by default (``--max-watches``).
DEFAULT_MAX_WATCHES = 10_000
#: The longest a watch waits, by default (``--watch-timeout-cap``): below the idle
#: timeout of common proxies and load balancers (60 s for AWS's ALB and nginx's
#: ``proxy_read_timeout``), which would cut a longer request off.
DEFAULT_TIMEOUT_CAP = 60.0
#: A watch that times out is answered after its timeout times a factor drawn from
#: this range, so that clients that began watching together do not return together.
JITTER = (0.9, 1.0)
#: Seconds a client refused for want of room is asked to wait (``Retry-After``), drawn
#: from this range so that refused clients do not all come back at once.
RETRY_AFTER = (5, 10)
#: The ``Error`` of a name the caller may neither ``get`` nor ``info``.
DENIED = "access denied"

_jitter = random.Random()  # noqa: S311 - spreads timeouts, not a secret


class TooManyWatchesError(UnavailableError):
    """The server holds as many watches as ``--max-watches`` allows (503 with
    ``Retry-After``). :attr:`retry_after` is the seconds to ask the client to wait."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Watches:
    """The watches of one server process over ``db``.

    :param max_watches: watches held at once; one more is refused
        (:class:`TooManyWatchesError`).
    :param timeout_cap: the longest a watch waits, in seconds; a longer ``Timeout`` is
        clamped to it, and 0 means it.
    :param max_held_bytes: the memory the waiting watches may hold in their names
        (each name's UTF-8 length plus :data:`NAME_OVERHEAD_BYTES`); a watch that would
        go over is refused as one over ``max_watches`` is.
    """

    def __init__(
        self,
        db: Database,
        *,
        max_watches: int = DEFAULT_MAX_WATCHES,
        timeout_cap: float = DEFAULT_TIMEOUT_CAP,
        max_held_bytes: int = DEFAULT_MAX_HELD_BYTES,
    ) -> None:
        if max_watches < 1 or not timeout_cap > 0 or max_held_bytes < 1:
            raise ValueError("max_watches, timeout_cap and max_held_bytes must be positive")
        self.db = db
        self.max_watches = max_watches
        self.timeout_cap = timeout_cap
        self.max_held_bytes = max_held_bytes
        #: What the waiting watches hold in names, counted as :attr:`max_held_bytes`.
        self.held_bytes = 0
        self._lock = threading.Lock()
        #: Watches held now (the ``setec_watches`` gauge).
        self.open = 0
        #: Watches refused because :attr:`max_watches` were held (503s).
        self.refused = 0

    def start(self, caller: Caller, request: WatchRequest) -> Changes | Watch:
        """Check ``request`` and answer it at once, or return the :class:`Watch` to hold
        until something changes (its :meth:`Watch.result` is then the answer).

        The answer is at once when a name may not be read by ``caller`` (listed with
        :data:`DENIED`) or a secret's active version already differs from the one
        given.

        :raises InvalidRequestError: for no names or more than :data:`MAX_NAMES`, a
            name given twice, or an empty or over-long name.
        :raises TooManyWatchesError: if :attr:`max_watches` are held already, or this
            watch's names would take the held names over :attr:`max_held_bytes`.
        """
        wanted = request.secrets
        if not 1 <= len(wanted) <= MAX_NAMES:
            raise InvalidRequestError(
                f"a watch names 1 to {MAX_NAMES} secrets; this one names {len(wanted)}"
            )
        seen: set[str] = set()
        for secret in wanted:
            _check_name(secret.name, empty_ok=False)
            if secret.name in seen:
                raise InvalidRequestError(
                    f"secret {_shown(secret.name)} is named twice in the watch"
                )
            seen.add(secret.name)
        held: list[tuple[str, int]] = []
        denied = False
        for secret in wanted:
            name = secret.name
            if caller.allows(Action.GET, name) or caller.allows(Action.INFO, name):
                held.append((name, secret.version))
            else:
                # Said at once, whether or not the secret exists.
                held.append((name, -1))
                denied = True
        seconds = min(request.timeout or self.timeout_cap, self.timeout_cap)
        # What can be answered at once takes no place, even on a full server.
        changed = _differences(self.db, held)
        if changed or denied:
            return Changes(changed)
        cost = sum(len(name.encode("utf-8", "surrogatepass")) for name, _ in held)
        cost += NAME_OVERHEAD_BYTES * len(held)
        self._reserve(cost)
        watch = Watch(self, tuple(held), seconds * _jitter.uniform(*JITTER), cost)
        changed = watch.changes()
        if changed:
            watch.close()
            return Changes(changed)
        return watch

    def _reserve(self, cost: int) -> None:
        with self._lock:
            if self.open >= self.max_watches:
                what = f"too many watches on this server ({self.max_watches})"
            elif self.held_bytes + cost > self.max_held_bytes:
                what = "the watches on this server hold as many names as it allows"
            else:
                self.open += 1
                self.held_bytes += cost
                return
            self.refused += 1
        retry = _jitter.randint(*RETRY_AFTER)
        raise TooManyWatchesError(f"{what}; retry after {retry} seconds", retry)

    def _release(self, cost: int) -> None:
        with self._lock:
            self.open -= 1
            self.held_bytes -= cost


class Watch:
    """A watch waiting for a change: subscribed to its secrets until :meth:`close`
    (which :meth:`result` calls).

    :attr:`deadline` is when it times out (``time.monotonic()``), the jitter included.
    """

    __slots__ = ("_closed", "_cost", "_held", "_subscription", "_wake", "_watches", "deadline")

    def __init__(
        self, watches: Watches, held: tuple[tuple[str, int], ...], timeout: float, cost: int
    ) -> None:
        self._watches = watches
        self._cost = cost
        self._held = held
        self._wake: Callable[[], None] | None = None
        self._closed = False
        self.deadline = time.monotonic() + timeout
        # Subscribed before the first look at the index (changes(), by the caller):
        # a change is then either seen there or announced after (setec_core.changes).
        self._subscription: Subscription | None = watches.db.changes.subscribe(
            (name for name, _ in held), self._changed
        )

    def _changed(self) -> None:
        # On a writer's thread: only pass the news on.
        wake = self._wake
        if wake is not None:
            wake()

    def on_change(self, wake: Callable[[], None]) -> None:
        """Call ``wake()`` (on a writer's thread; it must return at once) whenever one
        of the secrets may have changed. A change before this call is not announced:
        look at :meth:`changes` after it."""
        self._wake = wake

    def changes(self) -> tuple[Change, ...]:
        """The watched secrets whose active version differs now, in request order."""
        return _differences(self._watches.db, self._held)

    def result(self) -> Changes:
        """The answer now (``Changed`` empty if nothing differs), and :meth:`close`."""
        try:
            return Changes(self.changes())
        finally:
            self.close()

    def close(self) -> None:
        """Stop watching and free this watch's place. Harmless twice."""
        subscription = self._subscription
        if subscription is None:
            return
        self._subscription = None
        self._wake = None
        self._watches.db.changes.cancel(subscription)
        self._watches._release(self._cost)


def _differences(db: Database, held: Sequence[tuple[str, int]]) -> tuple[Change, ...]:
    # A held version of -1 marks a name the caller may not read.
    changed = []
    for name, version in held:
        if version < 0:
            changed.append(Change(name, 0, DENIED))
            continue
        active = db.active_version(name)
        if active != version:
            changed.append(Change(name, active))
    return tuple(changed)


def _shown(name: str) -> str:
    # Enough of a name to recognise it, never a kilobyte of it in a message.
    return repr(name) if len(name) <= 60 else repr(name[:60]) + "..."
