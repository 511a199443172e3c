"""OpenAI-style errors: `{"error": {"message", "type", "param", "code"}}` with a matching HTTP status.

Every refusal the server (and the gateway) makes goes through `openai_error` or `ApiError`, so clients
written for the OpenAI API can read our errors, and operators can grep the `code`.
"""

from __future__ import annotations

from starlette.responses import JSONResponse


def openai_error(status: int, message: str, type_: str = "invalid_request_error", code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": param, "code": code}},
                        status_code=status, headers=headers)


class ApiError(Exception):
    """Raised anywhere in request handling; rendered by the app's exception handler."""

    def __init__(self, status: int, message: str, code: str, *, param: str | None = None,
                 type_: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.type = type_ or ("server_error" if status >= 500 else "invalid_request_error")
        self.headers = headers

    def response(self) -> JSONResponse:
        return openai_error(self.status, self.message, self.type, self.code, self.param, self.headers)
