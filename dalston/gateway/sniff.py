"""Find the `model` form field at the start of a streamed multipart upload, without buffering the file.

WHY: the gateway must know the model before it can pick an engine, but OpenAI clients send `model`
as an ordinary form field, not a header. The official clients (and `curl -F model=... -F file=@...`)
put it before the file, so the gateway parses the multipart stream incrementally and stops at the
end of the `model` part: only the bytes up to there are held in memory, and everything after is
streamed to the engine untouched. A client that sends the file first is buffered up to a limit
(`--max-prefix-bytes`) and then refused with a clear message; `?model=<id>` in the query string
skips the sniffing entirely.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser

_NAME = re.compile(rb'(?:^|;)\s*name="([^"]*)"', re.IGNORECASE)
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
MAX_MODEL_FIELD = 256


class SniffError(Exception):
    """The upload is not a multipart form the gateway can route; `message` says how to fix it."""

    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def boundary_of(content_type: str) -> bytes:
    if not content_type.lower().startswith("multipart/form-data"):
        raise SniffError(400, f"expected multipart/form-data, got {content_type or 'no Content-Type'!r}",
                         "invalid_content_type")
    match = _BOUNDARY.search(content_type)
    if not match:
        raise SniffError(400, "multipart/form-data Content-Type without a boundary", "invalid_content_type")
    return match.group(1).encode("latin-1")


@dataclass
class _State:
    header_field: bytearray = field(default_factory=bytearray)
    header_value: bytearray = field(default_factory=bytearray)
    current: bytes | None = None
    value: bytearray = field(default_factory=bytearray)
    model: str | None = None
    too_long: bool = False


@dataclass
class Sniffed:
    """The model (or None if the form has no such field) and every chunk read so far, in order."""

    model: str | None
    prefix: list[bytes]
    rest: AsyncIterator[bytes]


async def sniff_model(stream: AsyncIterator[bytes], content_type: str, max_prefix: int) -> Sniffed:
    """Read `stream` until the `model` part has ended; raise SniffError past `max_prefix` bytes."""
    state = _State()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state.header_field += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state.header_value += data[start:end]

    def on_header_end() -> None:
        if bytes(state.header_field).lower() == b"content-disposition":
            match = _NAME.search(bytes(state.header_value))
            state.current = match.group(1) if match else None
        state.header_field.clear()
        state.header_value.clear()

    def on_part_begin() -> None:
        state.current = None
        state.value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state.current == b"model":
            state.value += data[start:end]
            state.too_long = state.too_long or len(state.value) > MAX_MODEL_FIELD

    def on_part_end() -> None:
        if state.current == b"model" and state.model is None:
            state.model = bytes(state.value).decode("utf-8", "replace").strip()

    parser = MultipartParser(boundary_of(content_type), {
        "on_header_field": on_header_field, "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_begin": on_part_begin, "on_part_data": on_part_data, "on_part_end": on_part_end,
    })
    prefix: list[bytes] = []
    size = 0
    iterator = stream.__aiter__()
    async for chunk in iterator:
        prefix.append(chunk)
        size += len(chunk)
        try:
            parser.write(chunk)
        except Exception as exc:  # python-multipart raises its own error types for malformed bodies
            raise SniffError(400, f"malformed multipart body: {exc}", "invalid_multipart") from None
        if state.too_long:
            raise SniffError(400, f"the model field is longer than {MAX_MODEL_FIELD} bytes", "invalid_model")
        if state.model is not None:
            break
        if size > max_prefix:
            raise SniffError(
                400, f"no 'model' form field in the first {max_prefix} bytes of the upload: send the model "
                     "field before the file, or pass ?model=<id> in the URL", "model_field_too_late")
    return Sniffed(state.model, prefix, iterator)
