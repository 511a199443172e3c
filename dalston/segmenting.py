"""Segments and subtitle cues cut from word timings, the same way for every family.

WHY from words: a decoder's own segments are whatever it happened to decode in one go (a 30 s
window, a whole VAD chunk of the batched Whisper pipeline, a NeMo utterance), far too long for a
subtitle and unrelated to sentences. Word timings exist for every family, so one function cuts
`verbose_json` segments at sentence ends and another cuts SRT/VTT cues to subtitle limits.

Cues follow common subtitle practice (and the defaults of `CueLimits`): at most 42 characters per
line and 2 lines, 0.8-7 s on screen; a cue is split at a sentence end first, then at a pause
(>= 0.3 s) or clause punctuation, with the halves as even as the text allows; never inside a word.
Two lines of a cue are balanced (the break that makes the longer line shortest).

Realtime finals are cut by the same `sentences` (`sentence_finals`): a final covers a VAD utterance
or a trimmed buffer, often several sentences, and clients that show or store finals one per line
get the lines `verbose_json` would give, without waiting for the end of the stream.

Word texts keep their family's spacing convention: Whisper words carry their leading space
(" tried."), NeMo words carry none ("tried."); `join_words` renders both the way the transcript does.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from dalston.engine_sdk.events import Final, StreamEvent
from dalston.engine_sdk.types import Segment, Word

#: verbose_json segments are sentences, but never longer than one Whisper window.
SENTENCE_MAX_SECONDS = 30.0
#: A gap between words at least this long is a pause, a good place to cut a cue.
PAUSE_SECONDS = 0.3

_SENTENCE_END = re.compile(r"[.?!…。？！]['\"”’)\]]*$")
_CLAUSE_END = re.compile(r"[,;:—–、，；：]['\"”’)\]]*$|\s[-–—]$")
#: "Mr." ends an abbreviation, not a sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "prof.", "sr.", "jr.", "vs.", "etc.", "e.g.", "i.e."})


@dataclass(frozen=True)
class CueLimits:
    """Subtitle limits; the request fields `max_line_width`, `max_line_count`, `max_cue_seconds`."""

    max_line_width: int = 42
    max_line_count: int = 2
    max_cue_seconds: float = 7.0
    min_cue_seconds: float = 0.8


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return " ".join(self.lines)


def join_words(words: Sequence[Word]) -> str:
    """The text of consecutive words: Whisper words bring their own spaces, NeMo words get one each."""
    if any(w.word[:1].isspace() for w in words):
        return re.sub(r"\s+", " ", "".join(w.word for w in words)).strip()
    return " ".join(w.word.strip() for w in words if w.word.strip())


def ends_sentence(word: Word) -> bool:
    text = word.word.strip()
    return bool(_SENTENCE_END.search(text)) and text.lower() not in _ABBREVIATIONS


def _ends_clause(word: Word) -> bool:
    return bool(_CLAUSE_END.search(word.word.rstrip()))


# ---------------------------------------------------------------------------------------------- splitting
def _split(words: Sequence[Word], fits: Callable[[Sequence[Word]], bool], min_seconds: float) -> list[list[Word]]:
    """Halve `words` at the best boundary until every piece `fits` (a single word always does).

    The best boundary: a sentence end, else a pause or clause punctuation, with the two sides as even
    (in characters) as possible and neither shorter than `min_seconds`.
    """
    if len(words) <= 1 or fits(words):
        return [list(words)]
    total = sum(len(w.word.strip()) + 1 for w in words)
    best_i, best_score = 1, float("-inf")
    left_chars = 0
    for i in range(1, len(words)):
        left_chars += len(words[i - 1].word.strip()) + 1
        before, after = words[i - 1], words[i]
        score = -3.0 * abs(2 * left_chars - total) / total
        if ends_sentence(before):
            score += 3.0
        elif _ends_clause(before):
            score += 1.5
        gap = after.start - before.end
        if gap >= PAUSE_SECONDS:
            score += 1.5 + min(gap, 2.0) / 2
        if before.end - words[0].start < min_seconds or words[-1].end - after.start < min_seconds:
            score -= 4.0
        if score > best_score:
            best_i, best_score = i, score
    return (_split(words[:best_i], fits, min_seconds) + _split(words[best_i:], fits, min_seconds))


def sentences(words: Sequence[Word], max_seconds: float = SENTENCE_MAX_SECONDS) -> list[list[Word]]:
    """Words grouped into sentences; a sentence longer than `max_seconds` is split at pauses/clauses."""
    groups: list[list[Word]] = []
    current: list[Word] = []
    for word in words:
        current.append(word)
        if ends_sentence(word):
            groups.append(current)
            current = []
    if current:
        groups.append(current)

    def short(piece: Sequence[Word]) -> bool:
        return piece[-1].end - piece[0].start <= max_seconds

    return [piece for group in groups for piece in _split(group, short, 0.0)]


# ---------------------------------------------------------------------------------------------- cues
def wrap(text_words: Sequence[str], max_lines: int, max_width: int) -> tuple[str, ...]:
    """The fewest lines (<= `max_lines`) within `max_width`, balanced: the longest line as short as possible.

    When no wrap fits, `max_lines` lines as balanced as possible (the caller decides what to do).
    """
    n = len(text_words)
    if n == 0:
        return ()
    lengths = [len(w) for w in text_words]

    def width(i: int, j: int) -> int:  # words i..j-1 on one line
        return sum(lengths[i:j]) + (j - i - 1)

    # best[k][i]: smallest possible longest line for words i.. on k lines
    best: dict[tuple[int, int], tuple[int, int]] = {}

    def solve(k: int, i: int) -> tuple[int, int]:
        if (k, i) in best:
            return best[(k, i)]
        if k == 1 or n - i == 1:
            result = (width(i, n), n)
        else:
            result = (width(i, n), n)
            for j in range(i + 1, n):
                rest = solve(k - 1, j)[0]
                candidate = max(width(i, j), rest)
                if candidate < result[0]:
                    result = (candidate, j)
        best[(k, i)] = result
        return result

    lines_needed = next((k for k in range(1, max_lines + 1) if solve(k, 0)[0] <= max_width), max_lines)
    lines: list[str] = []
    i, k = 0, lines_needed
    while i < n:
        j = solve(k, i)[1]
        lines.append(" ".join(text_words[i:j]))
        i, k = j, k - 1
    return tuple(lines)


def _cue_words(words: Sequence[Word]) -> list[str]:
    """The words of a cue as they are printed (joined like the transcript, then split at spaces)."""
    return join_words(words).split(" ")


def cues(words: Sequence[Word], limits: CueLimits = CueLimits(), *, duration: float | None = None) -> list[Cue]:
    """Subtitle cues from word timings within `limits`; `duration` bounds a cue stretched to the minimum."""

    def fits(piece: Sequence[Word]) -> bool:
        if piece[-1].end - piece[0].start > limits.max_cue_seconds:
            return False
        lines = wrap(_cue_words(piece), limits.max_line_count, limits.max_line_width)
        return max(len(line) for line in lines) <= limits.max_line_width

    # Sentence ends always end a cue; a piece too short to read joins a neighbour of its own sentence only.
    pieces = [p for sentence in sentences(words, max_seconds=float("inf"))
              for p in _merge_short(_split(sentence, fits, limits.min_cue_seconds), fits, limits.min_cue_seconds)]
    out: list[Cue] = []
    for i, piece in enumerate(pieces):
        start, end = piece[0].start, piece[-1].end
        if end - start < limits.min_cue_seconds:  # stretch a short cue into the silence after it
            limit = pieces[i + 1][0].start if i + 1 < len(pieces) else (duration if duration is not None else end
                                                                          + limits.min_cue_seconds)
            end = max(end, min(start + limits.min_cue_seconds, limit))
        out.append(Cue(start, end, wrap(_cue_words(piece), limits.max_line_count, limits.max_line_width)))
    return out


def _merge_short(pieces: list[list[Word]], fits: Callable[[Sequence[Word]], bool],
                 min_seconds: float) -> list[list[Word]]:
    """A piece shorter than `min_seconds` joins a close neighbour when the pair still fits ("Yes." "No.").

    Pieces further apart than `min_seconds` stay apart: the short one is stretched instead (see `cues`).
    """
    out: list[list[Word]] = []
    for piece in pieces:
        short = piece[-1].end - piece[0].start < min_seconds or out and out[-1][-1].end - out[-1][0].start < min_seconds
        if out and short and piece[0].start - out[-1][-1].end < min_seconds and fits(out[-1] + piece):
            out[-1] = out[-1] + piece
        else:
            out.append(piece)
    return out


def cues_from_segments(segments: Sequence[Segment], limits: CueLimits = CueLimits()) -> list[Cue]:
    """Cues for a transcript without word timings: one per segment, lines wrapped (cannot split in time)."""
    return [Cue(s.start, s.end, wrap(s.text.split(), limits.max_line_count, limits.max_line_width)) for s in segments if s.text.strip()]


# ---------------------------------------------------------------------------------------------- segments
def compression_ratio(text: str) -> float:
    """Whisper's repetition measure: bytes of the text over bytes of its zlib compression."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 0.0


def sentence_segments(segments: Sequence[Segment], *, tokenize: Callable[[str], list[int]] | None = None,
                      max_seconds: float = SENTENCE_MAX_SECONDS) -> tuple[Segment, ...]:
    """The decoder's segments re-cut at sentence ends (each <= `max_seconds`), ids 0.., times monotonic.

    Decoder facts are carried over from the segments a sentence came from: `seek` and `no_speech_prob`
    of the first, `temperature` the highest, `avg_logprob` their token-weighted mean. A sentence that is
    exactly one decoder segment keeps its tokens; any other gets `tokenize(text)` (the model's own
    tokenizer) when given. `compression_ratio` is computed from the sentence's text as Whisper does.
    Segments without words (a family without word timings) are returned renumbered, unchanged.
    """
    if not segments or any(not s.words for s in segments if s.text.strip()):
        return tuple(replace(s, id=i) for i, s in enumerate(segments))
    source: dict[int, Segment] = {}
    words: list[Word] = []
    for segment in segments:
        for word in segment.words:
            source[id(word)] = segment
            words.append(word)
    out: list[Segment] = []
    previous_end = 0.0
    for group in sentences(words, max_seconds):
        origins: list[Segment] = []
        for word in group:
            if not origins or origins[-1] is not source[id(word)]:
                origins.append(source[id(word)])
        text = join_words(group)
        if len(origins) == 1 and join_words(origins[0].words) == text:
            tokens = origins[0].tokens
        else:
            tokens = tuple(tokenize(" " + text)) if tokenize else ()
        weights = [max(len(o.tokens), 1) for o in origins]
        logprobs = [o.avg_logprob for o in origins]
        avg_logprob = (sum(w * lp for w, lp in zip(weights, logprobs) if lp is not None) / sum(weights)
                       if all(lp is not None for lp in logprobs) else None)
        temperatures = [o.temperature for o in origins if o.temperature is not None]
        start = max(group[0].start, previous_end)
        end = max(group[-1].end, start)
        out.append(Segment(len(out), start, end, text, avg_logprob=avg_logprob,
                           no_speech_prob=origins[0].no_speech_prob, words=tuple(group), seek=origins[0].seek,
                           tokens=tokens, temperature=max(temperatures) if temperatures else None,
                           compression_ratio=compression_ratio(text) if origins[0].compression_ratio is not None
                           else None))
        previous_end = end
    return tuple(out)


def segments_from_words(words: Sequence[Word]) -> tuple[Segment, ...]:
    """Sentence segments for a family whose decoder gives words only (NeMo): no tokens or logprobs."""
    if not words:
        return ()
    whole = Segment(0, words[0].start, words[-1].end, join_words(words), words=tuple(words))
    return sentence_segments((whole,))


class SentenceStream:
    """`sentence_segments` for a decoder that yields segments one at a time (SSE `stream=true`).

    Every finished sentence is released as soon as its last word is decoded; an unfinished one waits
    for the next decoder segment (or `finish`). Ids are consecutive across the whole stream.
    """

    def __init__(self, tokenize: Callable[[str], list[int]] | None = None) -> None:
        self.tokenize = tokenize
        self.pending: list[Segment] = []
        self.next_id = 0

    def push(self, segment: Segment) -> list[Segment]:
        self.pending.append(segment)
        out = list(sentence_segments(self.pending, tokenize=self.tokenize))
        if not out or not out[-1].words or ends_sentence(out[-1].words[-1]):
            self.pending = []
            return self._numbered(out)
        held = {id(w) for w in out[-1].words}
        self.pending = [replace(s, words=tuple(w for w in s.words if id(w) in held))
                        for s in self.pending if any(id(w) in held for w in s.words)]
        return self._numbered(out[:-1])

    def finish(self) -> list[Segment]:
        out = list(sentence_segments(self.pending, tokenize=self.tokenize)) if self.pending else []
        self.pending = []
        return self._numbered(out)

    def _numbered(self, segments: list[Segment]) -> list[Segment]:
        out = [replace(s, id=self.next_id + i) for i, s in enumerate(segments)]
        self.next_id += len(out)
        return out


# ---------------------------------------------------------------------------------------------- realtime finals
def sentence_finals(final: Final, max_seconds: float = SENTENCE_MAX_SECONDS) -> list[Final]:
    """One realtime final per sentence, cut by `sentences` exactly as `verbose_json` segments are.

    Texts are slices of the final's own text, so the pieces joined with a space give it back (for
    languages written with spaces), whatever spacing convention the family's words use. Times stay
    inside the final's and move forward: the first piece starts where the final starts, the last
    ends where it ends, the others span their words.
    """
    groups = sentences(final.words, max_seconds)
    if len(groups) <= 1:
        return [final]
    texts = _slices(final.text, groups)
    out: list[Final] = []
    start = final.start
    for i, (group, text) in enumerate(zip(groups, texts)):
        last = i == len(groups) - 1
        end = final.end if last else min(max(group[-1].end, start), final.end)
        out.append(Final(text, start, end, tuple(group)))
        if not last:
            start = min(max(groups[i + 1][0].start, end), final.end)
    return out


def _slices(text: str, groups: Sequence[Sequence[Word]]) -> list[str]:
    """`text` cut after the last word of each group (words found in order); re-joined words if one is missing."""
    out: list[str] = []
    begin = 0
    for group in groups[:-1]:
        cut = begin
        for word in group:
            token = word.word.strip()
            found = text.find(token, cut) if token else cut
            if found < 0:
                return [join_words(g) for g in groups]
            cut = found + len(token)
        out.append(text[begin:cut].strip())
        begin = cut
    out.append(text[begin:].strip())
    return out


def sentence_events(events: Sequence[StreamEvent]) -> list[StreamEvent]:
    """A session's events with every `Final` cut into sentences (`sentence_finals`), the rest as they are.

    WHY at the server, between every family's session and both protocols' renderers: the cut is the
    same for all families, and a family's policy (when to end an utterance, when to trim) stays free
    of presentation.
    """
    return [piece for event in events
            for piece in (sentence_finals(event) if isinstance(event, Final) else (event,))]
