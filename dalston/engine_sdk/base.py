"""The contract between the server and an engine family.

A family is one `engines/<stage>/<family>/engine.py` that defines `ENGINE`, a subclass of `Engine`
(batch) or `StreamingEngine` (realtime). The server constructs it with the variant's spec, calls
`load` once with the directory holding the pinned weight files, then calls `transcribe` (or
`open_session`) from worker threads, at most `capabilities.max_concurrency` at a time. Everything
size-specific comes from `spec.runtime`: family code never names a model size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar, get_args

import numpy as np
from pydantic import BaseModel

from dalston.audio import SAMPLE_RATE, AudioSource, DecodedAudio, decode_audio
from dalston.engine_sdk.events import StreamEvent, TurnDetection
from dalston.engine_sdk.types import Segment, Transcript, TranscribeOptions
from dalston.spec import EngineSpec

__all__ = ["SAMPLE_RATE", "Engine", "EngineLoadError", "PrepareEngine", "StreamingEngine", "StreamingSession",
           "UnsupportedOption"]

#: A family's runtime model (`FasterWhisperRuntime`, `NemoRuntime`, ...): one member of `spec.Runtime`.
RuntimeT = TypeVar("RuntimeT", bound=BaseModel)


class EngineLoadError(RuntimeError):
    """A family that cannot be imported or constructed for a variant: the server exits with this message."""


class UnsupportedOption(ValueError):
    """A request option this family cannot honour (e.g. translate on an English-only model): HTTP 400."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param
        self.message = message


class Engine(ABC):
    """A loaded model of one family, configured by one variant spec."""

    def __init__(self, spec: EngineSpec) -> None:
        self.spec = spec
        self.device = "cpu"
        self.compute_type = "default"

    def runtime_as(self, kind: type[RuntimeT]) -> RuntimeT:
        """`spec.runtime` as this family's runtime model, or EngineLoadError naming both kinds.

        WHY: `EngineSpec.runtime` is the union of every family's runtime (discriminated by `kind`), and a
        family reads only its own fields. A family narrows it once, in its constructor, and keeps the
        typed result; a variant file of another kind placed under the family then fails when the
        engine is created (a clear message at startup) instead of with an AttributeError mid-request.
        """
        runtime = self.spec.runtime
        if not isinstance(runtime, kind):
            wanted = get_args(kind.model_fields["kind"].annotation) if "kind" in kind.model_fields else ()
            found = getattr(runtime, "kind", None) or "no runtime section"
            raise EngineLoadError(f"{self.spec.id}: the {type(self).__name__} family needs runtime.kind "
                                  f"{' or '.join(map(str, wanted)) or kind.__name__}; this variant has {found}")
        return runtime

    @abstractmethod
    def load(self, weights_dir: Path) -> None:
        """Load the model from local files only (never a hub); sets `device` and `compute_type`."""

    @abstractmethod
    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        """Transcribe 16 kHz mono float32 `audio`. Called from worker threads."""

    def stream_segments(self, audio: np.ndarray, options: TranscribeOptions) -> Iterator[Segment]:
        """Segments as they are decoded (for `stream=true`). Default: transcribe, then yield them all.

        Families whose decoder produces segments lazily (faster-whisper) override this so the first
        SSE delta leaves before the last segment is decoded.
        """
        yield from self.transcribe(audio, options).segments

    def languages(self) -> frozenset[str] | None:
        """Language codes a request may force; None = any code (the server then checks nothing)."""
        declared = [code for code in self.spec.capabilities.languages if code != "multilingual"]
        return frozenset(declared) if declared and "multilingual" not in self.spec.capabilities.languages else None

    def describe(self) -> dict[str, str]:
        """Facts for the `engine_registered` log line and `/v1/capabilities`."""
        return {"device": self.device, "compute_type": self.compute_type}


class StreamingSession(ABC):
    """One realtime session's state (buffers, caches, decoder state); never shared between sessions."""

    @abstractmethod
    def accept(self, audio: np.ndarray) -> list[StreamEvent]:
        """Take the next 16 kHz mono float32 chunk; return the events it produced (may be none)."""

    @abstractmethod
    def finish(self) -> list[StreamEvent]:
        """The stream ended: flush and return the remaining events (at least the last final)."""


class StreamingEngine(Engine):
    """A family that also (or only) serves realtime sessions."""

    #: Set by the server: called with the number of sessions in each batched model step (feeds the
    #: `dalston_realtime_batch_size` histogram). Families that batch sessions call `observe_batch`.
    batch_observer: Callable[[int], None] | None = None

    def observe_batch(self, size: int) -> None:
        if self.batch_observer is not None:
            self.batch_observer(size)

    @abstractmethod
    def open_session(self, language: str | None = None, turn: TurnDetection | None = None) -> StreamingSession:
        """A fresh session sharing the loaded model but none of the state.

        `turn`: the client's utterance segmentation (OpenAI `server_vad` parameters); None, or a
        None field, means the variant's own defaults.
        """


class PrepareEngine(Engine):
    """The prepare stage: turns any upload into 16 kHz mono audio and reports what it found. No model.

    It is an `Engine` so it is found, configured and served like every other variant; the server
    mounts `POST /v1/audio/prepare` for it instead of the transcription routes.
    """

    def load(self, weights_dir: Path) -> None:
        """Nothing to load: decoding needs no weights."""

    def transcribe(self, audio: np.ndarray, options: TranscribeOptions) -> Transcript:
        raise UnsupportedOption("model", f"{self.spec.id} is a prepare engine: it decodes audio and does not transcribe")

    def prepare(self, source: AudioSource) -> DecodedAudio:
        """Decode `source` (bytes, path or file) within the variant's duration limit."""
        return decode_audio(source, max_seconds=float(self.spec.capabilities.max_audio_duration))
