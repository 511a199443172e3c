"""The gateway's routes, HTTP and WebSocket side by side: check, resolve, then hand over to transport.

Request flow for `POST /v1/audio/transcriptions`: check the `dk_` key, read the `model` (query
parameter, else the multipart stream up to the end of the `model` part), resolve it through the
model registry (ids and aliases from the catalog), pick the live instance with the least work in
flight, and stream the original body to it (`dalston.gateway.transport`). `/v1/realtime` asks the
same questions in the same order, then relays frames. The engine re-checks the key and does all
validation of the request itself: the gateway only routes. Every refusal is an `ApiError`: the app
renders it for HTTP, `realtime` sends it as the handshake's HTTP answer.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from dalston.admission import authenticate, bearer_token, resolve_model
from dalston.auth import hash_key
from dalston.console import console_routes
from dalston.draining import shutting_down
from dalston.errors import ApiError
from dalston.gateway import transport
from dalston.gateway.client_session import CLOSE_GOING_AWAY, GOING_AWAY_REASON, ClientSession
from dalston.gateway.openai_routing import await_model
from dalston.gateway.sniff import SniffError, sniff_model
from dalston.gateway.state import GatewayState
from dalston.jobs.routes import job_routes
from dalston.model_card import card_fields
from dalston.server.realtime_openai import render_error, wants_beta, wants_openai

log = logging.getLogger("dalston.gateway")

INTERNAL_PREFIX = "/internal/v1/instances"


def _state(scope_owner: Request | WebSocket) -> GatewayState:
    state: GatewayState = scope_owner.app.state.gateway
    return state


# --- client routes ----------------------------------------------------------------------------

async def audio(request: Request) -> Response:
    """POST /v1/audio/transcriptions and /translations: route by model, stream the upload through."""
    state = _state(request)
    authenticate(state.config.keys, request.headers)
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > state.config.max_upload_bytes:
        raise state.too_large()
    stream: AsyncIterator[bytes] = request.stream()
    prefix: list[bytes] = []
    name = request.query_params.get("model")
    if name is None:
        try:
            sniffed = await sniff_model(stream, request.headers.get("content-type", ""), state.config.max_prefix_bytes)
        except SniffError as exc:
            raise ApiError(exc.status, exc.message, exc.code) from None
        name, prefix, stream = sniffed.model, sniffed.prefix, sniffed.rest
    engine_id = resolve_model(state.models, name)
    return await transport.forward_http(request, state, engine_id, prefix, stream)


async def realtime(websocket: WebSocket) -> None:
    """`/v1/realtime?model=<id>`: the same checks as `audio`, then frames both ways.

    WHY refuse during the handshake (an HTTP status + JSON body) where the engine accepts first and
    closes with a 4xxx code: the gateway has no session to speak for yet, and the status is what a
    client's connect call reports (docs/REALTIME.md). An OpenAI transcription session without
    `?model=` is the exception: it is accepted, then routed by the model its first `session.update`
    names (`dalston.gateway.openai_routing`), and refused with OpenAI `error` events from then on.
    From its accept to its close a session is in `GatewayState.sessions`, which a SIGTERM drains
    (`dalston.gateway.client_session`); a draining gateway refuses new sessions (503 `shutting_down`).
    """
    state = _state(websocket)
    subprotocols = websocket.scope.get("subprotocols") or ()
    # OpenAI's browser SDK offers `realtime, openai-insecure-api-key.<key>`: answer `realtime`
    subprotocol = "realtime" if "realtime" in subprotocols else None
    client = ClientSession(websocket, openai=wants_openai(websocket.query_params, websocket.headers, subprotocol))
    try:
        await _realtime(websocket, state, client, subprotocol)
    finally:
        state.sessions.discard(client)


async def _realtime(websocket: WebSocket, state: GatewayState, client: ClientSession, subprotocol: str | None) -> None:
    subprotocols = websocket.scope.get("subprotocols") or ()
    query = dict(websocket.query_params)
    first_text: str | None = None  # the OpenAI event that chose the model, forwarded first
    try:
        if state.draining:
            raise shutting_down()
        authenticate(state.config.keys, websocket.headers, websocket.query_params, subprotocols)
        if not query.get("model") and client.protocol == "openai":
            await websocket.accept(subprotocol=subprotocol)
            await state.sessions.add(client)
            routed = await await_model(client, state, wants_beta(websocket.headers))
            if routed is None:
                if client.expired.is_set():
                    await client.close(CLOSE_GOING_AWAY, GOING_AWAY_REASON)
                return
            engine_id, inst, first_text = routed
            query["model"] = engine_id
        else:
            engine_id = resolve_model(state.models, query.get("model"))
            if (picked := state.instances.pick(engine_id)) is None:
                raise state.no_instance(engine_id)
            inst = picked
        token = bearer_token(websocket.headers, websocket.query_params, subprotocols)
        headers = [("Authorization", f"Bearer {token}")] if token else []  # the engine checks the same key
        headers += [(k, v) for k, v in websocket.headers.items() if k.lower() == "openai-beta"]
        inst, upstream = await transport.connect_realtime(state, inst, engine_id, websocket.url.path, query,
                                                          headers, subprotocol)
        if first_text is None:
            if state.draining:  # SIGTERM came while the engine was being connected: not a session to drain
                await upstream.close()
                raise shutting_down()
            await state.sessions.add(client)  # before any await: a drain starting now sees it
    except ApiError as exc:
        if first_text is None:  # still in the handshake
            try:
                await websocket.send_denial_response(exc.response())
            except RuntimeError:  # a server without the denial-response extension
                await websocket.close(code=1008)
        else:
            await client.send_json(render_error(exc.code, exc.message))
            await client.close(exc.close_code)
        return
    if first_text is None:
        await websocket.accept(subprotocol=subprotocol)
    else:
        await upstream.send(first_text)
    await transport.relay_realtime(client, upstream, state, inst, engine_id, drop_created=first_text is not None)


def job_owner(request: Request) -> str | Response:
    """Who owns the jobs this request may see: the key's SHA-256 digest (`anonymous` with auth off)."""
    state = _state(request)
    try:
        authenticate(state.config.keys, request.headers)
    except ApiError as exc:
        return exc.response()
    token = bearer_token(request.headers)
    return hash_key(token) if token is not None and state.config.keys is not None else "anonymous"


def _model_json(state: GatewayState, engine_id: str) -> dict[str, Any]:
    entry = state.config.catalog.engines[engine_id]
    live = state.instances.live(engine_id)
    return {"id": engine_id, "object": "model", "created": 0, "owned_by": "dalston", **card_fields(entry.spec),
            "family": entry.family, "aliases": state.models.aliases_for(engine_id), "available": bool(live),
            "live_instances": len(live),
            "in_flight": sum(i.in_flight + i.remote_in_flight for i in live)}  # every replica's requests


async def list_models(request: Request) -> Response:
    state = _state(request)
    authenticate(state.config.keys, request.headers)
    return JSONResponse({"object": "list", "data": [_model_json(state, i) for i in state.config.catalog.engines]})


async def get_model(request: Request) -> Response:
    state = _state(request)
    authenticate(state.config.keys, request.headers)
    return JSONResponse(_model_json(state, resolve_model(state.models, request.path_params["model"])))


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def ready(request: Request) -> Response:
    state = _state(request)
    if state.draining:  # SIGTERM: load balancers and Kubernetes take this replica out; open work finishes
        return JSONResponse({"status": "draining", "sessions": len(state.sessions), "requests": state.requests},
                            status_code=503)
    # Ready even while a shared registry is unreachable: this replica keeps routing on what it knows,
    # and taking every replica out of its load balancer would turn a Redis outage into a full one.
    return JSONResponse({"status": "ready", "live_instances": len(state.instances.all()),
                         "registry": state.instances.status()})


async def metrics(request: Request) -> Response:
    return Response(_state(request).metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")


# --- engine registration ------------------------------------------------------------------------

class Registration(BaseModel):
    """What an engine sends to register; see `dalston.registration.Registrar`."""

    model_config = ConfigDict(extra="forbid")
    engine_id: str = Field(min_length=1, max_length=63)
    url: str = Field(pattern=r"^https?://[^\s/]+(/[^\s]*)?$", max_length=2048)
    spec_digest: str = Field(pattern=r"^[0-9a-f]{64}$")
    max_concurrency: int = Field(ge=1, le=1024)


def _checked_registration(state: GatewayState, body: object) -> Registration:
    """The registration in `body` if it is valid and matches this gateway's catalog, else `ApiError`."""
    try:
        reg = Registration.model_validate(body)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())
        raise ApiError(422, f"invalid registration: {detail}", "invalid_registration") from None
    expected = state.digests.get(reg.engine_id)
    if expected is None:
        raise ApiError(422, f"engine id '{reg.engine_id}' is not in this gateway's catalog; known: "
                            f"{', '.join(state.digests)}", "unknown_engine", param="engine_id")
    if reg.spec_digest != expected:
        log.warning("registration_rejected engine_id=%s url=%s reason=spec_digest_mismatch engine=%s gateway=%s",
                    reg.engine_id, reg.url, reg.spec_digest[:12], expected[:12])
        raise ApiError(409, f"spec digest mismatch for '{reg.engine_id}': the engine runs spec "
                            f"{reg.spec_digest[:12]}…, this gateway's catalog has {expected[:12]}…; deploy "
                            f"the engine and the gateway from the same variant files", "spec_digest_mismatch",
                       param="spec_digest")
    return reg


async def _json_body(request: Request) -> object:
    raw = await request.body()
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"registration body is not JSON: {exc}", "invalid_json") from None


async def register(request: Request) -> Response:
    state = _state(request)
    state.require_internal_token(request.headers)
    reg = _checked_registration(state, await _json_body(request))
    inst = state.instances.register(reg.engine_id, reg.url, reg.spec_digest, reg.max_concurrency)
    return JSONResponse({"instance_id": inst.instance_id, "heartbeat_interval": state.config.heartbeat_interval,
                         "heartbeat_timeout": state.config.heartbeat_timeout}, status_code=201)


async def heartbeat(request: Request) -> Response:
    """Refresh an instance; the registration it carries (current engines) re-adds one we do not know."""
    state = _state(request)
    state.require_internal_token(request.headers)
    body = await _json_body(request)
    reg = None if body is None else _checked_registration(state, body)
    if state.instances.heartbeat(request.path_params["instance_id"],
                                 None if reg is None else reg.model_dump()) is None:
        raise ApiError(404, "unknown instance (dropped or the gateway restarted): register again", "unknown_instance")
    return JSONResponse({"status": "ok"})


async def deregister(request: Request) -> Response:
    state = _state(request)
    state.require_internal_token(request.headers)
    if state.instances.deregister(request.path_params["instance_id"]) is None:
        raise ApiError(404, "unknown instance", "unknown_instance")
    return Response(status_code=204)


async def list_instances(request: Request) -> Response:
    state = _state(request)
    state.require_internal_token(request.headers)
    data: dict[str, list[dict[str, object]]] = {}
    for inst in state.instances.all():
        data.setdefault(inst.engine_id, []).append(inst.to_json())
    return JSONResponse({"instances": data})


def routes() -> list[BaseRoute]:
    return [
        Route("/health", health), Route("/ready", ready), Route("/metrics", metrics),
        Route("/v1/models", list_models), Route("/v1/models/{model:path}", get_model),
        Route("/v1/audio/transcriptions", audio, methods=["POST"]),
        Route("/v1/audio/translations", audio, methods=["POST"]),
        WebSocketRoute("/v1/realtime", realtime),
        *console_routes(),
        *job_routes(job_owner),
        Route(INTERNAL_PREFIX, register, methods=["POST"]),
        Route(INTERNAL_PREFIX, list_instances, methods=["GET"]),
        Route(INTERNAL_PREFIX + "/{instance_id}/heartbeat", heartbeat, methods=["POST"]),
        Route(INTERNAL_PREFIX + "/{instance_id}", deregister, methods=["DELETE"]),
    ]
