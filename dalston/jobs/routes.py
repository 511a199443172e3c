"""The gateway's job API: submit a file, poll it, fetch the result in any format, cancel, list.

  POST   /v1/jobs                    multipart: the fields of /v1/audio/transcriptions + webhook_url -> 202
  GET    /v1/jobs                    the caller's jobs, newest first (?limit=20&after=<last id>)
  GET    /v1/jobs/{id}               status, progress 0-1, stage timings, error, webhook deliveries
  GET    /v1/jobs/{id}/result        ?format=json|text|srt|vtt|verbose_json (default: the job's response_format)
  DELETE /v1/jobs/{id}               cancel a queued or running job

A job belongs to the key that submitted it (its SHA-256 digest is stored, never the key); any other
key gets 404, exactly as for an id that does not exist, so ids cannot be probed. What can be known
at submit (missing file, unknown model, a model that is not a batch transcriber, bad options,
upload too large) is a 4xx; what needs decoding (not audio, too long) fails the job with the reason.
Route handlers stay thin: validation here, state in `JobStore`, blobs in `Storage`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from dalston import formats
from dalston.catalog import Catalog, ModelNotFound, ModelRegistry
from dalston.engine_sdk.types import Task
from dalston.jobs import model as m
from dalston.jobs.merge import transcript_from_dict
from dalston.jobs.storage import Storage, StorageError
from dalston.jobs.store import JobStore
from dalston.errors import ApiError
from dalston.server.params import text_field
from dalston.shared_redis import UNAVAILABLE_ERRORS, client

#: The `task` form values a job may ask for (the form gives a str; this maps it onto the Task literal).
_TASKS: dict[str, Task] = {"transcribe": "transcribe", "translate": "translate"}

#: The gateway's authentication: the caller's owner id (a key digest) or the refusal to send.
OwnerOf = Callable[[Request], "str | Response"]


@dataclass
class JobsBackend:
    """What the job routes need; the gateway sets it as `app.state.jobs` when Redis and storage are configured."""

    redis_url: str
    storage: Storage
    catalog: Catalog
    max_upload_bytes: int = 1 << 30
    models: ModelRegistry = field(init=False)
    _store: JobStore | None = None

    def __post_init__(self) -> None:
        self.models = ModelRegistry.from_catalog(self.catalog)

    @property
    def store(self) -> JobStore:
        if self._store is None:  # created in the serving event loop, on first use
            self._store = JobStore(client(self.redis_url))
        return self._store


def job_routes(owner_of: OwnerOf) -> list[BaseRoute]:
    def wrap(handler: Callable[[Request, JobsBackend, str], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            owner = owner_of(request)
            if isinstance(owner, Response):
                return owner
            backend: JobsBackend | None = getattr(request.app.state, "jobs", None)
            try:
                if backend is None:
                    raise ApiError(503, "this gateway has no job queue: start it with --registry redis://HOST:6379/0 "
                                        "(or DALSTON_REGISTRY_URL) and --storage-dir DIR (or DALSTON_STORAGE_DIR)",
                                   "jobs_unavailable")
                return await handler(request, backend, owner)
            except ApiError as exc:
                return exc.response()
            except UNAVAILABLE_ERRORS:
                return ApiError(503, "the job store (Redis) is unreachable; retry shortly", "jobs_store_unavailable",
                                headers={"Retry-After": "5"}).response()
        return endpoint

    return [
        Route("/v1/jobs", wrap(submit), methods=["POST"]),
        Route("/v1/jobs", wrap(list_jobs), methods=["GET"]),
        Route("/v1/jobs/{job_id}", wrap(get_job), methods=["GET"]),
        Route("/v1/jobs/{job_id}", wrap(cancel_job), methods=["DELETE"]),
        Route("/v1/jobs/{job_id}/result", wrap(get_result), methods=["GET"]),
    ]


# ------------------------------------------------------------------ handlers
async def submit(request: Request, backend: JobsBackend, owner: str) -> Response:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > backend.max_upload_bytes:
        raise ApiError(413, f"upload larger than the gateway limit of {backend.max_upload_bytes} bytes",
                       "file_too_large", param="file")
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(400, "send the job as multipart/form-data with a 'file' field (as /v1/audio/transcriptions)",
                       "invalid_content_type")
    try:
        form = await request.form(max_files=1, max_fields=32)
    except HTTPException as exc:
        raise ApiError(400, f"malformed multipart body: {exc.detail}", "invalid_multipart") from None
    try:
        job, upload = _parse_job(form, backend, owner)
        await asyncio.to_thread(_store_upload, backend.storage, m.input_key(job.id), upload, backend.max_upload_bytes)
        await backend.store.create(job, source_name=upload.filename or "upload")
    finally:
        await form.close()
    body = {"id": job.id, "object": "transcription.job", "status": "queued", "model": job.model,
            "created_at": round(job.created_at, 3)}
    return JSONResponse(body, status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})


async def get_job(request: Request, backend: JobsBackend, owner: str) -> Response:
    job = await _owned(request, backend, owner)
    return JSONResponse(job.public())


async def cancel_job(request: Request, backend: JobsBackend, owner: str) -> Response:
    job = await _owned(request, backend, owner)
    if not await backend.store.cancel(job):
        current = await backend.store.get(job.id)
        status = current.status if current else "gone"
        raise ApiError(409, f"job {job.id} is already {status}; only queued or running jobs can be cancelled",
                       "job_not_cancellable")
    current = await backend.store.get(job.id)
    return JSONResponse((current or job).public())


async def get_result(request: Request, backend: JobsBackend, owner: str) -> Response:
    job = await _owned(request, backend, owner)
    fmt = request.query_params.get("format") or job.response_format
    if fmt not in formats.RESPONSE_FORMATS:
        raise ApiError(400, f"format '{fmt}' is not one of {', '.join(formats.RESPONSE_FORMATS)}",
                       "invalid_response_format", param="format")
    if job.status != "succeeded":
        error = job.public()["error"]
        detail = f": {error['message']}" if error else f" (progress {job.public()['progress']:.0%}); poll GET /v1/jobs/{job.id}"
        raise ApiError(409, f"job {job.id} is {job.status}, it has no result{detail}", "job_not_succeeded")
    try:
        data = json.loads(await asyncio.to_thread(backend.storage.get, m.result_key(job.id)))
    except StorageError:
        raise ApiError(404, f"the result of job {job.id} is no longer stored", "result_not_found") from None
    body, media_type = formats.render(transcript_from_dict(data), fmt, granularities=job.granularities)
    return Response(body, media_type=media_type)


async def list_jobs(request: Request, backend: JobsBackend, owner: str) -> Response:
    raw_limit = request.query_params.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        raise ApiError(400, f"limit must be an integer from 1 to 100, got '{raw_limit}'", "invalid_parameter",
                       param="limit")
    after = request.query_params.get("after") or None
    jobs, has_more = await backend.store.list_for(owner, limit=int(raw_limit), after=after)
    data = [j.public() for j in jobs]
    return JSONResponse({"object": "list", "data": data, "has_more": has_more,
                         "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None})


# ------------------------------------------------------------------ helpers
async def _owned(request: Request, backend: JobsBackend, owner: str) -> m.Job:
    job_id = request.path_params["job_id"]
    job = await backend.store.get(job_id)
    if job is None or job.owner != owner:  # the same answer for "not yours" and "not there"
        raise ApiError(404, f"no job '{job_id}' (jobs are visible only to the key that created them)",
                       "job_not_found", param="job_id")
    return job


def _parse_job(form: FormData, backend: JobsBackend, owner: str) -> tuple[m.Job, UploadFile]:
    upload = form.get("file")
    if not isinstance(upload, UploadFile):
        raise ApiError(400, "missing 'file': attach the audio as a multipart file field named 'file'", "missing_file",
                       param="file")
    name = text_field(form, "model")
    if not name:
        raise ApiError(400, "missing 'model': name the variant id or alias to transcribe with", "missing_model",
                       param="model")
    try:
        engine_id = backend.models.resolve(name)
    except ModelNotFound as exc:
        raise ApiError(404, str(exc), "model_not_found", param="model") from None
    spec = backend.catalog.get(engine_id).spec
    if spec.stage != "transcribe":
        raise ApiError(400, f"'{name}' is a {spec.stage} engine; jobs run on batch transcription models",
                       "unsupported_model", param="model")
    response_format = text_field(form, "response_format") or "json"
    if response_format not in formats.RESPONSE_FORMATS:
        raise ApiError(400, f"response_format '{response_format}' is not one of {', '.join(formats.RESPONSE_FORMATS)}",
                       "invalid_response_format", param="response_format")
    granularities = tuple(str(g).strip() for g in
                          form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
    if any(g not in formats.GRANULARITIES for g in granularities):
        raise ApiError(400, "timestamp_granularities entries must be 'word' or 'segment'",
                       "invalid_timestamp_granularities", param="timestamp_granularities[]")
    if "word" in granularities and not spec.capabilities.word_timestamps:
        raise ApiError(400, f"{spec.id} does not produce word timestamps", "unsupported_option",
                       param="timestamp_granularities[]")
    raw_temperature = text_field(form, "temperature") or "0"
    try:
        temperature = float(raw_temperature)
    except ValueError:
        temperature = float("nan")
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(400, f"temperature must be a number between 0 and 1, got '{raw_temperature}'",
                       "invalid_temperature", param="temperature")
    task_field = text_field(form, "task") or "transcribe"
    task = _TASKS.get(task_field)
    if task is None or (task == "translate" and not spec.capabilities.translation):
        raise ApiError(400, f"task '{task_field}' is not available on {spec.id} (transcribe"
                            f"{', translate' if spec.capabilities.translation else ''})", "unsupported_option",
                       param="task")
    webhook_url = text_field(form, "webhook_url")
    if webhook_url is not None:
        parts = urlsplit(webhook_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or len(webhook_url) > 2048:
            raise ApiError(400, f"webhook_url must be an http(s) URL, got '{webhook_url[:100]}'", "invalid_webhook_url",
                           param="webhook_url")
    language = text_field(form, "language")
    declared = [code for code in spec.capabilities.languages if code != "multilingual"]
    if language and declared and "multilingual" not in spec.capabilities.languages and language.lower() not in declared:
        raise ApiError(400, f"language '{language}' is not supported by {spec.id} ({', '.join(declared)})",
                       "unsupported_language", param="language")
    options = m.JobOptions(language=language.lower() if language else None, prompt=text_field(form, "prompt"),
                           temperature=temperature, task=task,
                           word_timestamps="word" in granularities)
    job = m.Job(id=m.new_job_id(), owner=owner, model=engine_id, status="queued", created_at=time.time(),
                options=options, response_format=response_format, granularities=granularities or ("segment",),
                webhook_url=webhook_url)
    return job, upload


def _store_upload(storage: Storage, key: str, upload: UploadFile, limit: int) -> None:
    upload.file.seek(0)
    with storage.open_writer(key) as out:
        copied = 0
        while chunk := upload.file.read(1 << 20):
            copied += len(chunk)
            if copied > limit:
                raise ApiError(413, f"upload larger than the gateway limit of {limit} bytes", "file_too_large",
                               param="file")
            out.write(chunk)
    if copied == 0:
        storage.delete_prefix(key)
        raise ApiError(400, "the uploaded file is empty", "empty_file", param="file")
