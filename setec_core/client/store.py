"""``Store``: the secrets a program needs, always at hand (docs/client.md).

A Store fetches its declared secrets when it is built (blocking until each one is
available, unless a cache already holds it), then keeps them fresh from a background
poller that asks the server only whether each secret changed: a value travels only
when its active version did. Reading a secret never touches the network; when the
server is away the Store keeps serving the last good values, and a cache file carries
them across restarts.

    store = Store(client, ["prod/app/db-pass"], cache=FileCache("/data/secrets.cache"))
    db_pass = store.secret("prod/app/db-pass")   # a handle: db_pass() -> current bytes

Differences from Go's Store, each a fix:

- a cache entry holding only explicit versions (``"secret": null``) is valid, not a
  reason to discard the whole cache; a cache of literal ``null`` is discarded, not a
  crash; pruning such an entry's versions works;
- :meth:`Store.lookup_secret` keeps the explicit versions an entry already held;
- :meth:`VersionedSecret.get_version` refuses version 0 instead of caching the active
  value under the key 0; :meth:`VersionedSecret.create_version` notifies watchers;
- without ``allow_lookup``, names found in the cache but not declared are not served;
- a ``ticker`` polls even when ``poll_interval`` is ``None``;
- startup gives up after :data:`DEFAULT_STARTUP_TIMEOUT` (a minute) unless told
  otherwise (``timeout=None`` waits as long as Go's Store does), saying which server,
  for how long, and the last error of each secret it lacks.
"""

from __future__ import annotations

import logging
import queue
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from setec_core.client import cacheblob
from setec_core.client.api import (
    BatchStoreClient,
    StoreClient,
    VersioningStoreClient,
    WatchingStoreClient,
)
from setec_core.client.cache import Cache
from setec_core.client.secret import Secret
from setec_core.client.storewatch import WatchLoop
from setec_core.client.sync import Coalescer, SingleFlight, call_before
from setec_core.client.ticker import JitterTicker, Ticker
from setec_core.client.watcher import Watcher
from setec_core.errors import (
    AccessDenied,
    ConfigError,
    InvalidRequestError,
    InvalidVersionError,
    NotFound,
    PollError,
    SetecError,
    UnavailableError,
    ValueNotChanged,
    VersionClaimed,
)
from setec_core.model import MAX_GET_MANY, SecretValue

log = logging.getLogger("setec.client.store")

T = TypeVar("T")

#: Seconds between polls unless told otherwise (Go's default too).
DEFAULT_POLL_INTERVAL = 3600.0

#: Seconds a Store's construction waits for the secrets its cache does not hold before
#: it gives up (``timeout``). Go's Store waits as long as its context allows, which for
#: a mistyped server URL is forever, with nothing but log lines to say why.
DEFAULT_STARTUP_TIMEOUT = 60.0

#: Seconds :meth:`Store.close` waits for a poll stuck on an unresponsive server
#: before it leaves the poll to finish (or time out) on its own.
CLOSE_TIMEOUT = 5.0

#: Backoff of the initial fetch: 1 ms, doubling up to 4.096 s (Go's schedule).
_FIRST_BACKOFF = 0.001
_MAX_BACKOFF = 4.096


@dataclass(repr=False)
class _Entry:
    secret: SecretValue | None  # the tracked active value, if any
    versions: dict[int, bytes] = field(default_factory=dict)  # explicit versions held
    last_access: float = 0.0
    declared: bool = False
    handle: Secret | None = None  # issued once; an entry with a handle never expires
    # Weak: a watcher (an Updater's) that its owner dropped must not live on here.
    watchers: weakref.WeakSet[Watcher] = field(default_factory=weakref.WeakSet)

    def __repr__(self) -> str:
        # Frames holding entries show up in error reporters that capture locals.
        return (
            f"_Entry(secret={self.secret!r}, versions={sorted(self.versions)}, "
            f"declared={self.declared})"
        )


class Store:
    """Secrets fetched from ``client`` and kept current.

    :param client: where secrets come from: a :class:`~setec_core.client.Client`, a
        :class:`~setec_core.client.FileClient`, or anything with ``get`` and
        ``get_if_changed``.
    :param secrets: the names the program needs; the Store does not return from its
        constructor until it holds every one of them (fetched 100 a request from a
        server that offers batch gets, docs/api.md §9.3; else one get each).
    :param structs: dataclass instances (or ``(instance, prefix)`` pairs) whose
        :func:`~setec_core.client.secret_field` fields name more secrets; they are
        filled in once the Store holds them.
    :param allow_lookup: allow secrets that were not declared: :meth:`lookup_secret`,
        :meth:`versioned_secret`, watchers and updaters of undeclared names.
    :param cache: keeps values across restarts; cached values (even stale ones)
        satisfy startup without contacting the server.
    :param poll_interval: seconds between polls (±10% jitter); 0 means the default
        hour, as in Go; ``None`` or a negative value disables automatic polling
        (:meth:`refresh` still works).
    :param expiry_age: undeclared secrets unused for longer than this many seconds are
        dropped at the next poll (unless a handle to them was handed out); 0: never.
    :param ticker: decides when to poll instead of ``poll_interval`` (tests pass a
        :class:`~setec_core.testing.FakeTicker`).
    :param time_now: the clock for access times and expiry (Unix seconds).
    :param timeout: seconds to wait at startup for secrets the cache does not hold
        (:data:`DEFAULT_STARTUP_TIMEOUT`, a minute, by default); ``None`` waits as long
        as it takes, as Go's Store does.
    :param poll_concurrency: how many conditional gets a poll keeps in flight at once
        (Go's Store polls one secret at a time: 1). Over a network, each secret costs a
        round trip, so a few in parallel make a poll of many secrets that much shorter.
    :param watch: whether to keep a watch open (docs/api.md §9.2) when the server
        offers one, so that a new active version arrives within moments rather than at
        the next poll; polling goes on alongside. ``None`` (the default): watch when
        polling runs on ``poll_interval`` (not with a ``ticker``, which decides alone
        when values change); ``True``: watch whenever the server offers it, even with
        polling off; ``False``: never.

    :raises ConfigError: for an unusable configuration (no client, an empty name, no
        secrets without ``allow_lookup``, a bad struct).
    :raises UnavailableError: if ``timeout`` passed before every secret was fetched
        (the message names the server, how long the Store tried, and the last error of
        each missing secret), or a FileClient lacks some of them.
    """

    def __init__(
        self,
        client: StoreClient,
        secrets: Iterable[str] = (),
        *,
        structs: Sequence[Any] = (),
        allow_lookup: bool = False,
        cache: Cache | None = None,
        poll_interval: float | None = DEFAULT_POLL_INTERVAL,
        expiry_age: float = 0.0,
        ticker: Ticker | None = None,
        time_now: Callable[[], float] = time.time,
        timeout: float | None = DEFAULT_STARTUP_TIMEOUT,
        poll_concurrency: int = 4,
        watch: bool | None = None,
    ) -> None:
        if client is None:
            raise ConfigError("no service client is set")
        if isinstance(secrets, str):
            raise ConfigError("secrets must be a list of names, not one string")
        self._client = client
        self._allow_lookup = allow_lookup
        self._cache = cache
        self._expiry_age = expiry_age
        self._now = time_now
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._flights = SingleFlight()
        self._refresh = Coalescer(self._poll)
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._closed = False
        if poll_concurrency < 1:
            raise ConfigError(f"poll_concurrency must be at least 1, not {poll_concurrency}")
        self._poll_concurrency = poll_concurrency
        self._flush_lock = threading.Lock()  # one cache write at a time, newest last
        self._metrics = {
            "counter_poll_initiated": 0,
            "counter_poll_errors": 0,
            "counter_watch_answers": 0,
            "counter_watch_errors": 0,
        }
        self._watch: WatchLoop | None = None
        self._fetches = 0
        self._latest_poll = 0.0

        fields = []
        for item in structs:
            from setec_core.client.fields import parse_fields  # fields imports this module

            obj, prefix = item if isinstance(item, tuple) else (item, "")
            fields.append(parse_fields(obj, prefix))
        names = sorted({*secrets, *(name for f in fields for name in f.secrets())})
        if any(not name for name in names):
            raise ConfigError("empty secret name not allowed")
        if not names and not allow_lookup:
            raise ConfigError("no secrets are listed: name some, or set allow_lookup=True")

        pending = self._load_cache(names)
        if pending:
            self._fetch_all(pending, timeout)
        if pending:
            self._flush_quietly()
        for f in fields:
            f.apply(self)
        self._start_poller(poll_interval, ticker)
        self._start_watch(watch, poll_interval, ticker)

    # --- startup -----------------------------------------------------------------------

    def _load_cache(self, names: list[str]) -> list[str]:
        """Load the cache; return the declared names it does not hold."""
        if self._cache is not None:
            try:
                blob = self._cache.read()
            except OSError as e:
                log.warning("error loading cache: %s (continuing)", e.strerror or e)
                blob = b""
            if blob.strip():
                try:
                    cached = cacheblob.decode(blob)
                except cacheblob.InvalidCacheError as e:
                    log.warning("cache is not valid (%s); discarding it", e)
                    cached = {}
                declared = set(names)
                for name, item in cached.items():
                    if not self._allow_lookup and name not in declared:
                        # Without lookups it could never be served: do not poll it or
                        # keep its value on disk (a retired secret would linger).
                        continue
                    self._entries[name] = _Entry(
                        secret=item.secret, versions=item.versions, last_access=item.last_access
                    )
        pending = []
        for name in names:
            entry = self._entries.get(name)
            if entry is not None and entry.secret is not None:
                entry.declared = True
            else:
                pending.append(name)
        return pending

    def _fetch_all(self, pending: list[str], timeout: float | None) -> None:
        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        backoff = _FIRST_BACKOFF
        errors: dict[str, SetecError] = {}
        while True:
            missing = self._fetch_batched(pending, deadline, errors)
            if missing is None:  # the client or its server cannot batch: one get each
                missing = self._fetch_each(pending, deadline, errors)
            if not missing:
                return
            pending = missing
            # A file will not change: no retry. (If the fileclient module was never
            # imported, the client cannot be a FileClient; no need to import it.)
            fileclient = sys.modules.get("setec_core.client.fileclient")
            if fileclient is not None and isinstance(self._client, fileclient.FileClient):
                raise UnavailableError(
                    f"missing {len(missing)} unavailable secrets: {_names(missing)}"
                )
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise UnavailableError(
                        f"gave up after {_duration(time.monotonic() - started)} waiting for "
                        f"{len(missing)} secrets from {_source(self._client)} "
                        f"({_grouped({n: errors.get(n) for n in missing})}); "
                        "pass timeout=None to wait as long as it takes"
                    )
                time.sleep(min(backoff, left))
            else:
                time.sleep(backoff)
            if backoff < _MAX_BACKOFF:
                backoff *= 2

    def _fetch_each(
        self, pending: list[str], deadline: float | None, errors: dict[str, SetecError]
    ) -> list[str]:
        """Get each of ``pending`` in turn; return those still missing (their errors in
        ``errors``)."""
        missing: list[str] = []
        for i, name in enumerate(pending):
            if deadline is not None and time.monotonic() >= deadline:
                missing.extend(pending[i:])  # out of time: the rest stay unasked
                break
            try:
                secret = call_before(deadline, partial(self._client.get, name))
            except UnavailableError as e:
                # The server cannot be reached: asking for the other secrets now would
                # only fail the same way (each after a timeout, for a silent host).
                self._unreachable(pending[i:], e, errors)
                missing.extend(pending[i:])
                break
            except SetecError as e:
                log.warning('error fetching "%s": %s (retrying)', name, e)
                errors[name] = e
                missing.append(name)
                continue
            self._fetched(name, secret)
        return missing

    def _fetch_batched(
        self, pending: list[str], deadline: float | None, errors: dict[str, SetecError]
    ) -> list[str] | None:
        """Get ``pending`` :data:`MAX_GET_MANY` a request (docs/api.md §9.3); return
        those still missing, or ``None`` if the client or its server cannot."""
        client = self._client
        if not isinstance(client, BatchStoreClient):
            return None
        if deadline is not None and time.monotonic() >= deadline:
            return list(pending)  # out of time: they stay unasked
        try:
            if not call_before(deadline, partial(client.offers, "get-many")):
                return None
        except UnavailableError as e:
            self._unreachable(pending, e, errors)
            return list(pending)
        except SetecError:
            return None  # the gets will meet it too, each with its own name
        missing: list[str] = []
        for start in range(0, len(pending), MAX_GET_MANY):
            batch = pending[start : start + MAX_GET_MANY]
            if deadline is not None and time.monotonic() >= deadline:
                missing.extend(pending[start:])  # out of time: the rest stay unasked
                break
            try:
                results = call_before(deadline, partial(client.get_many, batch))
            except UnavailableError as e:
                self._unreachable(pending[start:], e, errors)
                missing.extend(pending[start:])
                break
            except SetecError:
                # Refused whole (a name over the server's limit): one get each, so that
                # each secret gets its own error.
                missing.extend(self._fetch_each(batch, deadline, errors))
                continue
            for name in batch:
                result = results[name]
                if isinstance(result, SetecError):
                    log.warning('error fetching "%s": %s (retrying)', name, result)
                    errors[name] = result
                    missing.append(name)
                else:
                    self._fetched(name, result)
        return missing

    def _unreachable(
        self, names: list[str], error: UnavailableError, errors: dict[str, SetecError]
    ) -> None:
        log.warning('error fetching "%s": %s (retrying)', names[0], error)
        for name in names:
            errors[name] = error

    def _fetched(self, name: str, secret: SecretValue) -> None:
        entry = self._entries.setdefault(name, _Entry(secret=None))
        entry.secret, entry.last_access, entry.declared = secret, self._now(), True

    def _start_poller(self, interval: float | None, ticker: Ticker | None) -> None:
        if ticker is None:
            if interval is None or interval < 0:
                log.info("automatic polling for new values is disabled")
                return
            ticker = JitterTicker(interval or DEFAULT_POLL_INTERVAL)
        self._poller = threading.Thread(
            target=self._poll_forever, args=(ticker,), name="setec-store-poller", daemon=True
        )
        self._poller.start()

    def _start_watch(
        self, watch: bool | None, interval: float | None, ticker: Ticker | None
    ) -> None:
        if watch is None:
            watch = ticker is None and interval is not None and interval >= 0
        if watch and isinstance(self._client, WatchingStoreClient):
            self._watch = WatchLoop(self, self._client)
            self._watch.start()

    def _poll_forever(self, ticker: Ticker) -> None:
        log.info("begin update poll (interval=%s)", getattr(ticker, "interval", "ticker"))
        while ticker.wait(self._stop):
            try:
                self.refresh()
            except SetecError as e:
                log.warning("%s (continuing)", e)
            except Exception as e:  # a poller that dies would freeze every value silently
                log.error("update poll failed unexpectedly: %s (continuing)", type(e).__name__)
            finally:
                ticker.done()
        log.info("stopping update poller")
        self._flush_quietly()

    # --- access ------------------------------------------------------------------------

    def secret(self, name: str) -> Secret | None:
        """The handle of ``name``: call it for the current value. The same handle is
        returned every time, and it stays current as the Store polls.

        :returns: ``None`` if ``name`` is unknown and ``allow_lookup`` is set.
        :raises NotFound: if ``name`` is unknown and lookups are disabled (a
            programming error: declare the name).
        """
        handle = self._known(name)
        if handle is not None or self._allow_lookup:
            return handle
        raise NotFound(f'secret "{name}" not found in the Store with lookup disabled')

    def _known(self, name: str) -> Secret | None:
        # A name the Store serves without a fetch: it holds an active value, and the
        # name was declared or lookups are allowed (Go served cached undeclared names
        # even without lookups).
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.secret is None:
                return None
            if not (entry.declared or self._allow_lookup):
                return None
            return self._handle(name, entry)

    def _handle(self, name: str, entry: _Entry) -> Secret:
        # Called with the lock held.
        if entry.handle is None:
            entry.handle = Secret(lambda: self._read(name), name)
        return entry.handle

    def _read(self, name: str) -> bytes:
        with self._lock:
            entry = self._entries[name]  # entries with a handle are never removed
            entry.last_access = self._now()
            self._fetches += 1
            assert entry.secret is not None  # only entries with a value get handles
            return entry.secret.value

    def lookup_secret(self, name: str) -> Secret:
        """The handle of ``name``, fetching it once now if the Store does not hold it
        (an "undeclared" secret, polled from then on).

        :raises ConfigError: if lookups are disabled and ``name`` is not declared.
        :raises NotFound, AccessDenied, UnavailableError: if the fetch failed; the
            message names the secret.
        """
        handle = self._known(name)
        if handle is not None:
            return handle
        if not self._allow_lookup:
            raise ConfigError(f'lookup is not enabled: cannot look up undeclared "{name}"')
        return self._flights.do(f"lookup:{name}", lambda: self._lookup(name))

    def _lookup(self, name: str) -> Secret:
        try:
            secret = self._client.get(name)
        except SetecError as e:
            raise _named(e, f'lookup "{name}"') from None
        with self._lock:
            entry = self._entries.setdefault(name, _Entry(secret=None))
            entry.secret, entry.last_access = secret, self._now()
            handle = self._handle(name, entry)
        log.info('added new undeclared secret "%s"', name)
        self._flush_quietly()
        return handle

    def watcher(self, name: str) -> Watcher:
        """A :class:`Watcher` of ``name``, told each time a poll brings a new value.

        :raises ConfigError: if ``name`` is unknown and lookups are disabled.
        """
        w = Watcher(self.lookup_secret(name))
        with self._lock:
            self._entries[name].watchers.add(w)
        return w

    def versioned_secret(self, name: str) -> VersionedSecret:
        """Explicit versions of ``name`` (see :class:`VersionedSecret`); no I/O.

        :raises ConfigError: unless ``allow_lookup`` is set and the client can read
            versions (a :class:`~setec_core.client.Client` can; a FileClient cannot).
        """
        if not self._allow_lookup:
            raise ConfigError("versioned secrets require allow_lookup=True in the Store")
        if not isinstance(self._client, VersioningStoreClient):
            raise ConfigError(
                "versioned secrets require a client that reads versions, such as Client"
            )
        return VersionedSecret(self, name)

    # --- polling -----------------------------------------------------------------------

    def refresh(self) -> None:
        """Poll now: ask the server whether each secret changed and take the new ones.

        Calls made while a poll is running (the poller's or another caller's) wait for
        it and share its outcome instead of polling again.

        :raises PollError: if some secrets could not be refreshed; their last good
            values stay, and the secrets that did change are updated all the same.
        :raises SetecError: if the cache could not be written.
        """
        if self._closed:
            raise InvalidRequestError("the Store is closed")
        self._refresh.run()

    def _poll(self) -> None:
        with self._lock:
            self._metrics["counter_poll_initiated"] += 1
            self._latest_poll = round(time.time(), 3)
            now = self._now()
            snapshot = [
                (name, e.secret, set(e.versions), e.declared, e.last_access, e.handle)
                for name, e in self._entries.items()
            ]
        expired: list[str] = []
        work: list[tuple[str, SecretValue | None, set[int]]] = []
        for name, secret, versions, declared, last_access, handle in snapshot:
            if (
                not declared
                and handle is None
                and self._expiry_age > 0
                and now - last_access > self._expiry_age
            ):
                expired.append(name)
            else:
                work.append((name, secret, versions))
        outcomes = self._ask_all(work)
        if self._stop.is_set():
            return  # closed meanwhile: an abandoned poll changes nothing
        new_values: dict[str, tuple[SecretValue | None, SecretValue]] = {}
        gone_versions: dict[str, set[int]] = {}
        errors: dict[str, SetecError] = {}
        for (name, old, _), (fresh, gone, error) in zip(work, outcomes, strict=True):
            if fresh is not None:
                new_values[name] = (old, fresh)
            if gone:
                gone_versions[name] = gone
            if error is not None:
                errors[name] = error
        if errors:
            with self._lock:
                self._metrics["counter_poll_errors"] += 1
        notify = self._apply(expired, new_values, gone_versions)
        for w in notify:
            w._notify()
        updated = len(new_values) + len(gone_versions)
        if updated or expired:
            try:
                self._flush()
            except OSError as e:
                raise PollError(
                    f"applying updates failed: cannot write the cache: {e.strerror or e}",
                    errors,
                    updated,
                ) from None
        if errors:
            what = "partially failed" if updated else "failed"
            raise PollError(f"update poll {what}: {_grouped(errors)}", errors, updated)

    def _ask_all(
        self, work: list[tuple[str, SecretValue | None, set[int]]]
    ) -> list[tuple[SecretValue | None, set[int], SetecError | None]]:
        """:meth:`_poll_one` for each item, up to ``poll_concurrency`` at once."""
        workers = min(self._poll_concurrency, len(work))
        if workers <= 1:
            return [self._poll_one(*item) for item in work]
        outcomes: list[Any] = [None] * len(work)
        todo: queue.SimpleQueue[int] = queue.SimpleQueue()
        for i in range(len(work)):
            todo.put(i)

        def worker() -> None:
            while True:
                try:
                    i = todo.get_nowait()
                except queue.Empty:
                    return
                outcomes[i] = self._poll_one(*work[i])

        # Daemon threads, started per poll (polls are minutes or hours apart): a request
        # stuck on a dead server must not keep the program from exiting.
        threads = [
            threading.Thread(target=worker, name="setec-store-poll", daemon=True)
            for _ in range(workers)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return outcomes

    def _poll_one(
        self, name: str, secret: SecretValue | None, versions: set[int]
    ) -> tuple[SecretValue | None, set[int], SetecError | None]:
        """Ask about one secret: (its new active value, the explicit versions deleted on
        the server, the first error)."""
        fresh: SecretValue | None = None
        gone: set[int] = set()
        error: SetecError | None = None
        if self._stop.is_set():
            return fresh, gone, error  # closing: do not start another request
        if secret is not None:
            try:
                got = self._client.get_if_changed(name, secret.version)
            except ValueNotChanged:
                pass
            except SetecError as e:
                error = e
            else:
                if got.version != secret.version:
                    fresh = got
        if versions and isinstance(self._client, VersioningStoreClient):
            try:
                info = self._client.info(name)
            except SetecError as e:
                error = error or e
            else:
                gone = versions - set(info.versions)
        return fresh, gone, error

    def _apply(
        self,
        expired: list[str],
        new_values: dict[str, tuple[SecretValue | None, SecretValue]],
        gone_versions: dict[str, set[int]],
    ) -> list[Watcher]:
        notify: list[Watcher] = []
        with self._lock:
            for name in expired:
                entry = self._entries.get(name)
                if entry is not None and entry.handle is None:
                    del self._entries[name]
                    log.info('removing expired undeclared secret "%s"', name)
            for name, (old, fresh) in new_values.items():
                entry = self._entries.get(name)
                if entry is None or entry.secret is not old:
                    # Changed here while the poll ran (create_version, a lookup): that
                    # value is newer than what the poll saw; the next poll reconciles.
                    continue
                entry.secret = fresh
                log.info('update to version %d for secret "%s"', fresh.version, name)
                notify.extend(entry.watchers)
            for name, gone in gone_versions.items():
                entry = self._entries.get(name)
                if entry is not None:
                    entry.versions = {v: b for v, b in entry.versions.items() if v not in gone}
        return notify

    # --- the cache ---------------------------------------------------------------------

    def _flush(self) -> None:
        if self._cache is None:
            return
        # Snapshot and write under one lock: two flushes must not write in the other
        # order, or an older snapshot (an old password) would be the one left on disk.
        with self._flush_lock:
            with self._lock:
                snapshot = {
                    name: cacheblob.CachedEntry(
                        secret=e.secret, versions=dict(e.versions), last_access=int(e.last_access)
                    )
                    for name, e in self._entries.items()
                }
            self._cache.write(cacheblob.encode(snapshot))

    def _flush_quietly(self) -> None:
        try:
            self._flush()
        except OSError as e:
            log.warning("error flushing cache: %s", e.strerror or e)

    # --- the rest ----------------------------------------------------------------------

    def metrics(self) -> dict[str, float]:
        """``counter_poll_initiated``, ``counter_poll_errors``, ``counter_secret_fetch``
        (reads through handles), ``timestamp_latest_poll`` (Unix seconds), and for the
        watch ``counter_watch_answers`` (watches answered) and ``counter_watch_errors``
        (watches that failed, and fetches after a watch that did)."""
        with self._lock:
            return {
                **self._metrics,
                "counter_secret_fetch": self._fetches,
                "timestamp_latest_poll": self._latest_poll,
            }

    @property
    def polling(self) -> bool:
        """Whether a background poller is running."""
        return self._poller is not None and self._poller.is_alive()

    @property
    def watching(self) -> bool:
        """Whether the Store keeps a watch open, or is still asking whether the server
        offers one (docs/client.md, "Watching for new versions")."""
        return self._watch is not None and self._watch.running

    def close(self) -> None:
        """Stop the poller (it writes the cache one last time). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()  # cuts short a watch parked on the server
        poller = self._poller
        if poller is not None and poller is not threading.current_thread():
            # A stopped poll asks nothing more, but a request in flight runs to its
            # timeout; do not wait minutes for it.
            poller.join(CLOSE_TIMEOUT)
            if poller.is_alive():
                log.warning("closing with a poll still waiting for the server; not waiting")
                self._flush_quietly()
        else:
            self._flush_quietly()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        with self._lock:
            return f"Store({len(self._entries)} secrets, client={self._client!r})"


class VersionedSecret:
    """Explicit versions of one secret held by a Store (Go's ``VersionedSecret``): fetched once,
    kept in the Store (and its cache), pruned when deleted on the server."""

    def __init__(self, store: Store, name: str) -> None:
        self._store = store
        self.name = name

    def get_version(self, version: int) -> bytes:
        """The value of ``version`` (no network use if the Store already holds it).

        :raises InvalidVersionError: for version 0 (use ``store.secret(name)`` for the
            active value).
        :raises NotFound, AccessDenied, UnavailableError: from the server.
        """
        if version == 0:
            raise InvalidVersionError(
                f'version 0 of "{self.name}": ask for a version > 0, or use '
                "store.secret(name) for the active value"
            )
        store = self._store
        with store._lock:
            entry = store._entries.get(self.name)
            if entry is not None and version in entry.versions:
                entry.last_access = store._now()
                return entry.versions[version]
        return store._flights.do(f"get:{self.name}:{version}", lambda: self._fetch(version))

    def _fetch(self, version: int) -> bytes:
        store = self._store
        client = store._client
        assert isinstance(client, VersioningStoreClient)
        value = client.get_version(self.name, version).value
        with store._lock:
            entry = store._entries.get(self.name)
            if entry is None:
                entry = store._entries[self.name] = _Entry(secret=None)
                log.info('adding new undeclared secret "%s"', self.name)
            entry.versions[version] = value
            entry.last_access = store._now()
        store._flush_quietly()
        return value

    def create_version(self, version: int, value: bytes) -> None:
        """Create ``version`` on the server and make it active, here too.

        :raises VersionClaimed: if the version exists or existed.
        """
        store = self._store
        client = store._client
        assert isinstance(client, VersioningStoreClient)

        def create() -> list[Watcher]:
            client.create_version(self.name, version, value)
            with store._lock:
                entry = store._entries.setdefault(self.name, _Entry(secret=None))
                entry.versions[version] = bytes(value)
                entry.secret = SecretValue(value=bytes(value), version=version)
                entry.last_access = store._now()
                return list(entry.watchers)

        # Not single-flighted: two callers creating the same version with different
        # values must not share one outcome (the loser gets VersionClaimed).
        for w in create():
            w._notify()
        store._flush_quietly()

    def __repr__(self) -> str:
        return f"VersionedSecret({self.name!r})"


def _named(error: SetecError, what: str) -> SetecError:
    """``error`` with ``what`` (naming the secret) in front of its message, keeping the
    sentinel class so callers can still catch NotFound or AccessDenied."""
    for cls in (NotFound, AccessDenied, ValueNotChanged, VersionClaimed):
        if isinstance(error, cls):
            return cls(f"{what}: {error}")
    return UnavailableError(f"{what}: {error}")


def _grouped(errors: Mapping[str, SetecError | None]) -> str:
    """``"a", "b": <error>; "c": <other error>``: secrets that failed alike share one
    line (a server that is down fails them all the same way)."""
    by_message: dict[str, list[str]] = {}
    for name in sorted(errors):
        error = errors[name]
        by_message.setdefault(str(error) if error is not None else "not asked in time", []).append(
            name
        )
    return "; ".join(f"{_names(names)}: {message}" for message, names in by_message.items())


def _source(client: StoreClient) -> str:
    """Where ``client`` fetches from, for a message: a Client's server URL (which carries
    no credentials), or its repr."""
    server = getattr(client, "server", None)
    return server if isinstance(server, str) else repr(client)


def _duration(seconds: float) -> str:
    return f"{seconds:.1f}".removesuffix(".0") + " s"


def _names(names: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(f'"{n}"' for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
