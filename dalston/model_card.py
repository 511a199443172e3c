"""The public facts about a variant that `/v1/models` shows, the same on an engine and on the gateway.

WHY one function: a client (the web console, a script choosing a model) reads the same fields from
either entry point. Only what the variant file already says publicly goes here: no paths, URLs or
weight locations.
"""

from __future__ import annotations

from typing import Any

from dalston.spec import EngineSpec


def card_fields(spec: EngineSpec) -> dict[str, Any]:
    """stage, name, languages (ISO 639-1 codes or "multilingual"), options, and where it can run."""
    caps = spec.capabilities
    return {"stage": spec.stage, "name": spec.name, "version": spec.version, "languages": list(caps.languages),
            "streaming": spec.is_streaming, "word_timestamps": caps.word_timestamps, "translation": caps.translation,
            "max_audio_duration": caps.max_audio_duration,
            "hardware": {"gpu": spec.container.gpu, "cpu": spec.hardware.supports_cpu}}
