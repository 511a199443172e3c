"""A small streaming energy VAD: decides where utterances start and end in a live audio stream.

WHY energy and not a neural VAD: it needs no model file, runs in microseconds per frame, is fully
deterministic (so the streaming policy is unit-testable without weights), and its only job here is
to find pauses, where the LocalAgreement policy emits a final and starts a fresh buffer. The noise
floor adapts, so a constant hum or a quiet microphone does not read as endless speech.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

from dalston.engine_sdk.events import TurnDetection

VadEdge = Literal["start", "end"]


@dataclass(frozen=True)
class VadConfig:
    """Frame size and thresholds, in the units an operator reasons in (ms, dB)."""

    frame_ms: int = 30
    min_speech_ms: int = 90  # this much loud audio in a row opens an utterance
    min_silence_ms: int = 800  # this much quiet audio in a row closes it
    margin_db: float = 14.0  # speech = this far above the adaptive noise floor ...
    floor_db: float = -50.0  # ... and at least this loud (dBFS), so digital silence is never speech


#: OpenAI's server_vad `threshold` (0..1, default 0.5) mapped linearly onto `margin_db`: 0.5 -> 14 dB.
_DB_PER_THRESHOLD = 28.0


def vad_config_for(turn: TurnDetection | None, base: VadConfig | None = None) -> VadConfig:
    """`base` (default VadConfig()) with the client's turn-detection fields that are set.

    `threshold` scales how far above the noise floor speech must be (0.5 = the default 14 dB);
    `silence_duration_ms` is the quiet that ends an utterance, rounded up to whole frames.
    """
    config = base or VadConfig()
    if turn is None:
        return config
    if turn.threshold is not None:
        config = replace(config, margin_db=_DB_PER_THRESHOLD * float(turn.threshold))
    if turn.silence_duration_ms is not None:
        config = replace(config, min_silence_ms=max(config.frame_ms, int(turn.silence_duration_ms)))
    return config


class EnergyVad:
    """Feed fixed-size frames with `update`; it reports the frame where speech starts or ends."""

    def __init__(self, config: VadConfig | None = None, sample_rate: int = 16000) -> None:
        self.config = config or VadConfig()
        self.frame_samples = sample_rate * self.config.frame_ms // 1000
        self._noise_db = -60.0
        self._loud_run = 0
        self._quiet_run = 0
        self.in_speech = False
        self.loud = False  # the last frame's classification

    def update(self, frame: np.ndarray) -> VadEdge | None:
        """Classify one frame of `frame_samples` float32 samples; return an edge when the state flips."""
        cfg = self.config
        level = 10.0 * float(np.log10(float(np.mean(frame.astype(np.float64) ** 2)) + 1e-10))
        loud = level > max(self._noise_db + cfg.margin_db, cfg.floor_db)
        self.loud = loud
        if not loud:
            # Track the floor quickly downwards and slowly upwards (steady background noise).
            rate = 0.5 if level < self._noise_db else 0.02
            self._noise_db += rate * (level - self._noise_db)
        if loud:
            self._loud_run += 1
            self._quiet_run = 0
        else:
            self._quiet_run += 1
            self._loud_run = 0
        if not self.in_speech and self._loud_run * cfg.frame_ms >= cfg.min_speech_ms:
            self.in_speech = True
            return "start"
        if self.in_speech and self._quiet_run * cfg.frame_ms >= cfg.min_silence_ms:
            self.in_speech = False
            return "end"
        return None
