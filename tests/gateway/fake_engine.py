"""A small upstream that stands in for an engine in the gateway's unit tests (no model involved).

It answers like an engine's OpenAI route but reports what it received (sha256 and size of the raw
body, the form's model) so a test can prove the gateway forwarded the upload byte for byte. The
end-to-end tests (test_e2e.py) run real `dalston serve` engines instead.

Its `/v1/realtime` models what the gateway relays of dalston/server/realtime.py (at ad31016): it
accepts, sends a first event, answers every client frame, and closes when asked — `close` with 1000,
`close CODE REASON` with that code and reason as `_SessionHandler.close` does (e.g. 1001 "server
shutting down" after a drain, 4400 on a bad frame); the gateway must relay both. A native
`{"type": "session.end"}` is answered as the real engine does: `session.end` with what it received
(here: the audio bytes), then close 1000. It does not decode audio: it says how many bytes each
binary frame had.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import struct
import threading
from collections.abc import Iterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


def fake_engine_app(name: str) -> Starlette:
    async def transcribe(request: Request) -> Response:
        behaviour = request.query_params.get("behaviour", "")
        if behaviour == "slow":
            await asyncio.sleep(float(request.query_params.get("seconds", "5")))
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.stream():
            digest.update(chunk)
            size += len(chunk)
        if behaviour == "hold":
            await asyncio.sleep(float(request.query_params.get("seconds", "0.5")))
        if behaviour == "sse":
            async def events():
                for i in range(3):
                    yield f"data: {json.dumps({'type': 'transcript.text.delta', 'delta': f'w{i}'})}\n\n"
                    await asyncio.sleep(0.3)
                yield "data: [DONE]\n\n"
            return StreamingResponse(events(), media_type="text/event-stream")
        return JSONResponse({"text": f"from {name}", "instance": name, "sha256": digest.hexdigest(), "size": size,
                             "auth": request.headers.get("authorization", ""), "path": request.url.path})

    async def realtime(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(json.dumps({"type": "session.created", "instance": name,
                                              "model": websocket.query_params.get("model")}))
        received = 0
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                if message.get("bytes") is not None:
                    received += len(message["bytes"])
                    await websocket.send_text(json.dumps({"type": "audio", "bytes": len(message["bytes"])}))
                elif message.get("text") == json.dumps({"type": "session.end"}):
                    await websocket.send_text(json.dumps({"type": "session.end", "bytes": received}))
                    await websocket.close(code=1000)
                    return
                elif message.get("text") == "close":
                    await websocket.close(code=1000)
                    return
                elif (message.get("text") or "").startswith("close "):
                    _, code, reason = message["text"].split(" ", 2)
                    await websocket.close(code=int(code), reason=reason)
                    return
                else:
                    await websocket.send_text(message["text"])
        except WebSocketDisconnect:
            return

    return Starlette(routes=[Route("/v1/audio/transcriptions", transcribe, methods=["POST"]),
                             Route("/v1/audio/translations", transcribe, methods=["POST"]),
                             WebSocketRoute("/v1/realtime", realtime)])


@contextlib.contextmanager
def dying_server() -> Iterator[str]:
    """A server that reads the start of each request, then resets the connection: an engine dying mid-request."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            conn.recv(4096)
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(2)
        listener.close()
