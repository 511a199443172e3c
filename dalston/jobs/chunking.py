"""Cut long audio into chunks of at most `max_seconds`, in the pause nearest each chunk's limit.

WHY cut at silence and not overlap: a cut inside a pause splits no word, so each chunk is
transcribed on its own and the merge only offsets timestamps — no overlap to de-duplicate, no
text stitching heuristics. The search looks in the last half of the allowed length at short-time
energy smoothed over ~0.4 s (so the gap between two words does not count as a pause, a sentence
break does), calls a frame a pause when it is within `QUIET` of the quietest frame (measured
against the window's median level: 20 dB below the speech), and cuts in the middle of the pause
nearest the length it aims at: the limit itself, or half of what is left (below). Speech with no pause
at all in the window is still cut near its quietest point: a chunk never exceeds `max_seconds`.

WHY the pause nearest the limit and not the quietest one: chunks then come out close to `max_seconds`, so a
job has fewer of them, and each chunk costs something fixed on top of its audio (Whisper pads a
chunk's last 30 s window with silence and detects the language once per chunk). Cutting at the
single quietest point made chunks anywhere from half to all of the limit: on the 10-minute
benchmark file, six chunks of 91–103 s for `--chunk-seconds 150`, 24 Whisper windows for 20 of
audio (docs/PERFORMANCE.md, Jobs).

WHY a duration hint: cutting every chunk at the limit would leave the remainder as a last chunk of
any length (301 s at 300 s chunks: 300 s + 1 s, nothing to run in parallel). Given the audio's
length (the container's declared duration while streaming), the cut that leaves at most two
chunks aims at half of what is left: 301 s at 300 s becomes two chunks of about 150 s, a 595 s
file at 100 s ends in two of ~50 s. Only the last two are balanced: aiming every cut at an
equal share moves cuts earlier, past the pause a later chunk needed, and forces a cut inside
speech. Without a hint (a format that declares no duration) every cut aims at the limit.

`cut_stream` applies the rule to audio arriving in blocks (the job prepare stage decodes as it
cuts), holding one chunk's span plus the smoothing look-ahead; `plan_chunks` is the same rule over
an array in memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from dalston.audio import SAMPLE_RATE

FRAME_S = 0.02      # energy frame
SMOOTH_S = 0.4      # moving-average window over frame energies
MIN_FRACTION = 0.5  # search for the cut in [start + MIN_FRACTION*max, start + max]
QUIET = 0.01        # a pause: smoothed power within 1 % of (median - quietest) above the quietest (-20 dB)


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
    step = 1 << 16
    blocks = (samples[i:i + step] for i in range(0, len(samples), step))
    total = len(samples) / sample_rate
    return [chunk for chunk, _ in cut_stream(blocks, max_seconds, sample_rate, total_seconds=lambda: total)]


def cut_stream(blocks: Iterable[np.ndarray], max_seconds: float, sample_rate: int = SAMPLE_RATE, *,
               total_seconds: Callable[[], float | None] = lambda: None) -> Iterator[tuple[Chunk, np.ndarray]]:
    """Cut audio arriving in blocks of any size: yields each chunk and its samples as soon as it is decided.

    The cuts are those `plan_chunks` makes over the whole array (it is this, with one block and the
    array's length as `total_seconds`). `total_seconds` is asked when a cut is decided (a decoder
    knows the declared duration only once it has opened the file); None means unknown. To decide a
    cut it needs the chunk's allowed span plus a look-ahead of half the smoothing window, so at most
    about `max_seconds` + 0.2 s of samples are held, however long the audio. A chunk's samples are
    a view into that buffer, valid until the next chunk is asked for: write or copy them first.
    """
    if max_seconds <= 2 * SMOOTH_S:
        raise ValueError(f"chunk length {max_seconds} s is too short (minimum {2 * SMOOTH_S} s)")
    max_len = int(max_seconds * sample_rate)
    frame = int(FRAME_S * sample_rate)
    smooth = max(1, int(SMOOTH_S / FRAME_S))
    # np.convolve(power, ones(smooth)/smooth, "same")[i] averages power[i - left : i + right + 1]
    left, right = smooth - 1 - (smooth - 1) // 2, (smooth - 1) // 2
    kernel = np.ones(smooth) / smooth
    buf = _Buffer(max_len + (right + 2) * frame + (1 << 16))  # + room for the block that crosses `need`
    source = iter(blocks)
    start, index, ended = 0, 0, False   # `buf` holds samples [start, start + len(buf))
    while True:
        hi = (start + max_len) // frame  # the frame starting at hi*frame still ends within the limit
        need = max(max_len + 1, (hi + right) * frame - start)  # the span + the smoothing look-ahead
        while len(buf) < need and not ended:
            block = next(source, None)
            if block is None:
                ended = True
            else:
                buf.append(block)
        if len(buf) <= max_len:  # the rest fits in one chunk (only at the end of the audio)
            if len(buf) or index == 0:
                yield Chunk(index, start, start + len(buf)), buf.view(len(buf))
            return
        lo = (start + int(MIN_FRACTION * max_len)) // frame
        window = _window_energy(buf, start, lo - left, hi + right, frame, ended, kernel)
        # the middle of the pause nearest the aimed-at length (see the module docstring)
        floor = float(window.min())
        middle = float(np.partition(window, len(window) // 2)[len(window) // 2])  # the median (np.median imports lazily)
        quiet = np.flatnonzero(window <= floor + QUIET * (middle - floor) + 1e-12)
        aim = (start + _aim(max_len, start, total_seconds(), sample_rate)) // frame - lo
        cut = (lo + _nearest_pause(quiet, aim)) * frame
        cut = min(max(cut, start + frame), start + max_len)
        yield Chunk(index, start, cut), buf.view(cut - start)
        buf.drop(cut - start)
        start, index = cut, index + 1


def _aim(max_len: int, start: int, total_seconds: float | None, sample_rate: int) -> int:
    """The chunk length to aim at: the limit, or half of what is left when that fits in two chunks
    (more than half the limit, so inside the search window; see the module docstring)."""
    if total_seconds is None:
        return max_len
    remaining = total_seconds * sample_rate - start
    if max_len < remaining <= 2 * max_len:
        return int(remaining / 2)
    return max_len


def _window_energy(buf: _Buffer, start: int, first: int, end: int, frame: int, ended: bool,
                   kernel: np.ndarray) -> np.ndarray:
    """Smoothed frame energies of frames [first + left, end - right): mean power per frame, zero past the audio."""
    total = start + len(buf)
    complete = total // frame
    stop = min(end, complete)
    frames = buf.view(stop * frame - start)[first * frame - start:].reshape(-1, frame)
    # mean power per frame in float64, 1024 frames at a time (a float64 copy of the span would double its memory)
    power = np.concatenate([(frames[i:i + 1024].astype(np.float64) ** 2).mean(axis=1)
                            for i in range(0, len(frames), 1024)] or [np.zeros(0)])
    if end > complete and ended and total > complete * frame:  # the partial last frame
        power = np.append(power, float((buf.view(len(buf))[complete * frame - start:].astype(np.float64) ** 2).mean()))
    if len(power) < end - first:  # frames past the end of the audio count as silence, as in "same" mode
        power = np.concatenate([power, np.zeros(end - first - len(power))])
    return np.convolve(power, kernel, mode="valid")


class _Buffer:
    """A growable float32 buffer: append at the end, drop from the front (no copy of what is kept per block)."""

    def __init__(self, capacity: int) -> None:
        self._data = np.empty(capacity, np.float32)
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def append(self, block: np.ndarray) -> None:
        end = self._size + len(block)
        if end > len(self._data):
            grown = np.empty(max(end, 2 * len(self._data)), np.float32)
            grown[:self._size] = self._data[:self._size]
            self._data = grown
        self._data[self._size:end] = block
        self._size = end

    def view(self, n: int) -> np.ndarray:
        return self._data[:n]

    def drop(self, n: int) -> None:
        rest = self._size - n
        self._data[:rest] = self._data[n:self._size]  # numpy copies overlapping ranges correctly
        self._size = rest


def _nearest_pause(quiet: np.ndarray, aim: int) -> int:
    """The middle of the run of consecutive frames in sorted, non-empty `quiet` whose middle is nearest `aim`
    (ties: the later run)."""
    runs = np.split(quiet, np.flatnonzero(np.diff(quiet) != 1) + 1)
    middles = [int(run[len(run) // 2]) for run in runs]
    return min(reversed(middles), key=lambda m: abs(m - aim))
