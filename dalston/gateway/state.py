"""What one gateway holds — config, model names, live instances, metrics, the upstream client — and
the refusals its routes share, as `ApiError`s.

Who may call and which engine a name means are the engine server's own answers
(`dalston.admission.authenticate` / `resolve_model`); what is gateway-only lives here: the internal
token engines register with, "no live instance", and the gateway's upload limit.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx

from dalston.admission import bearer_token
from dalston.auth import KeyStore
from dalston.catalog import Catalog, ModelRegistry
from dalston.errors import ApiError
from dalston.gateway.instances import InstanceRegistry
from dalston.gateway.metrics import GatewayMetrics, RegistryCollector
from dalston.registration import spec_digest
from dalston.server.realtime_drain import OpenSessions


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


def _instance_registry(config: GatewayConfig) -> InstanceRegistry:
    """The in-memory registry, or the Redis-shared one when `registry_url` is set (`--registry`)."""
    if config.registry_url is None:
        return InstanceRegistry(timeout=config.heartbeat_timeout)
    from dalston.gateway.redis_registry import RedisRegistry  # only deployments with Redis import the client

    return RedisRegistry(timeout=config.heartbeat_timeout, url=config.registry_url, refresh=config.registry_refresh)


@dataclass
class GatewayState:
    config: GatewayConfig
    models: ModelRegistry
    digests: dict[str, str]
    instances: InstanceRegistry
    metrics: GatewayMetrics
    client: httpx.AsyncClient | None = None
    draining: bool = False  # SIGTERM: /ready 503, new work refused, open work drained (dalston.gateway.main)
    sessions: OpenSessions = field(default_factory=OpenSessions)  # relayed realtime sessions
    requests: int = 0  # client HTTP requests in progress (dalston.gateway.app's counter)

    @classmethod
    def create(cls, config: GatewayConfig) -> GatewayState:
        instances = _instance_registry(config)

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

    def require_internal_token(self, headers: Mapping[str, str]) -> None:
        """401 unless the request carries the shared secret engines register with (compared in constant time)."""
        token = bearer_token(headers) or ""
        if not hmac.compare_digest(token.encode(), self.config.internal_token.encode()):
            raise ApiError(401, "missing or wrong internal token (DALSTON_INTERNAL_TOKEN) for engine registration",
                           "invalid_internal_token")

    def no_instance(self, engine_id: str) -> ApiError:
        return ApiError(503, f"model '{engine_id}' has no live engine instance; start one with "
                             f"`dalston serve {engine_id} --gateway <gateway url>` or retry later",
                        "model_unavailable", param="model", headers={"Retry-After": str(self.config.retry_after)})

    def too_large(self) -> ApiError:
        return ApiError(413, f"upload larger than the gateway limit of {self.config.max_upload_bytes} bytes",
                        "file_too_large", param="file")
