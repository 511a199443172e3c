"""The native `/v1/realtime` protocol's server events, rendered from typed events (docs/REALTIME.md).

The one place a `StreamEvent` becomes native JSON: times rounded to the millisecond, word
probabilities to 4 places, non-finite numbers as null (JSON has no NaN).
"""

from __future__ import annotations

import math
from typing import Any

from dalston.engine_sdk.events import Final, Partial, SessionDraining, SpeechStarted, SpeechStopped, StreamEvent
from dalston.engine_sdk.types import Word


def _t(value: float) -> float | None:
    return round(value, 3) if math.isfinite(value) else None


def _word(word: Word) -> dict[str, Any]:
    probability = word.probability
    return {"word": word.word, "start": _t(word.start), "end": _t(word.end),
            "probability": None if probability is None or not math.isfinite(probability) else round(probability, 4)}


def render(event: StreamEvent | SessionDraining) -> dict[str, Any]:
    """The JSON body of one native server event."""
    if isinstance(event, SessionDraining):
        return {"type": event.type, "deadline_s": _t(event.deadline_s)}
    if isinstance(event, (SpeechStarted, SpeechStopped)):
        return {"type": event.type, "time": _t(event.time)}
    if isinstance(event, Partial):
        return {"type": event.type, "text": event.text, "start": _t(event.start), "end": _t(event.end),
                "committed": event.committed}
    if isinstance(event, Final):
        return {"type": event.type, "text": event.text, "start": _t(event.start), "end": _t(event.end),
                "words": [_word(w) for w in event.words]}
    raise TypeError(f"not a realtime event: {event!r}")
