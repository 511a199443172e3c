"""Route an OpenAI Realtime transcription session by its model when the URL names none.

OpenAI clients connect to `/v1/realtime?intent=transcription` and name the model only in their
first `session.update` (`session.audio.input.transcription.model`; beta:
`session.input_audio_transcription.model`). So the gateway accepts the WebSocket, sends
`session.created` itself (some clients wait for it before configuring), reads client events until
one names a model it can route, and returns that model's engine id, a live instance and the event
text; the proxy then connects to the instance, forwards that event and relays everything else
unchanged (dropping the engine's own `session.created`, which the client already had).
Everything sent before is answered here with OpenAI `error` events, and the session stays open.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, Any

from dalston.catalog import ModelNotFound
from dalston.realtime.openai_protocol import EventIds, OpenAIError, TranscriptionSettings, error_event, session_object
from dalston.server.realtime_openai import DRAIN_DEADLINE

if TYPE_CHECKING:
    from dalston.gateway.client_session import ClientSession
    from dalston.gateway.state import GatewayState
    from dalston.gateway.instances import Instance

_IDS = EventIds()
ROUTE_TIMEOUT_S = 30.0  # as the engines' default idle timeout


def model_of(event: dict[str, Any]) -> str | None:
    """The transcription model a session.update / transcription_session.update names, if any."""
    session = event.get("session")
    if not isinstance(session, dict):
        return None
    if event.get("type") == "transcription_session.update":
        transcription = session.get("input_audio_transcription")
    else:
        audio = session.get("audio")
        inp = audio.get("input") if isinstance(audio, dict) else None
        transcription = inp.get("transcription") if isinstance(inp, dict) else None
    model = transcription.get("model") if isinstance(transcription, dict) else None
    return model if isinstance(model, str) and model else None


async def await_model(client: ClientSession, state: GatewayState, beta: bool
                      ) -> tuple[str, Instance, str] | None:
    """After `accept`: (engine id, instance, the routing event's text), or None if the client left
    (or the gateway's drain deadline passed: `client.expired`)."""

    async def error(exc: OpenAIError, event_id: Any = None) -> None:
        await client.send_json(error_event(_IDS, exc, event_id if isinstance(event_id, str) else None))

    kind = "transcription_session.created" if beta else "session.created"
    await client.send_json({"type": kind, "event_id": _IDS.event(), "session": session_object(
        TranscriptionSettings(), "rt_gw_" + uuid.uuid4().hex[:12], None, beta)})
    await client.begin()  # a draining notice may follow now
    while True:
        try:
            message = await asyncio.wait_for(client.receive(), ROUTE_TIMEOUT_S)
        except asyncio.TimeoutError:
            await error(OpenAIError("idle_timeout", f"no session.update naming a model within {ROUTE_TIMEOUT_S:g} s"))
            await client.close(4408)
            return None
        if message["type"] in ("websocket.disconnect", DRAIN_DEADLINE):
            return None
        text = message.get("text")
        try:
            event = json.loads(text or "")
            if not isinstance(event, dict):
                raise ValueError
        except ValueError:
            await error(OpenAIError("invalid_json", "client events must be JSON objects (audio goes in "
                                    "input_audio_buffer.append)"))
            continue
        event_id = event.get("event_id")
        if event.get("type") not in ("session.update", "transcription_session.update"):
            await error(OpenAIError("session_not_configured", f"{event.get('type')!r} before session.update: the "
                                    "gateway routes a session by its transcription model, so send session.update "
                                    "with audio.input.transcription.model first", "type"), event_id)
            continue
        param = ("session.input_audio_transcription.model" if event.get("type") == "transcription_session.update"
                 else "session.audio.input.transcription.model")
        name = model_of(event)
        if name is None:
            await error(OpenAIError("model_required", f"{param} is required through a gateway (or connect with "
                                    "?model=<id>): it picks the engine", param), event_id)
            continue
        try:
            engine_id = state.models.resolve(name)
        except ModelNotFound as exc:
            await error(OpenAIError("model_not_found", str(exc), param), event_id)
            continue
        inst = state.instances.pick(engine_id)
        if inst is None:
            await error(OpenAIError("model_unavailable", f"model '{engine_id}' has no live engine instance; retry "
                                    f"later", param, error_type="server_error"), event_id)
            continue
        return engine_id, inst, text or ""
