"""Merge per-chunk transcripts into one: timestamps offset by each chunk's start, ids renumbered.

Chunks are cut inside pauses (`dalston.jobs.chunking`), so no text is shared between neighbours and
merging is concatenation in chunk order. What keeps the result continuous across seams: every time
is offset by its chunk's start and clamped into the chunk's span (a decoder may place an end a few
ms past the audio it saw), and each segment and word starts no earlier than the previous one ended,
so timestamps never go backwards. Segment ids run 0..n-1 over the whole file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from dalston.engine_sdk.types import Segment, Transcript, Word


def transcript_from_dict(data: dict[str, Any]) -> Transcript:
    """Inverse of `Transcript.to_dict()` (how chunk results and job results are stored)."""
    segments = tuple(
        Segment(id=int(s["id"]), start=float(s["start"]), end=float(s["end"]), text=s["text"],
                avg_logprob=s.get("avg_logprob"), no_speech_prob=s.get("no_speech_prob"),
                words=tuple(Word(float(w["start"]), float(w["end"]), w["word"], w.get("probability"))
                            for w in s.get("words") or ()))
        for s in data.get("segments") or ())
    return Transcript(text=data.get("text", ""), language=data.get("language"), duration=float(data.get("duration", 0.0)),
                      segments=segments)


def merge(parts: Sequence[tuple[float, float, Transcript]]) -> Transcript:
    """One transcript from `(offset seconds, chunk duration, chunk transcript)` in chunk order."""
    segments: list[Segment] = []
    cursor = 0.0  # no timestamp may be earlier than this
    for offset, duration, part in parts:
        span_end = offset + duration
        for seg in part.segments:
            start = _clamp(offset + seg.start, cursor, span_end)
            words: list[Word] = []
            word_cursor = start
            for w in seg.words:
                w_start = _clamp(offset + w.start, word_cursor, span_end)
                w_end = _clamp(offset + w.end, w_start, span_end)
                words.append(Word(round(w_start, 3), round(w_end, 3), w.word, w.probability))
                word_cursor = w_end
            end = _clamp(offset + seg.end, max(start, word_cursor), span_end)
            segments.append(Segment(id=len(segments), start=round(start, 3), end=round(end, 3), text=seg.text,
                                    avg_logprob=seg.avg_logprob, no_speech_prob=seg.no_speech_prob,
                                    words=tuple(words)))
            cursor = end
    text = " ".join(t for t in (part.text.strip() for _, _, part in parts) if t)
    languages = Counter(p.language for _, _, p in parts if p.language)
    duration = (parts[-1][0] + parts[-1][1]) if parts else 0.0
    return Transcript(text=text, language=languages.most_common(1)[0][0] if languages else None,
                      duration=round(duration, 3), segments=tuple(segments))


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), max(low, high))
