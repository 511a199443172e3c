"""Engine-side registration with the gateway: register once ready, heartbeat, deregister on shutdown.

Runs in a daemon thread with a blocking HTTP client so it works the same under any server loop and
never delays a request. The gateway answers a heartbeat for an instance it does not know (it was
restarted, or dropped us after missed heartbeats) with 404, and we simply register again: the
gateway keeps no state that needs recovering.

The spec digest is the sha256 of the canonical JSON of the variant spec: the gateway compares it
with its own catalog and refuses an engine built from different variant files (version skew).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading

import httpx

from dalston.spec import EngineSpec

log = logging.getLogger("dalston.registration")

GATEWAY_URL_ENV = "DALSTON_GATEWAY_URL"
INTERNAL_TOKEN_ENV = "DALSTON_INTERNAL_TOKEN"
ADVERTISE_URL_ENV = "DALSTON_ADVERTISE_URL"
INSTANCES_PATH = "/internal/v1/instances"


def spec_digest(spec: EngineSpec) -> str:
    """sha256 of the spec as canonical JSON (sorted keys, no whitespace, defaults filled in)."""
    canonical = json.dumps(spec.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def advertise_url(host: str, port: int) -> str:
    """The URL the gateway should use to reach this engine.

    `$DALSTON_ADVERTISE_URL` wins (set it behind NAT or in Kubernetes: the pod IP / service URL);
    a wildcard bind address is replaced by this machine's host name (a compose service's name).
    """
    env = os.environ.get(ADVERTISE_URL_ENV)
    if env:
        return env.rstrip("/")
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


class RegistrationRejected(RuntimeError):
    """The gateway refused us for a reason retrying cannot fix (bad token, unknown id, spec skew)."""


class Registrar:
    """Keeps one engine instance registered with one gateway until `stop()`."""

    def __init__(self, gateway_url: str, engine_id: str, engine_url: str, spec_digest: str,
                 max_concurrency: int, token: str, *, interval: float = 2.0, timeout: float = 5.0) -> None:
        self.gateway_url = gateway_url.rstrip("/")
        self.engine_id = engine_id
        self.engine_url = engine_url.rstrip("/")
        self.spec_digest = spec_digest
        self.max_concurrency = max_concurrency
        self.interval = interval
        self.instance_id: str | None = None
        self.rejected: str | None = None
        self.registered = threading.Event()
        self._stop = threading.Event()
        self._client = httpx.Client(timeout=timeout, headers={"authorization": f"Bearer {token}"})
        self._thread = threading.Thread(target=self._run, name=f"registrar-{engine_id}", daemon=True)

    def start(self) -> Registrar:
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Stop heartbeating and deregister, so the gateway stops routing to us at once."""
        self._stop.set()
        self._thread.join(timeout)
        instance_id, self.instance_id = self.instance_id, None
        if instance_id is not None:
            try:
                self._client.delete(f"{self.gateway_url}{INSTANCES_PATH}/{instance_id}", timeout=timeout)
                log.info("engine_deregistered engine_id=%s gateway=%s", self.engine_id, self.gateway_url)
            except httpx.HTTPError as exc:
                log.warning("engine_deregister_failed engine_id=%s gateway=%s error=%s",
                            self.engine_id, self.gateway_url, exc)
        self._client.close()

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.instance_id is None:
                    self._register()
                else:
                    self._heartbeat()
                failures = 0
            except RegistrationRejected as exc:
                self.rejected = str(exc)
                log.error("engine_registration_rejected engine_id=%s gateway=%s error=%s",
                          self.engine_id, self.gateway_url, exc)
                return
            except httpx.HTTPError as exc:
                failures += 1
                if failures == 1 or failures % 30 == 0:
                    log.warning("gateway_unreachable engine_id=%s gateway=%s attempts=%d error=%s",
                                self.engine_id, self.gateway_url, failures, exc)
            self._stop.wait(self.interval if failures == 0 else min(self.interval * failures, 10.0))

    def _register(self) -> None:
        response = self._client.post(f"{self.gateway_url}{INSTANCES_PATH}", json={
            "engine_id": self.engine_id, "url": self.engine_url, "spec_digest": self.spec_digest,
            "max_concurrency": self.max_concurrency})
        if response.status_code in (400, 401, 403, 404, 409, 422):
            raise RegistrationRejected(f"HTTP {response.status_code}: {_message(response)}")
        response.raise_for_status()
        body = response.json()
        self.instance_id = body["instance_id"]
        # Beat a little faster than the gateway asks for so that one late beat never drops us.
        self.interval = min(self.interval, float(body.get("heartbeat_interval", self.interval)))
        self.registered.set()
        log.info("engine_registered engine_id=%s gateway=%s url=%s instance_id=%s", self.engine_id,
                 self.gateway_url, self.engine_url, self.instance_id)

    def _heartbeat(self) -> None:
        response = self._client.post(f"{self.gateway_url}{INSTANCES_PATH}/{self.instance_id}/heartbeat")
        if response.status_code == 404:
            log.info("engine_reregistering engine_id=%s gateway=%s reason=unknown_instance",
                     self.engine_id, self.gateway_url)
            self.instance_id = None
            self.registered.clear()
            self._register()
            return
        if response.status_code == 401:
            raise RegistrationRejected(f"HTTP 401: {_message(response)}")
        response.raise_for_status()


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


class RegistrationConfigError(ValueError):
    """`--gateway` was given but registration cannot work (no internal token); the message says the fix."""


def registrar_for(spec: EngineSpec, host: str, port: int, gateway_url: str | None = None,
                  token: str | None = None, interval: float = 2.0) -> Registrar | None:
    """The registrar `dalston serve` starts once ready, or None when no gateway is configured.

    `gateway_url` defaults to `$DALSTON_GATEWAY_URL`, `token` to `$DALSTON_INTERNAL_TOKEN`; the URL the
    gateway uses to reach us is `advertise_url(host, port)`. Call `.start()` after the engine is ready
    and `.stop()` on shutdown (it deregisters, so the gateway stops routing to us at once).
    """
    gateway_url = gateway_url or os.environ.get(GATEWAY_URL_ENV)
    if not gateway_url:
        return None
    token = token or os.environ.get(INTERNAL_TOKEN_ENV)
    if not token:
        raise RegistrationConfigError(
            f"--gateway {gateway_url} needs the gateway's internal token: set {INTERNAL_TOKEN_ENV} to the same "
            f"secret the gateway uses")
    return Registrar(gateway_url, spec.id, advertise_url(host, port), spec_digest(spec),
                     spec.capabilities.max_concurrency, token, interval=interval)
