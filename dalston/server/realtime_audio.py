"""Client audio -> the engines' 16 kHz mono float32, for both realtime protocols.

pcm16 / float32 (native protocol), pcm16 and G.711 µ-law / A-law (OpenAI protocol) at any of the
accepted rates; resampled with libswresample (PyAV), filtered and stateful across frames, so frame
boundaries do not change the result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dalston.engine_sdk import SAMPLE_RATE
from dalston.realtime import g711

WIDTHS = {"pcm16": 2, "float32": 4, "pcmu": 1, "pcma": 1}  # bytes per sample


class InvalidFrame(ValueError):
    """Audio bytes that cannot be samples of the session's encoding (the message says why)."""


class AudioConverter:
    """Client frames -> 16 kHz mono float32: checks alignment, decodes, resamples with state across frames."""

    def __init__(self, rate: int, encoding: str) -> None:
        self.width = WIDTHS[encoding]
        self.encoding = encoding
        self.rate = rate
        self._resampler: Any = None
        if self.rate != SAMPLE_RATE:
            import av  # PyAV (libswresample): filtered, stateful resampling; ships with faster-whisper

            self._av = av
            self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def convert(self, data: bytes) -> np.ndarray:
        if len(data) % self.width:
            raise InvalidFrame(f"binary frame of {len(data)} bytes is not a whole number of {self.encoding} samples "
                               f"({self.width} bytes each)")
        if self.encoding == "pcm16":
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        elif self.encoding in ("pcmu", "pcma"):
            samples = g711.decode(data, self.encoding)
        else:
            samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
            if not np.all(np.isfinite(samples)):
                raise InvalidFrame("float32 frame contains NaN or infinity")
        return self._resample(samples)

    def flush(self) -> np.ndarray:
        return self._resample(None)

    def _resample(self, samples: np.ndarray | None) -> np.ndarray:
        if self._resampler is None:
            return samples if samples is not None else np.zeros(0, dtype=np.float32)
        frame = None
        if samples is not None:
            if len(samples) == 0:
                return samples
            frame = self._av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
            frame.sample_rate = self.rate
        out = [f.to_ndarray().reshape(-1) for f in self._resampler.resample(frame)]
        return np.concatenate(out).astype(np.float32) if out else np.zeros(0, dtype=np.float32)
