"""Prometheus metrics of one service process (prometheus_client), served at GET /metrics.

`memcollab_http_requests_total{method, route, status}` counts requests and
`memcollab_http_request_duration_seconds{method, route}` times them. `route` is the
route's path template (`/v1/records/{record_id}`), never the raw path, so ids do not
multiply the series (nor do unusual methods: `other`); requests that match no route
count under `route="unmatched"`. `GuardCollector` adds the write path's counters
(server/guard.py): `memcollab_memory_refusals_total{reason}` and the totals of records
stored, constraints merged, quarantined and released, over every namespace. Each app has
its own registry, so several apps in one process (tests) do not collide.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from memcollab.memory.poison import POISON_REASONS
from memcollab.server.guard import COUNTED, REFUSED, CounterStore

log = logging.getLogger("memcollab.server")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The registry and the two request metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "memcollab_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "memcollab_http_request_duration_seconds",
            "Time from receiving a request to sending the end of its response.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=self.registry,
        )


class MetricsMiddleware:
    """Counts and times every HTTP request (outermost, so refusals count too)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # an exception with no response sent counts as a server error

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"  # clients choose methods
            self.metrics.requests.labels(method, route, str(status)).inc()
            self.metrics.latency.labels(method, route).observe(time.perf_counter() - start)


class GuardCollector(Collector):
    """/metrics: the write path's counters over every namespace, read from the database
    at each scrape (so every worker reports the same totals)."""

    def __init__(self, counters: CounterStore) -> None:
        self.counters = counters

    def collect(self) -> Iterator[CounterMetricFamily]:
        try:
            totals = self.counters.totals()
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail on a busy database
            log.warning("guard counters unavailable: %s", exc)
            return
        refusals = CounterMetricFamily(
            "memcollab_memory_refusals",
            "Records the content screen refused (REST add and import, MCP), by reason.",
            labels=["reason"],
        )
        for reason in POISON_REASONS:
            refusals.add_metric([reason], totals.get(REFUSED + reason, 0))
        yield refusals
        helps = {
            "stored": "Records stored through the service's add paths.",
            "merged": "Submitted constraints merged into a near-duplicate (dedup on add).",
            "quarantined": "Records stored quarantined (from untrusted keys).",
            "released": "Quarantined records released through the service (admin key).",
            "auto_released": "Quarantined records released by corroboration.",
        }
        for name in COUNTED:
            family = CounterMetricFamily(f"memcollab_memory_{name}", helps[name])
            family.add_metric([], totals.get(name, 0))
            yield family
