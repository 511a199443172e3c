"""Job state in Redis: create, read, list by owner, and the one atomic status change every process uses.

Every status change goes through one Lua script, `advance`: it checks the current status, writes
the new status and fields, and in the same atomic step enqueues the job's tasks on its engine
stream, or removes them (cancel), and emits the `finished` event an orchestrator turns into a
webhook and a TTL. Doing these together is what makes the races safe: a cancel that lands while
an orchestrator is enqueueing either sees every task (and removes it) or makes the enqueue a no-op;
two orchestrators finishing the same job emit one `finished` event, so one webhook.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis

from dalston.jobs import model as m
from dalston.jobs.streams import text

_ADVANCE = """
-- KEYS: job hash, events stream, job's task-id set, the job's engine stream, queued-jobs set, running-jobs set
-- ARGV: allowed current statuses (space separated), new status ('' = keep), now, fields (JSON object),
--       job id, tasks (JSON array of task payloads to enqueue), purge ('1' = delete queued tasks), group
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return -1 end
local allowed = false
for s in string.gmatch(ARGV[1], '%S+') do if s == status then allowed = true end end
if not allowed then return 0 end
if ARGV[2] ~= '' then
  redis.call('HSET', KEYS[1], 'status', ARGV[2])
  redis.call('SREM', KEYS[5], ARGV[5])
  redis.call('SREM', KEYS[6], ARGV[5])
  if ARGV[2] == 'queued' then redis.call('SADD', KEYS[5], ARGV[5]) end
  if ARGV[2] == 'running' then redis.call('SADD', KEYS[6], ARGV[5]) end
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
for k, v in pairs(cjson.decode(ARGV[4])) do redis.call('HSET', KEYS[1], k, tostring(v)) end
for _, payload in ipairs(cjson.decode(ARGV[6])) do
  local id = redis.call('XADD', KEYS[4], '*', 'job', ARGV[5], 'task', payload)
  redis.call('SADD', KEYS[3], id)
end
if ARGV[7] == '1' then
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
    redis.call('XACK', KEYS[4], ARGV[8], id)
    redis.call('XDEL', KEYS[4], id)
  end
  redis.call('DEL', KEYS[3])
end
if ARGV[2] == 'succeeded' or ARGV[2] == 'failed' or ARGV[2] == 'cancelled' then
  redis.call('XADD', KEYS[2], '*', 'type', 'finished', 'job', ARGV[5])
end
return 1
"""


class JobStore:
    """Typed access to job records; every process (gateway, orchestrator, worker) uses this one class."""

    def __init__(self, redis: aioredis.Redis) -> None:
        self.redis = redis
        self._advance = redis.register_script(_ADVANCE)

    async def create(self, job: m.Job, *, source_name: str) -> None:
        """Store a new queued job and tell the orchestrators (one MULTI: never a job without its event)."""
        fields: dict[Any, Any] = {"id": job.id, "owner": job.owner, "model": job.model, "status": "queued",
                  "created_at": repr(job.created_at), "updated_at": repr(job.created_at),
                  "options": job.options.to_json(), "response_format": job.response_format,
                  "granularities": ",".join(job.granularities), "webhook_url": job.webhook_url or "",
                  "source_name": source_name}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(m.job_key(job.id), mapping=fields)
        pipe.zadd(m.owner_key(job.owner), {job.id: job.created_at})
        pipe.sadd(m.status_set_key("queued"), job.id)
        pipe.xadd(m.EVENTS_STREAM, {"type": "submitted", "job": job.id})
        await pipe.execute()

    async def get(self, job_id: str) -> m.Job | None:
        if not m.valid_job_id(job_id):
            return None
        raw = await self.redis.hgetall(m.job_key(job_id))
        return m.Job.from_hash(raw) if raw else None

    async def advance(self, job: m.Job, allowed: Iterable[str], new_status: str = "", *,
                      fields: Mapping[str, Any] | None = None, tasks: Iterable[str] = (), purge: bool = False) -> bool:
        """Atomically: if the job's status is in `allowed`, set `new_status` + `fields`, enqueue `tasks`,
        remove its queued tasks (`purge`), and emit `finished` for a terminal status. False if not allowed."""
        result = await self._advance(
            keys=[m.job_key(job.id), m.EVENTS_STREAM, m.tasks_key(job.id), m.task_stream(job.model),
                  m.status_set_key("queued"), m.status_set_key("running")],
            args=[" ".join(allowed), new_status, repr(time.time()), json.dumps(dict(fields or {})), job.id,
                  json.dumps(list(tasks)), "1" if purge else "0", m.WORKER_GROUP])
        return int(result) == 1

    async def cancel(self, job: m.Job) -> bool:
        now = time.time()
        return await self.advance(job, m.ACTIVE, "cancelled", purge=True, fields={
            "finished_at": repr(now), "error": m.error_json("cancelled", "cancelled by the client")})

    async def fail(self, job: m.Job, code: str, message: str) -> bool:
        return await self.advance(job, m.ACTIVE, "failed", purge=True, fields={
            "finished_at": repr(time.time()), "error": m.error_json(code, message)})

    async def set_fields(self, job_id: str, fields: Mapping[str, Any]) -> None:
        await self.redis.hset(m.job_key(job_id), mapping={k: str(v) for k, v in fields.items()})

    async def mark_chunk_done(self, job: m.Job, index: int, seconds: float) -> int:
        """Record chunk `index` as done (once, however often it ran); returns how many chunks are done."""
        added = await self.redis.sadd(m.done_key(job.id), str(index))
        if added:
            await self.redis.hincrbyfloat(m.job_key(job.id), "audio_done", seconds)
        done = int(await self.redis.scard(m.done_key(job.id)))
        await self.redis.hset(m.job_key(job.id), "chunks_done", str(done))
        return done

    async def expire(self, job_id: str, ttl_seconds: int) -> None:
        """Finished jobs live `ttl_seconds` more; the owner index drops them lazily on listing."""
        pipe = self.redis.pipeline(transaction=False)
        for key in (m.job_key(job_id), m.done_key(job_id), m.tasks_key(job_id)):
            pipe.expire(key, ttl_seconds)
        await pipe.execute()

    async def list_for(self, owner: str, *, limit: int, after: str | None) -> tuple[list[m.Job], bool]:
        """The owner's jobs, newest first; `after` is the last id of the previous page."""
        key = m.owner_key(owner)
        start = 0
        if after:
            rank = await self.redis.zrevrank(key, after)
            if not isinstance(rank, int):  # None: `after` is not the owner's (a list comes only with withscore)
                return [], False
            start = rank + 1
        jobs: list[m.Job] = []
        while len(jobs) <= limit:
            ids = [text(i) for i in await self.redis.zrevrange(key, start, start + limit)]
            if not ids:
                break
            start += len(ids)
            pipe = self.redis.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(m.job_key(job_id))
            for job_id, raw in zip(ids, await pipe.execute()):
                if raw:
                    jobs.append(m.Job.from_hash(raw))
                else:
                    await self.redis.zrem(key, job_id)  # expired
                    start -= 1
        return jobs[:limit], len(jobs) > limit
