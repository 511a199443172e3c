"""OpenAI-style errors, one vocabulary for every entry point: engine HTTP, engine realtime, gateway.

Over HTTP an error is `{"error": {"message", "type", "param", "code"}}` with a matching status. On an
engine's realtime WebSocket the same `ApiError` becomes an `error` event carrying the same `code`,
then a close code taken from `CLOSE_CODES` (one table: status -> 4xxx), so a client that knows the
HTTP codes can read the WebSocket ones. Handlers *raise* `ApiError`; the app (or the WebSocket
route) renders it in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # starlette is the server extra's; the catalog (and so the CLI) imports `echo` without it
    from starlette.responses import JSONResponse

#: At most this many characters of one client-supplied value are repeated in an error message: a 10 KB
#: model name must not come back as a 10 KB body (the gateway's model-field cap is the same number).
ECHO_LIMIT = 256
#: No error message is longer than this, whatever it repeats.
MESSAGE_LIMIT = 2048


def echo(value: object, limit: int = ECHO_LIMIT) -> str:
    """`value` as an error message may quote it: as is when short, else its start and its length."""
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"

#: HTTP status -> WebSocket close code (RFC 6455 leaves 4000-4999 to applications). The irregular
#: 4001/4003/4029 predate the table and are kept because clients branch on them.
CLOSE_CODES: dict[int, int] = {
    400: 4400, 401: 4001, 403: 4003, 404: 4004, 408: 4408, 413: 4413, 429: 4029,
    500: 4500, 502: 4502, 503: 4503, 504: 4504,
}


def close_code(status: int) -> int:
    """The WebSocket close code for an HTTP status (4400 for an unlisted 4xx, 4500 for anything else)."""
    return CLOSE_CODES.get(status, 4400 if 400 <= status < 500 else 4500)


def openai_error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": echo(message, MESSAGE_LIMIT), "type": type_, "param": param,
                                   "code": code}}, status_code=status, headers=headers)


class ApiError(Exception):
    """Raised anywhere in request handling; rendered by the app's exception handler (or as a WS close)."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 type_: str | None = None, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers

    def response(self) -> JSONResponse:
        return openai_error(self.status, self.message, self.type, self.code, self.param, self.headers)

    def event(self) -> dict[str, Any]:
        """The realtime `error` event for this error (native protocol: `code` and `message` at top level)."""
        return {"type": "error", "code": self.code, "message": echo(self.message, MESSAGE_LIMIT)}

    @property
    def close_code(self) -> int:
        return close_code(self.status)
