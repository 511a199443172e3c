"""Prometheus metrics of the gateway, per model (engine id), in a registry of its own per app.

A per-app registry (not the process-global default) lets tests run several gateways in one process
and keeps the engine's own metrics separate when both run in one interpreter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class _LiveInstances(Collector):
    """Live instance counts computed at scrape time, so an expired instance never lingers in a gauge."""

    def __init__(self, counts: Callable[[], dict[str, int]]) -> None:
        self._counts = counts

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily("dalston_gateway_live_instances", "registered engine instances per model",
                                   labels=["model"])
        for model, count in sorted(self._counts().items()):
            family.add_metric([model], count)
        yield family


class RegistryCollector(Collector):
    """The instance registry's health at scrape time: is the shared registry reachable, how fresh is it."""

    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self._status = status

    def collect(self) -> Iterable[GaugeMetricFamily]:
        status = self._status()
        available = GaugeMetricFamily("dalston_gateway_registry_available",
                                      "1 if the instance registry is reachable (always 1 in memory), else 0",
                                      labels=["backend"])
        available.add_metric([status["backend"]], 1.0 if status["available"] else 0.0)
        yield available
        if status.get("last_sync_age_s") is not None:
            yield GaugeMetricFamily("dalston_gateway_registry_sync_age_seconds",
                                    "seconds since this replica last read the shared registry",
                                    value=status["last_sync_age_s"])


class GatewayMetrics:
    def __init__(self, live_counts: Callable[[], dict[str, int]]) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dalston_gateway_requests_total", "requests routed, by model and HTTP status",
                                ["model", "status"], registry=self.registry)
        self.latency = Histogram("dalston_gateway_request_seconds",
                                 "time from request start to the end of the upstream response", ["model"],
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                                 registry=self.registry)
        self.in_flight = Gauge("dalston_gateway_in_flight", "requests and sessions being proxied", ["model"],
                               registry=self.registry)
        self.upstream_errors = Counter("dalston_gateway_upstream_errors_total",
                                       "failed upstream calls by kind (connect, timeout, disconnect)",
                                       ["model", "kind"], registry=self.registry)
        self.registry.register(_LiveInstances(live_counts))

    def render(self) -> bytes:
        return generate_latest(self.registry)
