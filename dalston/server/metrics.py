"""Prometheus metrics of one engine server, in a registry of its own per app (tests run several per process)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    def __init__(self, engine_id: str, in_flight: Callable[[], float], queued: Callable[[], float]) -> None:
        self.registry = CollectorRegistry()
        labels = {"engine_id": engine_id}
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
        in_flight_gauge = Gauge("dalston_in_flight", "inferences running now", registry=self.registry)
        in_flight_gauge.set_function(in_flight)
        queued_gauge = Gauge("dalston_queued", "requests waiting for an inference slot", registry=self.registry)
        queued_gauge.set_function(queued)
        self.realtime_batch_size = Histogram(
            "dalston_realtime_batch_size", "realtime sessions served by one batched model step",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64), registry=self.registry)
        info = Gauge("dalston_engine_info", "the variant this server runs (value 1)", list(labels),
                     registry=self.registry)
        info.labels(**labels).set(1)

    def observe_inference(self, audio_seconds: float, inference_seconds: float) -> None:
        self.audio_seconds.inc(audio_seconds)
        if audio_seconds > 0:
            self.rtf.observe(inference_seconds / audio_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
