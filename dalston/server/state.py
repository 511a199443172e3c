"""Everything one engine server holds: the variant, its engine, keys, its `Admission`, metrics and readiness.

The model loads in a background thread so `/health` answers at once and `/ready` says 503 until the
weights are in memory (orchestrators then route traffic only to warm replicas).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from dalston.admission import Admission, Limits, RealtimeLimits
from dalston.auth import KeyStore
from dalston.catalog import CatalogEntry, ModelRegistry
from dalston.engine_sdk import Engine, StreamingEngine, create_engine
from dalston.draining import shutting_down
from dalston.errors import ApiError
from dalston.server.metrics import ServerMetrics
from dalston.server.realtime_drain import OpenSessions
from dalston.spec import EngineSpec

log = logging.getLogger("dalston.server")

DEFAULT_MAX_UPLOAD_BYTES = 1 << 30  # 1 GiB, about 9 h of 16 kHz 16-bit wav


@dataclass
class ServerState:
    entry: CatalogEntry
    engine: Engine
    registry: ModelRegistry
    keys: KeyStore | None  # None only with --insecure-no-auth
    limits: Limits
    weights_dir: Path
    realtime_limits: RealtimeLimits = field(default_factory=RealtimeLimits)
    ready: threading.Event = field(default_factory=threading.Event)
    load_error: str | None = None
    draining: bool = False
    sessions: OpenSessions = field(default_factory=OpenSessions)  # realtime sessions, drained on SIGTERM
    admission: Admission = field(init=False)
    metrics: ServerMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.admission = Admission(self.limits)
        self.metrics = ServerMetrics(self.spec.id, self.admission)
        if isinstance(self.engine, StreamingEngine):
            self.engine.batch_observer = self.metrics.realtime_batch_size.observe

    @property
    def spec(self) -> EngineSpec:
        return self.entry.spec

    @classmethod
    def create(cls, entry: CatalogEntry, registry: ModelRegistry, weights_dir: Path, *, keys: KeyStore | None,
               max_queue: int | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
               realtime_limits: RealtimeLimits | None = None, retry_grace_seconds: float = 5.0) -> ServerState:
        concurrency = entry.spec.capabilities.max_concurrency
        limits = Limits(max_concurrency=concurrency, max_queue=4 * concurrency if max_queue is None else max_queue,
                        max_upload_bytes=max_upload_bytes, retry_grace_seconds=retry_grace_seconds)
        return cls(entry, create_engine(entry), registry, keys, limits, weights_dir, realtime_limits or RealtimeLimits())

    def close(self) -> None:
        """Release what outlives requests (the executor); the server's lifespan calls it on shutdown."""
        self.admission.shutdown()

    def require_ready(self) -> None:
        """503 unless loaded and not draining: after SIGTERM open work finishes but nothing new starts."""
        if self.draining:
            raise shutting_down()
        if not self.ready.is_set():
            detail = f"model failed to load: {self.load_error}" if self.load_error else "model is still loading"
            raise ApiError(503, f"{self.spec.id} is not ready ({detail})", "model_not_ready",
                           headers={"Retry-After": "5"})

    def load(self) -> None:
        """Load the weights (blocking), then mark ready and log `engine_registered`."""
        started = time.monotonic()
        self.engine.load(self.weights_dir)
        facts = " ".join(f"{k}={v}" for k, v in self.engine.describe().items())
        log.info("engine_registered engine_id=%s stage=%s %s max_concurrency=%d load_seconds=%.2f weights_dir=%s",
                 self.spec.id, self.spec.stage, facts, self.limits.max_concurrency, time.monotonic() - started,
                 self.weights_dir)
        if self.engine.device == "cpu" and not self.spec.hardware.supports_cpu:
            log.warning("engine_on_cpu engine_id=%s reason=no_gpu_found hardware.supports_cpu=false "
                        "min_vram_gb=%s recommended_gpu=%s: expect far slower than real time; schedule it on a GPU node",
                        self.spec.id, self.spec.hardware.min_vram_gb, ",".join(self.spec.hardware.recommended_gpu))
        self.ready.set()  # after the log line: whoever sees /ready 200 can find it in the log

    def load_in_background(self, on_ready: Callable[[], None] | None = None,
                           on_failure: Callable[[str], None] | None = None) -> threading.Thread:
        def run() -> None:
            try:
                self.load()
            except Exception as exc:  # report, never leave a server that is alive but never ready
                self.load_error = f"{type(exc).__name__}: {exc}"
                log.error("engine_load_failed engine_id=%s weights_dir=%s error=%r", self.spec.id, self.weights_dir,
                          self.load_error)
                if on_failure:
                    on_failure(self.load_error)
                return
            if on_ready:
                on_ready()

        thread = threading.Thread(target=run, name="model-load", daemon=True)
        thread.start()
        return thread
