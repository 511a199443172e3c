"""Realtime fixtures: the shipped whisper-streaming family on real weights, served by the real server app.

Each server under test is `dalston.server.app.create_app` over a real `ServerState` (the same app
`dalston serve` runs, with `/health`, `/ready` and `/v1/realtime`), under uvicorn on a loopback
port. The engine is loaded once per test session and shared by the servers of that session: the
weights are read-only and every realtime session owns its own streaming state, which is exactly
what the isolation tests check.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dalston.catalog import Catalog, CatalogEntry
from dalston.commands.stream import load_audio_16k
from dalston.engine_sdk import StreamingEngine, create_engine
from dalston.catalog import ModelRegistry
from dalston.server.app import create_app
from dalston.admission import Limits, RealtimeLimits
from dalston.server.state import ServerState
from tests.fixtures import assets
from tests.fixtures.serving import serve_app


@dataclass(frozen=True)
class Loaded:
    """A variant's catalog entry with its engine loaded from the real pinned weights."""

    entry: CatalogEntry
    engine: StreamingEngine
    registry: ModelRegistry
    weights_dir: Path

    @property
    def spec(self) -> Any:
        return self.entry.spec


def _load(engines_root: Path, variant_id: str, model_root: Path) -> Loaded:
    catalog = Catalog.load(engines_root)
    entry = catalog.get(variant_id)
    engine = create_engine(entry)
    assert isinstance(engine, StreamingEngine), f"{variant_id} is not served by a StreamingEngine"
    weights = assets.model_dir_for(variant_id, model_root, engines_root=engines_root)
    engine.load(weights)
    return Loaded(entry, engine, ModelRegistry.from_catalog(catalog), weights)


def server_state(loaded: Loaded, *, keys: Any = None, limits: RealtimeLimits | None = None,
                 ready: bool = True) -> ServerState:
    """The `ServerState` `dalston serve` would build, around an engine that is already loaded."""
    concurrency = loaded.spec.capabilities.max_concurrency
    state = ServerState(loaded.entry, loaded.engine, loaded.registry, keys,
                        Limits(max_concurrency=concurrency, max_queue=4 * concurrency, max_upload_bytes=1 << 30),
                        loaded.weights_dir, limits or RealtimeLimits())
    if ready:
        state.ready.set()
    return state


@contextlib.contextmanager
def serve_state(state: ServerState) -> Iterator[str]:
    """Serve the real app for `state` on loopback; yields `http://127.0.0.1:PORT`."""
    try:
        with serve_app(create_app(state)) as url:
            yield url
    finally:
        state.close()


@pytest.fixture(scope="session")
def engines_root(engines_with_test_variants: Path) -> Path:
    return engines_with_test_variants


@pytest.fixture(scope="session")
def tiny_engine(engines_root: Path, session_model_root: Path) -> Loaded:
    """whisper-streaming-tiny-en (test-only variant, real tiny.en bytes) loaded by the shipped family engine.py."""
    return _load(engines_root, "whisper-streaming-tiny-en", session_model_root)


@pytest.fixture(scope="session")
def base_engine(engines_root: Path, session_model_root: Path) -> Loaded:
    """The shipped whisper-streaming-base variant on its real pinned weights."""
    return _load(engines_root, "whisper-streaming-base", session_model_root)


@pytest.fixture
def realtime_server() -> Iterator[Callable[..., str]]:
    """`realtime_server(loaded, keys=None, limits=None, ready=True) -> http://...` (stopped after the test)."""
    stack = contextlib.ExitStack()

    def start(loaded: Loaded, **kwargs: Any) -> str:
        return stack.enter_context(serve_state(server_state(loaded, **kwargs)))

    with stack:
        yield start


@pytest.fixture(scope="session")
def clip_audio() -> Callable[[str], np.ndarray]:
    """`clip_audio("beckett.wav")`: the clip as 16 kHz mono float32 (decoded once per session)."""
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            cache[name] = load_audio_16k(assets.speech_clip(name))
        return cache[name]

    return get
