"""Prometheus metrics of the HTTP front (prometheus-client).

Each app gets its own :class:`~prometheus_client.CollectorRegistry`, so two servers in
one process (tests do this) do not share counters. Labels carry the route (``/api/get``)
and status classes, never a secret name or value. Beside setec's own metrics the
registry has prometheus-client's standard collectors of the process (``process_*``:
CPU, memory, open file descriptors), the Python runtime (``python_info``) and its
garbage collector (``python_gc_*``), read at scrape time.
"""

from __future__ import annotations

import bisect
import threading
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from setec_core.database import Database
from setec_core.errors import StorageError

#: Latency buckets from 0.25 ms to 5 s: a get with its audit fsync takes about 1 ms.
LATENCY_BUCKETS = (
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)


class _DatabaseCollector(Collector):
    """Reads the database's counters at scrape time (nothing to update per request)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        log = self._db.audit_log
        fsyncs = CounterMetricFamily("setec_audit_fsyncs", "Audit log fsyncs done.")
        fsyncs.add_metric([], log.fsyncs)
        entries = CounterMetricFamily("setec_audit_entries", "Audit entries written.")
        entries.add_metric([], log.entries_written)
        healthy = GaugeMetricFamily(
            "setec_audit_healthy", "1 if the audit log accepts writes, 0 if it refuses them."
        )
        healthy.add_metric([], 0 if log.failure else 1)
        revision = GaugeMetricFamily(
            "setec_store_revision",
            "The store's revision counter (while the store cannot be read, the last "
            "revision this server read).",
        )
        try:
            current = self._db.revision
        except StorageError:
            # The store is down: the scrape must still answer, or the metrics that say
            # so (setec_store_reachable) could never be read.
            current = self._db.synced_revision
        revision.add_metric([], current)
        return [fsyncs, entries, healthy, revision]


class _BackupCollector(Collector):
    """Reads a :class:`~setec_core.backup.loop.BackupLoop`'s counters at scrape time."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    def collect(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        loop = self._loop
        taken = CounterMetricFamily("setec_backups", "Backups taken and stored.")
        taken.add_metric([], loop.taken)
        failures = CounterMetricFamily("setec_backup_failures", "Backups that failed.")
        failures.add_metric([], loop.failures)
        last = GaugeMetricFamily(
            "setec_backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup (0: none yet).",
        )
        last.add_metric([], loop.last_success)
        size = GaugeMetricFamily("setec_backup_last_size_bytes", "Size of the last backup.")
        size.add_metric([], loop.last_size)
        seconds = GaugeMetricFamily(
            "setec_backup_last_duration_seconds", "How long the last backup took."
        )
        seconds.add_metric([], loop.last_seconds)
        return [taken, failures, last, size, seconds]


class _FollowerCollector(Collector):
    """Reads a :class:`~setec_core.follower.Follower`'s state at scrape time."""

    def __init__(self, follower: Any) -> None:
        self._follower = follower

    def collect(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        follower = self._follower
        reachable = GaugeMetricFamily(
            "setec_store_reachable",
            "1 while the store can be read, 0 while this server serves reads from memory "
            "alone (degraded).",
        )
        reachable.add_metric([], 0 if follower.failure else 1)
        stale = GaugeMetricFamily(
            "setec_store_stale_seconds",
            "Seconds since the store was last read: how far behind other servers' writes "
            "this one may be.",
        )
        stale.add_metric([], follower.stale_seconds)
        catch_ups = CounterMetricFamily(
            "setec_store_catch_ups", "Times this server read other servers' commits."
        )
        catch_ups.add_metric([], follower.catch_ups)
        return [reachable, stale, catch_ups]


class _FrontCollector(Collector):
    """Reads the HTTP front's :class:`~setec_core.http.front.FrontStats` at scrape time."""

    def __init__(self, stats: Any) -> None:
        self._stats = stats

    def collect(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        stats = self._stats
        open_now = GaugeMetricFamily("setec_http_connections_open", "Connections open now.")
        open_now.add_metric([], stats.open)
        accepted = CounterMetricFamily("setec_http_connections_accepted", "Connections accepted.")
        accepted.add_metric([], stats.accepted)
        closed = CounterMetricFamily(
            "setec_http_connections_closed",
            "Connections closed by the server, by reason (idle, read-timeout, evicted, "
            "over-cap, handshake-timeout, refused-CODE, ...).",
            labels=["reason"],
        )
        for reason, count in sorted(dict(stats.closed).items()):
            closed.add_metric([reason], count)
        refused = CounterMetricFamily(
            "setec_http_front_refused",
            "Requests the HTTP front answered itself (never reaching the app), by status.",
            labels=["code"],
        )
        for code, count in sorted(dict(stats.refused).items()):
            refused.add_metric([str(code)], count)
        return [open_now, accepted, closed, refused]


class _WatchCollector(Collector):
    """Reads a :class:`~setec_core.watch.Watches`' counts at scrape time."""

    def __init__(self, watches: Any) -> None:
        self._watches = watches

    def collect(self) -> list[CounterMetricFamily | GaugeMetricFamily]:
        watches = self._watches
        held = GaugeMetricFamily(
            "setec_watches", "Watches (/api/watch long polls) waiting for a change now."
        )
        held.add_metric([], watches.open)
        refused = CounterMetricFamily(
            "setec_watches_refused",
            "Watches refused with 503 because --max-watches were waiting already.",
        )
        refused.add_metric([], watches.refused)
        return [held, refused]


class _Tally:
    """One thread's counts: only that thread writes them, so they need no lock (a
    prometheus_client metric takes a lock per update, six per request)."""

    __slots__ = ("calls", "latency", "responses")

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.responses: dict[tuple[str, int], int] = {}
        #: route -> a count per bucket of LATENCY_BUCKETS, one for +Inf, then the sum.
        self.latency: dict[str, list[float]] = {}


class _Tallies:
    """Every thread's :class:`_Tally`, summed at scrape time."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: list[_Tally] = []
        self._lock = threading.Lock()

    def mine(self) -> _Tally:
        """The calling thread's tally (made on its first request)."""
        tally: _Tally | None = getattr(self._local, "tally", None)
        if tally is None:
            tally = self._local.tally = _Tally()
            with self._lock:
                self._all.append(tally)
        return tally

    def snapshot(self) -> list[_Tally]:
        """Every tally so far (their counts may move on while they are read)."""
        with self._lock:
            return list(self._all)


class _RequestCollector(Collector):
    """Sums the per-thread tallies into ``setec_api_calls_total``,
    ``setec_http_requests_total`` and ``setec_http_request_duration_seconds``."""

    def __init__(self, tallies: _Tallies) -> None:
        self._tallies = tallies

    def collect(self) -> list[CounterMetricFamily | HistogramMetricFamily]:
        calls: dict[str, float] = {}
        responses: dict[tuple[str, int], float] = {}
        latency: dict[str, list[float]] = {}
        for tally in self._tallies.snapshot():
            for route, n in list(tally.calls.items()):
                calls[route] = calls.get(route, 0) + n
            for key, n in list(tally.responses.items()):
                responses[key] = responses.get(key, 0) + n
            for route, histogram in list(tally.latency.items()):
                total = latency.setdefault(route, [0.0] * len(histogram))
                for i, value in enumerate(list(histogram)):
                    total[i] += value
        api = CounterMetricFamily("setec_api_calls", "API calls by method.", labels=["method"])
        for route, count in sorted(calls.items()):
            api.add_metric([route], count)
        answered = CounterMetricFamily(
            "setec_http_requests",
            "HTTP responses by route, status code and status class.",
            labels=["method", "code", "class"],
        )
        for (route, code), count in sorted(responses.items()):
            answered.add_metric([route, str(code), f"{code // 100}xx"], count)
        seconds = HistogramMetricFamily(
            "setec_http_request_duration_seconds",
            "Time from request to response, by route.",
            labels=["method"],
        )
        for route, histogram in sorted(latency.items()):
            cumulative, buckets = 0.0, []
            bounds = [*map(str, LATENCY_BUCKETS), "+Inf"]
            for bound, in_bucket in zip(bounds, histogram, strict=False):
                cumulative += in_bucket
                buckets.append((bound, cumulative))
            seconds.add_metric([route], buckets, sum_value=histogram[-1])
        return [api, answered, seconds]


class ServerMetrics:
    """The metrics one app exports.

    * ``setec_api_calls_total{method}``: every ``/api/*`` request (Go's
      ``counter_api_calls``), counted before any check.
    * ``setec_http_requests_total{method, code, class}``: every response by route,
      status and status class (``2xx``, ``3xx``, ``4xx``, ``5xx``).
    * ``setec_http_request_duration_seconds{method}``: latency histogram per route.
    * ``setec_audit_sync_seconds``: latency histogram of audit fsyncs (group commits).
    * ``setec_audit_fsyncs_total``, ``setec_audit_entries_total``,
      ``setec_audit_healthy``, ``setec_store_revision``: read from the database.
    * with :meth:`watch_watches`, the watches waiting and refused; with
      :meth:`watch_front`, the HTTP front's connections; with
      :meth:`watch_backups`, the backup loop's counters.
    * prometheus-client's standard ``process_*`` (Linux only: CPU seconds, resident
      and virtual memory, open and maximum file descriptors, start time),
      ``python_info`` and ``python_gc_*`` metrics, of the process serving the app.
    """

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self._tallies = _Tallies()
        self.registry.register(_RequestCollector(self._tallies))
        self.audit_sync = Histogram(
            "setec_audit_sync_seconds",
            "Duration of audit log fsyncs (one per group commit).",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        #: The requests being served, by a ticket each: the app adds and removes its
        #: own, and the gauge counts them at scrape time (a dict's set and delete need
        #: no lock, where a Gauge's inc and dec each take one).
        self.requests_in_flight: dict[int, None] = {}
        self.in_flight = Gauge(
            "setec_http_requests_in_flight", "Requests being served.", registry=self.registry
        )
        self.in_flight.set_function(lambda: len(self.requests_in_flight))
        self.registry.register(_DatabaseCollector(db))
        # Registered on this app's registry, not prometheus-client's global one, which
        # nothing here serves; each reads the process only when scraped. /metrics needs
        # no identity, and these export numbers and Python's version only: no path,
        # command line or environment (docs/server.md, "Operating it").
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        db.audit_log.on_sync = self.audit_sync.observe

    def watch_backups(self, loop: Any) -> None:
        """Export the counters of a :class:`~setec_core.backup.loop.BackupLoop`:
        ``setec_backups_total``, ``setec_backup_failures_total``,
        ``setec_backup_last_success_timestamp_seconds``, ``setec_backup_last_size_bytes``
        and ``setec_backup_last_duration_seconds``."""
        self.registry.register(_BackupCollector(loop))

    def watch_follower(self, follower: Any) -> None:
        """Export the state of a :class:`~setec_core.follower.Follower`:
        ``setec_store_reachable``, ``setec_store_stale_seconds`` and
        ``setec_store_catch_ups_total``."""
        self.registry.register(_FollowerCollector(follower))

    def watch_watches(self, watches: Any) -> None:
        """Export the counts of a :class:`~setec_core.watch.Watches`: ``setec_watches``
        (waiting now) and ``setec_watches_refused_total`` (503s)."""
        self.registry.register(_WatchCollector(watches))

    def watch_front(self, stats: Any) -> None:
        """Export the HTTP front's connection counters (a
        :class:`~setec_core.http.front.FrontStats`): ``setec_http_connections_open``,
        ``setec_http_connections_accepted_total``,
        ``setec_http_connections_closed_total{reason}`` and
        ``setec_http_front_refused_total{code}``."""
        self.registry.register(_FrontCollector(stats))

    def observe(self, route: str, code: int, seconds: float) -> None:
        """Count one response to ``route`` with status ``code`` taking ``seconds``."""
        tally = self._tallies.mine()
        key = (route, code)
        tally.responses[key] = tally.responses.get(key, 0) + 1
        histogram = tally.latency.get(route)
        if histogram is None:
            histogram = tally.latency[route] = [0] * (len(LATENCY_BUCKETS) + 1) + [0.0]
        histogram[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    def call(self, route: str) -> None:
        """Count one call of the API method ``route`` (before any check)."""
        calls = self._tallies.mine().calls
        calls[route] = calls.get(route, 0) + 1

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
