"""The demo target's ``GET /metrics`` page, in the Prometheus text format.

Everything on the page is computed when it is asked for: the process figures
(resident and virtual memory, CPU seconds, open descriptors, from ``/proc``) by the
``prometheus_client`` library's own process collector, and the demo's counts read
from the running :class:`~harness.demo.server.DemoServer`. Serving a request
therefore costs nothing extra; only a scrape pays, about a millisecond.

Each server has its own registry rather than the library's global one, so several
servers in one interpreter (as in the tests) do not collide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from .server import DemoServer

METRICS_PATH = "/metrics"
CONTENT_TYPE_HEADER = b"Content-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
"""The text format version every Prometheus server reads (all names here are plain
ASCII, so the newer 1.0.0 variant would add nothing)."""


class _DemoCollector(Collector):
    """The demo's request, connection and fault counts, read at scrape time."""

    def __init__(self, server: DemoServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        server = self._server
        faults = server.faults
        served = CounterMetricFamily(
            "demo_requests_served",
            "Responses written, as counted in /_demo/stats (not /metrics itself).",
        )
        served.add_metric([], server.requests_served)
        yield served
        by_status = CounterMetricFamily(
            "demo_responses", "Responses written, by status code.", labels=["status"]
        )
        for status, count in sorted(server.by_status.items()):
            by_status.add_metric([str(status)], count)
        yield by_status
        accepted = CounterMetricFamily(
            "demo_connections_accepted", "Connections accepted since start."
        )
        accepted.add_metric([], server.connections_total)
        yield accepted
        yield GaugeMetricFamily(
            "demo_connections_open",
            "Connections open now.",
            value=len(server.connections),
        )
        yield GaugeMetricFamily(
            "demo_leaked_bytes",
            "Memory kept on purpose by --leak-bytes-per-request.",
            value=faults.leaked_bytes,
        )
        injected = CounterMetricFamily(
            "demo_errors_injected", "API requests failed on purpose (--error-rate)."
        )
        injected.add_metric([], faults.errors_injected)
        yield injected
        yield GaugeMetricFamily(
            "demo_requests_in_service",
            "API requests holding a worker slot now (with --service-ms).",
            value=faults.in_service,
        )
        yield GaugeMetricFamily(
            "demo_requests_waiting",
            "API requests waiting for a worker slot now (with --service-ms).",
            value=faults.waiting,
        )


class DemoMetrics:
    """The registry behind one server's ``/metrics`` page."""

    def __init__(self, server: DemoServer) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.registry.register(_DemoCollector(server))

    def render(self) -> bytes:
        """The page as it stands now."""
        return generate_latest(self.registry)
