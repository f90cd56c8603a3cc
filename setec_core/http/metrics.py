"""Prometheus metrics of the HTTP front (prometheus-client).

Each app gets its own :class:`~prometheus_client.CollectorRegistry`, so two servers in
one process (tests do this) do not share counters. Labels carry the route (``/api/get``)
and status classes, never a secret name or value.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from setec_core.database import Database

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
        revision = GaugeMetricFamily("setec_store_revision", "The store's revision counter.")
        revision.add_metric([], self._db.revision)
        return [fsyncs, entries, healthy, revision]


class _BackupCollector(Collector):
    """Reads a :class:`~setec_core.backups.BackupLoop`'s counters at scrape time."""

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
    * with :meth:`watch_front`, the HTTP front's connections; with
      :meth:`watch_backups`, the backup loop's counters.
    """

    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.api_calls = Counter(
            "setec_api_calls", "API calls by method.", ["method"], registry=self.registry
        )
        self.responses = Counter(
            "setec_http_requests",
            "HTTP responses by route, status code and status class.",
            ["method", "code", "class"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "setec_http_request_duration_seconds",
            "Time from request to response, by route.",
            ["method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
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
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}
        self._calls: dict[str, Any] = {}
        self.registry.register(_DatabaseCollector(db))
        db.audit_log.on_sync = self.audit_sync.observe

    def watch_backups(self, loop: Any) -> None:
        """Export the counters of a :class:`~setec_core.backups.BackupLoop`:
        ``setec_backups_total``, ``setec_backup_failures_total``,
        ``setec_backup_last_success_timestamp_seconds``, ``setec_backup_last_size_bytes``
        and ``setec_backup_last_duration_seconds``."""
        self.registry.register(_BackupCollector(loop))

    def watch_front(self, stats: Any) -> None:
        """Export the HTTP front's connection counters (a
        :class:`~setec_core.http.front.FrontStats`): ``setec_http_connections_open``,
        ``setec_http_connections_accepted_total``,
        ``setec_http_connections_closed_total{reason}`` and
        ``setec_http_front_refused_total{code}``."""
        self.registry.register(_FrontCollector(stats))

    def observe(self, route: str, code: int, seconds: float) -> None:
        """Count one response to ``route`` with status ``code`` taking ``seconds``."""
        # Label lookups cost more than the updates, so the children are cached (routes
        # and codes are few: unknown paths are all "other").
        key = (route, code)
        children = self._children.get(key)
        if children is None:
            children = (
                self.responses.labels(route, str(code), f"{code // 100}xx"),
                self.latency.labels(route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def call(self, route: str) -> None:
        """Count one call of the API method ``route`` (before any check)."""
        child = self._calls.get(route)
        if child is None:
            child = self._calls[route] = self.api_calls.labels(route)
        child.inc()

    def render(self) -> bytes:
        """Return the Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
