"""The engine SDK: what an engine family implements and what it returns."""

from dalston.engine_sdk.base import SAMPLE_RATE, Engine, PrepareEngine, StreamingEngine, StreamingSession, UnsupportedOption
from dalston.engine_sdk.loader import EngineLoadError, create_engine, load_engine_class
from dalston.engine_sdk.events import Final, Partial, SpeechStarted, SpeechStopped, StreamEvent, TurnDetection
from dalston.engine_sdk.types import Segment, Task, Transcript, TranscribeOptions, Word

__all__ = [
    "SAMPLE_RATE", "Engine", "EngineLoadError", "Final", "Partial", "PrepareEngine", "Segment", "SpeechStarted",
    "SpeechStopped", "StreamEvent", "StreamingEngine", "StreamingSession", "Task", "Transcript", "TranscribeOptions",
    "TurnDetection", "UnsupportedOption", "Word", "create_engine", "load_engine_class",
]
