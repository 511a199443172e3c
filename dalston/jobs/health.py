"""The orchestrator's small HTTP listener: `/health` (liveness), `/ready` (Redis answers), `/metrics`.

WHY an HTTP listener on a process that serves no API: Kubernetes probes and Prometheus scrapes are
HTTP, and an orchestrator that lost Redis or wedged its event loop should be visible without reading
its log. It follows the engine server's and the gateway's conventions: JSON `{"status": ...}`,
`/ready` 503 with the reason, the Prometheus text format, no key needed (no job data is shown; keep
the port on the pod network).

- `/health` answers 200 while the event loop runs: it never depends on Redis, so a Redis outage
  does not make Kubernetes restart every orchestrator (they already retry with backoff).
- `/ready` is 200 when Redis answers a PING within `READY_TIMEOUT`, 503 `redis_unavailable` when it
  does not, 503 `stopping` after SIGTERM.
- `/metrics`: this process's counters (events handled, jobs finished, webhook tries, prepare time)
  and, read from Redis at scrape time, the deployment's gauges (jobs queued/running, tasks per
  variant, events waiting, reclaims). Every orchestrator reports the same deployment gauges: in
  PromQL take `max` of them across orchestrators, `sum` of the per-process counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dalston.jobs import model as m
from dalston.jobs.streams import text
from dalston.server.metrics import CONTENT_TYPE
from dalston.shared_redis import UNAVAILABLE_ERRORS

log = logging.getLogger("dalston.jobs")

#: What a probe or scrape treats as "Redis did not answer".
_DOWN: tuple[type[BaseException], ...] = (*UNAVAILABLE_ERRORS, asyncio.TimeoutError)
READY_TIMEOUT = 1.5  # seconds for Redis to answer /ready's PING (probes time out at 3 s)


@dataclass
class Snapshot:
    """The deployment's job state read from Redis for one scrape (empty when Redis did not answer)."""

    redis_up: bool = False
    jobs: dict[str, int] = field(default_factory=dict)                    # active status -> jobs
    tasks: dict[str, tuple[int, int]] = field(default_factory=dict)       # engine id -> (in stream, taken)
    events: tuple[int, int] = (0, 0)                                      # (in stream, being handled)
    reclaims: dict[str, int] = field(default_factory=dict)                # stream -> entries taken over


async def read_snapshot(redis: aioredis.Redis, engines: Sequence[str]) -> Snapshot:
    """One pipeline: SCARD of the active-job sets, XLEN + XPENDING of every task stream and the events."""
    streams = [(engine, m.task_stream(engine), m.WORKER_GROUP) for engine in engines]
    streams.append(("", m.EVENTS_STREAM, m.ORCHESTRATOR_GROUP))
    pipe = redis.pipeline(transaction=False)
    for status in ("queued", "running"):
        pipe.scard(m.status_set_key(status))
    for _, stream, _group in streams:
        pipe.xlen(stream)
    pipe.hgetall(m.RECLAIMS_KEY)
    replies = await pipe.execute()
    pending = []
    for _, stream, group in streams:
        try:  # a separate call each: XPENDING on a stream or group that does not exist yet is an error
            summary = await redis.xpending(stream, group)
            pending.append(int(summary["pending"]) if summary else 0)
        except aioredis.ResponseError:
            pending.append(0)
    snap = Snapshot(redis_up=True, jobs={"queued": int(replies[0]), "running": int(replies[1])})
    lengths = [int(n) for n in replies[2:2 + len(streams)]]
    for (engine, _, _), length, taken in zip(streams[:-1], lengths, pending):
        snap.tasks[engine] = (length, taken)
    snap.events = (lengths[-1], pending[-1])
    snap.reclaims = {text(k): int(v) for k, v in (replies[-1] or {}).items()}
    return snap


class _SnapshotCollector(Collector):
    """Renders the snapshot `/metrics` read just before (Prometheus collectors cannot await Redis)."""

    def __init__(self) -> None:
        self.snapshot = Snapshot()

    def collect(self) -> Iterable[Metric]:
        s = self.snapshot
        yield GaugeMetricFamily("dalston_orchestrator_redis_up", "1 if Redis answered this scrape, else 0",
                                value=1.0 if s.redis_up else 0.0)
        if not s.redis_up:
            return
        jobs = GaugeMetricFamily("dalston_jobs", "jobs queued or running in the deployment", labels=["status"])
        for status, count in sorted(s.jobs.items()):
            jobs.add_metric([status], count)
        yield jobs
        outstanding = GaugeMetricFamily("dalston_job_tasks_outstanding",
                                        "chunk tasks in a variant's stream, waiting or being run (XLEN)",
                                        labels=["engine_id"])
        running = GaugeMetricFamily("dalston_job_tasks_running", "chunk tasks a worker has taken and not finished",
                                    labels=["engine_id"])
        waiting = GaugeMetricFamily("dalston_job_tasks_waiting", "chunk tasks no worker has taken yet",
                                    labels=["engine_id"])
        for engine, (length, taken) in sorted(s.tasks.items()):
            outstanding.add_metric([engine], length)
            running.add_metric([engine], taken)
            waiting.add_metric([engine], max(0, length - taken))
        yield from (outstanding, running, waiting)
        yield GaugeMetricFamily("dalston_job_events_outstanding", "job events not yet handled by an orchestrator",
                                value=s.events[0])
        reclaims = CounterMetricFamily("dalston_job_reclaims", "stream entries taken over from a dead consumer "
                                       "(XAUTOCLAIM), deployment-wide, per stream", labels=["stream"])
        for stream, count in sorted(s.reclaims.items()):
            reclaims.add_metric([stream], count)
        yield reclaims


class OrchestratorMetrics:
    """This orchestrator's counters plus the deployment snapshot; one registry per instance (tests run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter("dalston_orchestrator_events", "job events this orchestrator handled, by type",
                              ["type"], registry=self.registry)
        self.jobs_finished = Counter("dalston_orchestrator_jobs_finished", "jobs this orchestrator saw finish, by status",
                                     ["status"], registry=self.registry)
        self.webhook_deliveries = Counter("dalston_orchestrator_webhook_deliveries",
                                          "webhook POSTs tried, by outcome (delivered: a 2xx answer)", ["outcome"],
                                          registry=self.registry)
        self.prepare_seconds = Histogram("dalston_orchestrator_prepare_seconds", "decode and cut time per job",
                                         buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
                                         registry=self.registry)
        self._snapshot = _SnapshotCollector()
        self.registry.register(self._snapshot)

    def render(self, snapshot: Snapshot) -> bytes:
        self._snapshot.snapshot = snapshot
        return generate_latest(self.registry)


class HealthServer:
    """Serves the three routes on an already-bound socket, inside the orchestrator's event loop."""

    def __init__(self, redis: aioredis.Redis, metrics: OrchestratorMetrics, engines: Sequence[str],
                 sock: socket.socket, name: str) -> None:
        self.redis, self.metrics, self.engines, self.sock, self.name = redis, metrics, list(engines), sock, name
        self.stopping = False
        self.started = time.time()
        app = Starlette(routes=[Route("/health", self._health), Route("/ready", self._ready),
                                Route("/metrics", self._metrics)])
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
        self.server = _QuietServer(config)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self.server.serve(sockets=[self.sock]))
        host, port = self.sock.getsockname()[:2]
        log.info("orchestrator_http_listening host=%s port=%d routes=/health,/ready,/metrics", host, port)

    async def stop(self) -> None:
        self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)

    async def _health(self, _: Request) -> Response:
        return JSONResponse({"status": "ok", "name": self.name, "uptime_s": round(time.time() - self.started, 1)})

    async def _ready(self, _: Request) -> Response:
        if self.stopping:
            return JSONResponse({"status": "stopping", "name": self.name}, status_code=503)
        try:
            await asyncio.wait_for(self.redis.ping(), READY_TIMEOUT)
        except _DOWN as exc:
            return JSONResponse({"status": "redis_unavailable", "name": self.name,
                                 "error": f"{type(exc).__name__}: {exc}"[:300]}, status_code=503)
        return JSONResponse({"status": "ready", "name": self.name})

    async def _metrics(self, _: Request) -> Response:
        try:
            snapshot = await asyncio.wait_for(read_snapshot(self.redis, self.engines), READY_TIMEOUT * 2)
        except _DOWN:
            snapshot = Snapshot()  # redis_up 0; this process's counters are still exported
        return Response(self.metrics.render(snapshot), media_type=CONTENT_TYPE)


class _QuietServer(uvicorn.Server):
    """uvicorn without its signal handlers: the orchestrator owns SIGTERM/SIGINT and stops this itself."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the orchestrator starts, so a taken port is a clear error at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(128)
    sock.setblocking(False)
    return sock
