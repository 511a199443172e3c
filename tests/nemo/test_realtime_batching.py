"""Batched realtime steps on tiny real NeMo checkpoints: sessions decoded together give exactly what each gives alone.

Each session runs in its own thread, as the server's realtime workers do, and hands its chunks to the
engine's batcher; one dispatcher thread runs one `conformer_stream_step` (cache-aware) or one
`transcribe` (buffered windows of one length) for every session that has work ready. Sessions start
at different times (so a first chunk, which NeMo encodes differently, shares steps with later chunks)
and have different lengths (so they leave mid-run). Tokens, their frames and the events must equal
each session's solo run, exactly.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import numpy as np
import pytest

from dalston.commands.stream import realtime_url, stream_audio, to_pcm16
from dalston.engine_sdk import SAMPLE_RATE
from tests.fixtures.serving import TEST_KEY, running_server
from tests.nemo.conftest import as_dicts

CHUNK = int(0.16 * SAMPLE_RATE)


def inputs(clip: Callable[[str], np.ndarray], n: int, seconds: float) -> list[np.ndarray]:
    """n different streams: slices of three real recordings at different offsets, of different lengths."""
    names = ("beckett", "endgame_nagg_nell", "two_cities")
    out = []
    for k in range(n):
        audio = clip(names[k % 3])
        start = int((k // 3) * 2.5 * SAMPLE_RATE)
        length = int((seconds - 0.7 * (k % 4)) * SAMPLE_RATE)
        out.append(audio[start:start + length])
    return out


class Recorded:
    """Wraps the engine batcher's step function (the real one runs) and records who shared each step.

    `hold_s` keeps each step busy that much longer, standing in for a full-size model's step time
    (a tiny model's step takes ~2 ms, so sessions would rarely be ready at the same moment).
    """

    def __init__(self, engine: Any, hold_s: float = 0.03) -> None:
        self.hold_s = hold_s
        self.batcher = engine.batcher
        self.real = self.batcher.process
        self.steps: list[list[Any]] = []
        self.stepped = threading.Condition()

    def __enter__(self) -> Recorded:
        def process(items: Sequence[Any]) -> Any:
            time.sleep(self.hold_s)
            out = self.real(items)
            with self.stepped:
                self.steps.append(list(items))
                self.stepped.notify_all()
            return out

        self.batcher.process = process
        return self

    def __exit__(self, *exc: object) -> None:
        self.batcher.process = self.real

    def wait_steps(self, count: int) -> None:
        with self.stepped:
            assert self.stepped.wait_for(lambda: len(self.steps) >= count, timeout=120), "batcher stalled"


def run(engine: Any, audio: np.ndarray) -> tuple[list[dict[str, Any]], Any]:
    session = engine.open_session("en")
    events = []
    for i in range(0, len(audio), CHUNK):
        events += session.accept(audio[i:i + CHUNK])
    events += session.finish()
    return as_dicts(events), session


def tokens(session: Any) -> tuple[list[int], list[int]]:
    """Cache-aware: the hypothesis' tokens and the stream frame of each (what the words are built from)."""
    hyp = session.hypothesis
    if hyp is None:
        return [], []
    return [int(t) for t in hyp.y_sequence], [int(f) for f in hyp.timestamp]


def run_together(engine: Any, streams: list[np.ndarray], stagger_steps: int) -> tuple[list[Any], Recorded]:
    """Session k starts once the batcher has run k * stagger_steps steps; all feed as fast as they can."""
    results: list[Any] = [None] * len(streams)
    errors: list[BaseException] = []

    with Recorded(engine) as recorded:
        def worker(k: int) -> None:
            try:
                if k:
                    recorded.wait_steps(k * stagger_steps)
                results[k] = run(engine, streams[k])
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(streams))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
    assert not errors, errors
    return results, recorded


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_cache_aware_batched_sessions_give_exactly_their_solo_tokens(load_variant, clip, n: int) -> None:
    engine = load_variant("parakeet-streaming-tiny")
    assert engine.batcher.max_batch >= 8  # runtime.batch_size of the tiny variant
    streams = inputs(clip, n, seconds=6.0)
    solo = [run(engine, audio) for audio in streams]
    together, recorded = run_together(engine, streams, stagger_steps=3)
    for k, ((events, session), (solo_events, solo_session)) in enumerate(zip(together, solo)):
        assert tokens(session) == tokens(solo_session), f"session {k} of {n}: tokens differ from its solo run"
        assert events == solo_events, f"session {k} of {n}: events differ from its solo run"
    sizes = [len(step) for step in recorded.steps]
    print(f"batch sizes n={n}: {sizes}")
    assert max(sizes) <= engine.batcher.max_batch
    if n > 1:
        assert max(sizes) >= min(n, 3), sizes  # sessions really shared steps
        # a first chunk (nothing dropped after the pre-encode) shared a step with later chunks
        assert any({c.drop for c in step} == {0, engine.drop_extra}
                   for step in recorded.steps), "no step mixed stream positions"
        # sessions joined and left mid-run: the batch grew and shrank
        grew = any(b > a for a, b in zip(sizes, sizes[1:]))
        shrank = any(b < a for a, b in zip(sizes, sizes[1:]))
        assert grew and shrank, sizes


def test_untrained_rnnt_batched_sessions_match_solo(load_variant, clip) -> None:
    """The untrained hybrid RNNT emits on almost every frame: any batch-dependent arithmetic would show."""
    engine = load_variant("parakeet-streaming-tiny-rnnt")
    streams = inputs(clip, 3, seconds=3.0)
    solo = [run(engine, audio) for audio in streams]
    together, _ = run_together(engine, streams, stagger_steps=2)
    for (events, session), (solo_events, solo_session) in zip(together, solo):
        assert tokens(session) == tokens(solo_session)
        assert events == solo_events


@pytest.mark.parametrize("n", [1, 2, 4])
def test_buffered_batched_windows_give_exactly_the_solo_words(load_variant, clip, n: int) -> None:
    engine = load_variant("parakeet-streaming-tiny-buffered")
    streams = inputs(clip, n, seconds=8.0)
    solo = [run(engine, audio)[0] for audio in streams]
    together, recorded = run_together(engine, streams, stagger_steps=1)
    for k, ((events, _), solo_events) in enumerate(zip(together, solo)):
        assert events == solo_events, f"session {k} of {n}"
    if n > 1:
        assert max(len(step) for step in recorded.steps) >= 2


def test_a_silent_session_does_not_hold_the_batch(load_variant, clip) -> None:
    """A session with no chunk ready has nothing in the batcher: another session streams through meanwhile."""
    engine = load_variant("parakeet-streaming-tiny")
    quiet, busy = clip("endgame_nagg_nell")[: 4 * SAMPLE_RATE], clip("beckett")
    solo_quiet, solo_busy = run(engine, quiet)[0], run(engine, busy)[0]
    session = engine.open_session("en")
    events = as_dicts(session.accept(quiet[:CHUNK]))  # less than one chunk: nothing to decode yet
    busy_events, _ = run(engine, busy)  # would hang if the step waited for the quiet session
    assert busy_events == solo_busy
    for i in range(CHUNK, len(quiet), CHUNK):
        events += as_dicts(session.accept(quiet[i:i + CHUNK]))
    events += as_dicts(session.finish())
    assert events == solo_quiet


def test_the_cause_nemo_stream_steps_in_parallel_threads_share_the_drop_setting(load_variant, clip) -> None:
    """Why sessions once diverged when stepped in parallel threads, forced deterministically.

    NeMo 3.0.0's `cache_aware_stream_step(drop_extra_pre_encoded=d)` writes `d` into the encoder's
    shared `streaming_cfg`, runs the encoder (which reads it after the pre-encode), and restores the
    previous value. Stream A (first chunk, d=0) is held inside its pre-encode while stream B (later
    chunk, d=2) sets its value; A then drops 2 of its 4 encoder frames. The engine's batched step
    never passes `drop_extra_pre_encoded` (it drops per session after its own pre-encode, and steps
    run on one thread), which is what the equality tests above check end to end.
    """
    import torch

    engine = load_variant("parakeet-streaming-tiny")
    model, encoder = engine.model, engine.model.encoder
    cfg = encoder.streaming_cfg
    drop = int(cfg.drop_extra_pre_encoded)
    audio = clip("beckett")
    pre = engine.preprocessor
    with torch.inference_mode():
        feats, _ = pre(input_signal=torch.from_numpy(audio)[None], length=torch.tensor([len(audio)]))
    first = feats[:, :, : cfg.chunk_size[0]]
    cache_frames = cfg.pre_encode_cache_size[1]
    later = feats[:, :, cfg.shift_size[0] - cache_frames: cfg.shift_size[0] + cfg.chunk_size[1]]

    def step(signal: Any, drop: int) -> int:
        cache = encoder.get_initial_cache_state(batch_size=1)
        with torch.inference_mode():
            out = model.conformer_stream_step(
                processed_signal=signal, processed_signal_length=torch.tensor([signal.shape[2]]),
                cache_last_channel=cache[0], cache_last_time=cache[1], cache_last_channel_len=cache[2],
                keep_all_outputs=False, previous_hypotheses=None, drop_extra_pre_encoded=drop,
                return_transcription=True)
        return int(out[4][0])  # cache_last_channel_len: encoder frames this step produced

    with engine.lock:
        engine.set_timestamps(False)
        alone = step(first, 0)
        names = {}
        a_in, b_set, a_read = threading.Event(), threading.Event(), threading.Event()

        def pre_hook(module: Any, args: Any) -> None:
            who = names.get(threading.get_ident())
            if who == "A":
                a_in.set()
                assert b_set.wait(10)
            elif who == "B":
                b_set.set()
                assert a_read.wait(10)

        def pos_hook(module: Any, args: Any, kwargs: Any) -> None:
            if names.get(threading.get_ident()) == "A":
                a_read.set()

        raced: dict[str, int] = {}

        def run_as(name: str, signal: Any, drop: int) -> None:
            names[threading.get_ident()] = name
            if name == "B":
                assert a_in.wait(10)
            raced[name] = step(signal, drop)

        handles = [encoder.pre_encode.register_forward_pre_hook(pre_hook),
                   encoder.pos_enc.register_forward_pre_hook(pos_hook, with_kwargs=True)]
        try:
            threads = [threading.Thread(target=run_as, args=("A", first, 0)),
                       threading.Thread(target=run_as, args=("B", later, drop))]
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        finally:
            for h in handles:
                h.remove()
            left_behind = int(cfg.drop_extra_pre_encoded)
            cfg.drop_extra_pre_encoded = drop
    assert alone == cfg.valid_out_len  # 4 frames: right context 3 + 1
    assert drop == 2 and raced["A"] == alone - drop, raced  # B's setting cut A's first chunk
    # and B "restored" A's temporary 0: the shared default stays wrong for every later caller
    assert left_behind == 0


# ---------------------------------------------------------------------------------------------- served
def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.M)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


def test_served_sessions_share_steps_while_one_is_silent_for_10s(nemo_engines_root, nemo_model_root, keys_file,
                                                                  clip) -> None:
    """Over real WebSockets: one session sends 160 ms and then nothing for 10 s; the others stream through
    meanwhile (it holds no step), everyone's transcript equals its solo one, the session cap still
    refuses one more with 4029, and /metrics counts every batched step in dalston_realtime_batch_size."""
    import websockets

    with running_server("parakeet-streaming-tiny", engines_root=nemo_engines_root, model_dir=nemo_model_root,
                        keys_file=keys_file) as served:
        spec, batcher = served.state.spec, served.state.engine.batcher
        url = realtime_url(served.url, spec.id, api_key=TEST_KEY)
        quiet_audio = clip("endgame_nagg_nell")[: 5 * SAMPLE_RATE]
        # paced like microphones, so they hold their slots well past the server's 1 s wait for a free one
        busy_audio = [clip("beckett")[: 7 * SAMPLE_RATE], clip("endgame_nagg_nell")[: 7 * SAMPLE_RATE],
                      clip("two_cities")[: 7 * SAMPLE_RATE]]
        assert len(busy_audio) + 1 == spec.capabilities.max_concurrency
        solo = [asyncio.run(stream_audio(url, a, language="en")) for a in [quiet_audio, *busy_audio]]
        before = (batcher.stats.batches, batcher.stats.items)
        metrics_before = httpx.get(f"{served.url}/metrics").text

        async def quiet_session(done_busy: asyncio.Event) -> tuple[list[dict[str, Any]], float]:
            pcm = to_pcm16(quiet_audio)
            frames = [pcm[i:i + 5120] for i in range(0, len(pcm), 5120)]
            events: list[dict[str, Any]] = []
            async with websockets.connect(url, max_size=None) as ws:
                await ws.send(json.dumps({"type": "session.config", "language": "en"}))
                events.append(json.loads(await ws.recv()))
                await ws.send(frames[0])
                silent_from = time.monotonic()
                await asyncio.sleep(10.0)
                busy_done_within = done_busy.is_set()
                for frame in frames[1:]:
                    await ws.send(frame)
                await ws.send(json.dumps({"type": "session.end"}))
                async for message in ws:
                    events.append(json.loads(message))
            return events, (time.monotonic() - silent_from) if busy_done_within else float("inf")

        async def scenario() -> Any:
            done_busy = asyncio.Event()
            quiet = asyncio.ensure_future(quiet_session(done_busy))
            await asyncio.sleep(0.5)
            busy = asyncio.gather(*(stream_audio(url, a, language="en", realtime=True) for a in busy_audio))
            await asyncio.sleep(1.0)
            refused = await stream_audio(url, busy_audio[0][:SAMPLE_RATE], language="en")  # one over the cap
            busy_results = await busy
            done_busy.set()
            return await quiet, busy_results, refused

        (quiet_events, silent_window), busy_results, refused = asyncio.run(scenario())
        assert silent_window < float("inf"), "the other sessions did not finish while one session was silent"
        assert refused.close_code == 4029 and [e.body.get("code") for e in refused.events if e.type == "error"] == [
            "too_many_sessions"]
        for result, alone in zip(busy_results, solo[1:]):
            assert result.close_code == 1000 and result.text == alone.text
        quiet_text = " ".join(e["text"] for e in quiet_events if e["type"] == "transcript.final")
        assert quiet_events[-1]["type"] == "session.end" and quiet_text == solo[0].text
        steps, items = batcher.stats.batches - before[0], batcher.stats.items - before[1]
        metrics = httpx.get(f"{served.url}/metrics").text
        count = _metric(metrics, "dalston_realtime_batch_size_count") - _metric(metrics_before,
                                                                                "dalston_realtime_batch_size_count")
        total = _metric(metrics, "dalston_realtime_batch_size_sum") - _metric(metrics_before,
                                                                              "dalston_realtime_batch_size_sum")
        assert (count, total) == (steps, items) and steps > 0
