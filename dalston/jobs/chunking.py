"""Cut long audio into chunks of at most `max_seconds`, at the quietest moment near each chunk's end.

WHY cut at silence and not overlap: a cut inside a pause splits no word, so each chunk is
transcribed on its own and the merge only offsets timestamps — no overlap to de-duplicate, no
text stitching heuristics. The search looks in the last half of the allowed length for the lowest
short-time energy (smoothed over ~0.4 s so a single quiet frame inside a word does not win), and
cuts in the middle of that quiet stretch. Speech with no pause at all in the window is still cut
at its quietest point: a chunk never exceeds `max_seconds`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dalston.audio import SAMPLE_RATE

FRAME_S = 0.02      # energy frame
SMOOTH_S = 0.4      # moving-average window over frame energies
MIN_FRACTION = 0.5  # search for the cut in [start + MIN_FRACTION*max, start + max]


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first sample
    end: int    # one past the last sample

    @property
    def offset(self) -> float:
        return self.start / SAMPLE_RATE

    @property
    def duration(self) -> float:
        return (self.end - self.start) / SAMPLE_RATE

    def to_json(self) -> dict[str, float | int]:
        return {"index": self.index, "offset": round(self.offset, 6), "duration": round(self.duration, 6)}


def plan_chunks(samples: np.ndarray, max_seconds: float, sample_rate: int = SAMPLE_RATE) -> list[Chunk]:
    """Chunks covering `samples` end to end (no gap, no overlap), each at most `max_seconds` long."""
    if max_seconds <= 2 * SMOOTH_S:
        raise ValueError(f"chunk length {max_seconds} s is too short (minimum {2 * SMOOTH_S} s)")
    total = len(samples)
    max_len = int(max_seconds * sample_rate)
    if total <= max_len:
        return [Chunk(0, 0, total)]
    frame = int(FRAME_S * sample_rate)
    energy = _smoothed_energy(samples, frame, max(1, int(SMOOTH_S / FRAME_S)))
    chunks: list[Chunk] = []
    start = 0
    while total - start > max_len:
        lo = (start + int(MIN_FRACTION * max_len)) // frame
        hi = (start + max_len) // frame  # the frame starting at hi*frame still ends within the limit
        window = energy[lo:hi]
        # the quietest frame; among equally quiet frames (digital silence) the middle of the run
        quiet = np.flatnonzero(window <= window.min() + 1e-12)
        run = _longest_run(quiet)
        cut = (lo + int(run[len(run) // 2])) * frame
        cut = min(max(cut, start + frame), start + max_len)
        chunks.append(Chunk(len(chunks), start, cut))
        start = cut
    chunks.append(Chunk(len(chunks), start, total))
    return chunks


def _smoothed_energy(samples: np.ndarray, frame: int, smooth: int) -> np.ndarray:
    n = len(samples) // frame
    frames = samples[: n * frame].astype(np.float64).reshape(n, frame)
    power = (frames ** 2).mean(axis=1)
    if len(samples) > n * frame:  # the partial last frame
        power = np.append(power, float((samples[n * frame:].astype(np.float64) ** 2).mean()))
    kernel = np.ones(smooth) / smooth
    return np.convolve(power, kernel, mode="same")


def _longest_run(indexes: np.ndarray) -> np.ndarray:
    """The longest run of consecutive integers in sorted `indexes`."""
    breaks = np.flatnonzero(np.diff(indexes) != 1) + 1
    runs = np.split(indexes, breaks)
    return max(runs, key=len)
