"""Telling watchers which secrets changed: the :class:`ChangeFeed` of a Database.

The Database tells its feed the names of the secrets whose state it replaced in its
index, whether by its own write or by reading another process's commit (replicas,
``--workers``; :mod:`setec_core.follower`), after the index holds the new state. A
watcher subscribes to names with a callback; the callback learns only that something
about one of its names changed, and reads the index itself to see what.

What a write pays when nobody watches is one test of an empty dict; when somebody
watches other secrets, one dict lookup per changed name. Callbacks run on the writer's
thread, with the Database's write lock held: they must only note the change and hand it
on (set an event, queue a wake-up for an event loop), never block or call the Database.

A subscriber must subscribe *before* it reads the index for the first time: then a
change is either in the index when it reads, or announced to it after, never lost
between the two.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

Wake = Callable[[], None]


class Subscription:
    """Names a watcher follows and the callback to call when one of them changes.
    Cancel it with :meth:`ChangeFeed.cancel`."""

    __slots__ = ("names", "wake")

    def __init__(self, names: tuple[str, ...], wake: Wake) -> None:
        self.names = names
        self.wake = wake


class ChangeFeed:
    """Subscriptions by secret name, and :meth:`changed` to wake those of some names.
    Safe to use from any thread."""

    __slots__ = ("_by_name", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # name -> the subscriptions naming it (a dict as an ordered set). Changed only
        # under the lock, and read without it only to ask whether it is empty.
        self._by_name: dict[str, dict[Subscription, None]] = {}

    def subscribe(self, names: Iterable[str], wake: Wake) -> Subscription:
        """Call ``wake()`` whenever a secret of ``names`` changes, until the returned
        subscription is cancelled.

        :param wake: called on the writer's thread; it must return at once.
        """
        subscription = Subscription(tuple(names), wake)
        with self._lock:
            for name in subscription.names:
                self._by_name.setdefault(name, {})[subscription] = None
        return subscription

    def cancel(self, subscription: Subscription) -> None:
        """Stop waking ``subscription``. Harmless twice."""
        with self._lock:
            by_name = self._by_name
            for name in subscription.names:
                subscribers = by_name.get(name)
                if subscribers is not None:
                    subscribers.pop(subscription, None)
                    if not subscribers:
                        del by_name[name]

    def changed(self, names: Iterable[str]) -> None:
        """The secrets ``names`` changed (the index holds their new state): wake each
        subscription naming one of them, once."""
        by_name = self._by_name
        if not by_name:
            return
        woken: dict[Subscription, None] = {}
        for name in names:
            if name in by_name:
                with self._lock:
                    woken.update(by_name.get(name) or {})
        for subscription in woken:
            subscription.wake()

    def __len__(self) -> int:
        """How many names have a subscriber."""
        return len(self._by_name)
