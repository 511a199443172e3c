"""Realtime fixtures: the shipped whisper-streaming family on real weights, served over real loopback sockets.

The server under test is uvicorn running the real `/v1/realtime` route (`dalston.server.realtime`)
plus the server's `create_app` when it can build one from the state; `/health` must stay answerable
while sessions decode, so the tests probe it over HTTP.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from dalston.catalog import Catalog
from dalston.commands.stream import load_audio_16k
from dalston.engine_sdk import StreamingEngine, create_engine
from dalston.models import ModelRegistry
from dalston.server.realtime import RealtimeLimits, realtime_routes
from tests.fixtures import assets


@dataclass
class RealtimeState:
    """The fields of the server's ServerState that the realtime route reads."""

    spec: Any
    engine: StreamingEngine
    registry: Any = None
    keys: Any = None
    ready: bool = True
    realtime_limits: RealtimeLimits | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serve(app: Starlette) -> Iterator[str]:
    """Run `app` under uvicorn on loopback in a thread; yields `ws://127.0.0.1:PORT`."""
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws="websockets-sansio"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"ws://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def build_app(state: RealtimeState) -> Starlette:
    async def health(_: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/health", health), *realtime_routes(state)])


@pytest.fixture(scope="session")
def engines_root(engines_with_test_variants: Path) -> Path:
    return engines_with_test_variants


def _loaded(engines_root: Path, variant_id: str, model_root: Path) -> tuple[Any, StreamingEngine, Any]:
    catalog = Catalog.load(engines_root)
    entry = catalog.get(variant_id)
    engine = create_engine(entry)
    assert isinstance(engine, StreamingEngine)
    engine.load(assets.model_dir_for(variant_id, model_root, engines_root=engines_root))
    return entry.spec, engine, ModelRegistry.from_catalog(catalog)


@pytest.fixture(scope="session")
def tiny_engine(engines_root: Path, session_model_root: Path) -> tuple[Any, StreamingEngine, Any]:
    """whisper-streaming-tiny-en (test-only variant) loaded by the shipped family engine.py."""
    return _loaded(engines_root, "whisper-streaming-tiny-en", session_model_root)


@pytest.fixture(scope="session")
def base_engine(engines_root: Path, session_model_root: Path) -> tuple[Any, StreamingEngine, Any]:
    """The shipped whisper-streaming-base variant on its real pinned weights."""
    return _loaded(engines_root, "whisper-streaming-base", session_model_root)


@pytest.fixture
def realtime_server() -> Iterator[Callable[..., str]]:
    """`realtime_server(loaded_engine, keys=None, limits=None, ready=True) -> ws://...` (stopped after the test)."""
    stack = contextlib.ExitStack()

    def start(loaded: tuple[Any, StreamingEngine, Any], **kwargs: Any) -> str:
        spec, engine, registry = loaded
        limits = kwargs.pop("limits", None)
        state = RealtimeState(spec=spec, engine=engine, registry=registry, realtime_limits=limits, **kwargs)
        return stack.enter_context(serve(build_app(state)))

    with stack:
        yield start


@pytest.fixture(scope="session")
def clip_audio() -> Callable[[str], np.ndarray]:
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = load_audio_16k(assets.speech_clip(name))
        return cache[name]

    return get
