"""Every shipped faster-whisper batch variant runs through the one whisper family, configured only by its YAML.

Large-v3 and turbo weights are not reachable here, so each shipped spec is loaded as-is except that its
`weights` are swapped for whisper-base's (real bytes): the family code, the runtime section (compute
type, beam size, batch size) and the server path are the shipped ones. A spy on
`BatchedInferencePipeline.transcribe` records the batch size the family passes — it observes, it does
not replace the call.
"""

from __future__ import annotations


import jiwer
import pytest

from dalston.audio import decode_audio
from dalston.catalog import Catalog
from dalston.engine_sdk import TranscribeOptions, load_engine_class
from tests.fixtures import assets

SHIPPED = [e.spec.id for e in Catalog.load().engines.values()
           if e.spec.stage == "transcribe" and getattr(e.spec.runtime, "kind", None) == "faster-whisper"]


def test_the_three_whisper_batch_variants_are_shipped():
    assert sorted(SHIPPED) == ["whisper-base", "whisper-large-v3", "whisper-large-v3-turbo"]


@pytest.mark.parametrize("variant", SHIPPED)
def test_shipped_runtime_drives_the_family(variant: str, model_dir_for, monkeypatch: pytest.MonkeyPatch):
    import faster_whisper

    catalog = Catalog.load()
    entry = catalog.get(variant)
    spec = entry.spec.model_copy(update={"weights": catalog.get("whisper-base").spec.weights})
    engine = load_engine_class(entry)(spec)
    engine.load(model_dir_for("whisper-base"))
    assert (engine.device, engine.compute_type) == ("cpu", spec.runtime.compute_type_cpu)
    assert (engine.batched is not None) == (spec.runtime.batch_size > 1)

    seen: list[int] = []
    original = faster_whisper.BatchedInferencePipeline.transcribe

    def spy(self, audio, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs["batch_size"])
        return original(self, audio, *args, **kwargs)

    monkeypatch.setattr(faster_whisper.BatchedInferencePipeline, "transcribe", spy)
    long_clip = decode_audio(assets.speech_clip("two_cities")).samples  # 44 s: more than one 30 s window
    transcript = engine.transcribe(long_clip, TranscribeOptions(language="en"))
    assert seen == [spec.runtime.batch_size]
    reference = " ".join(assets.reference_words("two_cities"))
    assert jiwer.wer(reference, " ".join(assets.normalize_words(transcript.text))) <= 0.08
    assert transcript.duration == pytest.approx(len(long_clip) / 16000)


def test_short_audio_uses_the_sequential_decoder(model_dir_for, monkeypatch: pytest.MonkeyPatch):
    import faster_whisper

    entry = Catalog.load().get("whisper-base")
    engine = load_engine_class(entry)(entry.spec)
    engine.load(model_dir_for("whisper-base"))
    calls: list[int] = []
    monkeypatch.setattr(faster_whisper.BatchedInferencePipeline, "transcribe",
                        lambda *a, **k: calls.append(1) or (_ for _ in ()).throw(AssertionError("batched used")))
    transcript = engine.transcribe(decode_audio(assets.speech_clip("beckett")).samples, TranscribeOptions())
    assert calls == [] and assets.normalize_words(transcript.text) == assets.reference_words("beckett")
    assert transcript.language == "en"


def test_forced_language_skips_detection(model_dir_for):
    entry = Catalog.load().get("whisper-base")
    engine = load_engine_class(entry)(entry.spec)
    engine.load(model_dir_for("whisper-base"))
    audio = decode_audio(assets.speech_clip("beckett")).samples
    assert engine.transcribe(audio, TranscribeOptions()).language == "en"  # detected
    assert engine.transcribe(audio, TranscribeOptions(language="de")).language == "de"  # forced, not detected


def test_request_guards_and_vad_settings_override_the_variants_field_by_field(model_dir_for,
                                                                              monkeypatch: pytest.MonkeyPatch):
    """A request's guard or VAD setting replaces the variant's (`runtime.guards`, `runtime.vad`) even when it
    is falsy (condition_on_previous_text=false); a field it leaves unset keeps the variant's. A spy on
    `WhisperModel.transcribe` records what the family passes to faster-whisper and runs the real call."""
    import faster_whisper

    entry = Catalog.load().get("whisper-base")
    engine = load_engine_class(entry)(entry.spec)
    engine.load(model_dir_for("whisper-base"))
    seen: list[dict] = []
    original = faster_whisper.WhisperModel.transcribe

    def spy(self, audio, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs)
        return original(self, audio, *args, **kwargs)

    monkeypatch.setattr(faster_whisper.WhisperModel, "transcribe", spy)
    audio = decode_audio(assets.speech_clip("beckett")).samples
    plain = engine.transcribe(audio, TranscribeOptions(language="en", vad_filter=True))
    engine.transcribe(audio, TranscribeOptions(language="en", vad_filter=True, no_speech_threshold=0.3,
                                               condition_on_previous_text=False, vad_threshold=0.7,
                                               speech_pad_ms=100))
    guards, vad = entry.spec.runtime.guards, entry.spec.runtime.vad
    default, override = seen
    assert {k: default[k] for k in ("no_speech_threshold", "log_prob_threshold", "compression_ratio_threshold",
                                    "condition_on_previous_text")} == guards.model_dump()
    assert default["vad_parameters"] == vad.model_dump()
    assert (override["no_speech_threshold"], override["condition_on_previous_text"]) == (0.3, False)
    assert override["log_prob_threshold"] == guards.log_prob_threshold
    assert override["vad_parameters"] == {**vad.model_dump(), "threshold": 0.7, "speech_pad_ms": 100}
    assert assets.normalize_words(plain.text) == assets.reference_words("beckett")
