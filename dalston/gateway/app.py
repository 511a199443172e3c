"""The gateway's Starlette app: auth, model resolution, instance choice, and the routes.

Request flow for `POST /v1/audio/transcriptions`: check the `dk_` key, read the `model` (query
parameter, else the multipart stream up to the end of the `model` part), resolve it through the
model registry (ids and aliases from the catalog), pick the live instance with the least work in
flight, and stream the original body to it (`dalston.gateway.proxy`). The engine re-checks the key
and does all validation of the request itself: the gateway only routes.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from dalston.admission import authenticate, bearer_token, resolve_model
from dalston.auth import KeyStore, hash_key
from dalston.catalog import Catalog, ModelRegistry
from dalston.console import console_routes
from dalston.gateway import proxy
from dalston.gateway.instances import InstanceRegistry, make_registry
from dalston.gateway.metrics import GatewayMetrics, RegistryCollector
from dalston.gateway.sniff import SniffError, sniff_model
from dalston.errors import ApiError, openai_error
from dalston.jobs.routes import job_routes
from dalston.model_card import card_fields
from dalston.registration import spec_digest

log = logging.getLogger("dalston.gateway")

INTERNAL_PREFIX = "/internal/v1/instances"


@dataclass
class GatewayConfig:
    """Everything the gateway needs; `dalston gateway` fills it from flags and the environment."""

    catalog: Catalog
    internal_token: str
    keys: KeyStore | None  # None only with --insecure-no-auth
    heartbeat_interval: float = 2.0
    heartbeat_timeout: float = 6.0
    upstream_timeout: float = 600.0
    connect_timeout: float = 5.0
    max_upload_bytes: int = 1 << 30
    max_prefix_bytes: int = 8 << 20
    retry_after: int = 5
    registry_url: str | None = None  # shared Redis registry (`--registry`); None: in memory
    registry_refresh: float = 0.25  # seconds between reads of the shared registry


@dataclass
class GatewayState:
    config: GatewayConfig
    models: ModelRegistry
    digests: dict[str, str]
    instances: InstanceRegistry
    metrics: GatewayMetrics
    client: httpx.AsyncClient | None = None

    @classmethod
    def create(cls, config: GatewayConfig) -> GatewayState:
        instances = make_registry(config.heartbeat_timeout, config.registry_url, config.registry_refresh)

        def live_counts() -> dict[str, int]:
            counts = {engine_id: 0 for engine_id in config.catalog.engines}
            for inst in instances.all():
                counts[inst.engine_id] = counts.get(inst.engine_id, 0) + 1
            return counts

        metrics = GatewayMetrics(live_counts)
        metrics.registry.register(RegistryCollector(instances.status))
        return cls(config=config, models=ModelRegistry.from_catalog(config.catalog),
                   digests={i: spec_digest(e.spec) for i, e in config.catalog.engines.items()},
                   instances=instances, metrics=metrics)


# --- auth -------------------------------------------------------------------------------------

def job_owner(request: Request) -> str | Response:
    """Who owns the jobs this request may see: the key's SHA-256 digest (`anonymous` with auth off)."""
    state: GatewayState = request.app.state.gateway
    try:
        authenticate(state.config.keys, request.headers)
    except ApiError as exc:
        return exc.response()
    token = bearer_token(request.headers)
    return hash_key(token) if token is not None and state.config.keys is not None else "anonymous"


def internal_auth_error(state: GatewayState, request: Request) -> Response | None:
    token = bearer_token(request.headers) or ""
    if not hmac.compare_digest(token.encode(), state.config.internal_token.encode()):
        return openai_error(401, "missing or wrong internal token (DALSTON_INTERNAL_TOKEN) for engine registration",
                            "invalid_request_error", "invalid_internal_token")
    return None


# --- model routing ----------------------------------------------------------------------------

def no_instance(state: GatewayState, engine_id: str) -> Response:
    response = openai_error(503, f"model '{engine_id}' has no live engine instance; start one with "
                                 f"`dalston serve {engine_id} --gateway <gateway url>` or retry later",
                            "server_error", "model_unavailable", param="model")
    response.headers["Retry-After"] = str(state.config.retry_after)
    return response


async def audio_route(request: Request) -> Response:
    """POST /v1/audio/transcriptions and /translations: route by model, stream the upload through."""
    state: GatewayState = request.app.state.gateway
    authenticate(state.config.keys, request.headers)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > state.config.max_upload_bytes:
        return _too_large(state)
    stream: AsyncIterator[bytes] = request.stream()
    prefix: list[bytes] = []
    name = request.query_params.get("model")
    if name is None:
        try:
            sniffed = await sniff_model(stream, request.headers.get("content-type", ""), state.config.max_prefix_bytes)
        except SniffError as exc:
            return openai_error(exc.status, exc.message, "invalid_request_error", exc.code)
        name, prefix, stream = sniffed.model, sniffed.prefix, sniffed.rest
    engine_id = resolve_model(state.models, name)
    return await proxy.forward_http(request, state, engine_id, prefix, stream)


def _too_large(state: GatewayState) -> Response:
    return openai_error(413, f"upload larger than the gateway limit of {state.config.max_upload_bytes} bytes",
                        "invalid_request_error", "file_too_large", param="file")


# --- models, health, metrics --------------------------------------------------------------------

def model_json(state: GatewayState, engine_id: str) -> dict[str, Any]:
    entry = state.config.catalog.engines[engine_id]
    live = state.instances.live(engine_id)
    return {"id": engine_id, "object": "model", "created": 0, "owned_by": "dalston", **card_fields(entry.spec),
            "family": entry.family, "aliases": state.models.aliases_for(engine_id), "available": bool(live), "live_instances": len(live),
            "in_flight": sum(i.in_flight + i.remote_in_flight for i in live)}  # every replica's requests


async def list_models(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    authenticate(state.config.keys, request.headers)
    return JSONResponse({"object": "list", "data": [model_json(state, i) for i in state.config.catalog.engines]})


async def get_model(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    authenticate(state.config.keys, request.headers)
    engine_id = resolve_model(state.models, request.path_params["model"])
    return JSONResponse(model_json(state, engine_id))


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    # Ready even while a shared registry is unreachable: this replica keeps routing on what it knows,
    # and taking every replica out of its load balancer would turn a Redis outage into a full one.
    return JSONResponse({"status": "ready", "live_instances": len(state.instances.all()),
                         "registry": state.instances.status()})


async def metrics(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# --- engine registration ------------------------------------------------------------------------

class Registration(BaseModel):
    """What an engine sends to register; see `dalston.registration.Registrar`."""

    model_config = ConfigDict(extra="forbid")
    engine_id: str = Field(min_length=1, max_length=63)
    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=2048)
    spec_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    max_concurrency: int = Field(ge=1, le=1024)


def checked_registration(state: GatewayState, body: object) -> Registration | Response:
    """The registration in `body` if it is valid and matches this gateway's catalog, else the error."""
    try:
        reg = Registration.model_validate(body)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        return openai_error(422, f"invalid registration: {detail}", "invalid_request_error", "invalid_registration")
    expected = state.digests.get(reg.engine_id)
    if expected is None:
        return openai_error(422, f"engine id '{reg.engine_id}' is not in this gateway's catalog; known: "
                                 f"{', '.join(state.digests)}", "invalid_request_error", "unknown_engine",
                            param="engine_id")
    if reg.spec_digest != expected:
        log.warning("registration_rejected engine_id=%s url=%s reason=spec_digest_mismatch engine=%s gateway=%s",
                    reg.engine_id, reg.url, reg.spec_digest[:12], expected[:12])
        return openai_error(409, f"spec digest mismatch for '{reg.engine_id}': the engine runs spec "
                                 f"{reg.spec_digest[:12]}…, this gateway's catalog has {expected[:12]}…; deploy "
                                 f"the engine and the gateway from the same variant files", "invalid_request_error",
                            "spec_digest_mismatch", param="spec_digest")
    return reg


async def _json_body(request: Request) -> object | Response:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return openai_error(400, f"registration body is not JSON: {exc}", "invalid_request_error", "invalid_json")


async def register(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    if (denied := internal_auth_error(state, request)) is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    reg = checked_registration(state, body)
    if isinstance(reg, Response):
        return reg
    inst = state.instances.register(reg.engine_id, reg.url, reg.spec_digest, reg.max_concurrency)
    return JSONResponse({"instance_id": inst.instance_id, "heartbeat_interval": state.config.heartbeat_interval,
                         "heartbeat_timeout": state.config.heartbeat_timeout}, status_code=201)


async def heartbeat(request: Request) -> Response:
    """Refresh an instance; the registration it carries (current engines) re-adds one we do not know."""
    state: GatewayState = request.app.state.gateway
    if (denied := internal_auth_error(state, request)) is not None:
        return denied
    body = await _json_body(request)
    if isinstance(body, Response):
        return body
    reg = None if body is None else checked_registration(state, body)
    if isinstance(reg, Response):
        return reg
    if state.instances.heartbeat(request.path_params["instance_id"],
                                 None if reg is None else reg.model_dump()) is None:
        return openai_error(404, "unknown instance (dropped or the gateway restarted): register again",
                            "invalid_request_error", "unknown_instance")
    return JSONResponse({"status": "ok"})


async def deregister(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    if (denied := internal_auth_error(state, request)) is not None:
        return denied
    if state.instances.deregister(request.path_params["instance_id"]) is None:
        return openai_error(404, "unknown instance", "invalid_request_error", "unknown_instance")
    return Response(status_code=204)


async def list_instances(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    if (denied := internal_auth_error(state, request)) is not None:
        return denied
    data: dict[str, list[dict[str, object]]] = {}
    for inst in state.instances.all():
        data.setdefault(inst.engine_id, []).append(inst.to_json())
    return JSONResponse({"instances": data})


# --- app ----------------------------------------------------------------------------------------

def routes() -> list[BaseRoute]:
    return [
        Route("/health", health), Route("/ready", ready), Route("/metrics", metrics),
        Route("/v1/models", list_models), Route("/v1/models/{model:path}", get_model),
        Route("/v1/audio/transcriptions", audio_route, methods=["POST"]),
        Route("/v1/audio/translations", audio_route, methods=["POST"]),
        WebSocketRoute("/v1/realtime", proxy.realtime),
        *console_routes(),
        *job_routes(job_owner),
        Route(INTERNAL_PREFIX, register, methods=["POST"]),
        Route(INTERNAL_PREFIX, list_instances, methods=["GET"]),
        Route(INTERNAL_PREFIX + "/{instance_id}/heartbeat", heartbeat, methods=["POST"]),
        Route(INTERNAL_PREFIX + "/{instance_id}", deregister, methods=["DELETE"]),
    ]


async def _api_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


def create_gateway_app(config: GatewayConfig) -> Starlette:
    state = GatewayState.create(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        timeout = httpx.Timeout(config.upstream_timeout, connect=config.connect_timeout)
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
        async with httpx.AsyncClient(timeout=timeout, limits=limits, follow_redirects=False) as client:
            state.client = client
            await state.instances.start()
            log.info("gateway_started models=%d heartbeat_timeout=%.1fs auth=%s registry=%s",
                     len(config.catalog.engines), config.heartbeat_timeout,
                     "off" if config.keys is None else "dk_keys", state.instances.backend)
            try:
                yield
            finally:
                await state.instances.stop()
                state.client = None

    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers={ApiError: _api_error})
    app.state.gateway = state
    return app
