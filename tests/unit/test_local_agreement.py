"""The LocalAgreement policy's utterance bookkeeping, with a stand-in decoder (unit level, no model).

The stand-in "hears" each loud region of the audio it is given as one word named by the region's
amplitude, with times relative to that audio, like Whisper's word timestamps. That is enough to
check what the policy feeds its decoder and what it does with the answer: the final of an utterance
is decoded with left context from before it (and the context's words are not repeated), the
preroll reaches back before the VAD's speech start even right after a previous utterance, and
partials come before finals. Real-model behaviour is tested in tests/realtime/.
"""

from __future__ import annotations

import numpy as np

from dalston.engine_sdk.types import Word
from dalston.realtime.native_protocol import render
from dalston.streaming.local_agreement import LocalAgreementSession, PolicyConfig

SR = 16000
NAMES = {3: "alpha", 6: "beta"}  # amplitude x 10 -> word


class RegionDecoder:
    """decode(audio, prompt): one word per loud run (>= 50 ms), times relative to `audio`."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, audio: np.ndarray, prompt: str) -> list[Word]:
        self.calls.append(len(audio))
        frame = SR // 100
        loud = [float(np.abs(audio[i:i + frame]).max()) > 0.1 for i in range(0, len(audio) - frame + 1, frame)]
        words: list[Word] = []
        start = None
        for i, flag in enumerate([*loud, False]):
            if flag and start is None:
                start = i
            elif not flag and start is not None:
                if i - start >= 5:
                    level = int(round(float(np.abs(audio[start * frame:i * frame]).max()) * 10))
                    words.append(Word(start / 100, i / 100, " " + NAMES.get(level, f"w{level}")))
                start = None
        return words


def tone(seconds: float, amplitude: float) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    return (amplitude * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def silence(seconds: float) -> np.ndarray:
    return np.random.default_rng(0).normal(0, 1e-4, int(seconds * SR)).astype(np.float32)


def run(audio: np.ndarray, config: PolicyConfig, decoder: RegionDecoder) -> list[dict]:
    session = LocalAgreementSession(decoder, config)
    events = []
    for i in range(0, len(audio), 2560):  # 160 ms chunks
        events += session.accept(audio[i:i + 2560])
    events += session.finish()
    return [render(e) for e in events]


def test_final_decode_sees_left_context_but_keeps_only_its_own_words() -> None:
    # utterance A (alpha, 2 s), a 1 s pause (longer than the VAD's 0.8 s), utterance B (beta, 2 s)
    audio = np.concatenate([silence(1.0), tone(2.0, 0.3), silence(1.0), tone(2.0, 0.6), silence(1.2)])
    decoder = RegionDecoder()
    events = run(audio, PolicyConfig(final_context_s=6.0), decoder)
    finals = [e for e in events if e["type"] == "transcript.final"]
    assert [f["text"] for f in finals] == ["alpha", "beta"], finals
    # B's final decode was handed A's audio as context: longer than B's own buffer (~0.5 + 2 + 0.3 s).
    assert decoder.calls[-1] / SR > 4.5, decoder.calls
    # Times are stream times: beta starts where its tone starts (4.0 s), not relative to the context.
    assert abs(finals[1]["start"] - 4.0) < 0.05 and abs(finals[1]["end"] - 6.0) < 0.05, finals[1]


def test_without_context_the_final_decodes_only_the_utterance() -> None:
    audio = np.concatenate([silence(1.0), tone(2.0, 0.3), silence(1.0), tone(2.0, 0.6), silence(1.2)])
    decoder = RegionDecoder()
    events = run(audio, PolicyConfig(final_context_s=0.0), decoder)
    assert [e["text"] for e in events if e["type"] == "transcript.final"] == ["alpha", "beta"]
    assert decoder.calls[-1] / SR < 3.0, decoder.calls


def test_preroll_reaches_before_speech_start_right_after_an_utterance() -> None:
    """B starts just after the VAD closed A (0.8 s of quiet): B's buffer still gets the full 0.5 s
    lead-in, so a soft onset the VAD does not count as speech is decoded with B ("In short" was
    heard as "ensure" when the lead-in only held audio from after A's speech_end)."""
    audio = np.concatenate([silence(1.0), tone(2.0, 0.3), silence(0.85), tone(1.5, 0.6), silence(1.2)])
    decoder = RegionDecoder()
    events = run(audio, PolicyConfig(final_context_s=0.0), decoder)
    assert [e["text"] for e in events if e["type"] == "transcript.final"] == ["alpha", "beta"]
    # B's final decode: 0.5 s preroll + 1.5 s tone + 0.3 s tail (a preroll starting at A's speech_end: < 2.0 s)
    assert decoder.calls[-1] / SR >= 2.25, decoder.calls


def test_event_order_partials_before_finals() -> None:
    audio = np.concatenate([silence(0.5), tone(3.0, 0.3), silence(1.2)])
    events = run(audio, PolicyConfig(), RegionDecoder())
    types = [e["type"] for e in events]
    assert types[0] == "vad.speech_start" and types[-2:] == ["transcript.final", "vad.speech_end"], types
    assert "transcript.partial" in types[1:-2], types


def test_a_backlog_is_decoded_in_one_step_with_the_same_finals() -> None:
    """A server that fell behind hands over everything queued in one accept: one decode, not one per
    second of backlog (which would never catch up), and the finals do not change."""
    audio = np.concatenate([silence(1.0), tone(6.0, 0.3), silence(1.0), tone(3.0, 0.6), silence(1.2)])
    paced = RegionDecoder()
    paced_finals = [e["text"] for e in run(audio, PolicyConfig(), paced) if e["type"] == "transcript.final"]
    backlog = RegionDecoder()
    session = LocalAgreementSession(backlog, PolicyConfig())
    events = [render(e) for e in session.accept(audio) + session.finish()]
    assert [e["text"] for e in events if e["type"] == "transcript.final"] == paced_finals == ["alpha", "beta"]
    assert len(backlog.calls) < len(paced.calls) / 2, (backlog.calls, paced.calls)


def test_a_long_backlog_still_trims_so_no_decode_exceeds_the_window() -> None:
    """40 s of unbroken speech in one accept: forced steps keep every decode near max_buffer_s."""
    decoder = RegionDecoder()
    session = LocalAgreementSession(decoder, PolicyConfig(max_buffer_s=15.0))
    events = session.accept(np.concatenate([silence(0.5), tone(40.0, 0.3)])) + session.finish()
    assert max(decoder.calls) / SR <= 15.0 * 1.5 + 1.0 + 0.5 + 6.0, decoder.calls  # + min_chunk, preroll, context
    assert sum(1 for e in events if e.type == "transcript.final") >= 2


class TimedDecoder(RegionDecoder):
    """RegionDecoder that takes `seconds` of wall time per decode (a loaded or idle CPU)."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds = seconds

    def __call__(self, audio: np.ndarray, prompt: str) -> list[Word]:
        import time

        time.sleep(self.seconds)
        return super().__call__(audio, prompt)


def test_adaptive_step_follows_decode_time_between_floor_and_min_chunk() -> None:
    """Fast decodes: re-decode every min_chunk_floor_s of speech; slow ones: back to min_chunk_s; finals unchanged."""
    audio = np.concatenate([silence(0.5), tone(4.0, 0.3), silence(1.2)])
    config = PolicyConfig(min_chunk_s=1.0, min_chunk_floor_s=0.3, decode_share=0.5)
    fixed = RegionDecoder()
    fixed_events = run(audio, PolicyConfig(min_chunk_s=1.0), fixed)
    fast = TimedDecoder(0.0)
    fast_events = run(audio, config, fast)
    slow = TimedDecoder(0.6)  # 0.6 s / 0.5 share = 1.2 s, capped at min_chunk_s
    slow_events = run(audio, config, slow)
    finals = [[e["text"] for e in ev if e["type"] == "transcript.final"] for ev in (fixed_events, fast_events, slow_events)]
    assert finals == [["alpha"]] * 3
    assert len(fast.calls) >= 2 * len(fixed.calls) - 1, (fast.calls, fixed.calls)  # ~every 0.3 s instead of 1 s
    assert len(slow.calls) == len(fixed.calls), (slow.calls, fixed.calls)
    session = LocalAgreementSession(TimedDecoder(0.2), config)
    assert session.step_samples() == SR  # before any decode: min_chunk_s
    session._decode_s = 0.2
    assert session.step_samples() == int(0.4 * SR)
    session._decode_s = 0.05
    assert session.step_samples() == int(0.3 * SR)


def test_variant_floor_above_min_chunk_is_a_clear_error() -> None:
    import pytest
    from pydantic import ValidationError

    from dalston.spec import WhisperStreaming

    with pytest.raises(ValidationError, match=r"min_chunk_floor_ms \(800\) must not exceed min_chunk_ms \(500\)"):
        WhisperStreaming(min_chunk_ms=500, min_chunk_floor_ms=800)
    assert WhisperStreaming(min_chunk_ms=1000, min_chunk_floor_ms=300).min_chunk_floor_ms == 300


def test_an_improbable_trailing_run_is_dropped_from_a_final() -> None:
    """The words the real base model gave for pcm16 beckett's last utterance: 'Thank' (p=0.01) spans the
    trailing silence, 'you.' has no length; the spoken words keep their high probabilities."""
    from dalston.streaming.local_agreement import _drop_invented_tail

    heard = [Word(6.22, 6.82, "Fail", 0.97), Word(6.82, 7.16, "again,", 1.0), Word(7.86, 8.34, "fail", 0.96),
             Word(8.34, 8.68, "better.", 0.99)]
    invented = [Word(8.68, 9.94, "Thank", 0.01), Word(9.94, 9.94, "you.", 0.97)]
    assert _drop_invented_tail(heard + invented) == heard
    assert _drop_invented_tail(heard) == heard  # nothing improbable: unchanged
    # a zero-length word alone is not enough to drop anything (timestamps can collapse on real speech)
    assert _drop_invented_tail(heard + [Word(8.68, 8.68, "yes.", 0.9)]) == heard + [Word(8.68, 8.68, "yes.", 0.9)]


class SentenceDecoder(RegionDecoder):
    """RegionDecoder whose every word ends a sentence ("alpha."), like Whisper on short phrases."""

    def __call__(self, audio: np.ndarray, prompt: str) -> list[Word]:
        return [Word(w.start, w.end, w.word + ".") for w in super().__call__(audio, prompt)]


def test_re_decodes_cover_only_the_uncommitted_tail() -> None:
    """12 s of 0.5 s phrases with 0.2 s gaps (one utterance: the gaps are shorter than the VAD's 0.8 s):
    with tail decoding, a re-decode starts at a committed sentence end, so its window stays a few
    seconds long while the old policy's grows with the utterance; finals are the same words."""
    phrase = np.concatenate([tone(0.5, 0.3), silence(0.2)])
    audio = np.concatenate([silence(0.5), *[phrase] * 17, silence(1.2)])
    tail, whole = SentenceDecoder(), SentenceDecoder()
    tail_session = LocalAgreementSession(tail, PolicyConfig())
    whole_session = LocalAgreementSession(whole, PolicyConfig(tail_decode=False))
    finals = []
    for session in (tail_session, whole_session):
        events = [render(e) for i in range(0, len(audio), 2560) for e in session.accept(audio[i:i + 2560])]
        events += [render(e) for e in session.finish()]
        finals.append(" ".join(e["text"] for e in events if e["type"] == "transcript.final"))
    assert finals[0] == finals[1] and finals[0].count("alpha.") == 17, finals
    assert max(whole_session.windows) > 10.0, whole_session.windows
    # >= 1 s of committed overlap (up to a phrase boundary) + what is not yet committed: agreement needs
    # two decodes, so up to two steps of 1 s (and a frame) of new speech
    assert max(tail_session.windows) <= 4.5, tail_session.windows  # measured: 3-4 s from the 4th decode on


class PromptRecorder(SentenceDecoder):
    """SentenceDecoder that records the prompt of every decode."""

    def __init__(self) -> None:
        super().__init__()
        self.prompts: list[str] = []

    def __call__(self, audio: np.ndarray, prompt: str) -> list[Word]:
        self.prompts.append(prompt)
        return super().__call__(audio, prompt)


def test_the_final_after_a_trim_is_not_prompted_with_what_its_context_audio_holds() -> None:
    """24 s of phrases in one utterance: the buffer is trimmed past 15 s and the rest is finalised by a
    decode whose left context is the trimmed audio. Whisper prompted with that audio's own text skipped
    it and lost the words after the cut (tests/realtime: "It was the spring"), so that decode gets no
    prompt; with no context audio (final_context_s 0) the prompt is text the audio lacks, and stays."""
    phrase = np.concatenate([tone(0.5, 0.3), silence(0.2)])
    audio = np.concatenate([silence(0.5), *[phrase] * 34, silence(1.2)])
    for context_s, prompted in ((6.0, False), (0.0, True)):
        final = PromptRecorder()
        session = LocalAgreementSession(final, PolicyConfig(final_context_s=context_s), SentenceDecoder())
        events = [render(e) for i in range(0, len(audio), 2560) for e in session.accept(audio[i:i + 2560])]
        events += [render(e) for e in session.finish()]
        finals = [e["text"] for e in events if e["type"] == "transcript.final"]
        assert len(finals) >= 2 and " ".join(finals).count("alpha.") == 34, finals
        assert len(final.prompts) == 1, final.prompts  # the utterance's one final decode (re-decodes: the other)
        assert bool(final.prompts[0]) == prompted and (not prompted or final.prompts[0].endswith("alpha.")), final.prompts


def test_after_overlap_finds_where_a_re_decode_passes_the_committed_words() -> None:
    from dalston.streaming.local_agreement import _after_overlap

    def words(text: str) -> list[Word]:
        return [Word(float(i), i + 0.5, " " + w) for i, w in enumerate(text.split())]

    overlap = words("it was the")
    assert _after_overlap(words("It was the best of"), overlap) == 3
    assert _after_overlap(words("was the best of"), overlap) == 2  # the cut-off first word was dropped
    assert _after_overlap(words("season of light"), overlap) is None  # not read back: fall back to times
    # a repeated phrase further on is not mistaken for the overlap
    assert _after_overlap(words("it was the best it was the"), overlap) == 3
