"""Queue mode of an engine server (`dalston serve ID --queue`): pull chunk tasks from the variant's stream.

The worker shares the server's model, executor and admission gate with the HTTP routes, and asks
the stream only for as many tasks as there are free inference slots (`max_concurrency` minus what
HTTP requests and its own tasks hold), so queued work never piles up behind one replica while
another idles: what this replica does not take stays in the stream for the next free one.

WHY one task at a time on CPU (`--queue-slots`, default 1 on CPU, `max_concurrency` on a GPU): a chunk
is minutes of audio and one decode already runs on every core the process may use (`cpu_threads`),
so a second chunk at once only halves the speed of both, and takes work another replica could start
now. With two slots each, the last chunks of a job went two to one replica while the other idled
(docs/PERFORMANCE.md, Jobs). Celery's advice for long tasks is the same (prefetch one). A GPU runs
concurrent requests side by side, so there the variant's `max_concurrency` stands.

WHY chunks share chunk 0's language: a job that names no language would otherwise detect it once per
chunk (an extra 30 s encoder pass each, 0.63 s for whisper-base on one core) and could give its
chunks different languages; the synchronous request detects once, from the file's first 30 s. So
chunk 0 records what it detected on the job, and a chunk that starts after that uses it (chunks
already running detect their own, as before).

A task's result is written to storage first (`jobs/<id>/results/<chunk>.json`, overwritten whole
if the task runs again), then one MULTI reports `chunk_done` to the orchestrators and acknowledges
and deletes the task. A worker killed between the two leaves the task pending; another replica
reclaims it after the visibility timeout and writes the same file again, and the orchestrator counts
the chunk once. Errors the engine raises are reported as `chunk_failed` (retryable unless the input
itself is at fault) and the orchestrator decides whether to retry.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from typing import Any

import redis.asyncio as aioredis

from dalston.audio import AudioError, decode_audio
from dalston.engine_sdk import TranscribeOptions, UnsupportedOption
from dalston.jobs import model as m
from dalston.jobs.storage import Storage, StorageError, storage_from
from dalston.jobs.store import JobStore
from dalston.jobs.streams import Delivery, StreamConsumer
from dalston.server.state import ServerState
from dalston.shared_redis import add_registry_argument, client, redis_url_from

log = logging.getLogger("dalston.jobs")


class QueueConfigError(ValueError):
    """`--queue` without a Redis URL or storage directory; the message says which to set."""


def add_queue_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of queue mode on `dalston serve` (Redis comes from the shared `--registry`)."""
    parser.add_argument("--queue", action="store_true",
                        help="also pull batch-job chunk tasks from this variant's Redis stream "
                             "(needs --registry / DALSTON_REGISTRY_URL and --storage-dir / DALSTON_STORAGE_DIR)")
    parser.add_argument("--storage-dir", default=None, help="shared job storage (default $DALSTON_STORAGE_DIR)")
    parser.add_argument("--queue-slots", type=int, default=None,
                        help="chunk tasks this replica runs at once (default $DALSTON_QUEUE_SLOTS, else 1 on CPU "
                             "and max_concurrency on a GPU)")
    parser.add_argument("--visibility-timeout", type=float,
                        default=float(os.environ.get("DALSTON_VISIBILITY_TIMEOUT", "60")),
                        help="seconds before a dead worker's task is reclaimed by another (default 60)")
    with contextlib.suppress(argparse.ArgumentError):  # `--registry` may already be there (gateway registration)
        add_registry_argument(parser)


def queue_worker_from(args: argparse.Namespace, state: ServerState) -> QueueWorker | None:
    """The worker `--queue` asks for, or None; QueueConfigError if Redis or storage is not configured."""
    if not getattr(args, "queue", False):
        return None
    try:
        url = redis_url_from(getattr(args, "registry", None))
    except ValueError as exc:
        raise QueueConfigError(str(exc)) from None
    if url is None:
        raise QueueConfigError("--queue needs Redis: pass --registry redis://HOST:6379/0 or set DALSTON_REGISTRY_URL")
    storage = storage_from(args.storage_dir)
    if storage is None:
        raise QueueConfigError("--queue needs the job storage shared with the orchestrator: pass --storage-dir DIR "
                               "or set DALSTON_STORAGE_DIR")
    if args.visibility_timeout <= 0:
        raise QueueConfigError("--visibility-timeout must be > 0 seconds")
    slots = args.queue_slots if args.queue_slots is not None else _env_int("DALSTON_QUEUE_SLOTS")
    if slots is not None and slots < 1:
        raise QueueConfigError("--queue-slots (or DALSTON_QUEUE_SLOTS) must be at least 1")
    return QueueWorker(state, client(url), storage, visibility_timeout=args.visibility_timeout, task_slots=slots)


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError:
        raise QueueConfigError(f"{name}={raw!r} is not a whole number") from None


class QueueWorker:
    def __init__(self, state: ServerState, redis: aioredis.Redis, storage: Storage, *, visibility_timeout: float = 60.0,
                 max_deliveries: int = 3, name: str | None = None, task_slots: int | None = None) -> None:
        self.state, self.redis, self.storage = state, redis, storage
        self._task_slots = task_slots
        self.store = JobStore(redis)
        self.name = name or f"{state.spec.id}-{socket.gethostname()}-{os.getpid()}"
        self.stream = m.task_stream(state.spec.id)
        self.consumer = StreamConsumer(redis, self.stream, m.WORKER_GROUP, self.name, handler=self.handle,
                                       on_exhausted=self.give_up, capacity=self.capacity,
                                       visibility_timeout=visibility_timeout, max_deliveries=max_deliveries)

    def capacity(self) -> int:
        """Inference slots this replica can give to queued tasks now (0 while loading or draining)."""
        state = self.state
        if state.draining or not state.ready.is_set():
            return 0
        mine = len(self.consumer.active)
        http_busy = max(0, state.admission.used + state.admission.queued - mine)  # requests + realtime sessions
        return max(0, min(self.task_slots, state.limits.max_concurrency - http_busy))

    @property
    def task_slots(self) -> int:
        """Chunk tasks run at once: `--queue-slots`, else 1 on CPU and `max_concurrency` on a GPU (see above)."""
        if self._task_slots is not None:
            return self._task_slots
        return 1 if self.state.engine.device == "cpu" else self.state.limits.max_concurrency

    async def run(self) -> None:
        log.info("queue_worker_started engine_id=%s stream=%s consumer=%s visibility_timeout=%g", self.state.spec.id,
                 self.stream, self.name, self.consumer.visibility_timeout)
        try:
            await self.consumer.run()
        finally:
            await self.redis.aclose()

    async def stop(self, timeout: float) -> None:
        """Take no more tasks; give running ones `timeout` s (the rest are reclaimed by other replicas)."""
        self.consumer.stop()
        await self.consumer.drain(timeout)

    async def handle(self, delivery: Delivery) -> None:
        job_id, task = delivery.fields["job"], json.loads(delivery.fields["task"])
        job = await self.store.get(job_id)
        if job is None or job.status != "running":
            log.info("task_skipped job_id=%s chunk=%s status=%s", job_id, task["index"], job.status if job else "gone")
            await self.consumer.ack(delivery)
            return
        log.info("task_started job_id=%s chunk=%s attempt=%s deliveries=%d worker=%s", job_id, task["index"],
                 task.get("attempt", 1), delivery.deliveries, self.name)
        started = time.perf_counter()
        try:
            transcript, language_from = await self._transcribe(job, task)
        except (UnsupportedOption, AudioError, StorageError) as exc:
            await self._report_failure(delivery, task, _code(exc), getattr(exc, "message", str(exc)), retryable=False)
            return
        except Exception as exc:  # an engine crash: worth another try, maybe on another replica
            log.exception("task_failed job_id=%s chunk=%s", job_id, task["index"])
            await self._report_failure(delivery, task, "engine_error", f"{type(exc).__name__}: {exc}", retryable=True)
            return
        elapsed = time.perf_counter() - started
        current = await self.store.get(job_id)
        if current is None or current.status != "running":  # cancelled or failed meanwhile: drop the result
            log.info("task_dropped job_id=%s chunk=%s status=%s", job_id, task["index"],
                     current.status if current else "gone")
            await self.consumer.ack(delivery)
            return
        body = {"transcript": transcript.to_dict(), "worker": self.name, "seconds": round(elapsed, 3)}
        await asyncio.to_thread(self.storage.put, m.chunk_result_key(job_id, int(task["index"])),
                                json.dumps(body).encode())
        pipe = self.redis.pipeline(transaction=True)
        if language_from == "detected" and int(task["index"]) == 0 and transcript.language:
            pipe.hset(m.job_key(job_id), m.DETECTED_LANGUAGE, transcript.language)
        pipe.xadd(m.EVENTS_STREAM, {"type": "chunk_done", "job": job_id, "chunk": str(task["index"]),
                                    "duration": str(task["duration"]), "worker": self.name})
        pipe.srem(m.tasks_key(job_id), delivery.entry_id)
        await self.consumer.ack(delivery, pipe)
        await pipe.execute()
        log.info("task_done job_id=%s chunk=%s audio_s=%.1f seconds=%.2f language=%s language_from=%s worker=%s",
                 job_id, task["index"], float(task["duration"]), elapsed, transcript.language, language_from,
                 self.name)

    async def _transcribe(self, job: m.Job, task: dict[str, Any]) -> tuple[Any, str]:
        """(the chunk's Transcript, where its language came from: "request", "chunk0" or "detected")."""
        state, loop = self.state, asyncio.get_running_loop()
        data = await asyncio.to_thread(self.storage.get, m.chunk_key(job.id, int(task["index"])))
        o = job.options
        language, language_from = o.language, "request"
        if language is None:
            shared = job.fields.get(m.DETECTED_LANGUAGE) if int(task["index"]) > 0 else None
            language, language_from = (shared, "chunk0") if shared else (None, "detected")
        options = TranscribeOptions(language=language, task=o.task, prompt=o.prompt, temperature=o.temperature,
                                    word_timestamps=o.word_timestamps)
        while True:
            try:
                async with state.admission.slot():
                    audio = await loop.run_in_executor(state.admission.executor, decode_audio, data)
                    started = time.perf_counter()
                    transcript = await loop.run_in_executor(state.admission.executor, state.engine.transcribe, audio.samples,
                                                            options)
                    state.metrics.observe_inference(audio.duration, time.perf_counter() - started)
                    return transcript, language_from
            except Exception as exc:
                # the gate refused (429: HTTP requests filled the wait queue meanwhile): wait for room, not fail
                if getattr(exc, "status", None) != 429:
                    raise
                await asyncio.sleep(0.5)

    async def _report_failure(self, delivery: Delivery, task: dict[str, Any], code: str, message: str,
                              *, retryable: bool) -> None:
        log.warning("task_failed job_id=%s chunk=%s code=%s retryable=%s error=%r", delivery.fields["job"],
                    task["index"], code, retryable, message)
        pipe = self.redis.pipeline(transaction=True)
        pipe.xadd(m.EVENTS_STREAM, {"type": "chunk_failed", "job": delivery.fields["job"],
                                    "task": delivery.fields["task"], "code": code, "error": message[:2000],
                                    "retryable": "1" if retryable else "0", "worker": self.name})
        pipe.srem(m.tasks_key(delivery.fields["job"]), delivery.entry_id)
        await self.consumer.ack(delivery, pipe)
        await pipe.execute()

    async def give_up(self, delivery: Delivery) -> None:
        task = json.loads(delivery.fields["task"])
        await self._report_failure(delivery, task, "worker_lost",
                                   f"the task was taken {delivery.deliveries - 1} times by workers that never finished "
                                   f"it (crashed, or ran past the visibility timeout)", retryable=False)


def _code(exc: Exception) -> str:
    if isinstance(exc, UnsupportedOption):
        return "unsupported_option"
    if isinstance(exc, AudioError):
        return exc.code
    return "chunk_missing"
