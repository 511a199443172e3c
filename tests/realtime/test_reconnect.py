"""A dropped realtime session frees its slot for a client that reconnects at once (no spurious 4029).

A tight loop at `max_concurrency`: one session stays open, the other slot is taken by a client that
streams a second of speech, drops the TCP connection without a close frame, and reconnects at
once, 40 times. Before the fix a reconnect often reached the server before the dropped session's
task had run on its disconnect, and was refused with 4029 although the client held no session.
The cap still holds: with every slot taken by live sessions, one more is refused.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import websockets

from dalston.commands.stream import realtime_url, to_pcm16
from tests.realtime.conftest import Loaded

CONFIG = {"type": "session.config", "sample_rate": 16000, "encoding": "pcm16", "language": "en"}
CYCLES = 40


async def _open(url: str) -> tuple[Any, dict[str, Any]]:
    """Connect and configure; the first event (session.begin, or the refusal's error event)."""
    ws = await websockets.connect(url, max_size=None)
    try:
        await ws.send(json.dumps(CONFIG))
    except websockets.ConnectionClosed:
        pass  # refused at once: the error event is still buffered
    try:
        return ws, json.loads(await ws.recv())
    except websockets.ConnectionClosed:
        return ws, {"type": "closed", "code": ws.close_code}


def test_reconnect_after_abrupt_drop_is_not_refused(tiny_engine: Loaded, realtime_server: Any,
                                                    clip_audio: Any) -> None:
    url = realtime_url(realtime_server(tiny_engine), tiny_engine.spec.id)
    cap = tiny_engine.spec.capabilities.max_concurrency
    speech = clip_audio("beckett.wav")[:16000]

    async def main() -> tuple[list[Any], dict[str, Any]]:
        held = [await _open(url) for _ in range(cap - 1)]
        assert all(first["type"] == "session.begin" for _, first in held), held
        refused = []
        for i in range(CYCLES):
            ws, first = await _open(url)
            if first["type"] != "session.begin":
                refused.append((i, first))
                await ws.close()
                continue
            for start in range(0, len(speech), 2560):
                await ws.send(to_pcm16(speech[start:start + 2560]))
            ws.transport.abort()  # drop: no close frame, as a client that crashed or lost its network
        # the cap still holds: every slot taken by a live session, one more is refused
        last, first = await _open(url)
        over, over_first = await _open(url)
        for ws, _ in [*held, (last, first), (over, over_first)]:
            await ws.close()
        assert first["type"] == "session.begin", first
        return refused, over_first

    refused, over_cap = asyncio.run(main())
    assert refused == [], f"{len(refused)} of {CYCLES} reconnects refused: {refused[:3]}"
    assert over_cap["type"] == "error" and over_cap["code"] == "too_many_sessions", over_cap
