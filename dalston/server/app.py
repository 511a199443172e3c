"""The engine server's HTTP app: the OpenAI audio API for one variant, plus health, readiness and metrics.

Routes (all JSON errors are OpenAI-shaped, see `errors.py`):
  POST /v1/audio/transcriptions, /v1/audio/translations   multipart, as OpenAI defines them
  GET  /v1/models, /v1/models/{id}                          this variant and its aliases
  GET  /v1/capabilities                                     the variant spec + runtime facts
  GET  /health (liveness), /ready (503 until loaded), /metrics (Prometheus)   no key needed
  WS   /v1/realtime                                         when the family is a StreamingEngine
  GET  /, /console/...                                      the web console (dalston/console), no key needed
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dalston import formats
from dalston.admission import Ticket, authenticate, is_retry, resolve_model
from dalston.audio import AudioError, DecodedAudio, decode_audio, wav_bytes
from dalston.console import console_routes
from dalston.engine_sdk import (PrepareEngine, Segment, StreamingEngine, Task, TranscribeOptions, Transcript,
                                UnsupportedOption)
from dalston.errors import ApiError, echo, openai_error
from dalston.model_card import card_fields
from dalston.server.metrics import CONTENT_TYPE
from dalston.server.params import parse_quality, text_field
from dalston.server.realtime import realtime_routes
from dalston.server.state import ServerState

log = logging.getLogger("dalston.server")

_OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no", ""})


def create_app(state: ServerState, *, lifespan: Callable[[Starlette], Any] | None = None) -> ASGIApp:
    """The app `dalston serve` runs: Starlette routes inside the upload-limit and request-metrics layers."""
    routes: list[BaseRoute] = [
        Route("/health", _health, methods=["GET"]),
        Route("/ready", _ready, methods=["GET"]),
        Route("/metrics", _metrics, methods=["GET"]),
        Route("/v1/models", _models, methods=["GET"]),
        Route("/v1/models/{model_id:path}", _model, methods=["GET"]),
        Route("/v1/capabilities", _capabilities, methods=["GET"]),
        *console_routes(),
    ]
    if isinstance(state.engine, PrepareEngine):
        routes.append(Route("/v1/audio/prepare", _prepare, methods=["POST"]))
    else:
        routes += [Route("/v1/audio/transcriptions", _transcriptions, methods=["POST"]),
                   Route("/v1/audio/translations", _translations, methods=["POST"])]
    if isinstance(state.engine, StreamingEngine):
        routes += realtime_routes(state)
    app = Starlette(routes=routes, lifespan=lifespan,
                    exception_handlers={ApiError: _api_error, HTTPException: _http_error, _UploadTooLarge: _too_large,
                                        Exception: _unexpected})
    app.state.server = state
    return _UploadLimit(_RequestMetrics(app, state), state)


# ------------------------------------------------------------------ plumbing
def _state(request: Request) -> ServerState:
    state: ServerState = request.app.state.server
    return state


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return openai_error(404, f"no such route: {request.method} {request.url.path}", code="not_found")
    if exc.status_code == 405:
        return openai_error(405, f"{request.method} is not allowed on {request.url.path}", code="method_not_allowed",
                            headers=exc.headers)
    return openai_error(exc.status_code, str(exc.detail), code="invalid_request")


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.exception("request_failed path=%s error=%r", request.url.path, exc)
    return openai_error(500, f"internal error ({type(exc).__name__}); see the server log", "server_error",
                        "internal_error")


class _UploadTooLarge(Exception):
    """Raised from `receive` by `_UploadLimit` once the body passes the limit; rendered as 413."""


async def _too_large(request: Request, _: Exception) -> Response:
    limit = _state(request).limits.max_upload_bytes
    return openai_error(413, f"upload exceeds this server's limit of {limit} bytes (--max-upload-mb)",
                        code="upload_too_large", param="file", headers={"Connection": "close"})


class _UploadLimit:
    """413 for a body over the limit: at once from Content-Length, or as soon as the stream passes it.

    Counting the streamed bytes matters: a chunked upload has no Content-Length, and without the count
    a client could fill the disk with one request.
    """

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app, self.limit = app, state.limits.max_upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _UploadTooLarge()
            return message

        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _UploadTooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send: Send, size: int) -> None:
        response = openai_error(413, f"upload of {size}+ bytes exceeds this server's limit of {self.limit} bytes "
                                     f"(--max-upload-mb)", code="upload_too_large", param="file",
                                headers={"Connection": "close"})
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class _RequestMetrics:
    """Per-request count, latency and a `request` log line, labelled by route (not raw path: bounded labels)."""

    def __init__(self, app: ASGIApp, state: ServerState) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        route = path if path in _KNOWN_ROUTES else ("/v1/models/{id}" if path.startswith("/v1/models/") else "other")
        status = 500
        started = time.perf_counter()

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            elapsed = time.perf_counter() - started
            self.state.metrics.requests.labels(route, str(status)).inc()
            self.state.metrics.latency.labels(route).observe(elapsed)
            if route not in _OPEN_PATHS:
                log.info("request method=%s route=%s status=%d duration_ms=%.1f", scope["method"], route, status,
                         elapsed * 1000)


_KNOWN_ROUTES = frozenset({"/health", "/ready", "/metrics", "/v1/models", "/v1/capabilities", "/v1/audio/prepare",
                           "/v1/audio/transcriptions", "/v1/audio/translations"})


def _require_key(request: Request) -> None:
    authenticate(_state(request).keys, request.headers)


# ------------------------------------------------------------------ health, models, metrics
async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "engine_id": _state(request).spec.id})


async def _ready(request: Request) -> Response:
    state = _state(request)
    if state.ready.is_set() and not state.draining:
        return JSONResponse({"status": "ready", "engine_id": state.spec.id})
    reason = "draining" if state.draining else ("load_failed" if state.load_error else "loading")
    return JSONResponse({"status": reason, "engine_id": state.spec.id, "error": state.load_error}, status_code=503)


async def _metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type=CONTENT_TYPE)


def _model_cards(state: ServerState) -> list[dict[str, Any]]:
    spec = state.spec
    card = {"object": "model", "created": 0, "owned_by": "dalston", "root": spec.id, **card_fields(spec),
            "aliases": state.registry.aliases_for(spec.id), "device": state.engine.device,
            "available": state.ready.is_set() and not state.draining}
    return [{"id": spec.id, **card}] + [{"id": alias, **card} for alias in state.registry.aliases_for(spec.id)]


async def _models(request: Request) -> Response:
    _require_key(request)
    return JSONResponse({"object": "list", "data": _model_cards(_state(request))})


async def _model(request: Request) -> Response:
    _require_key(request)
    state = _state(request)
    wanted = request.path_params["model_id"]
    resolve_model(state.registry, wanted, served=state.spec.id)  # 404 naming the engine that serves it
    return JSONResponse(next(card for card in _model_cards(state) if card["id"] == wanted))


async def _capabilities(request: Request) -> Response:
    _require_key(request)
    state = _state(request)
    body = state.spec.model_dump(mode="json")
    body["aliases"] = state.registry.aliases_for(state.spec.id)
    body["runtime_facts"] = {**state.engine.describe(), "ready": state.ready.is_set(),
                             "max_queue": state.limits.max_queue, "max_upload_bytes": state.limits.max_upload_bytes}
    return JSONResponse(body)


# ------------------------------------------------------------------ transcription
async def _transcriptions(request: Request) -> Response:
    return await _audio_request(request, "transcribe")


async def _translations(request: Request) -> Response:
    return await _audio_request(request, "translate")


async def _audio_request(request: Request, task: Task) -> Response:
    state = _state(request)
    _require_key(request)
    state.require_ready()
    ticket = state.admission.check_queue(retry=is_retry(request.headers))  # 429 before reading the upload
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise ApiError(400, "send the request as multipart/form-data with a 'file' field (OpenAI audio API)",
                       "invalid_content_type")
    async with _form(request) as form:
        params = _parse_params(state, form, task)
        upload = form.get("file")
        if isinstance(upload, str):
            raise ApiError(400, "'file' arrived as a text field: send the audio as a file part "
                                "(curl -F file=@audio.wav)", "invalid_parameter", param="file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing 'file': attach the audio as a multipart file field named 'file'",
                           "missing_file", param="file")
        loop = asyncio.get_running_loop()
        max_seconds = float(state.spec.capabilities.max_audio_duration)
        if params.stream:
            return await _stream_response(state, upload, params, max_seconds, ticket)
        async with state.admission.slot(ticket):
            audio = await _decode(loop, state, upload, max_seconds)
            started = time.perf_counter()
            transcript = await _run(loop, state, lambda: state.engine.transcribe(audio.samples, params.options))
            state.metrics.observe_inference(audio.duration, time.perf_counter() - started)
    body, media_type = formats.render(transcript, params.response_format, task=task, granularities=params.granularities,
                                      cue_limits=params.quality.cue_limits)
    return Response(body, media_type=media_type)


@contextlib.asynccontextmanager
async def _form(request: Request) -> AsyncIterator[FormData]:
    try:
        form = await request.form(max_files=1, max_fields=32)
    except HTTPException as exc:  # malformed multipart, too many files
        raise ApiError(400, f"malformed multipart body: {exc.detail}", "invalid_multipart") from None
    try:
        yield form
    finally:
        await form.close()


async def _decode(loop: asyncio.AbstractEventLoop, state: ServerState, upload: UploadFile,
                  max_seconds: float) -> DecodedAudio:
    try:
        return await loop.run_in_executor(state.admission.executor, lambda: decode_audio(upload.file, max_seconds=max_seconds))
    except AudioError as exc:
        raise ApiError(400, exc.message, exc.code, param="file") from None


async def _run(loop: asyncio.AbstractEventLoop, state: ServerState, call: Callable[[], Any]) -> Any:
    try:
        return await loop.run_in_executor(state.admission.executor, call)
    except UnsupportedOption as exc:
        raise ApiError(400, exc.message, "unsupported_option", param=exc.param) from None


class _Params:
    __slots__ = ("options", "response_format", "granularities", "stream", "quality")

    def __init__(self, options: TranscribeOptions, response_format: str, granularities: tuple[str, ...],
                 stream: bool, quality: Any) -> None:
        self.options, self.response_format, self.granularities, self.stream, self.quality = (
            options, response_format, granularities, stream, quality)


def _parse_params(state: ServerState, form: FormData, task: Task) -> _Params:
    spec = state.spec
    resolve_model(state.registry, text_field(form, "model"), served=spec.id)

    response_format = text_field(form, "response_format") or "json"
    if response_format not in formats.RESPONSE_FORMATS:
        raise ApiError(400, f"response_format '{echo(response_format)}' is not one of {', '.join(formats.RESPONSE_FORMATS)}",
                       "invalid_response_format", param="response_format")

    language = text_field(form, "language") or None
    if language is not None:
        language = language.lower()
        allowed = state.engine.languages()
        if allowed is not None and language not in allowed:
            shown = ", ".join(sorted(allowed)[:20]) + (", …" if len(allowed) > 20 else "")
            raise ApiError(400, f"language '{echo(language)}' is not supported by {spec.id} (ISO 639-1 codes: {shown})",
                           "unsupported_language", param="language")

    raw_temperature = text_field(form, "temperature")
    temperature = 0.0
    if raw_temperature:
        try:
            temperature = float(raw_temperature)
        except ValueError:
            temperature = float("nan")
        if not 0.0 <= temperature <= 1.0:  # also catches nan
            raise ApiError(400, f"temperature must be a number between 0 and 1, got '{raw_temperature}'",
                           "invalid_temperature", param="temperature")

    granularities = tuple(str(g).strip() for g in
                          form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"))
    for value in granularities:
        if value not in formats.GRANULARITIES:
            raise ApiError(400, f"timestamp_granularities entry '{echo(value)}' must be 'word' or 'segment'",
                           "invalid_timestamp_granularities", param="timestamp_granularities[]")
    if granularities and response_format != "verbose_json":
        raise ApiError(400, "timestamp_granularities needs response_format=verbose_json",
                       "invalid_timestamp_granularities", param="timestamp_granularities[]")
    if "word" in granularities and not spec.capabilities.word_timestamps:
        raise ApiError(400, f"{spec.id} does not produce word timestamps", "unsupported_option",
                       param="timestamp_granularities[]")

    raw_stream = (text_field(form, "stream") or "false").lower()
    if raw_stream not in _TRUE | _FALSE:
        raise ApiError(400, f"stream must be true or false, got '{raw_stream}'", "invalid_parameter", param="stream")
    stream = raw_stream in _TRUE
    if stream and response_format not in ("json", "text", "verbose_json"):
        raise ApiError(400, "stream=true supports response_format json, text (as in the OpenAI API) or verbose_json "
                            "(segment events with times)", "invalid_parameter", param="stream")

    if task == "translate" and not spec.capabilities.translation:
        raise ApiError(400, f"{spec.id} cannot translate (capabilities.translation is false); use "
                            f"/v1/audio/transcriptions", "unsupported_option", param="model")

    quality = parse_quality(form, response_format)  # dalston extensions: VAD, guards, hotwords, cue limits
    options = TranscribeOptions(language=language, task=task, prompt=text_field(form, "prompt") or None,
                                temperature=temperature, word_timestamps="word" in granularities or quality.needs_words,
                                **quality.options)
    return _Params(options, response_format, granularities or ("segment",), stream, quality)


# ------------------------------------------------------------------ prepare stage
async def _prepare(request: Request) -> Response:
    """Decode an upload: a JSON report (duration, channels, codec…), or `response_format=wav` for the audio."""
    state = _state(request)
    _require_key(request)
    state.require_ready()
    ticket = state.admission.check_queue(retry=is_retry(request.headers))
    engine = state.engine
    assert isinstance(engine, PrepareEngine)
    async with _form(request) as form:
        response_format = text_field(form, "response_format") or "json"
        if response_format not in ("json", "wav"):
            raise ApiError(400, f"response_format '{echo(response_format)}' is not one of json, wav", "invalid_response_format",
                           param="response_format")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing 'file': attach the audio as a multipart file field named 'file'",
                           "missing_file", param="file")
        loop = asyncio.get_running_loop()
        async with state.admission.slot(ticket):
            try:
                audio = await loop.run_in_executor(state.admission.executor, engine.prepare, upload.file)
            except AudioError as exc:
                raise ApiError(400, exc.message, exc.code, param="file") from None
    if response_format == "wav":
        return Response(wav_bytes(audio.samples), media_type="audio/wav")
    return JSONResponse(audio.report())


# ------------------------------------------------------------------ stream=true (SSE)
_DONE = object()


async def _stream_response(state: ServerState, upload: UploadFile, params: _Params, max_seconds: float,
                           ticket: Ticket) -> Response:
    """Decode first (errors stay HTTP statuses), hold a slot, then send one delta per decoded segment.

    The slot is taken before the response starts, so overload is a 429, not a broken stream; it is
    released when the stream ends or the client goes away (the decode thread stops at the next segment).
    """
    loop = asyncio.get_running_loop()
    stack = contextlib.AsyncExitStack()
    await stack.enter_async_context(state.admission.slot(ticket))
    try:
        audio = await _decode(loop, state, upload, max_seconds)
    except BaseException:
        await stack.aclose()
        raise
    queue: asyncio.Queue[Any] = asyncio.Queue()
    cancelled = False

    def produce() -> None:
        try:
            for segment in state.engine.stream_segments(audio.samples, params.options):
                if cancelled:
                    return
                loop.call_soon_threadsafe(queue.put_nowait, segment)
        except BaseException as exc:  # delivered to the stream as an error event
            loop.call_soon_threadsafe(queue.put_nowait, exc)
        loop.call_soon_threadsafe(queue.put_nowait, _DONE)

    async def events() -> AsyncIterator[bytes]:
        nonlocal cancelled
        started = time.perf_counter()
        texts: list[str] = []
        segments: list[Segment] = []
        verbose = params.response_format == "verbose_json"
        try:
            worker = loop.run_in_executor(state.admission.executor, produce)
            while (item := await queue.get()) is not _DONE:
                if isinstance(item, BaseException):
                    log.error("stream_failed engine_id=%s error=%r", state.spec.id, item)
                    message = item.message if isinstance(item, UnsupportedOption) else "inference failed; see the server log"
                    yield formats.sse_event({"type": "error", "error": {"message": message, "type": "server_error"}})
                    return
                if item.text:
                    yield formats.delta_event((" " if texts else "") + item.text)
                    texts.append(item.text)
                    if verbose:
                        segments.append(item)
                        yield formats.segment_event(item, words="word" in params.granularities)
            body = None
            if verbose:  # the language is known only when the request named it: segments do not carry it
                transcript = Transcript(" ".join(texts), params.options.language, audio.duration, tuple(segments))
                body = formats.verbose_json(transcript, task=params.options.task, granularities=params.granularities)
            yield formats.done_event(" ".join(texts), body)
            await worker
            state.metrics.observe_inference(audio.duration, time.perf_counter() - started)
        finally:
            cancelled = True
            await stack.aclose()

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

