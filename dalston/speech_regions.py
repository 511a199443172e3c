"""Where the speech is in a recording: Silero VAD (the ONNX model shipped inside faster-whisper's wheel).

Used by families that do not run a VAD of their own (Parakeet) to gate their output: words outside
every speech region are dropped, and audio without any speech is not decoded at all, so silence,
hum and noise give an empty transcript. The same model and settings (`runtime.vad`, overridable per
request) as Whisper's `vad_filter`, so both families agree on what counts as speech.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000


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


def requested(vad_filter: bool, settings: object, options: object) -> VadParams | None:
    """The VAD a request gets: the variant's `runtime.vad_filter`/`runtime.vad`, each overridable by the
    request's `vad_filter`, `vad_threshold`, `min_silence_duration_ms`, `speech_pad_ms`; None when off."""
    wanted = getattr(options, "vad_filter", None)
    if not (vad_filter if wanted is None else wanted):
        return None

    def pick(name: str, default_name: str) -> object:
        value = getattr(options, name, None)
        return getattr(settings, default_name) if value is None else value

    return VadParams(threshold=float(pick("vad_threshold", "threshold")),  # type: ignore[arg-type]
                     min_silence_duration_ms=int(pick("min_silence_duration_ms", "min_silence_duration_ms")),  # type: ignore[call-overload]
                     speech_pad_ms=int(pick("speech_pad_ms", "speech_pad_ms")))  # type: ignore[call-overload]
