"""Prometheus metrics of one engine server, in a registry of its own per app (tests run several per process).

The admission gauges are read from `Admission` at scrape time, so they can never drift from the
budget they describe. `dalston_requests_in_flight`, `dalston_requests_queued` and
`dalston_realtime_sessions_active` are the names autoscalers (KEDA) query: keep them stable.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dalston.admission import Admission

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _AdmissionCollector(Collector):
    def __init__(self, admission: Admission) -> None:
        self.admission = admission

    def collect(self) -> Iterable[Metric]:
        a = self.admission
        yield GaugeMetricFamily("dalston_requests_in_flight", "batch requests holding an inference slot", value=a.in_flight)
        yield GaugeMetricFamily("dalston_requests_queued", "batch requests waiting for an inference slot", value=a.queued)
        yield GaugeMetricFamily("dalston_realtime_sessions_active", "realtime sessions holding an inference slot",
                                value=a.sessions_active)
        yield GaugeMetricFamily("dalston_max_concurrency", "inference slots shared by requests and sessions",
                                value=a.limits.max_concurrency)
        rejections = CounterMetricFamily("dalston_admission_rejections", "requests and sessions refused for capacity",
                                         labels=["reason"])
        for reason in ("queue_full", "no_free_slot"):
            rejections.add_metric([reason], a.rejections[reason])
        yield rejections


class ServerMetrics:
    def __init__(self, engine_id: str, admission: Admission) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("dalston_requests_total", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)
        self.latency = Histogram("dalston_request_seconds", "request latency, by route", ["route"],
                                 buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                                 registry=self.registry)
        self.audio_seconds = Counter("dalston_audio_seconds_total", "seconds of audio transcribed",
                                     registry=self.registry)
        self.rtf = Histogram("dalston_real_time_factor", "inference time / audio duration, per request",
                             buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5),
                             registry=self.registry)
        self.registry.register(_AdmissionCollector(admission))
        self.realtime_batch_size = Histogram(
            "dalston_realtime_batch_size", "realtime sessions served by one batched model step",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=self.registry)
        info = Gauge("dalston_engine_info", "the variant this server runs (value 1)", ["engine_id"],
                     registry=self.registry)
        info.labels(engine_id=engine_id).set(1)

    def observe_inference(self, audio_seconds: float, inference_seconds: float) -> None:
        self.audio_seconds.inc(audio_seconds)
        if audio_seconds > 0:
            self.rtf.observe(inference_seconds / audio_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
