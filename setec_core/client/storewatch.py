"""A Store's watch: new active versions as they happen, not at the next poll.

When the Store's client offers ``watch`` (docs/api.md §9.2; this project's server
does, Go setec's and a FileClient do not), a :class:`WatchLoop` keeps a long poll open
naming every secret the Store holds and the active version it holds of each. When the
server answers that some changed, the loop fetches those with the poll's own
conditional get and applies them exactly as a poll would: the same handles, watchers
and Updaters are told, the cache is written, the server audits the gets. Then it
watches again.

The poll ticker keeps running alongside, at its own interval: a watch only makes
updates sooner, so a watch that keeps failing (a server at its watch limit, a proxy
that cuts long requests) never leaves values staler than polling alone would. A failed
watch is retried after a backoff (1 s doubling to a minute, with jitter, or the
server's ``Retry-After`` if longer).

A secret the server reports gone (version 0) keeps its last value, as a poll keeps it,
and is watched from then on as "version 0", so that its re-creation is noticed. A
secret the caller may not read (``"Error": "access denied"``) is left to polling for
:data:`UNWATCHED_RETRY` seconds. One watch names at most 1,000 secrets; a Store of more
keeps one watch per 1,000.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import TYPE_CHECKING

from setec_core.client.api import MAX_WATCH_NAMES, WatchingStoreClient
from setec_core.client.longpoll import Cancellation
from setec_core.errors import (
    NotFound,
    ServerBusyError,
    SetecError,
    UnsupportedError,
)
from setec_core.model import SecretValue
from setec_core.wire.reply import Change

if TYPE_CHECKING:
    from setec_core.client.store import Store

log = logging.getLogger("setec.client.store")

#: Seconds each watch asks the server to wait (the server may cap it lower).
WATCH_TIMEOUT = 60.0

#: Seconds a secret the server refused to watch ("access denied") is left to polling
#: before the watch names it again.
UNWATCHED_RETRY = 300.0

#: Backoff after a failed watch: 1 s doubling to a minute, each wait drawn from half to
#: all of it.
_FIRST_BACKOFF = 1.0
_MAX_BACKOFF = 60.0

#: A watch that answered "nothing changed" sooner than this many seconds did not wait
#: (a server shutting down answers every watch at once): wait before the next one, as
#: after an error, rather than ask again in a tight loop.
_QUICK_ANSWER = 1.0


class WatchLoop:
    """The watch of one Store: threads that each keep a long poll open for up to
    1,000 of its secrets. Started by the Store, stopped by :meth:`Store.close`."""

    def __init__(self, store: Store, client: WatchingStoreClient) -> None:
        self._store = store
        self._client = client
        self._cancel = Cancellation()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        # name -> (the value held when the server reported its version, that version):
        # the version to watch for instead of the one held, while it is still held.
        self._seen: dict[str, tuple[SecretValue, int]] = {}
        self._unwatched: dict[str, float] = {}  # name -> when to watch it again
        self._random = random.Random()  # noqa: S311 - jitter, not security

    def start(self) -> None:
        """Start the first thread; it asks whether the server offers watch, and ends
        at once if not (the Store then polls only)."""
        self._add_threads(1)

    def stop(self) -> None:
        """Cut short the watches in flight and let the threads end."""
        self._cancel.cancel()

    @property
    def running(self) -> bool:
        """Whether a watch thread is running."""
        with self._lock:
            return any(t.is_alive() for t in self._threads)

    def join(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds in all for the threads to end."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            if t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))

    # --- the threads --------------------------------------------------------------------

    def _add_threads(self, count: int) -> None:
        with self._lock:
            while len(self._threads) < count:
                t = threading.Thread(
                    target=self._run,
                    args=(len(self._threads),),
                    name=f"setec-store-watch-{len(self._threads)}",
                    daemon=True,
                )
                self._threads.append(t)
                t.start()

    def _stopped(self) -> bool:
        return self._cancel.cancelled or self._store._stop.is_set()

    def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless the Store closes first; return whether it did not."""
        return not self._store._stop.wait(seconds)

    def _run(self, index: int) -> None:
        try:
            if index == 0 and not self._offered():
                return
            self._watch_forever(index)
        except Exception as e:  # a dead watch would only leave the Store to its poller
            log.error("the watch stopped unexpectedly: %s (polling only)", type(e).__name__)

    def _offered(self) -> bool:
        backoff = _FIRST_BACKOFF
        while not self._stopped():
            try:
                offered = self._client.offers("watch")
            except SetecError as e:
                log.warning("cannot ask the server what it offers: %s (retrying)", e)
                if not self._wait(self._jittered(backoff)):
                    return False
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            if not offered:
                log.info("the server does not offer watch; new versions arrive by polling")
            return offered
        return False

    def _watch_forever(self, index: int) -> None:
        backoff = _FIRST_BACKOFF
        while not self._stopped():
            held = self._held(index)
            if not held:
                # No secrets for this thread (lookups only, none looked up yet, or the
                # Store shrank): look again in a while; polling covers the meantime.
                if not self._wait(_QUICK_ANSWER):
                    return
                continue
            versions = {name: self._version_to_watch(name, value) for name, value in held.items()}
            started = time.monotonic()
            try:
                changes = self._client.watch(versions, WATCH_TIMEOUT, cancel=self._cancel)
            except UnsupportedError:
                log.info("the server no longer offers watch; new versions arrive by polling")
                return
            except SetecError as e:
                self._count("counter_watch_errors")
                delay = self._jittered(backoff)
                if isinstance(e, ServerBusyError) and e.retry_after is not None:
                    delay = max(delay, e.retry_after)
                log.warning("watch failed: %s (polling meanwhile; again in %.0f s)", e, delay)
                if not self._wait(delay):
                    return
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            if self._stopped():
                return
            self._count("counter_watch_answers")
            if changes:
                backoff = _FIRST_BACKOFF
                self._take(changes, held, versions)
            elif time.monotonic() - started < _QUICK_ANSWER:
                if not self._wait(self._jittered(backoff)):
                    return
                backoff = min(backoff * 2, _MAX_BACKOFF)
            else:
                backoff = _FIRST_BACKOFF

    def _held(self, index: int) -> dict[str, SecretValue]:
        """The active values this thread watches: its slice of the Store's secrets that
        hold one, in name order (starting the threads more secrets need)."""
        store = self._store
        now = time.monotonic()
        with store._lock:
            held = {n: e.secret for n, e in store._entries.items() if e.secret is not None}
        with self._lock:
            for name, until in list(self._unwatched.items()):
                if until <= now:
                    del self._unwatched[name]
                else:
                    held.pop(name, None)
        names = sorted(held)
        needed = max(1, -(-len(names) // MAX_WATCH_NAMES))
        if needed > len(self._threads):
            self._add_threads(needed)
        mine = names[index * MAX_WATCH_NAMES : (index + 1) * MAX_WATCH_NAMES]
        return {name: held[name] for name in mine}

    def _version_to_watch(self, name: str, value: SecretValue) -> int:
        with self._lock:
            seen = self._seen.get(name)
            if seen is not None and seen[0] is value:
                return seen[1]
            self._seen.pop(name, None)  # a new value came since: watch for what is held
        return value.version

    def _take(
        self, changes: list[Change], held: dict[str, SecretValue], versions: dict[str, int]
    ) -> None:
        """Fetch the secrets the server reported changed and apply them as a poll would."""
        store = self._store
        reported: dict[str, int] = {}
        work: list[tuple[str, SecretValue | None, set[int]]] = []
        for change in changes:
            name, version, refusal = change.name, change.version, change.error
            if name not in held:
                continue  # not asked about: nothing to do with it
            if refusal:
                with self._lock:
                    self._unwatched[name] = time.monotonic() + UNWATCHED_RETRY
                log.warning(
                    'cannot watch "%s": %s (polling it instead for %.0f s)',
                    name,
                    refusal,
                    UNWATCHED_RETRY,
                )
            elif version == 0:
                self._remember(name, held[name], 0)
                log.info('secret "%s" no longer exists on the server; keeping its value', name)
            elif version != versions[name]:
                reported[name] = version
                work.append((name, held[name], set()))
        if not work:
            return
        # The poll's conditional gets (a few at once when several changed), except for
        # a secret watched as gone, which may come back under the version held: that
        # one is fetched whole.
        conditional = [w for w in work if w[1] is not None and versions[w[0]] == w[1].version]
        asked = dict(zip((w[0] for w in conditional), store._ask_all(conditional), strict=True))
        outcomes = [
            asked[name] if name in asked else self._fetch_whole(name, old) for name, old, _ in work
        ]
        if store._stop.is_set():
            return  # closed meanwhile: change nothing
        new_values: dict[str, tuple[SecretValue | None, SecretValue]] = {}
        errors = 0
        for (name, old, _), (fresh, _gone, error) in zip(work, outcomes, strict=True):
            assert old is not None
            if fresh is not None:
                new_values[name] = (old, fresh)
            elif error is None:
                self._forget(name)  # the server holds what the Store holds after all
            elif isinstance(error, NotFound):
                self._remember(name, old, 0)
            elif error is not None:
                # Watch for the version the server reported, not the one held, or the
                # next watch would answer at once again; the poll will fetch it.
                self._remember(name, old, reported[name])
                log.warning('fetching "%s" after a watch failed: %s (polling it)', name, error)
                errors += 1
        if errors:
            self._count("counter_watch_errors")
        if new_values:
            for w in store._apply([], new_values, {}):
                w._notify()
            store._flush_quietly()

    def _fetch_whole(
        self, name: str, old: SecretValue | None
    ) -> tuple[SecretValue | None, set[int], SetecError | None]:
        """A get of ``name``, as ``Store._poll_one`` reports it: the value if it differs
        from ``old``."""
        try:
            got = self._client.get(name)
        except SetecError as e:
            return None, set(), e
        if old is not None and (got.version, got.value) == (old.version, old.value):
            return None, set(), None
        return got, set(), None

    def _remember(self, name: str, value: SecretValue, version: int) -> None:
        with self._lock:
            self._seen[name] = (value, version)

    def _forget(self, name: str) -> None:
        with self._lock:
            self._seen.pop(name, None)

    def _count(self, metric: str) -> None:
        store = self._store
        with store._lock:
            store._metrics[metric] = store._metrics.get(metric, 0) + 1

    def _jittered(self, seconds: float) -> float:
        return seconds * self._random.uniform(0.5, 1.0)
