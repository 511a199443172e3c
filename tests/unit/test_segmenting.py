"""Cue and sentence cutting from word timings (dalston.segmenting), on hand-made word lists.

The real-model checks (two_cities, a 3-minute clip, subtitle parsers) are in tests/server/test_subtitles.py;
these pin the rules themselves: limits, break preferences, balance, never inside a word.
"""

from __future__ import annotations

import pytest

from dalston.engine_sdk.events import Final, SpeechStopped
from dalston.engine_sdk.types import Segment, Word
from dalston.segmenting import (CueLimits, cues, join_words, sentence_events, sentence_finals, sentence_segments,
                                sentences, wrap)


def timed(text: str, start: float = 0.0, step: float = 0.3, pauses: dict[int, float] | None = None,
          leading_space: bool = False) -> list[Word]:
    """Words of `text` one every `step` s (each lasting step - 0.05), plus extra `pauses` before word i."""
    words, t = [], start
    for i, word in enumerate(text.split()):
        t += (pauses or {}).get(i, 0.0)
        words.append(Word(round(t, 3), round(t + step - 0.05, 3), (" " if leading_space else "") + word))
        t += step
    return words


def check_limits(out, words, limits: CueLimits) -> None:
    assert " ".join(c.text for c in out) == join_words(words)
    for cue in out:
        assert 1 <= len(cue.lines) <= limits.max_line_count
        assert all(len(line) <= limits.max_line_width for line in cue.lines), cue
        assert cue.end - cue.start <= limits.max_cue_seconds + 1e-9, cue
    for a, b in zip(out, out[1:]):
        assert a.end <= b.start


def test_long_run_of_words_is_cut_into_cues_within_limits() -> None:
    words = timed(" ".join(["word"] * 80) + ".", leading_space=True)
    out = cues(words)
    check_limits(out, words, CueLimits())
    assert len(out) >= 3


def test_sentence_end_is_preferred_then_pause_then_comma() -> None:
    words = timed("It was the best of times. It was the worst of times, it was the age of wisdom and folly.")
    out = cues(words, CueLimits(max_line_width=42, max_line_count=1))
    assert out[0].text == "It was the best of times."
    paused = timed("one two three four five six seven eight nine ten eleven twelve", pauses={8: 0.6})
    out = cues(paused, CueLimits(max_line_width=42, max_line_count=1))
    assert out[0].text == "one two three four five six seven eight", out
    comma = timed("alpha beta gamma delta, epsilon zeta eta theta iota kappa lambda")
    out = cues(comma, CueLimits(max_line_width=42, max_line_count=1))
    assert out[0].text == "alpha beta gamma delta,"


def test_cues_respect_the_time_limit_and_the_minimum() -> None:
    slow = timed("a b c d e f g h i j k l", step=1.0)  # 12 s of short words
    out = cues(slow, CueLimits(max_cue_seconds=4.0))
    check_limits(out, slow, CueLimits(max_cue_seconds=4.0))
    short = [Word(0.0, 0.3, "Yes."), Word(5.0, 5.4, "No.")]
    out = cues(short, duration=6.0)
    assert [c.text for c in out] == ["Yes.", "No."]  # sentences are never merged; short ones are stretched
    assert all(c.end - c.start >= 0.8 - 1e-9 for c in out)
    assert out[1].end <= 6.0


def test_a_word_longer_than_a_line_is_never_broken() -> None:
    words = timed("supercalifragilisticexpialidocious-and-then-some-more-letters-too short")
    out = cues(words, CueLimits(max_line_width=20))
    assert "supercalifragilisticexpialidocious-and-then-some-more-letters-too" in [c.text for c in out]


def test_two_lines_are_balanced() -> None:
    lines = wrap("the quick brown fox jumps over the lazy dog and runs far away".split(), 2, 42)
    assert len(lines) == 2 and abs(len(lines[0]) - len(lines[1])) <= 6
    assert wrap(["short", "cue"], 2, 42) == ("short cue",)


def test_sentences_split_and_bounded() -> None:
    words = timed("Ever tried. Ever failed. No matter. Mr. Smith said so.")
    assert [join_words(s) for s in sentences(words)] == ["Ever tried.", "Ever failed.", "No matter.",
                                                         "Mr. Smith said so."]
    long = timed(" ".join(["la"] * 200), step=0.5)  # 100 s without punctuation
    parts = sentences(long, max_seconds=30.0)
    assert all(p[-1].end - p[0].start <= 30.0 for p in parts) and sum(map(len, parts)) == 200


def test_sentence_segments_keep_decoder_facts() -> None:
    a = timed("Ever tried. Ever", leading_space=True)
    b = timed("failed. No matter.", start=1.0, leading_space=True)
    decoded = (Segment(0, 0.0, 1.0, "Ever tried. Ever", -0.2, 0.01, tuple(a), seek=0, tokens=(1, 2, 3, 4),
                       temperature=0.0, compression_ratio=1.0),
               Segment(1, 1.0, 2.0, "failed. No matter.", -0.4, 0.02, tuple(b), seek=100, tokens=(5, 6, 7, 8),
                       temperature=0.2, compression_ratio=1.0))
    out = sentence_segments(decoded, tokenize=lambda text: [len(text)])
    assert [s.text for s in out] == ["Ever tried.", "Ever failed.", "No matter."]
    assert [s.id for s in out] == [0, 1, 2]
    assert out[1].seek == 0 and out[1].temperature == 0.2 and out[1].avg_logprob == pytest.approx(-0.3)
    assert out[0].tokens == (len(" Ever tried."),)
    assert all(s.compression_ratio and s.compression_ratio > 0 for s in out)
    assert all(a.end <= b.start for a, b in zip(out, out[1:]))


def test_realtime_final_is_cut_like_verbose_json() -> None:
    """Stripped words (as whisper-streaming sends them) and a text with an unspaced word ('%')."""
    words = [w.__class__(w.start, w.end, w.word.strip()) for w in timed(" Ever tried. Ever failed. No matter", 1.0,
                                                                        leading_space=True)]
    final = Final("Ever tried. Ever failed. No matter", 0.9, 3.0, tuple(words))
    out = sentence_finals(final)
    assert [f.text for f in out] == ["Ever tried.", "Ever failed.", "No matter"]
    assert [f.text for f in out] == [join_words(g) for g in sentences(words)]
    assert out[0].start == 0.9 and out[-1].end == 3.0
    assert all(a.end <= b.start and f.start <= f.end for a, b, f in zip(out, out[1:], out))
    assert [len(f.words) for f in out] == [2, 2, 2]
    unspaced = Final("Up 5%. Down.", 0.0, 2.0, (Word(0.0, 0.5, "Up"), Word(0.5, 1.0, "5"), Word(1.0, 1.2, "%."),
                                                Word(1.5, 2.0, "Down.")))
    assert [f.text for f in sentence_finals(unspaced)] == ["Up 5%.", "Down."]
    one = Final("Try again.", 0.0, 1.0, (Word(0.0, 0.4, "Try"), Word(0.5, 1.0, "again.")))
    assert sentence_finals(one) == [one]
    events = sentence_events([final, SpeechStopped(3.2)])
    assert [e.type for e in events] == ["transcript.final"] * 3 + ["vad.speech_end"]
