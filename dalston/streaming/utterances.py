"""Turn a stream of stable decoded words plus an energy VAD into realtime events, in stream-time order.

For decoders whose words never change once emitted (cache-aware transducers decode each chunk
once; buffered chunked inference commits each chunk once), the only policy questions are where
utterances start and end, and when an utterance's words are all in. The VAD answers the first;
the decoder's coverage answers the second: a VAD edge at time `t` is released only after the
decoder has consumed audio up to `t`, so a final never misses words still in the decoder's
look-ahead, and events come out in the order their times happened:
`vad.speech_start`, `transcript.partial`*, `transcript.final`, `vad.speech_end`, ...

The VAD only delimits; it does not censor. Words decoded shortly before a speech start (a soft
onset the energy VAD hears late, or a pause inside a sentence) join the next utterance; only words
ending more than `LEAD_IN_S` before any speech start are dropped, as a model's output on stretches
the VAD calls silence (noise, breathing) rather than speech.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from dalston.engine_sdk.events import Final, Partial, SpeechStarted, SpeechStopped, StreamEvent
from dalston.engine_sdk.types import Word
from dalston.streaming.vad import EnergyVad, VadConfig

#: Words ending less than this before a speech start belong to that utterance; older ones are dropped.
LEAD_IN_S = 1.0


@dataclass(frozen=True)
class _Update:
    """The decoder's words after one model step (applied once the VAD has caught up)."""

    words: tuple[Word, ...]
    first_index: int
    decoded_until: float
    last_open: bool


@dataclass(frozen=True)
class _Edge:
    kind: str  # "start" | "end"
    time: float


class UtterancePolicy:
    """Feed audio (for the VAD) and decoded words (with the decoder's coverage); get events back."""

    def __init__(self, vad: VadConfig | None = None, sample_rate: int = 16000) -> None:
        self.vad = EnergyVad(vad, sample_rate)
        self.sample_rate = sample_rate
        self._frame = self.vad.frame_samples
        self._pending = np.zeros(0, dtype=np.float32)
        self._samples = 0
        self._edges: deque[_Edge] = deque()
        self._words: list[Word] = []  # decoded, not yet released into an utterance or dropped
        self._open: Word | None = None  # the last decoded word, which may still grow
        self._taken = 0  # how many of the decoder's words (by index) were released or dropped
        self._in_speech = False  # as released (lags the VAD by the decoder's look-ahead)
        self._utt_start = 0.0
        self._utt_words: list[Word] = []
        self._last_partial = ""
        self.dropped_words = 0
        self._updates: deque[_Update] = deque()
        cfg = self.vad.config
        self._vad_lag = (cfg.min_speech_ms + 2 * cfg.frame_ms) / 1000

    # ------------------------------------------------------------------ inputs
    def audio(self, samples: np.ndarray) -> list[StreamEvent]:
        """Run the VAD over `samples` (call with every chunk, before or after decoding it); returns the
        events of held updates that this audio made due.

        WHY return them here: an update waits until the VAD has heard `_vad_lag` past it (see
        `words`). Released only by the next model step, every partial would wait a whole chunk more
        (0.56 s for a cache-aware 0.6B); the client's next frames usually make it due long before.
        What an update emits still depends only on the step it came from."""
        data = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32).reshape(-1)])
        whole = len(data) // self._frame * self._frame
        self._pending = data[whole:].copy()
        cfg = self.vad.config
        for i in range(0, whole, self._frame):
            edge = self.vad.update(data[i:i + self._frame])
            now = self._samples / self.sample_rate
            self._samples += self._frame
            if edge == "start":
                # the edge fires after min_speech_ms of loud frames: speech began that long ago
                self._edges.append(_Edge("start", max(0.0, now - (cfg.min_speech_ms - cfg.frame_ms) / 1000)))
            elif edge == "end":
                self._edges.append(_Edge("end", self._samples / self.sample_rate))
        return self._drain(final=False)

    def words(self, words: Sequence[Word], first_index: int, decoded_until: float, *,
              last_open: bool = True) -> list[StreamEvent]:
        """Take the decoder's words after one model step and release the events that are due.

        `words`: the decoder's words in time order, `words[k]` being its word number `first_index + k`;
        must include every word from `taken` on (earlier ones are ignored). With `last_open` the last
        one may still grow (more sub-word tokens) and is only shown in partials until an utterance
        closes. `decoded_until`: stream time up to which the decoder has consumed audio.

        WHY updates wait for the VAD: a speech start is only known `min_speech_ms` after it began.
        An update is applied once the VAD has heard `_vad_lag` past its `decoded_until`, so every
        edge before that point is known; what each update emits then depends only on the model
        step it came from, not on how the client happened to slice its audio.
        """
        if first_index > self._taken:
            raise ValueError(f"words from {first_index} given, but word {self._taken} was never taken")
        self._updates.append(_Update(tuple(words), first_index, decoded_until, last_open))
        return self._drain(final=False)

    def finish(self) -> list[StreamEvent]:
        """The stream ended and the decoder was flushed: release everything, close an open utterance."""
        if len(self._pending):
            self._samples += len(self._pending)
            self._pending = np.zeros(0, dtype=np.float32)
        events = self._drain(final=True)
        if self._open is not None:
            self._words.append(self._open)
            self._open = None
        events += self._release(float("inf"))
        if self._in_speech:
            events.extend(self._close(self._samples / self.sample_rate))
        return events

    def _drain(self, *, final: bool) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while self._updates and (final or self._updates[0].decoded_until + self._vad_lag <= self.stream_time):
            update = self._updates.popleft()
            limit = min(update.decoded_until, self.stream_time)
            # a word's last frame may be padded past the audio decoded: clamp its end
            fresh = [w if w.end <= limit else replace(w, end=round(max(w.start, limit), 3))
                     for w in update.words[self._taken - update.first_index:]]
            self._open = fresh.pop() if (fresh and update.last_open) else None
            self._words = fresh
            events += self._release(update.decoded_until)
        return events

    @property
    def stream_time(self) -> float:
        return self._samples / self.sample_rate

    @property
    def taken(self) -> int:
        """How many words were released or dropped: callers may forget words with a smaller index."""
        return self._taken

    # ------------------------------------------------------------------ release
    def _release(self, decoded_until: float) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while self._edges and self._edges[0].time <= decoded_until:
            edge = self._edges.popleft()
            if edge.kind == "start":
                self._drop_words_ending_before(edge.time - LEAD_IN_S)
                self._in_speech = True
                self._utt_start = edge.time
                self._utt_words = []
                self._last_partial = ""
                events.append(SpeechStarted(edge.time))
            else:
                events.extend(self._close(edge.time))
        if self._in_speech:
            self._take_words_before(decoded_until)
            partial = self._partial()
            if partial is not None:
                events.append(partial)
        else:
            # every speech start before decoded_until is known here (updates wait for the VAD)
            self._drop_words_ending_before(min(decoded_until, self._next_edge_time()) - LEAD_IN_S)
        return events

    def _next_edge_time(self) -> float:
        return self._edges[0].time if self._edges else float("inf")

    def _take_words_before(self, time: float) -> None:
        """Move words starting before `time` into the current utterance."""
        n = 0
        while n < len(self._words) and self._words[n].start < time:
            n += 1
        self._utt_words.extend(self._words[:n])
        self._words = self._words[n:]
        self._taken += n

    def _drop_words_ending_before(self, time: float) -> None:
        """Forget leading words that ended before `time` (output on what the VAD calls silence)."""
        n = 0
        while n < len(self._words) and self._words[n].end < time:
            n += 1
        self._words = self._words[n:]
        self._taken += n
        self.dropped_words += n

    def _close(self, end: float) -> list[StreamEvent]:
        if self._open is not None and self._open.start < end:
            # speech ended: the open word is as long as it will get within this utterance
            self._words.append(self._open)
            self._open = None
        self._take_words_before(end)
        words, self._utt_words = self._utt_words, []
        self._in_speech = False
        self._last_partial = ""
        events: list[StreamEvent] = []
        if words:
            events.append(Final(" ".join(w.word for w in words), min(words[0].start, end),
                                min(max(w.end for w in words), end), tuple(words)))
        events.append(SpeechStopped(end))
        return events

    def _partial(self) -> Partial | None:
        words = self._utt_words + self._words + ([self._open] if self._open is not None else [])
        text = " ".join(w.word for w in words)
        if not text or text == self._last_partial:
            return None
        self._last_partial = text
        committed = " ".join(w.word for w in self._utt_words)
        # released words never change and the final joins them the same way: committed is stable
        return Partial(text, words[0].start, max(w.end for w in words), committed, stable=committed)
