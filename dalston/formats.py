"""Render a `Transcript` in the OpenAI audio API's response formats.

json / text / srt / vtt / verbose_json, shaped as OpenAI's `/v1/audio/transcriptions` returns them,
plus the SSE events of `stream=true` (with `verbose_json`, a dalston extension: segment events with
times, and the whole body in the done event). Families never format output; this module is the only place
that knows what a subtitle timestamp looks like.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

from dalston.engine_sdk.types import Segment, Transcript, Word

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES: tuple[str, ...] = ("word", "segment")

_MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render(transcript: Transcript, response_format: str, *, task: str = "transcribe",
           granularities: Iterable[str] = ("segment",)) -> tuple[str, str]:
    """(body, media type) for one of RESPONSE_FORMATS."""
    if response_format == "json":
        body = json.dumps({"text": transcript.text}, ensure_ascii=False)
    elif response_format == "text":
        body = transcript.text + "\n"
    elif response_format == "srt":
        body = srt(transcript.segments)
    elif response_format == "vtt":
        body = vtt(transcript.segments)
    elif response_format == "verbose_json":
        body = json.dumps(verbose_json(transcript, task=task, granularities=granularities), ensure_ascii=False)
    else:
        raise ValueError(f"unknown response_format {response_format!r}")
    return body, _MEDIA_TYPES[response_format]


def verbose_json(transcript: Transcript, *, task: str = "transcribe",
                 granularities: Iterable[str] = ("segment",)) -> dict[str, Any]:
    """OpenAI's verbose_json: segments by default; `words` only when word granularity was asked for."""
    wanted = set(granularities) or {"segment"}
    body: dict[str, Any] = {"task": task, "language": transcript.language, "duration": round(transcript.duration, 3),
                            "text": transcript.text}
    if "segment" in wanted:
        body["segments"] = [
            {"id": s.id, "seek": 0, "start": _t(s.start), "end": _t(s.end), "text": s.text, "tokens": [],
             "temperature": 0.0, "avg_logprob": s.avg_logprob, "compression_ratio": None,
             "no_speech_prob": s.no_speech_prob}
            for s in transcript.segments]
    if "word" in wanted:
        body["words"] = [_word(w) for w in transcript.words]
    return body


def srt(segments: Iterable[Segment]) -> str:
    blocks = [f"{n}\n{_clock(s.start, ',')} --> {_clock(s.end, ',')}\n{s.text.strip()}\n"
              for n, s in enumerate(_captions(segments), start=1)]
    return "\n".join(blocks)


def vtt(segments: Iterable[Segment]) -> str:
    blocks = [f"{_clock(s.start, '.')} --> {_clock(s.end, '.')}\n{s.text.strip()}\n" for s in _captions(segments)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event (`data: {...}`), as OpenAI streams transcription events."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n".encode("utf-8")


def delta_event(delta: str) -> bytes:
    return sse_event({"type": "transcript.text.delta", "delta": delta})


def segment_event(segment: Segment, *, words: bool = False) -> bytes:
    """`transcript.text.segment`: OpenAI sends it for `diarized_json`; dalston for `verbose_json` streams.

    It carries the times a delta lacks, so a client can place text on the audio as it is decoded.
    """
    payload: dict[str, Any] = {"type": "transcript.text.segment", "id": f"seg_{segment.id}",
                               "start": _t(segment.start), "end": _t(segment.end), "text": segment.text}
    if words:
        payload["words"] = [_word(w) for w in segment.words]
    return sse_event(payload)


def done_event(text: str, verbose: dict[str, Any] | None = None) -> bytes:
    """`transcript.text.done`; for a `verbose_json` stream it also carries that body's fields (segments, words…)."""
    return sse_event({**(verbose or {}), "type": "transcript.text.done", "text": text})


def _word(w: Word) -> dict[str, Any]:
    return {"word": w.word.strip(), "start": _t(w.start), "end": _t(w.end), "probability": w.probability}


def _captions(segments: Iterable[Segment]) -> list[Segment]:
    """Segments with text; a caption with no text is not a caption (both formats reject empty cues)."""
    return [s for s in segments if s.text.strip()]


def _t(seconds: float) -> float:
    return round(float(seconds), 3)


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
