"""The job record: statuses, options, Redis key names, and the JSON the API shows.

A job is one Redis hash (`dalston:job:<id>`, string fields) that every process reads and that
only the Lua scripts in `dalston.jobs.store` change status on, so that "queued -> running ->
succeeded/failed/cancelled" is decided atomically even with several orchestrators and gateways.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ACTIVE: frozenset[str] = frozenset({"queued", "running"})

PREFIX = "dalston:"
EVENTS_STREAM = PREFIX + "events"          # job lifecycle events, read by orchestrators
ORCHESTRATOR_GROUP = "orchestrators"
WORKER_GROUP = "workers"
_ID = re.compile(r"^job_[0-9a-f]{32}$")


def new_job_id() -> str:
    return "job_" + secrets.token_hex(16)


def valid_job_id(job_id: str) -> bool:
    return bool(_ID.match(job_id))


#: Job hash field: the language chunk 0 detected when the job asked for none; later chunks use it.
DETECTED_LANGUAGE = "detected_language"


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def tasks_key(job_id: str) -> str:
    """Set of `<entry id>` of this job's task entries still in its engine stream (for cancel)."""
    return f"{PREFIX}job:{job_id}:tasks"


def done_key(job_id: str) -> str:
    """Set of chunk indexes with a stored result: a re-run chunk is counted once."""
    return f"{PREFIX}job:{job_id}:done"


def status_set_key(status: str) -> str:
    """Set of the ids of jobs in an active status (`queued`, `running`): what `/metrics` counts."""
    return f"{PREFIX}jobs:{status}"


#: Per stream name, how many entries consumers have taken over from dead ones (XAUTOCLAIM).
RECLAIMS_KEY = PREFIX + "stats:reclaims"


def owner_key(owner: str) -> str:
    return f"{PREFIX}owner:{owner}:jobs"


def task_stream(engine_id: str) -> str:
    """One stream per engine variant; its `workers` group is what `dalston serve ID --queue` reads."""
    return f"{PREFIX}tasks:{engine_id}"


def input_key(job_id: str) -> str:
    return f"jobs/{job_id}/input"


def chunk_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/chunks/{index:04d}.wav"


def chunk_result_key(job_id: str, index: int) -> str:
    return f"jobs/{job_id}/results/{index:04d}.json"


def manifest_key(job_id: str) -> str:
    return f"jobs/{job_id}/chunks.json"


def result_key(job_id: str) -> str:
    return f"jobs/{job_id}/result.json"


@dataclass(frozen=True)
class JobOptions:
    """The transcription options of a job (the same fields as `/v1/audio/transcriptions`)."""

    language: str | None = None
    prompt: str | None = None
    temperature: float = 0.0
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False

    def to_json(self) -> str:
        return json.dumps({"language": self.language, "prompt": self.prompt, "temperature": self.temperature,
                           "task": self.task, "word_timestamps": self.word_timestamps})

    @classmethod
    def from_json(cls, text: str) -> JobOptions:
        data = json.loads(text or "{}")
        return cls(language=data.get("language"), prompt=data.get("prompt"),
                   temperature=float(data.get("temperature", 0.0)), task=data.get("task", "transcribe"),
                   word_timestamps=bool(data.get("word_timestamps", False)))


@dataclass
class Job:
    """A decoded job hash; `fields` keeps every raw field for the orchestrator."""

    id: str
    owner: str
    model: str
    status: str
    created_at: float
    options: JobOptions
    response_format: str = "json"
    granularities: tuple[str, ...] = ("segment",)
    webhook_url: str | None = None
    fields: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_hash(cls, raw: Mapping[Any, Any]) -> Job:
        f = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}
        return cls(id=f["id"], owner=f.get("owner", ""), model=f["model"], status=f["status"],
                   created_at=float(f.get("created_at", "0")), options=JobOptions.from_json(f.get("options", "{}")),
                   response_format=f.get("response_format", "json"),
                   granularities=tuple(g for g in f.get("granularities", "segment").split(",") if g),
                   webhook_url=f.get("webhook_url") or None, fields=f)

    def number(self, name: str, default: float = 0.0) -> float:
        value = self.fields.get(name)
        return float(value) if value not in (None, "") else default

    def public(self) -> dict[str, Any]:
        """`GET /v1/jobs/{id}`: status, progress 0-1 by audio seconds done, stage timings, error, webhook."""
        f = self.fields
        duration = self.number("duration")
        done_seconds = min(self.number("audio_done"), duration) if duration else 0.0
        progress = 1.0 if self.status == "succeeded" else (round(done_seconds / duration, 4) if duration else 0.0)
        body: dict[str, Any] = {
            "id": self.id, "object": "transcription.job", "status": self.status, "model": self.model,
            "created_at": round(self.created_at, 3), "progress": progress,
            "duration": round(duration, 3) if duration else None,
            "chunks": {"total": int(self.number("chunks_total")), "done": int(self.number("chunks_done"))},
            "response_format": self.response_format,
            "stages": self.stages(),
            "error": json.loads(f["error"]) if f.get("error") else None,
        }
        if self.webhook_url:
            body["webhook"] = {"url": self.webhook_url,
                               "deliveries": json.loads(f.get("webhook_deliveries") or "[]")}
        if self.status in TERMINAL:
            body["finished_at"] = round(self.number("finished_at"), 3) or None
        return body

    def stages(self) -> dict[str, dict[str, float]]:
        """Seconds spent waiting and in each stage, from the timestamps the orchestrator records."""
        marks = [("queued", "created_at", "prepare_started_at"), ("prepare", "prepare_started_at", "prepare_done_at"),
                 ("transcribe", "prepare_done_at", "merge_started_at"), ("merge", "merge_started_at", "finished_at")]
        out: dict[str, dict[str, float]] = {}
        for name, start, end in marks:
            if self.fields.get(start) and self.fields.get(end):
                out[name] = {"seconds": round(self.number(end) - self.number(start), 3)}
        return out


def error_json(code: str, message: str) -> str:
    return json.dumps({"code": code, "message": message})
