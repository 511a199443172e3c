"""Chunk planning at silences and the merge of chunk transcripts: pure functions, real audio where it matters."""

from __future__ import annotations

import numpy as np
import pytest

from dalston.audio import decode_audio
from dalston.engine_sdk.types import Segment, Transcript, Word
from dalston.jobs.chunking import SAMPLE_RATE, cut_stream, plan_chunks
from dalston.jobs.merge import merge, transcript_from_dict


def _tone_with_gaps(speech: list[float], gap: float) -> np.ndarray:
    """Noise bursts ("speech") of the given lengths separated by `gap` seconds of near-silence."""
    rng = np.random.default_rng(0)
    parts = []
    for seconds in speech:
        parts.append(rng.normal(0, 0.3, int(seconds * SAMPLE_RATE)).astype(np.float32))
        parts.append(rng.normal(0, 0.001, int(gap * SAMPLE_RATE)).astype(np.float32))
    return np.concatenate(parts)


def test_cuts_fall_in_the_gaps_and_cover_everything() -> None:
    audio = _tone_with_gaps([7, 6, 8, 5, 9, 4], gap=1.0)
    gaps = []  # (start, end) seconds of each gap
    t = 0.0
    for seconds in [7, 6, 8, 5, 9, 4]:
        gaps.append((t + seconds, t + seconds + 1.0))
        t += seconds + 1.0
    chunks = plan_chunks(audio, 15.0)
    assert len(chunks) >= 3
    assert chunks[0].start == 0 and chunks[-1].end == len(audio)
    for a, b in zip(chunks, chunks[1:]):
        assert a.end == b.start  # no gap, no overlap
    for c in chunks:
        assert c.duration <= 15.0 + 1e-9
    for c in chunks[:-1]:
        cut = c.end / SAMPLE_RATE
        assert any(lo + 0.1 <= cut <= hi - 0.1 for lo, hi in gaps), f"cut at {cut:.2f}s is not inside a pause"


def test_cuts_take_the_pause_nearest_the_limit_and_balance_the_last_two_chunks() -> None:
    """Speech with a pause every 2 s: each cut is the last pause before the limit (fewer, fuller chunks),
    except that the rest, once it fits in two chunks, is split in halves when the length is known."""
    audio = _tone_with_gaps([1.5] * 16, gap=0.5)  # 32 s, pauses at [1.5, 2), [3.5, 4), ...
    total = len(audio) / SAMPLE_RATE
    known = [c.duration for c in plan_chunks(audio, 12.0)]  # plan_chunks knows the length
    assert len(known) == 3 and 11.5 <= known[0] <= 12.0, known  # in [11.5, 12): the last pause before 12 s
    assert abs(known[1] - known[2]) <= 2.0, known  # the remaining ~20 s: two ~10 s chunks, not 12 + 8
    blocks = (audio[i:i + 4000] for i in range(0, len(audio), 4000))
    unknown = [c.duration for c, _ in cut_stream(blocks, 12.0)]  # a stream that declares no duration
    assert all(11.5 <= d <= 12.0 for d in unknown[:2]) and sum(unknown) == pytest.approx(total), unknown
    whole = plan_chunks(audio[: int(12.5 * SAMPLE_RATE)], 12.0)  # just over the limit: halves, not 12 + 0.5
    assert len(whole) == 2 and min(c.duration for c in whole) > 4.0  # the pause nearest 6.25 s at or after 6 s


def test_short_audio_is_one_chunk_and_continuous_speech_is_still_bounded() -> None:
    assert len(plan_chunks(np.zeros(SAMPLE_RATE * 5, np.float32), 10.0)) == 1
    noise = np.random.default_rng(1).normal(0, 0.3, SAMPLE_RATE * 35).astype(np.float32)
    chunks = plan_chunks(noise, 10.0)
    assert all(c.duration <= 10.0 for c in chunks) and chunks[-1].end == len(noise)
    with pytest.raises(ValueError):
        plan_chunks(noise, 0.5)


def test_blocks_of_any_size_give_the_same_cuts_and_the_same_samples(speech_clip) -> None:
    """The streaming cutter decides the same cuts however the decoder happens to split the audio
    (including a signal that ends inside the smoothing look-ahead of a cut), and each chunk's
    samples are exactly its span of the input."""
    speech = decode_audio(speech_clip("two_cities.wav")).samples
    rng = np.random.default_rng(7)
    for samples in (speech, np.concatenate([speech, np.zeros(SAMPLE_RATE * 3 + 17, np.float32)]), speech[:16000 * 12 + 161]):
        for seconds in (5.0, 6.37, 12.0):
            whole = plan_chunks(samples, seconds)
            blocks, i = [], 0
            while i < len(samples):
                n = int(rng.integers(1, 20000))
                blocks.append(samples[i:i + n])
                i += n
            total = len(samples) / SAMPLE_RATE
            streamed = [(chunk, piece.copy()) for chunk, piece in cut_stream(blocks, seconds, total_seconds=lambda: total)]
            assert [c for c, _ in streamed] == whole
            for chunk, piece in streamed:
                assert np.array_equal(piece, samples[chunk.start:chunk.end])


def test_real_speech_is_cut_in_pauses(speech_clip) -> None:
    """two_cities.wav cut at <= 12 s: every cut lies where the signal is far below its speech level."""
    samples = decode_audio(speech_clip("two_cities.wav")).samples
    chunks = plan_chunks(samples, 12.0)
    assert len(chunks) >= 4
    loud = float(np.sqrt(np.mean(samples ** 2)))
    for c in chunks[:-1]:
        around = samples[max(0, c.end - 1600):c.end + 1600]  # +-0.1 s
        assert float(np.sqrt(np.mean(around ** 2))) < 0.25 * loud


def _part(segments: list[tuple[float, float, str]], language: str = "en", words: bool = True) -> Transcript:
    segs = []
    for i, (start, end, text) in enumerate(segments):
        ws = tuple(Word(start + k * (end - start) / len(text.split()), start + (k + 1) * (end - start) / len(text.split()),
                        " " + w) for k, w in enumerate(text.split())) if words else ()
        segs.append(Segment(i, start, end, text, words=ws))
    return Transcript(" ".join(s[2] for s in segments), language, segments[-1][1] if segments else 0.0, tuple(segs))


def test_merge_offsets_renumbers_and_stays_monotonic() -> None:
    a = _part([(0.0, 4.0, "it was the best"), (4.0, 9.8, "of times")])
    b = _part([(0.0, 3.0, "it was the worst"), (3.5, 10.4, "of times")])  # ends past its 10 s chunk
    c = _part([(0.2, 2.0, "the end")])
    merged = merge([(0.0, 10.0, a), (10.0, 10.0, b), (20.0, 5.0, c)])
    assert merged.text == "it was the best of times it was the worst of times the end"
    assert [s.id for s in merged.segments] == list(range(5))
    assert merged.segments[2].start == 10.0 and merged.segments[3].end == 20.0  # clamped into its chunk
    assert merged.segments[4].start == pytest.approx(20.2)
    times = [t for s in merged.segments for t in (s.start, s.end)]
    assert times == sorted(times)
    words = [t for w in merged.words for t in (w.start, w.end)]
    assert words == sorted(words) and len(merged.words) == 14
    assert merged.duration == 25.0 and merged.language == "en"


def test_merge_skips_empty_chunks_and_round_trips_through_json() -> None:
    a = _part([(0.0, 2.0, "hello there")])
    empty = Transcript("", "en", 5.0, ())
    merged = merge([(0.0, 5.0, a), (5.0, 5.0, empty), (10.0, 5.0, _part([(1.0, 2.0, "again")]))])
    assert merged.text == "hello there again"
    assert transcript_from_dict(merged.to_dict()) == merged
