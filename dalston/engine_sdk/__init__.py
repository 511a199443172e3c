"""The engine SDK: what an engine family implements and what it returns."""

from dalston.engine_sdk.base import SAMPLE_RATE, Engine, PrepareEngine, StreamingEngine, StreamingSession, UnsupportedOption
from dalston.engine_sdk.loader import EngineLoadError, create_engine, load_engine_class
from dalston.engine_sdk.types import Segment, StreamEvent, Task, Transcript, TranscribeOptions, Word

__all__ = [
    "SAMPLE_RATE", "Engine", "EngineLoadError", "PrepareEngine", "Segment", "StreamEvent", "StreamingEngine", "StreamingSession",
    "Task", "Transcript", "TranscribeOptions", "UnsupportedOption", "Word", "create_engine", "load_engine_class",
]
