"""Engine-side registration with the gateway: register once ready, heartbeat, deregister on shutdown.

Runs in a daemon thread with a blocking HTTP client so it works the same under any server loop and
never delays a request. Every heartbeat carries the full registration, so a gateway that does not
know the instance (it was restarted, or dropped us after missed heartbeats) takes it back at once;
one that answers 404 anyway gets a fresh registration: the gateway keeps no state that needs
recovering. Several gateway URLs (replicas sharing a registry) each get the registration and the
heartbeats.

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
from collections.abc import Callable
from urllib.parse import urlsplit

import httpx

from dalston.spec import EngineSpec

log = logging.getLogger("dalston.registration")

GATEWAY_URL_ENV = "DALSTON_GATEWAY_URL"
#: "1": heartbeat every address a gateway URL's host name resolves to (a Kubernetes headless Service
#: lists every gateway pod), so each replica hears every engine first-hand.
EACH_ADDRESS_ENV = "DALSTON_GATEWAY_EACH_ADDRESS"
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
    """Keeps one engine instance registered with one or more gateways until `stop()`.

    With several gateway URLs (replicas behind one shared registry, `dalston gateway --registry`)
    every one of them gets the registration and the heartbeats: each replica then knows the engine
    first-hand, so it keeps routing to it, and drops it when it dies, even while the shared
    registry is unreachable; a replica that is down costs only a log line. The gateways derive
    the same instance id from (engine id, URL), so the replicas' records of this engine converge.
    Each heartbeat carries the full registration, so a replica that never saw the registration
    (it restarted, or the registry lost it) adopts the instance instead of answering 404.
    """

    def __init__(self, gateway_url: str | list[str], engine_id: str, engine_url: str, spec_digest: str,
                 max_concurrency: int, token: str, *, interval: float = 2.0, timeout: float = 5.0,
                 each_address: bool = False, resolve: Callable[[str, int], list[str]] | None = None) -> None:
        urls = parse_gateway_urls(gateway_url) if isinstance(gateway_url, str) else [u.rstrip("/") for u in gateway_url]
        if not urls:
            raise RegistrationConfigError("no gateway URL given")
        self.gateway_urls = urls
        self.each_address = each_address
        self._resolve = resolve or resolve_addresses
        self.engine_id = engine_id
        self.engine_url = engine_url.rstrip("/")
        self.spec_digest = spec_digest
        self.max_concurrency = max_concurrency
        self.interval = interval
        self.instance_ids: dict[str, str | None] = {url: None for url in urls}
        self.rejected: str | None = None
        self.registered = threading.Event()  # set while at least one gateway has us registered
        self._failures = {url: 0 for url in urls}
        self._stop = threading.Event()
        # A dead gateway must not hold up the heartbeats to the others: wait at most one interval.
        self._client = httpx.Client(timeout=min(timeout, max(interval, 0.5)),
                                    headers={"authorization": f"Bearer {token}"})
        self._thread = threading.Thread(target=self._run, name=f"registrar-{engine_id}", daemon=True)

    @property
    def gateway_url(self) -> str:
        """The first gateway URL (the only one in the common single-gateway setup)."""
        return self.gateway_urls[0]

    @property
    def instance_id(self) -> str | None:
        """The instance id the gateways gave us (the same on every replica), None until registered."""
        return next((i for i in self.instance_ids.values() if i is not None), None)

    def start(self) -> Registrar:
        self._thread.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        """Stop heartbeating and deregister, so the gateways stop routing to us at once."""
        self._stop.set()
        self._thread.join(timeout)
        for url, instance_id in self.instance_ids.items():
            self.instance_ids[url] = None
            if instance_id is None:
                continue
            try:
                self._client.delete(f"{url}{INSTANCES_PATH}/{instance_id}", timeout=timeout)
                log.info("engine_deregistered engine_id=%s gateway=%s", self.engine_id, url)
            except httpx.HTTPError as exc:
                log.warning("engine_deregister_failed engine_id=%s gateway=%s error=%s", self.engine_id, url, exc)
        self.registered.clear()
        self._client.close()

    def targets(self) -> list[str]:
        """The gateway URLs to heartbeat now: as configured, or (`each_address`) one per resolved address.

        Re-resolved every round, so gateway pods that come and go are followed; a name that does
        not resolve is kept as it is, so the failure shows up as `gateway_unreachable`.
        """
        if not self.each_address:
            return self.gateway_urls
        targets: list[str] = []
        for url in self.gateway_urls:
            parts = urlsplit(url)
            try:
                addresses = self._resolve(parts.hostname or "", parts.port or 80)
            except OSError:
                addresses = []
            candidates: list[str | None] = [*addresses] if addresses else [None]  # None: the URL as given
            for address in candidates:
                host = address if address is None or ":" not in address else f"[{address}]"
                netloc = parts.netloc if host is None else f"{host}:{parts.port or 80}"
                target = parts._replace(netloc=netloc).geturl()
                if target not in targets:
                    targets.append(target)
        for target in targets:  # new pods start unregistered; vanished ones are simply forgotten
            self.instance_ids.setdefault(target, None)
            self._failures.setdefault(target, 0)
        for gone in set(self.instance_ids) - set(targets):
            del self.instance_ids[gone], self._failures[gone]
        return targets

    def _run(self) -> None:
        while not self._stop.is_set():
            for url in self.targets():
                if self._stop.is_set():
                    return
                try:
                    if self.instance_ids[url] is None:
                        self._register(url)
                    else:
                        self._heartbeat(url)
                    self._failures[url] = 0
                except RegistrationRejected as exc:
                    self.rejected = str(exc)
                    log.error("engine_registration_rejected engine_id=%s gateway=%s error=%s",
                              self.engine_id, url, exc)
                    return
                except httpx.HTTPError as exc:
                    failures = self._failures[url] = self._failures[url] + 1
                    if failures == 1 or failures % 30 == 0:
                        log.warning("gateway_unreachable engine_id=%s gateway=%s attempts=%d error=%s",
                                    self.engine_id, url, failures, exc)
            if not any(self.instance_ids.values()):
                self.registered.clear()
            # Back off only when no gateway answers; one healthy gateway keeps the normal pace.
            failures = min(self._failures.values(), default=0)
            self._stop.wait(self.interval if failures == 0 else min(self.interval * failures, 10.0))

    def _body(self) -> dict[str, object]:
        return {"engine_id": self.engine_id, "url": self.engine_url, "spec_digest": self.spec_digest,
                "max_concurrency": self.max_concurrency}

    def _register(self, url: str) -> None:
        response = self._client.post(f"{url}{INSTANCES_PATH}", json=self._body())
        if response.status_code in (400, 401, 403, 404, 409, 422):
            raise RegistrationRejected(f"HTTP {response.status_code}: {_message(response)}")
        response.raise_for_status()
        body = response.json()
        self.instance_ids[url] = body["instance_id"]
        # Beat a little faster than the gateway asks for so that one late beat never drops us.
        self.interval = min(self.interval, float(body.get("heartbeat_interval", self.interval)))
        self.registered.set()
        log.info("engine_registered engine_id=%s gateway=%s url=%s instance_id=%s", self.engine_id,
                 url, self.engine_url, body["instance_id"])

    def _heartbeat(self, url: str) -> None:
        response = self._client.post(f"{url}{INSTANCES_PATH}/{self.instance_ids[url]}/heartbeat", json=self._body())
        if response.status_code == 404:
            log.info("engine_reregistering engine_id=%s gateway=%s reason=unknown_instance", self.engine_id, url)
            self.instance_ids[url] = None
            self._register(url)
            return
        if response.status_code == 401:
            raise RegistrationRejected(f"HTTP 401: {_message(response)}")
        response.raise_for_status()


def resolve_addresses(host: str, port: int) -> list[str]:
    """Every distinct address `host` resolves to (the pods of a headless Service), in resolver order."""
    seen: list[str] = []
    for *_, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        if sockaddr[0] not in seen:
            seen.append(str(sockaddr[0]))
    return seen


def parse_gateway_urls(value: str) -> list[str]:
    """`http://a:8000,http://b:8000` (commas and/or spaces) -> the URLs without trailing slashes."""
    return [u.rstrip("/") for u in value.replace(",", " ").split()]


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

    `gateway_url` (one URL, or several separated by commas: gateway replicas sharing one registry)
    defaults to `$DALSTON_GATEWAY_URL` (with `$DALSTON_GATEWAY_EACH_ADDRESS=1`, every address its host
    resolves to is a gateway of its own), `token` to `$DALSTON_INTERNAL_TOKEN`; the URL the
    gateway uses to reach us is `advertise_url(host, port)`. Call `.start()` after the engine is ready
    and `.stop()` on shutdown (it deregisters, so the gateway stops routing to us at once).
    """
    gateway_url = gateway_url or os.environ.get(GATEWAY_URL_ENV)
    if not gateway_url or not parse_gateway_urls(gateway_url):
        return None
    token = token or os.environ.get(INTERNAL_TOKEN_ENV)
    if not token:
        raise RegistrationConfigError(
            f"--gateway {gateway_url} needs the gateway's internal token: set {INTERNAL_TOKEN_ENV} to the same "
            f"secret the gateway uses")
    each_address = os.environ.get(EACH_ADDRESS_ENV, "").lower() in ("1", "true", "yes")
    return Registrar(gateway_url, spec.id, advertise_url(host, port), spec_digest(spec),
                     spec.capabilities.max_concurrency, token, interval=interval, each_address=each_address)
