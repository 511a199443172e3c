"""LocalAgreement-2 streaming over any offline word-level decoder (model-agnostic, unit-testable).

The policy (after Machacek et al., "Turning Whisper into Real-Time Transcription System", 2023):
audio accumulates in a buffer that is re-decoded every `min_chunk_s` of new speech; the words two
consecutive hypotheses agree on (longest common prefix) are *committed* and never change again;
the rest is tentative. Committed text that has left the buffer is fed back as the prompt, and the
buffer is trimmed at a committed sentence end once it grows beyond `max_buffer_s`, so decode cost
stays bounded however long someone talks. The prompt is reset at each pause (see `_begin_utterance`).
A re-decode covers only the tail of the buffer, from a committed sentence end on (`_advance_window`),
and may use a cheaper decoder than the final (`redecode`: the engine's short encoder input).

On top of that, an energy VAD splits the stream into utterances: at the start of speech the
session emits `vad.speech_start`; at the end of speech the whole utterance buffer is decoded one
last time and sent as `transcript.final`, then `vad.speech_end`. Silence is never decoded (Whisper
invents text on silence). Partials are committed + tentative text of the current utterance; finals
are stable text.

WHY the final is a fresh decode of the whole utterance (with `final_context_s` of the audio before
it as left context) rather than the words committed along the way: committed words were agreed on
while the buffer ended mid-sentence, and a decode that sees the entire utterance, like a batch
decode does, is measurably more accurate (on two_cities.wav, Whisper base streamed in 160 ms
chunks went from 6 word errors to 1, against 2 for a batch decode of the same samples). The left audio context stands in for the text context a batch
decode has within its 30 s window; a *text* prompt across pauses was tried and made tiny.en loop on
the previous sentence. A final may therefore revise the last partial; the final is authoritative.

WHY at most one re-decode per `accept` call (once `min_chunk_s` of new speech has arrived), not one
per `min_chunk_s` of stream time: when decoding is slower than real time (a loaded CPU, a larger
model), the server hands over everything that queued up meanwhile in one `accept`, and the policy
decodes it in one step, as the original whisper_streaming does; stepping through every second of
backlog instead never catches up, and latency grows without bound (measured: Whisper base on a
loaded 2-core machine fell 28 s behind over a 44 s clip). Partials therefore depend on timing.
Finals do not, for utterances up to `max_buffer_s`: they come from the whole-utterance decode, and
utterance boundaries come from the per-frame VAD, so a file gives the same finals however it is
paced or framed (the tests rely on this). Inside one long `accept`, a step is still forced whenever
the buffer reaches `max_buffer_s`, so trimming keeps every decode within Whisper's 30 s window.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from dalston.engine_sdk.base import StreamingSession
from dalston.engine_sdk.events import Final, Partial, SpeechStarted, SpeechStopped, StreamEvent, TurnDetection
from dalston.engine_sdk.types import Word
from dalston.streaming.vad import EnergyVad, VadConfig, vad_config_for

#: decode(audio, prompt) -> words with times in seconds relative to the start of `audio`.
Decoder = Callable[[np.ndarray, str], Sequence[Word]]

_SENTENCE_END = re.compile(r"[.?!。？！]['\"”’)]*$")
_PROMPT_CHARS = 200
_DUP_TOLERANCE_S = 0.1
_TAIL_S = 0.3
#: A trailing word Whisper itself gives less than this probability, at the very end of an utterance,
#: is taken for the classic end-of-audio invention ("Thank you." after "Fail better." on pcm16 beckett:
#: "Thank" p=0.01 spanning the trailing silence, "you." zero-length).
_INVENTED_P = 0.15


def _tail(samples: np.ndarray, count: int) -> np.ndarray:
    """The last `count` samples (none for count <= 0; `a[-0:]` would be all of them)."""
    return samples[len(samples) - count:] if 0 < count < len(samples) else (samples if count > 0 else samples[:0])


def normalize_word(text: str) -> str:
    """How two hypotheses' words are compared: case and punctuation do not break agreement."""
    return re.sub(r"[^\w']", "", text.lower())


def join_words(words: Sequence[Word]) -> str:
    """Words carry their own leading space (Whisper style); join and tidy."""
    return re.sub(r"\s+", " ", "".join(w.word if w.word[:1].isspace() else " " + w.word for w in words)).strip()


def common_prefix(a: Sequence[Word], b: Sequence[Word]) -> int:
    """Length of the longest common prefix of two hypotheses, by normalized word."""
    n = 0
    for x, y in zip(a, b):
        if normalize_word(x.word) != normalize_word(y.word):
            break
        n += 1
    return n


@dataclass(frozen=True)
class PolicyConfig:
    min_chunk_s: float = 1.0  # re-decode after this much new speech (the longest step when adaptive)
    min_chunk_floor_s: float | None = None  # adaptive: the shortest step, when decodes are fast
    decode_share: float = 0.5  # adaptive: a session's re-decodes may take this share of wall time
    max_buffer_s: float = 15.0
    final_context_s: float = 6.0  # audio before the utterance that the final decode also sees
    preroll_s: float = 0.5  # lead-in audio kept before the VAD's speech start (soft onsets such as "In short")
    tail_decode: bool = True  # re-decode only from a committed word boundary on (see `_advance_window`)
    tail_overlap_s: float = 1.0  # committed speech kept at the head of the re-decode window (cut at a sentence end)
    tail_word_cut_s: float = 3.0  # ... or this much, when the cut falls between two words of a sentence
    tail_prompt: bool = False  # also prompt a re-decode with the committed text before its window (measured worse)
    sample_rate: int = 16000
    vad: VadConfig = VadConfig()

    def with_turn(self, turn: TurnDetection | None) -> PolicyConfig:
        """This config with a client's turn detection: VAD threshold and silence, and
        `prefix_padding_ms` as the preroll (the audio before the onset that is decoded with it)."""
        if turn is None:
            return self
        preroll = self.preroll_s if turn.prefix_padding_ms is None else max(0, turn.prefix_padding_ms) / 1000
        return replace(self, vad=vad_config_for(turn, self.vad), preroll_s=preroll)


class LocalAgreementSession(StreamingSession):
    """One stream's state: VAD, the utterance buffer, committed and tentative words."""

    def __init__(self, decode: Decoder, config: PolicyConfig | None = None, redecode: Decoder | None = None) -> None:
        self.decode = decode  # the final decode of an utterance
        self.redecode = redecode or decode  # the re-decodes behind partials (may be a cheaper decoder)
        self.config = config or PolicyConfig()
        self.vad = EnergyVad(self.config.vad, self.config.sample_rate)
        sr = self.config.sample_rate
        self._frame = self.vad.frame_samples
        self._min_chunk = int(self.config.min_chunk_s * sr)
        self._max_buffer = int(self.config.max_buffer_s * sr)
        self._preroll_max = int(self.config.preroll_s * sr)
        self._pending = np.zeros(0, dtype=np.float32)  # samples not yet a whole VAD frame
        self._recent_max = self._preroll_max + int(self.config.final_context_s * sr)
        self._recent = np.zeros(0, dtype=np.float32)  # the last preroll + final_context_s of the stream
        self._context = np.zeros(0, dtype=np.float32)  # audio just before buffer[0], for the final decode
        self._samples_seen = 0  # stream position (samples) of the end of processed frames
        self._buffer: list[np.ndarray] = []
        self._buffer_len = 0
        self._buffer_start = 0.0  # stream seconds of buffer[0]
        self._window_start = 0.0  # stream seconds where re-decodes start (>= _buffer_start)
        self._since_decode = 0
        self._utt_start = 0.0
        self._committed: list[Word] = []  # committed in this utterance, not yet sent as final
        self._last_committed_end = 0.0
        self._tentative: list[Word] = []
        self._history: list[str] = []  # final text, for re-decode prompts (not the final decode, see there)
        self._last_partial = ""
        self._last_loud = 0  # stream position (samples) just after the last loud frame
        self._decode_s: float | None = None  # recent re-decode wall time (moving average)
        self.decodes = 0
        self.windows: list[float] = []  # seconds of audio each re-decode covered (for tests and benchmarks)

    # ------------------------------------------------------------------ public API
    def accept(self, audio: np.ndarray) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        data = np.concatenate([self._pending, np.asarray(audio, dtype=np.float32).reshape(-1)])
        whole = len(data) // self._frame * self._frame
        self._pending = data[whole:].copy()
        for i in range(0, whole, self._frame):
            events.extend(self._frame_in(data[i:i + self._frame]))
        if self.vad.in_speech and self._since_decode >= self.step_samples():
            events.extend(self._step())
        return events

    def step_samples(self) -> int:
        """New speech (samples) that triggers the next re-decode.

        Fixed at `min_chunk_s` unless `min_chunk_floor_s` is set. Then the step follows how long
        re-decodes take now: `decode time / decode_share`, between the floor and `min_chunk_s`. On
        an idle CPU a Whisper base re-decode takes ~0.2 s, so a word shows after about half a step
        plus one decode (~0.4 s) instead of half of a fixed 1 s step plus one decode; when the CPU
        is shared (other sessions, other jobs) decodes slow down and the step grows back towards
        `min_chunk_s`, so the engine degrades to today's cadence instead of falling behind.
        """
        cfg = self.config
        if cfg.min_chunk_floor_s is None or self._decode_s is None:
            return self._min_chunk
        seconds = min(cfg.min_chunk_s, max(cfg.min_chunk_floor_s, self._decode_s / cfg.decode_share))
        return int(seconds * cfg.sample_rate)

    def finish(self) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        if len(self._pending) and self.vad.in_speech:
            self._append(self._pending)
            self._samples_seen += len(self._pending)
        self._pending = np.zeros(0, dtype=np.float32)
        if self.vad.in_speech:
            events.extend(self._end_utterance())
            events.append(SpeechStopped(self._now()))
        return events

    # ------------------------------------------------------------------ internals
    def _now(self) -> float:
        return self._samples_seen / self.config.sample_rate

    def _frame_in(self, frame: np.ndarray) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        edge = self.vad.update(frame)
        if edge == "start":
            self._begin_utterance()
            events.append(SpeechStarted(self._utt_start))
        self._samples_seen += len(frame)
        if self.vad.loud:
            self._last_loud = self._samples_seen
        if self.vad.in_speech or edge == "end":
            self._append(frame)
            if edge == "end":
                events.extend(self._end_utterance())
                events.append(SpeechStopped(self._now()))
            elif self._buffer_len >= self._max_buffer and self._since_decode >= self._min_chunk:
                events.extend(self._step())  # a long backlog in one accept: keep the buffer bounded
        # Kept whatever the VAD said, so an utterance that starts soon after the previous one ended
        # still gets its soft onset ("In short" was heard as "ensure" when the preroll only held
        # audio from after the last speech_end), and its final decode gets left context.
        self._recent = np.concatenate([self._recent, frame])[-self._recent_max:]
        return events

    def _begin_utterance(self) -> None:
        """Called before the triggering frame is counted: the loud frames before it, and lead-in
        audio before those, are the preroll (the tail of `_recent`)."""
        now = self._now()
        preroll = self._recent[-self._preroll_max:]
        self._context = self._recent[:len(self._recent) - len(preroll)]
        self._buffer = [preroll.copy()] if len(preroll) else []
        self._buffer_len = len(preroll)
        self._buffer_start = now - self._buffer_len / self.config.sample_rate
        self._window_start = self._buffer_start
        cfg = self.vad.config
        self._utt_start = max(self._buffer_start, now - (cfg.min_speech_ms - cfg.frame_ms) / 1000)
        self._since_decode = self._buffer_len
        self._committed = []
        self._tentative = []
        self._last_committed_end = self._buffer_start
        self._last_partial = ""
        # The prompt carries context only within one utterance: across a pause, a prompt made small
        # models (tiny.en) loop on the previous sentence ("Try again. Try again. ...").
        self._history = []

    def _append(self, samples: np.ndarray) -> None:
        self._buffer.append(samples)
        self._buffer_len += len(samples)
        self._since_decode += len(samples)

    def _audio(self) -> np.ndarray:
        if len(self._buffer) > 1:
            self._buffer = [np.concatenate(self._buffer)]
        return self._buffer[0] if self._buffer else np.zeros(0, dtype=np.float32)

    def _prompt(self) -> str:
        return " ".join(self._history)[-_PROMPT_CHARS:].strip()

    def _hypothesis(self) -> list[Word]:
        """Decode the re-decode window (the buffer from `_window_start`); absolute times; drop what is
        already committed."""
        self.decodes += 1
        self._since_decode = 0
        sr = self.config.sample_rate
        whole = self._audio()
        skip = min(len(whole), max(0, int(round((self._window_start - self._buffer_start) * sr))))
        offset = self._buffer_start + skip / sr
        self.windows.append((len(whole) - skip) / sr)
        started = time.monotonic()
        prompt = self._window_prompt(offset) if self.config.tail_decode and self.config.tail_prompt else self._prompt()
        decoded = self.redecode(whole[skip:], prompt)
        took = time.monotonic() - started
        self._decode_s = took if self._decode_s is None else 0.5 * (self._decode_s + took)
        words = [replace(w, start=w.start + offset, end=w.end + offset) for w in decoded if normalize_word(w.word)]
        overlap = [w for w in self._committed if w.end > offset] if self.config.tail_decode and skip else []
        after = _after_overlap(words, overlap) if overlap else None
        if after is not None:  # the window's head re-read the committed overlap words: keep what follows
            return words[after:]
        words = [w for w in words if w.start > self._last_committed_end - _DUP_TOLERANCE_S]
        # The window still holds committed audio: drop a repeated tail of committed words (1..5-gram).
        if self._committed and words:
            for n in range(min(5, len(self._committed), len(words)), 0, -1):
                tail = [normalize_word(w.word) for w in self._committed[-n:]]
                head = [normalize_word(w.word) for w in words[:n]]
                if tail == head:
                    words = words[n:]
                    break
        return words

    def _window_prompt(self, window_start: float) -> str:
        """The prompt of a re-decode: this utterance's finalized text, then its committed words that
        lie before the window (the window cuts into the sentence; the prompt carries it on)."""
        before = [w for w in self._committed if w.end <= window_start + 1e-6]
        return " ".join([*self._history, join_words(before)])[-_PROMPT_CHARS:].strip()

    def _advance_window(self) -> None:
        """Move the re-decode window's start up to a committed boundary ("decode only the tail").

        WHY: committed words never change, yet decoding the whole utterance buffer decodes them
        again on every step, and two_cities' utterances grow to 13 s. A re-decode now covers the
        uncommitted tail plus a little committed speech (base, two_cities: longest window 13.4 s ->
        ~7 s, mean 5.3 -> ~3 s), which bounds the window however long an utterance runs. On its own
        this did not make a re-decode cheaper (faster-whisper encodes a padded 30 s window whatever
        the audio; see the engine's short encoder for what does); it is what lets a short encoder
        input work, and it keeps the decoded text short.

        Where to cut (as in whisper_streaming's buffer trimming, at every commit rather than past
        15 s): preferably at a committed sentence end with `tail_overlap_s` of committed speech
        after it, else between two words of a sentence with `tail_word_cut_s` after it. Cutting
        mid-sentence after 1 s made tiny.en's partials much worse on two_cities ("The rest of times"
        for "best of times"; last-partial WER 0.017 -> 0.17), at sentence ends they stayed at
        0.017. The cut lies mid-gap when Whisper put a pause between the two words, else at the
        first one's end; committed words kept inside the window are dropped again by
        `_hypothesis` (by text, see `_after_overlap`, else by time). The committed text before the
        window is *not* the prompt by default (`tail_prompt`): with it, partials on two_cities were
        slightly worse for both models (last-partial WER base 0.025 vs 0.017, tiny.en 0.034 vs
        0.017), and tiny.en looped on prompts before. The buffer itself is not cut here: the final
        is a decode of the whole utterance (see the module docstring), and `_trim` still bounds it.
        """
        if not self.config.tail_decode or len(self._committed) < 2:
            return
        cfg = self.config
        for before, after in zip(reversed(self._committed[:-1]), reversed(self._committed[1:])):
            cut = before.end if after.start <= before.end else (before.end + after.start) / 2
            sentence = _SENTENCE_END.search(before.word.strip()) is not None
            if cut <= self._last_committed_end - (cfg.tail_overlap_s if sentence else cfg.tail_word_cut_s):
                self._window_start = max(self._window_start, cut)
                return

    def _step(self) -> list[StreamEvent]:
        hyp = self._hypothesis()
        agreed = common_prefix(self._tentative, hyp)
        if agreed:
            self._committed.extend(hyp[:agreed])
            self._last_committed_end = hyp[agreed - 1].end
            self._advance_window()
        self._tentative = hyp[agreed:]
        events = self._trim()
        partial = self._partial_event()
        if partial is not None:
            events.append(partial)
        return events

    def _partial_event(self) -> Partial | None:
        words = self._committed + self._tentative
        text = join_words(words)
        if not text or text == self._last_partial:
            return None
        self._last_partial = text
        # stable="": the utterance's final is a fresh decode that may revise even committed words
        return Partial(text, words[0].start, max(words[-1].end, self._now()), join_words(self._committed))

    def _trim(self) -> list[StreamEvent]:
        """Past max_buffer_s: finalize committed words up to the last sentence end and cut the audio there."""
        sr = self.config.sample_rate
        if self._buffer_len / sr <= self.config.max_buffer_s or not self._committed:
            return []
        cut = next((i for i in range(len(self._committed) - 1, -1, -1)
                    if _SENTENCE_END.search(self._committed[i].word.strip())), None)
        if cut is None and self._buffer_len / sr > self.config.max_buffer_s * 1.5:
            cut = len(self._committed) - 1  # no sentence end in sight: cut at the last committed word
        if cut is None:
            return []
        final_words = self._committed[:cut + 1]
        self._committed = self._committed[cut + 1:]
        cut_time = final_words[-1].end
        drop = min(self._buffer_len, max(0, int((cut_time - self._buffer_start) * sr)))
        whole = self._audio()
        self._context = _tail(np.concatenate([self._context, whole[:drop]]), int(self.config.final_context_s * sr))
        audio = whole[drop:]
        self._buffer = [audio]
        self._buffer_len = len(audio)
        self._buffer_start += drop / sr
        self._window_start = max(self._window_start, self._buffer_start)
        self._last_partial = ""
        return [self._final_event(final_words)]

    def _end_utterance(self) -> list[StreamEvent]:
        # Decode only up to shortly after the last loud frame: trailing silence makes Whisper invent words.
        sr = self.config.sample_rate
        keep = int((self._last_loud / sr + _TAIL_S - self._buffer_start) * sr)
        if 0 < keep < self._buffer_len:
            self._buffer = [self._audio()[:keep]]
            self._buffer_len = keep
        words = _drop_invented_tail(self._final_decode()) if self._buffer_len else []
        if not words:  # the full decode heard nothing: keep what two passes agreed on
            words = self._committed
        self._committed, self._tentative = [], []
        self._buffer, self._buffer_len, self._since_decode = [], 0, 0
        self._last_partial = ""
        return [self._final_event(words)] if words else []

    def _final_decode(self) -> list[Word]:
        """Decode left context + the whole utterance buffer; keep the words of the utterance.

        WHY no text prompt: the left context is audio, and after a `_trim` that audio is exactly
        the words just finalised, which are also the last entries of `_history`. Prompted with the
        text of the audio it is about to hear, Whisper takes that speech as already transcribed: it
        skipped it and then stretched its first words back over the context (tiny.en, two_cities
        with pauses shortened: "It was the spring" aligned to 8.6-14.0 s, before the cut at
        14.64 s, so dropped with the context; "In" put at 24.65-25.29 s for a cut at 25.29 s), and
        words were lost at every trim (WER 0.092 against batch 0.042; unprompted: 0.042). Unprompted,
        it transcribes the context too and its word times stay right, so the midpoint rule below
        separates the two. Before the first trim of an utterance `_history` is empty anyway; without
        left context (`final_context_s` 0) the prompt holds only text the audio does not, and is kept.
        """
        self.decodes += 1
        self._since_decode = 0
        sr = self.config.sample_rate
        context = _tail(self._context, int(self.config.final_context_s * sr))
        offset = self._buffer_start - len(context) / sr
        audio = np.concatenate([context, self._audio()]) if len(context) else self._audio()
        prompt = "" if len(context) else self._prompt()
        words = [replace(w, start=w.start + offset, end=w.end + offset) for w in self.decode(audio, prompt)]
        # The context ends in the silence before the utterance (or at a committed word's end after a
        # trim): a word belongs to the utterance when most of it lies after the buffer start.
        return [w for w in words if normalize_word(w.word) and (w.start + w.end) / 2 >= self._buffer_start]

    def _final_event(self, words: list[Word]) -> Final:
        text = join_words(words)
        self._history.append(text)
        self._history = self._history[-8:]
        return Final(text, words[0].start, words[-1].end, tuple(replace(w, word=w.word.strip()) for w in words))


def _after_overlap(hyp: Sequence[Word], overlap: Sequence[Word]) -> int | None:
    """Where `hyp` (a re-decode of a window that starts inside the committed words) is past its
    reading of `overlap` (the committed words inside that window): the index just after the last two
    overlap words in `hyp`, looked for among the first len(overlap) + 2 words and taken closest to
    len(overlap) (Whisper may drop or split the first, cut-off word of a window). None when `hyp`
    does not read them back: the caller then falls back to word times.

    WHY by text and not only by time: the committed words' times come from an earlier, longer
    decode, and the same word decoded again at the head of a shorter window can move by more than
    the 0.1 s tolerance; by time alone, a re-read word then shows twice, or a new word is dropped."""
    h = [normalize_word(w.word) for w in hyp]
    o = [normalize_word(w.word) for w in overlap]
    n = min(2, len(o))
    ends = [i for i in range(n, min(len(h), len(o) + 2) + 1) if h[i - n:i] == o[-n:]]
    return min(ends, key=lambda i: abs(i - len(o))) if ends else None


def _drop_invented_tail(words: list[Word]) -> list[Word]:
    """`words` without a trailing run of words that are zero-length or below `_INVENTED_P` probability,
    when the run holds at least one improbable word. Whisper ends an utterance that closes on silence
    with a confident-looking "Thank you." often enough that finals cannot carry it; words it really
    heard at the end of speech have high probability, and the run must start with an improbable one."""
    def improbable(w: Word) -> bool:
        return w.probability is not None and w.probability < _INVENTED_P

    cut = len(words)
    while cut and (words[cut - 1].end <= words[cut - 1].start or improbable(words[cut - 1])):
        cut -= 1
    return words[:cut] if any(improbable(w) for w in words[cut:]) else words
