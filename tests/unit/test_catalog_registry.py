"""Catalog, registry and scaffolding: a new engine shows up everywhere from its files alone."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dalston.catalog import Catalog, SpecInvalid
from dalston.catalog import ModelNotFound, ModelRegistry
from dalston.spec import EngineSpec, json_schema
from dalston.tools import scaffold_engine, validate_engine

REPO = Path(__file__).resolve().parents[2]
IDS = [
    "audio-prepare", "parakeet-0.6b", "parakeet-1.1b", "parakeet-streaming-0.6b", "parakeet-streaming-1.1b",
    "whisper-base", "whisper-large-v3", "whisper-large-v3-turbo", "whisper-streaming-base",
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "engines"
    shutil.copytree(REPO / "engines", root)
    return root


def test_catalog_json_is_sorted_deterministic_and_complete():
    out = subprocess.run([sys.executable, "scripts/generate_catalog.py", "--dry-run"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    doc = json.loads(out)
    assert list(doc["engines"]) == IDS
    again = subprocess.run([sys.executable, "scripts/generate_catalog.py", "--dry-run"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout
    assert out == again
    base = doc["engines"]["whisper-base"]
    assert base["hardware"] == {"min_vram_gb": 2.0, "recommended_gpu": ["t4"], "supports_cpu": True, "min_ram_gb": 4.0}
    assert base["weights"]["revision"] == "ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66"
    assert doc["sources"]["parakeet-streaming-1.1b"] == {
        "path": "realtime/parakeet-streaming/variants/1.1b.yaml", "family": "parakeet-streaming", "stage": "realtime"}
    # The full spec round-trips through the schema.
    assert EngineSpec.model_validate(base).id == "whisper-base"


def test_generate_catalog_refuses_invalid_tree(tree):
    (tree / "transcribe/whisper/variants/tiny.yaml").write_text("id: whisper-tiny\n")
    result = subprocess.run([sys.executable, "scripts/generate_catalog.py", "--dry-run", "--root", str(tree)], cwd=REPO,
                            capture_output=True, text=True)
    assert result.returncode == 1
    assert "tiny.yaml:1: schema_version: Field required" in result.stderr
    assert result.stdout == ""


def test_hardware_specs_per_variant():
    catalog = Catalog.load(REPO / "engines")
    hw = {i: (e.spec.hardware.min_vram_gb, e.spec.hardware.recommended_gpu, e.spec.hardware.supports_cpu)
          for i, e in catalog.engines.items()}
    assert hw["whisper-base"] == (2, ["t4"], True)
    assert hw["whisper-large-v3"][0] == 6 and "a10g" in hw["whisper-large-v3"][1] and not hw["whisper-large-v3"][2]
    assert hw["whisper-large-v3-turbo"][:1] == (4,) and {"t4", "a10g"} <= set(hw["whisper-large-v3-turbo"][1])
    assert not hw["whisper-large-v3-turbo"][2]
    assert hw["parakeet-0.6b"][0] == 4 and "t4" in hw["parakeet-0.6b"][1]
    assert hw["parakeet-1.1b"][0] == 6 and "a10g" in hw["parakeet-1.1b"][1]


def test_aliases_resolve_and_misses_list_known_ids():
    registry = ModelRegistry.from_catalog(Catalog.load(REPO / "engines"))
    assert registry.resolve("fast") == "whisper-base"
    assert registry.resolve("accurate") == "whisper-large-v3"
    assert registry.resolve("turbo") == "whisper-large-v3-turbo"
    assert registry.resolve("parakeet-0.6b") == "parakeet-0.6b"
    assert registry.aliases_for("whisper-base") == ["fast"]
    with pytest.raises(ModelNotFound) as err:
        registry.resolve("whisper-huge")
    assert "model 'whisper-huge' not found" in str(err.value)
    assert all(i in str(err.value) for i in IDS)
    with pytest.raises(ModelNotFound):
        registry.resolve("Fast")  # names are exact


def test_alias_shadowing_an_id_is_rejected(tree):
    (tree / "aliases.yaml").write_text("whisper-base: whisper-large-v3\n")
    with pytest.raises(SpecInvalid, match="shadows an engine id"):
        Catalog.load(tree)


def test_scaffolded_engine_validates_and_appears_in_catalog_and_registry(tree, capsys):
    assert scaffold_engine.main(["my-asr", "--stage", "transcribe", "--variants", "small,1.5b", "--root", str(tree)]) == 0
    assert scaffold_engine.main(["my-rt", "--stage", "realtime", "--variants", "x", "--root", str(tree)]) == 0
    assert scaffold_engine.main(["loudness", "--stage", "prepare", "--root", str(tree)]) == 0
    assert validate_engine.main(["--all", "--root", str(tree)]) == 0
    catalog = Catalog.load(tree)
    assert {"my-asr-small", "my-asr-1.5b", "my-rt-x", "loudness"} <= set(catalog.engines)
    assert catalog.get("my-asr-1.5b").engine_py == tree / "transcribe/my-asr/engine.py"
    registry = ModelRegistry.from_catalog(catalog)
    assert registry.resolve("my-rt-x") == "my-rt-x"
    # The generated family code loads through the same loader the server uses.
    from dalston.engine_sdk import StreamingEngine, load_engine_class
    assert issubclass(load_engine_class(catalog.get("my-rt-x")), StreamingEngine)


def test_scaffold_refuses_to_overwrite(tree, capsys):
    before = (tree / "transcribe/whisper/engine.py").read_bytes() if (tree / "transcribe/whisper/engine.py").exists() else None
    assert scaffold_engine.main(["whisper", "--stage", "transcribe", "--variants", "tiny", "--root", str(tree)]) == 1
    assert "already exists; refusing to overwrite" in capsys.readouterr().err
    assert not (tree / "transcribe/whisper/variants/tiny.yaml").exists()
    after = (tree / "transcribe/whisper/engine.py").read_bytes() if before is not None else None
    assert before == after


def test_scaffold_usage_errors(tree):
    assert scaffold_engine.main(["Bad_Name", "--stage", "transcribe", "--root", str(tree)]) == 2
    assert scaffold_engine.main(["ok", "--stage", "transcribe", "--variants", "a,a", "--root", str(tree)]) == 2
    with pytest.raises(SystemExit) as exit_:
        scaffold_engine.main(["ok", "--stage", "nope", "--root", str(tree)])
    assert exit_.value.code == 2
    assert not (tree / "transcribe/ok").exists()


def test_json_schema_is_exported_from_the_models():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    assert "weights" in schema["properties"] and "runtime" in schema["properties"]
    out = subprocess.run([sys.executable, "-m", "dalston.cli", "schema"], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)["properties"].keys() == schema["properties"].keys()


def test_the_old_single_faster_whisper_engine_is_gone():
    catalog = Catalog.load(REPO / "engines")
    assert "faster-whisper" not in catalog.engines
    assert not list((REPO / "engines").glob("*/faster-whisper"))
    assert {e.family for e in catalog.engines.values()} == {
        "audio-prepare", "whisper", "parakeet", "whisper-streaming", "parakeet-streaming"}


@pytest.mark.parametrize(("family_of", "variant", "message"), [
    ("whisper-base", "parakeet-0.6b",
     "parakeet-0.6b: the WhisperEngine family needs runtime.kind faster-whisper; this variant has nemo"),
    ("whisper-streaming-base", "parakeet-streaming-0.6b", "the WhisperStreamingEngine family needs runtime.kind "
     "faster-whisper; this variant has nemo"),
    ("parakeet-0.6b", "whisper-base", "the ParakeetEngine family needs runtime.kind nemo; this variant has "
     "faster-whisper"),
    ("parakeet-streaming-0.6b", "audio-prepare", "the ParakeetStreamingEngine family needs runtime.kind nemo; "
     "this variant has no runtime section"),
])
def test_a_variant_of_another_runtime_kind_fails_when_its_engine_is_created(family_of, variant, message):
    """Each family narrows `spec.runtime` to its own kind in its constructor (`Engine.runtime_as`): a variant
    of another kind is an EngineLoadError at startup (which `dalston serve` prints), not an AttributeError
    or an assert on the first request."""
    from dalston.engine_sdk import EngineLoadError, load_engine_class

    catalog = Catalog.load()
    family = load_engine_class(catalog.get(family_of))
    with pytest.raises(EngineLoadError, match=message):
        family(catalog.get(variant).spec)
