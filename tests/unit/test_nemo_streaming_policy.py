"""Model-free parts of the NeMo families: the micro-batcher, the utterance/event policy, buffered chunk merging.

These run without NeMo or weights; the same code runs on real tiny NeMo models in tests/nemo/.
The buffered-merge test uses a stand-in decoder (unit-level): audio whose samples encode their own
stream position, so the stand-in can report words at known stream times from any window.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from dalston.engine_sdk import Word
from dalston.realtime.native_protocol import render
from dalston.runtimes.batching import MicroBatcher
from dalston.streaming.utterances import LEAD_IN_S, UtterancePolicy

SR = 16000
ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- batcher
def test_batcher_groups_concurrent_submits_and_keeps_order() -> None:
    calls: list[list[int]] = []

    def process(items: list[int]) -> list[int]:
        calls.append(list(items))
        time.sleep(0.05)
        return [i * 10 for i in items]

    batcher = MicroBatcher(process, max_batch=3, window_s=0.05)
    results: dict[int, int] = {}
    barrier = threading.Barrier(5)

    def run(i: int) -> None:
        barrier.wait()
        results[i] = batcher.submit(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    batcher.close()
    assert results == {i: i * 10 for i in range(5)}
    assert all(len(c) <= 3 for c in calls) and sum(len(c) for c in calls) == 5
    assert len(calls) < 5 and batcher.stats.largest > 1


def test_batcher_failure_reaches_every_waiter_and_the_batcher_survives() -> None:
    def process(items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("bad item")
        return items

    batcher = MicroBatcher(process, max_batch=4, window_s=0.0)
    with pytest.raises(ValueError, match="bad item"):
        batcher.submit(-1)
    assert batcher.submit(7) == 7
    batcher.close()


# ---------------------------------------------------------------------------------------------- policy
def tone(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * SR), dtype=np.float32)


def test_policy_orders_events_and_waits_for_decoder_coverage() -> None:
    policy = UtterancePolicy()
    events = []
    audio = np.concatenate([silence(1.0), tone(2.0), silence(1.5)])
    words = [Word(1.1, 1.5, "hello"), Word(1.6, 2.4, "world")]
    # the VAD hears everything at once, but the decoder has only covered 1.5 s: no final yet
    policy.audio(audio)
    events += policy.words(words[:1], 0, decoded_until=1.5, last_open=False)
    kinds = [e.type for e in events]
    assert kinds == ["vad.speech_start", "transcript.partial"]
    assert render(events[1])["text"] == "hello"
    events += policy.words(words, 0, decoded_until=4.3, last_open=False)  # VAD heard 4.5 s
    kinds = [e.type for e in events]
    # the speech end (~3.8 s) is covered now: "world" goes straight into the final
    assert kinds == ["vad.speech_start", "transcript.partial", "transcript.final", "vad.speech_end"]
    final = render(events[2])
    assert final["text"] == "hello world" and [w["word"] for w in final["words"]] == ["hello", "world"]
    assert render(events[0])["time"] <= 1.1 and render(events[-1])["time"] >= 3.0
    assert policy.finish() == []


def test_policy_holds_updates_until_the_vad_has_heard_past_them() -> None:
    policy = UtterancePolicy()
    assert policy.audio(np.concatenate([silence(1.0), tone(0.5)])) == []
    # decoded to 1.45 s but the VAD has heard only 1.5 s: a speech start could still be unconfirmed
    assert policy.words([Word(1.1, 1.3, "hi")], 0, decoded_until=1.45) == []
    events = policy.audio(tone(0.3))
    events += policy.words([Word(1.1, 1.3, "hi")], 0, decoded_until=1.6)
    assert [e.type for e in events][:2] == ["vad.speech_start", "transcript.partial"]


def test_a_held_update_is_released_by_the_next_audio_not_the_next_model_step() -> None:
    """The client's next frames make a held update due: its events come then, not a chunk later."""
    policy = UtterancePolicy()
    policy.audio(np.concatenate([silence(1.0), tone(0.5)]))
    assert policy.words([Word(1.1, 1.4, "hi")], 0, decoded_until=1.5, last_open=True) == []
    assert policy.audio(tone(0.1)) == []  # heard up to 1.6 s: not yet `_vad_lag` past 1.5 s
    released = policy.audio(tone(0.4))  # heard up to 2.0 s
    assert [e.type for e in released] == ["vad.speech_start", "transcript.partial"]
    assert render(released[1])["text"] == "hi"
    # the next step's update waits in turn, and brings only what is new
    assert policy.words([Word(1.1, 1.4, "hi"), Word(1.5, 1.9, "there")], 0, decoded_until=1.9, last_open=True) == []
    released = policy.audio(tone(0.4))
    assert [(e.type, render(e)["text"]) for e in released] == [("transcript.partial", "hi there")]


def test_policy_drops_words_long_before_speech_and_keeps_the_open_word_until_the_end() -> None:
    policy = UtterancePolicy()
    policy.audio(np.concatenate([silence(3.0), tone(1.0)]))
    noise = Word(0.2, 0.4, "noise")  # ends > LEAD_IN_S before the speech starting at ~3 s
    onset = Word(2.7, 3.1, "soft")  # a soft onset just before the VAD's start: kept
    grow = Word(3.2, 3.5, "gro")
    events = policy.words([noise, onset, grow], 0, decoded_until=3.6, last_open=True)
    assert policy.dropped_words == 1 and 3.0 - LEAD_IN_S > noise.end
    assert [e.type for e in events] == ["vad.speech_start", "transcript.partial"]
    assert render(events[-1])["text"] == "soft gro" and render(events[-1])["committed"] == "soft"
    events = policy.words([onset, Word(3.2, 3.8, "grown")], 1, decoded_until=3.8, last_open=True)
    assert render(events[-1])["text"] == "soft grown"
    events = policy.finish()
    assert [e.type for e in events] == ["transcript.final", "vad.speech_end"]
    assert render(events[0])["text"] == "soft grown"


# ---------------------------------------------------------------------------------------------- buffered merge
def _load_streaming_family() -> Any:
    path = ROOT / "engines/realtime/parakeet-streaming/engine.py"
    spec = importlib.util.spec_from_file_location("dalston_engines.realtime.parakeet_streaming", path)
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


class _PositionDecoder:
    """Stand-in engine: the audio's samples encode their stream index; reports a word every 0.5 s of stream time.

    Models `ParakeetStreamingEngine.decode_session_window` (engines/realtime/parakeet-streaming/engine.py):
    one window in, its words (seconds from the window start) out; the real one batches windows of
    concurrent sessions, which does not change a session's words (tests/nemo/test_realtime_batching.py).
    `chunk_seconds` / `context_seconds` are the engine's buffered-mode fields, narrowed from
    `runtime.streaming` in its constructor; `BufferedSession` reads only those.
    """

    def __init__(self, chunk_s: float, context_s: float) -> None:
        self.chunk_seconds, self.context_seconds = chunk_s, context_s
        self.windows: list[tuple[float, float]] = []
        self.lock = threading.RLock()

    def decode_session_window(self, audio: np.ndarray) -> list[Word]:
        first = round(float(audio[0] - 0.5) * 1e5)  # stream sample index of audio[0]
        start, end = first / SR, (first + len(audio)) / SR
        self.windows.append((start, end))
        words = []
        k = int(np.ceil(start / 0.5))
        while k * 0.5 < end:
            t = k * 0.5 - start
            words.append(Word(round(t, 3), round(min(t + 0.3, end - start), 3), f"w{k}"))
            k += 1
        return words


@pytest.mark.parametrize("chunk_ms", [160, 1000, 3000])
def test_buffered_session_commits_each_word_once_from_the_window_that_centres_it(chunk_ms: int) -> None:
    family = _load_streaming_family()
    engine = _PositionDecoder(chunk_s=1.6, context_s=4.0)
    session = family.BufferedSession(engine)
    n = int(9.3 * SR)
    audio = (0.5 + np.arange(n, dtype=np.float64) / 1e5).astype(np.float32)  # exact enough to round back
    events = []
    step = int(chunk_ms / 1000 * SR)
    for i in range(0, n, step):
        events += session.accept(audio[i:i + step])
    events += session.finish()
    finals = [render(e) for e in events if e.type == "transcript.final"]
    words = [w["word"] for f in finals for w in f["words"]]
    expected = [f"w{k}" for k in range(int(np.ceil(9.3 / 0.5)))]
    assert words == expected
    # every window but the first and last had 1.2 s on each side of its 1.6 s chunk
    inner = engine.windows[1:-2]
    assert inner and all(abs((end - start) - 4.0) < 0.01 for start, end in inner)
