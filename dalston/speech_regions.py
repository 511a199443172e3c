"""Where the speech is in a recording: Silero VAD (the ONNX model shipped inside faster-whisper's wheel).

Used by families that do not run a VAD of their own (Parakeet) to gate their output: words outside
every speech region are dropped, and audio without any speech is not decoded at all, so silence,
hum and noise give an empty transcript. The same model and settings (`runtime.vad`, overridable per
request) as Whisper's `vad_filter`, so both families agree on what counts as speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dalston.audio import SAMPLE_RATE
from dalston.engine_sdk.types import TranscribeOptions
from dalston.spec import VadSettings


class VadUnavailable(RuntimeError):
    """faster-whisper (which ships the Silero model and its onnxruntime) is not installed."""


@dataclass(frozen=True)
class VadParams:
    threshold: float
    min_silence_duration_ms: int
    speech_pad_ms: int


def available() -> bool:
    try:
        import faster_whisper.vad  # noqa: F401
    except ImportError:
        return False
    return True


def speech_regions(audio: np.ndarray, params: VadParams) -> list[tuple[float, float]]:
    """(start, end) seconds of every speech region, padded by `speech_pad_ms`, in order."""
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError as exc:
        raise VadUnavailable("the Silero VAD needs faster-whisper installed (pip install 'dalston[whisper]')") from exc
    options = VadOptions(threshold=params.threshold, min_silence_duration_ms=params.min_silence_duration_ms,
                         speech_pad_ms=params.speech_pad_ms)
    chunks = get_speech_timestamps(np.ascontiguousarray(audio, dtype=np.float32), options)
    return [(c["start"] / SAMPLE_RATE, c["end"] / SAMPLE_RATE) for c in chunks]


def inside(start: float, end: float, regions: list[tuple[float, float]], slack: float = 0.5) -> bool:
    """True when the word [start, end] overlaps a speech region widened by `slack` seconds.

    The slack absorbs decoder timing: a CTC spike or a transducer emission may land a few frames after
    the sound it stands for (seen on the tiny test checkpoints), and a real word must not be dropped.
    """
    return any(start <= r_end + slack and end >= r_start - slack for r_start, r_end in regions)


def requested(vad_filter: bool, settings: VadSettings, options: TranscribeOptions) -> VadParams | None:
    """The VAD a request gets: the variant's `runtime.vad_filter`/`runtime.vad`, each overridable by the
    request's `vad_filter`, `vad_threshold`, `min_silence_duration_ms`, `speech_pad_ms`; None when off."""
    if not (vad_filter if options.vad_filter is None else options.vad_filter):
        return None
    return VadParams(
        threshold=settings.threshold if options.vad_threshold is None else options.vad_threshold,
        min_silence_duration_ms=(settings.min_silence_duration_ms if options.min_silence_duration_ms is None
                                 else options.min_silence_duration_ms),
        speech_pad_ms=settings.speech_pad_ms if options.speech_pad_ms is None else options.speech_pad_ms)
