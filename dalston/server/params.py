"""Request form fields beyond OpenAI's core ones: VAD, Whisper's guards, hotwords, subtitle limits.

These are dalston extensions to the OpenAI transcription form (an OpenAI client sends them as extra
form fields, e.g. `extra_body` in the Python SDK). Every one is optional: absent means the variant's
YAML default (`runtime.vad_filter`, `runtime.vad`, `runtime.guards`) or the subtitle defaults of
`dalston.segmenting.CueLimits`. A malformed value is a 400 naming the field, never a silent default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.datastructures import FormData, UploadFile

from dalston.formats import WORD_TIMED_FORMATS
from dalston.segmenting import CueLimits
from dalston.errors import ApiError, echo

_TRUE, _FALSE = frozenset({"true", "1", "yes"}), frozenset({"false", "0", "no"})


@dataclass(frozen=True)
class QualityParams:
    options: dict[str, Any]  # extra TranscribeOptions fields
    cue_limits: CueLimits
    needs_words: bool


def text_field(form: FormData, name: str) -> str | None:
    """The stripped text of form field `name`, None when absent or blank; 400 if it arrived as a file.
    The one reader of text fields for the audio routes and the job routes."""
    value = form.get(name)
    if value is None:
        return None
    if isinstance(value, UploadFile):
        raise ApiError(400, f"'{echo(name)}' must be a text field, not a file", "invalid_parameter", param=name)
    return value.strip() or None


def _invalid(name: str, expected: str, raw: str) -> ApiError:
    return ApiError(400, f"{name} must be {expected}, got '{raw}'", "invalid_parameter", param=name)


def _number(form: FormData, name: str, low: float, high: float, *, integer: bool = False) -> float | None:
    raw = text_field(form, name)
    if raw is None:
        return None
    expected = f"{'an integer' if integer else 'a number'} between {low:g} and {high:g}"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise _invalid(name, expected, raw) from None
    if not low <= value <= high:  # also rejects nan
        raise _invalid(name, expected, raw)
    return value


def _flag(form: FormData, name: str) -> bool | None:
    raw = text_field(form, name)
    if raw is None:
        return None
    if raw.lower() not in _TRUE | _FALSE:
        raise _invalid(name, "true or false", raw)
    return raw.lower() in _TRUE


def parse_quality(form: FormData, response_format: str) -> QualityParams:
    """The extension fields of one transcription request."""
    options: dict[str, Any] = {
        "vad_filter": _flag(form, "vad_filter"),
        "vad_threshold": _number(form, "vad_threshold", 0.01, 0.99),
        "min_silence_duration_ms": _int(_number(form, "min_silence_duration_ms", 0, 60000, integer=True)),
        "speech_pad_ms": _int(_number(form, "speech_pad_ms", 0, 5000, integer=True)),
        "no_speech_threshold": _number(form, "no_speech_threshold", 0.0, 1.0),
        "log_prob_threshold": _number(form, "log_prob_threshold", -100.0, 0.0),
        "compression_ratio_threshold": _number(form, "compression_ratio_threshold", 0.1, 100.0),
        "condition_on_previous_text": _flag(form, "condition_on_previous_text"),
        "hotwords": text_field(form, "hotwords"),
    }
    if options["hotwords"] is not None and len(options["hotwords"]) > 1000:
        raise ApiError(400, "hotwords must be at most 1000 characters", "invalid_parameter", param="hotwords")
    defaults = CueLimits()
    limits = CueLimits(
        max_line_width=_int(_number(form, "max_line_width", 10, 200, integer=True)) or defaults.max_line_width,
        max_line_count=_int(_number(form, "max_line_count", 1, 10, integer=True)) or defaults.max_line_count,
        max_cue_seconds=_number(form, "max_cue_seconds", 1.0, 60.0) or defaults.max_cue_seconds)
    return QualityParams(options, limits, response_format in WORD_TIMED_FORMATS)


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)
