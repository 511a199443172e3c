"""The orchestrator: turns job events into work. Several may run; each event is handled by one of them.

Events (stream `dalston:events`, group `orchestrators`) and what handling one does:

  submitted      prepare: decode the upload to 16 kHz mono (the audio-prepare stage's decoder and
                 duration limit), cut it at silences into chunks of at most `chunk_seconds` and store
                 them as it reads (`dalston.jobs.prepare`: memory bounded by the chunk, not the file), then atomically mark the job running and enqueue one task per chunk on the
                 variant's stream (`dalston:tasks:<engine id>`), which every live replica reads.
  chunk_done     count the chunk once (a re-run chunk is not counted twice); when all are done,
                 merge the stored chunk transcripts and mark the job succeeded.
  chunk_failed   re-enqueue the chunk (up to `max_attempts`, for errors worth retrying), else fail the
                 job with the engine's error.
  finished       deliver the webhook, delete the intermediate files, set the finished job's TTL.

Every handler is idempotent, because delivery is at-least-once: an orchestrator killed mid-event
leaves the event pending and another orchestrator reclaims it after the visibility timeout and
runs it again (re-preparing writes the same chunk files; a second merge writes the same result;
status changes that already happened are no-ops in `JobStore.advance`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from dalston.audio import AudioError
from dalston.jobs import model as m
from dalston.jobs.health import OrchestratorMetrics
from dalston.jobs.merge import merge, transcript_from_dict
from dalston.jobs.prepare import prepare_chunks
from dalston.jobs.storage import Storage
from dalston.jobs.store import JobStore
from dalston.jobs.streams import Delivery, StreamConsumer
from dalston.jobs.webhooks import WebhookPolicy, deliver

log = logging.getLogger("dalston.jobs")

_EVENT_TYPES = frozenset({"submitted", "chunk_done", "chunk_failed", "finished"})


@dataclass(frozen=True)
class OrchestratorConfig:
    chunk_seconds: float = 300.0          # at most this long per chunk (clamped to each variant's limit)
    max_audio_seconds: float = 14400.0    # the audio-prepare variant's max_audio_duration by default
    variant_limits: dict[str, float] | None = None  # engine id -> capabilities.max_audio_duration
    max_attempts: int = 3                 # tries per chunk for retryable engine errors
    visibility_timeout: float = 60.0
    max_deliveries: int = 5               # deliveries of one event before it is given up
    concurrency: int = 8                  # events handled at once
    finished_ttl: int = 7 * 24 * 3600     # seconds a finished job stays readable
    webhook: WebhookPolicy | None = None  # None: jobs with a webhook_url fail delivery (no secret)
    task_engines: tuple[str, ...] = ()    # batch variants whose task streams /metrics reports


class Orchestrator:
    def __init__(self, redis: aioredis.Redis, storage: Storage, config: OrchestratorConfig,
                 name: str | None = None) -> None:
        self.redis, self.storage, self.config = redis, storage, config
        self.store = JobStore(redis)
        self.metrics = OrchestratorMetrics()
        self.name = name or f"orchestrator-{socket.gethostname()}-{os.getpid()}"
        self.executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="prepare")
        self.consumer = StreamConsumer(redis, m.EVENTS_STREAM, m.ORCHESTRATOR_GROUP, self.name, handler=self.handle,
                                       on_exhausted=self.give_up, capacity=lambda: config.concurrency,
                                       visibility_timeout=config.visibility_timeout,
                                       max_deliveries=config.max_deliveries)

    async def run(self) -> None:
        log.info("orchestrator_started name=%s chunk_seconds=%g visibility_timeout=%g max_attempts=%d ttl=%d",
                 self.name, self.config.chunk_seconds, self.config.visibility_timeout, self.config.max_attempts,
                 self.config.finished_ttl)
        try:
            await self.consumer.run()
            await self.consumer.drain(timeout=10)
        finally:
            self.executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ dispatch
    async def handle(self, event: Delivery) -> None:
        kind, job_id = event.fields.get("type"), event.fields.get("job", "")
        self.metrics.events.labels(type=kind if kind in _EVENT_TYPES else "unknown").inc()
        job = await self.store.get(job_id)
        if job is None:
            log.info("event_dropped type=%s job_id=%s reason=job_gone", kind, job_id)
        elif kind == "submitted":
            await self.prepare(job)
        elif kind == "chunk_done":
            await self.chunk_done(job, event.fields)
        elif kind == "chunk_failed":
            await self.chunk_failed(job, event.fields)
        elif kind == "finished":
            await self.finished(job)
        else:
            log.warning("event_unknown type=%s entry=%s", kind, event.entry_id)
        await self.consumer.ack(event)

    async def give_up(self, event: Delivery) -> None:
        job = await self.store.get(event.fields.get("job", ""))
        log.error("event_given_up type=%s job_id=%s deliveries=%d", event.fields.get("type"),
                  event.fields.get("job"), event.deliveries)
        if job is not None:
            await self.store.fail(job, "internal_error", f"the orchestrator failed {event.deliveries} times handling "
                                                         f"'{event.fields.get('type')}' for this job; see its log")
        await self.consumer.ack(event)

    # ------------------------------------------------------------------ prepare
    async def prepare(self, job: m.Job) -> None:
        if job.status != "queued":
            return  # already prepared (this is a redelivery), or cancelled meanwhile
        started = time.time()
        await self.store.set_fields(job.id, {"prepare_started_at": repr(started)})
        limit = self.config.max_audio_seconds
        chunk_limit = min(self.config.chunk_seconds, (self.config.variant_limits or {}).get(job.model, float("inf")))
        loop = asyncio.get_running_loop()
        try:
            plan = await loop.run_in_executor(self.executor, functools.partial(
                prepare_chunks, self.storage, job.id, max_audio_seconds=limit, chunk_seconds=chunk_limit))
        except AudioError as exc:
            log.info("job_failed job_id=%s stage=prepare code=%s", job.id, exc.code)
            await self.store.fail(job, exc.code, exc.message)
            return
        duration = sum(c["duration"] for c in plan)
        self.metrics.prepare_seconds.observe(time.time() - started)
        tasks = [json.dumps({**c, "attempt": 1}) for c in plan]
        moved = await self.store.advance(job, ["queued"], "running", tasks=tasks, fields={
            "duration": repr(duration), "chunks_total": len(plan), "chunks_done": 0, "audio_done": 0,
            "prepare_done_at": repr(time.time())})
        log.info("job_prepared job_id=%s model=%s duration_s=%.1f chunks=%d prepare_s=%.2f enqueued=%s", job.id,
                 job.model, duration, len(plan), time.time() - started, moved)

    # ------------------------------------------------------------------ transcribe progress
    async def chunk_done(self, job: m.Job, fields: dict[str, str]) -> None:
        if job.status != "running":
            return
        index, total = int(fields["chunk"]), int(job.number("chunks_total"))
        done = await self.store.mark_chunk_done(job, index, float(fields.get("duration", "0")))
        log.info("chunk_done job_id=%s chunk=%d done=%d/%d worker=%s", job.id, index, done, total,
                 fields.get("worker", "?"))
        if done >= total:
            await self.merge(job)

    async def chunk_failed(self, job: m.Job, fields: dict[str, str]) -> None:
        if job.status != "running":
            return
        task = json.loads(fields["task"])
        attempt, code, message = int(task.get("attempt", 1)), fields.get("code", "engine_error"), fields.get("error", "")
        if fields.get("retryable") == "1" and attempt < self.config.max_attempts:
            log.warning("chunk_retry job_id=%s chunk=%s attempt=%d error=%r", job.id, task["index"], attempt + 1, message)
            await self.store.advance(job, ["running"], tasks=[json.dumps({**task, "attempt": attempt + 1})])
            return
        log.warning("job_failed job_id=%s stage=transcribe chunk=%s attempts=%d code=%s", job.id, task["index"],
                    attempt, code)
        await self.store.fail(job, code, f"chunk {task['index']} (audio from {task['offset']:.1f} s) failed after "
                                         f"{attempt} attempt(s): {message}")

    # ------------------------------------------------------------------ merge
    async def merge(self, job: m.Job) -> None:
        started = time.time()
        await self.store.set_fields(job.id, {"merge_started_at": repr(started)})
        loop = asyncio.get_running_loop()
        transcript = await loop.run_in_executor(self.executor, self._merge_files, job.id)
        moved = await self.store.advance(job, ["running"], "succeeded", fields={
            "finished_at": repr(time.time()), "language": transcript.get("language") or ""})
        log.info("job_succeeded job_id=%s duration_s=%.1f segments=%d merge_s=%.3f recorded=%s", job.id,
                 transcript["duration"], len(transcript["segments"]), time.time() - started, moved)

    def _merge_files(self, job_id: str) -> dict[str, Any]:
        manifest = json.loads(self.storage.get(m.manifest_key(job_id)))
        parts = []
        for chunk in manifest:
            data = json.loads(self.storage.get(m.chunk_result_key(job_id, int(chunk["index"]))))
            parts.append((float(chunk["offset"]), float(chunk["duration"]), transcript_from_dict(data["transcript"])))
        merged = merge(parts).to_dict()
        self.storage.put(m.result_key(job_id), json.dumps(merged).encode())
        return merged

    # ------------------------------------------------------------------ finished
    async def finished(self, job: m.Job) -> None:
        if job.webhook_url:
            await self._webhook(job)
        for part in ("input", "chunks", "results", "chunks.json"):
            self.storage.delete_prefix(f"jobs/{job.id}/{part}")
        await self.store.expire(job.id, self.config.finished_ttl)
        self.metrics.jobs_finished.labels(status=job.status).inc()
        log.info("job_finished job_id=%s status=%s ttl=%d", job.id, job.status, self.config.finished_ttl)

    async def _webhook(self, job: m.Job) -> None:
        assert job.webhook_url
        deliveries: list[dict[str, Any]] = json.loads(job.fields.get("webhook_deliveries") or "[]")
        if any(d.get("delivered") for d in deliveries):
            return  # a redelivered `finished` event: the receiver already has it

        async def record(outcome: dict[str, Any]) -> None:
            if outcome.get("attempt"):  # a real POST (attempt 0 records that nothing could be sent)
                self.metrics.webhook_deliveries.labels(outcome="delivered" if outcome["delivered"] else "failed").inc()
            deliveries.append(outcome)
            await self.store.set_fields(job.id, {"webhook_deliveries": json.dumps(deliveries)})

        if self.config.webhook is None:
            await record({"attempt": 0, "at": round(time.time(), 3), "delivered": False,
                          "error": "this deployment has no webhook secret (DALSTON_WEBHOOK_SECRET); nothing was sent"})
            return
        await deliver(job.webhook_url, job.public(), self.config.webhook, record)
