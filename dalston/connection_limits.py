"""Connection limits for every dalston HTTP server: slow or stalled clients cannot hold connections.

uvicorn reads request headers and bodies for as long as a client cares to send them: a request that
declares 1 GB and sends 1 KB, or a header line at 1 byte/s, holds its connection (and, behind the
gateway, an engine connection counted as in flight) until the client gives up. No uvicorn option
bounds this (`timeout_keep_alive` only covers the idle gap *between* requests), and an ASGI
middleware cannot bound the header phase because the app is called only once headers are complete.
So the limits live in the HTTP protocol object, the one place that sees every byte:

- **header deadline**: the request line and headers must be complete within `header_timeout_s` of
  the connection opening (or of the previous response on a kept-alive connection) -> 408, close;
- **body deadlines**: once headers are in, no body bytes for `body_idle_timeout_s`, or an average rate
  below `min_body_rate` bytes/s after `body_rate_grace_s` -> 408 if no response has started, close.
  The app then sees a client disconnect (ASGI `http.disconnect`), exactly as if the client had hung up,
  so the engine frees its slot and the gateway cancels its upstream request;
- **connection cap**: more than `max_connections` open HTTP connections -> 503 with `Retry-After`,
  answered before reading anything. WebSocket sessions are not HTTP connections once upgraded; they
  are capped by the admission budget and by the realtime idle timeout.

Answers are OpenAI-style JSON errors with `Connection: close`. `protocol_class(limits)` is passed to
uvicorn as `http=`; `add_arguments` gives `dalston serve` and `dalston gateway` the same flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("dalston.connections")


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout_s: float = 10.0
    body_idle_timeout_s: float = 30.0
    min_body_rate: float = 1024.0  # bytes/s, averaged over the whole body so far
    body_rate_grace_s: float = 10.0  # the rate is only judged after this long (slow starts, TCP ramp-up)
    max_connections: int = 1000
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        for name in ("header_timeout_s", "body_idle_timeout_s", "body_rate_grace_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.min_body_rate < 0 or self.max_connections < 1:
            raise ValueError("min_body_rate must be >= 0 and max_connections >= 1")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = ConnectionLimits()
    parser.add_argument("--header-timeout", type=float, default=d.header_timeout_s,
                        help=f"seconds for a request's headers to arrive; then 408 (default {d.header_timeout_s:g})")
    parser.add_argument("--body-timeout", type=float, default=d.body_idle_timeout_s,
                        help=f"seconds without request body bytes; then 408 (default {d.body_idle_timeout_s:g})")
    parser.add_argument("--min-upload-rate", type=float, default=d.min_body_rate,
                        help=f"bytes/s a request body must average after {d.body_rate_grace_s:g} s; "
                             f"below it 408 (default {d.min_body_rate:g}; 0 disables)")
    parser.add_argument("--max-connections", type=int, default=d.max_connections,
                        help=f"open HTTP connections; beyond it 503 + Retry-After (default {d.max_connections})")


def from_arguments(args: argparse.Namespace) -> ConnectionLimits:
    return ConnectionLimits(header_timeout_s=args.header_timeout, body_idle_timeout_s=args.body_timeout,
                            min_body_rate=args.min_upload_rate, max_connections=args.max_connections)


def _error(status: int, reason: str, message: str, code: str, extra: dict[str, str] | None = None) -> bytes:
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error" if status < 500 else
                                 "server_error", "param": None, "code": code}}).encode()
    headers = {"content-type": "application/json", "content-length": str(len(body)), "connection": "close",
               **(extra or {})}
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    return head.encode("latin-1") + body


def protocol_class(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with `limits` enforced (pass as `uvicorn.Config(http=...)`)."""

    class LimitedH11Protocol(H11Protocol):
        _limits = limits

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._timer: asyncio.TimerHandle | None = None
            self._phase_started = 0.0  # when the current header or body phase began
            self._last_bytes_at = 0.0
            self._checked_at = 0.0
            self._bytes = 0  # bytes received in the current phase (header bytes, then body bytes)

        # --- connection
        # uvicorn's own signature, narrower than asyncio.Protocol's BaseTransport (uvicorn only serves streams)
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > self._limits.max_connections:
                log.warning("connection_refused reason=max_connections limit=%d client=%s",
                            self._limits.max_connections, self.client)
                self._answer(503, "Service Unavailable", f"server at its connection limit "
                             f"({self._limits.max_connections}); retry after {self._limits.retry_after_s} s",
                             "too_many_connections", {"retry-after": str(self._limits.retry_after_s)})
                return
            self._start_phase()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_timer()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            before = self.conn.their_state
            super().data_received(data)
            now = time.monotonic()
            if before is h11.IDLE and self.conn.their_state is not h11.IDLE:
                self._phase_started, self._bytes = now, 0  # headers complete: the body phase starts
            self._bytes += len(data)
            self._last_bytes_at = now

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._start_phase()  # the next request on a kept-alive connection gets its own header deadline

        # --- deadlines
        def _start_phase(self) -> None:
            self._phase_started = self._last_bytes_at = self._checked_at = time.monotonic()
            self._bytes = 0
            self._arm(1.0)

        def _arm(self, delay: float) -> None:
            self._cancel_timer()
            self._timer = self.loop.call_later(delay, self._check)

        def _cancel_timer(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _check(self) -> None:
            self._timer = None
            if self.transport.is_closing() or self.transport.get_protocol() is not self:
                return  # closed, or upgraded to a WebSocket (its own protocol object now)
            now, state = time.monotonic(), self.conn.their_state
            lim = self._limits
            since_last_check, self._checked_at = now - self._checked_at, now
            if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
                if now - self._phase_started > lim.header_timeout_s:
                    if self._bytes == 0:  # nothing sent: nobody waits for an answer, just close
                        self.transport.close()
                        return None
                    return self._timeout("headers", f"request headers not received within {lim.header_timeout_s:g} s")
            elif state is h11.SEND_BODY and self.cycle is not None and not self.cycle.response_complete:
                if self.flow.read_paused:
                    # the app is not reading (queued for a slot, or busy): backpressure, not a slow
                    # client; the paused time counts for neither deadline
                    self._phase_started += since_last_check
                    self._last_bytes_at = now
                elif now - self._last_bytes_at > lim.body_idle_timeout_s:
                    return self._timeout("body_idle", f"no request body received for {lim.body_idle_timeout_s:g} s")
                elapsed = now - self._phase_started
                if lim.min_body_rate and elapsed > lim.body_rate_grace_s and not self.flow.read_paused and \
                        self._bytes / elapsed < lim.min_body_rate:
                    return self._timeout("body_rate", f"request body arriving at {self._bytes / elapsed:.0f} "
                                         f"bytes/s, below this server's minimum of {lim.min_body_rate:g} bytes/s")
            else:
                # the body is complete: the app owns the time from here (admission, inference, response)
                return
            self._arm(1.0)

        def _timeout(self, phase: str, message: str) -> None:
            log.warning("request_timeout phase=%s client=%s bytes=%d", phase, self.client, self._bytes)
            started = self.cycle is not None and self.cycle.response_started
            if started:
                self.transport.close()
            else:
                self._answer(408, "Request Timeout", message, "request_timeout")

        def _answer(self, status: int, reason: str, message: str, code: str,
                    extra: dict[str, str] | None = None) -> None:
            if self.cycle is not None:
                self.cycle.disconnected = True  # the app's own response, if any, is dropped
                self.cycle.message_event.set()
            self.transport.write(_error(status, reason, message, code, extra))
            self.transport.close()

    return LimitedH11Protocol
