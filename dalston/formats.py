"""Render a `Transcript` in the OpenAI audio API's response formats.

json / text / srt / vtt / verbose_json, shaped as OpenAI's `/v1/audio/transcriptions` returns them,
plus the SSE events of `stream=true` (with `verbose_json`, a dalston extension: segment events with
times, and the whole body in the done event). Families never format output; this module is the only place
that knows what a subtitle timestamp looks like.

SRT/VTT cues are cut from the word timings to subtitle limits (`dalston.segmenting.cues`), not one cue
per decoder segment; `verbose_json` reports the language by name ("english") and `usage` in seconds
as OpenAI does. Deliberate differences from OpenAI are listed in docs/SERVER.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Literal

from dalston.engine_sdk.types import Segment, Transcript, Word
from dalston.languages import language_name
from dalston.segmenting import Cue, CueLimits, cues, cues_from_segments

ResponseFormat = Literal["json", "text", "srt", "vtt", "verbose_json"]
RESPONSE_FORMATS: tuple[str, ...] = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES: tuple[str, ...] = ("word", "segment")
#: Formats whose segments or cues are cut from word timings, so the decoder must compute words.
WORD_TIMED_FORMATS = frozenset({"srt", "vtt", "verbose_json"})

_MEDIA_TYPES = {
    "json": "application/json",
    "verbose_json": "application/json",
    "text": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}


def render(transcript: Transcript, response_format: str, *, task: str = "transcribe",
           granularities: Iterable[str] = ("segment",), cue_limits: CueLimits = CueLimits()) -> tuple[str, str]:
    """(body, media type) for one of RESPONSE_FORMATS; `cue_limits` shape SRT/VTT cues."""
    if response_format == "json":
        body = json.dumps({"text": transcript.text, "usage": usage(transcript)}, ensure_ascii=False)
    elif response_format == "text":
        body = transcript.text + "\n"
    elif response_format == "srt":
        body = srt(subtitle_cues(transcript, cue_limits))
    elif response_format == "vtt":
        body = vtt(subtitle_cues(transcript, cue_limits))
    elif response_format == "verbose_json":
        body = json.dumps(verbose_json(transcript, task=task, granularities=granularities), ensure_ascii=False)
    else:
        raise ValueError(f"unknown response_format {response_format!r}")
    return body, _MEDIA_TYPES[response_format]


def verbose_json(transcript: Transcript, *, task: str = "transcribe",
                 granularities: Iterable[str] = ("segment",)) -> dict[str, Any]:
    """OpenAI's verbose_json: segments by default; `words` only when word granularity was asked for.

    Segment fields are the decoder's own (Whisper's tokens, seek, temperature, avg_logprob,
    compression_ratio, no_speech_prob); a family without them (NeMo) reports null / [] there.
    """
    wanted = set(granularities) or {"segment"}
    body: dict[str, Any] = {"task": task, "language": language_name(transcript.language),
                            "duration": round(transcript.duration, 3), "text": transcript.text}
    if "segment" in wanted:
        body["segments"] = [
            {"id": s.id, "seek": s.seek, "start": _t(s.start), "end": _t(s.end), "text": s.text,
             "tokens": list(s.tokens), "temperature": s.temperature, "avg_logprob": _r(s.avg_logprob),
             "compression_ratio": _r(s.compression_ratio), "no_speech_prob": _r(s.no_speech_prob)}
            for s in transcript.segments]
    if "word" in wanted:
        body["words"] = [_word(w) for w in transcript.words]
    body["usage"] = usage(transcript)
    return body


def usage(transcript: Transcript) -> dict[str, Any]:
    """OpenAI's duration usage (`{"type": "duration", "seconds": …}`), what whisper-1 bills by."""
    return {"type": "duration", "seconds": round(transcript.duration, 3)}


def subtitle_cues(transcript: Transcript, limits: CueLimits = CueLimits()) -> list[Cue]:
    """Cues from the words when the transcript has them, else one (wrapped) cue per segment."""
    words = transcript.words
    if words:
        return cues(words, limits, duration=transcript.duration)
    return cues_from_segments(transcript.segments, limits)


def srt(cue_list: Iterable[Cue]) -> str:
    blocks = [f"{n}\n{_clock(c.start, ',')} --> {_clock(c.end, ',')}\n" + "\n".join(c.lines) + "\n"
              for n, c in enumerate(cue_list, start=1)]
    return "\n".join(blocks)


def vtt(cue_list: Iterable[Cue]) -> str:
    blocks = [f"{_clock(c.start, '.')} --> {_clock(c.end, '.')}\n" + "\n".join(c.lines) + "\n" for c in cue_list]
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


def _t(seconds: float) -> float:
    return round(float(seconds), 3)


def _r(value: float | None) -> float | None:
    return None if value is None else round(float(value), 4)


def _clock(seconds: float, separator: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"
