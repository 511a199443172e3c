"""validate_engine on the shipped tree and on a table of broken files: each gets its precise message."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dalston.tools import validate_engine

REPO = Path(__file__).resolve().parents[2]
BASE = (REPO / "engines/transcribe/whisper/variants/base.yaml").read_text()
SHIPPED = sorted(p for p in (REPO / "engines").rglob("*.yaml") if p.name != "aliases.yaml")


def test_all_shipped_files_validate(capsys):
    assert validate_engine.main(["--all", "--root", str(REPO / "engines")]) == 0
    out = capsys.readouterr().out.splitlines()
    ids = [line.split()[1] for line in out]
    assert ids == [
        "audio-prepare", "parakeet-0.6b", "parakeet-1.1b", "parakeet-streaming-0.6b", "parakeet-streaming-1.1b",
        "whisper-base", "whisper-large-v3", "whisper-large-v3-turbo", "whisper-streaming-base",
    ]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(REPO / "engines")))
def test_each_shipped_file_validates_alone(path, capsys):
    assert validate_engine.main([str(path)]) == 0
    assert capsys.readouterr().err == ""


def _edit(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new, 1)


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# (name, file text, expected substring of the error, line needle or None for line 1)
BROKEN = [
    ("unknown_field", _edit("  supports_cpu: true\n", "  supports_cpu: true\n  supports_tpu: true\n"),
     "hardware.supports_tpu: unknown field", "supports_tpu"),
    ("wrong_type", _edit("min_vram_gb: 2", "min_vram_gb: lots"), "hardware.min_vram_gb: Input should be a valid number",
     "min_vram_gb"),
    ("negative_vram", _edit("min_vram_gb: 2", "min_vram_gb: -1"), "hardware.min_vram_gb: Input should be greater than or equal to 0",
     "min_vram_gb"),
    ("bad_id_pattern", _edit("id: whisper-base", "id: Whisper_Base"), "id: String should match pattern", "id: Whisper"),
    ("id_not_matching_file", _edit("id: whisper-base", "id: whisper-small"),
     "id: 'whisper-small' does not match its location", "id: whisper-small"),
    ("stage_not_matching_dir", _edit("stage: transcribe", "stage: align"), "stage: 'align' does not match its directory",
     "stage: align"),
    ("bad_stage", _edit("stage: transcribe", "stage: transcode"), "stage: Input should be", "stage: transcode"),
    ("missing_hash", _edit("sha256: d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", "sha256: null"),
     "weights.files[1].sha256: missing hash", "sha256: null"),
    ("omitted_hash", _edit("      sha256: d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9\n", ""),
     "weights.files[1].sha256: Field required", "name: model.bin"),
    ("short_hash", _edit("sha256: d01c3014", "sha256: d01c"), "weights.files[1].sha256: String should match pattern", "sha256: d01c"),
    ("short_revision", _edit("revision: ebe41f70d5b6dfa9166e2c581c45c9c0cfc57b66", "revision: main"),
     "weights.revision: String should match pattern", "revision: main"),
    ("bad_gpu_model", _edit("recommended_gpu: [t4]", "recommended_gpu: [gtx480]"), "hardware.recommended_gpu[0]: Input should be",
     "recommended_gpu"),
    ("bad_gpu_enum", _edit("gpu: optional", "gpu: maybe"), "container.gpu: Input should be 'required', 'optional' or 'none'",
     "gpu: maybe"),
    ("gpu_cpu_conflict", _edit("gpu: optional", "gpu: required"), "container.gpu is 'required' but hardware.supports_cpu is true",
     None),
    ("bad_schema_version", _edit('schema_version: "1.1"', 'schema_version: "1.0"'), "schema_version: Input should be '1.1'",
     "schema_version"),
    ("unquoted_version_float", _edit('schema_version: "1.1"', "schema_version: 1.1"), "schema_version: Input should be '1.1'",
     "schema_version"),
    ("missing_section", BASE.replace("hardware:\n  min_vram_gb: 2\n  recommended_gpu: [t4]\n  supports_cpu: true\n  min_ram_gb: 4\n", ""),
     "hardware: Field required", None),
    ("bad_runtime_kind", _edit("kind: faster-whisper", "kind: whisper-cpp"), "runtime: Input tag 'whisper-cpp' found using 'kind'",
     "runtime:"),
    ("runtime_field_typo", _edit("beam_size: 5", "beamsize: 5"), "runtime.beamsize: unknown field", "beamsize"),
    ("bad_compute_type", _edit("compute_type_cpu: int8", "compute_type_cpu: int4"), "runtime.compute_type_cpu: Input should be",
     "compute_type_cpu"),
    ("duplicate_file", _edit("name: vocabulary.txt", "name: config.json"), "weights.files: duplicate file names: config.json",
     "files:"),
    ("bad_language", _edit("languages: [multilingual]", "languages: [English]"), "capabilities.languages: 'English' is not an ISO 639-1 code",
     "languages"),
    ("ambiguous_yes", _edit("streaming: false", "streaming: no"), "ambiguous plain scalar 'no'", "streaming: no"),
    ("malformed_yaml", _edit("container:\n", "container: [\n"), "invalid YAML", None),
    ("duplicate_key", _edit("  memory: 4G\n", "  memory: 4G\n  memory: 8G\n"), "duplicate key 'memory'", "memory: 8G"),
    ("anchor", _edit("  memory: 4G\n", "  memory: &m 4G\n"), "unsupported: anchors", "memory: &m"),
    ("flow_mapping", _edit("container:\n  gpu: optional\n  memory: 4G\n  model_cache: /models\n",
                           "container: {gpu: optional, memory: 4G, model_cache: /models}\n"), "unsupported: flow mappings", "container:"),
    ("tab_indent", _edit("  gpu: optional", "\tgpu: optional"), "tabs are not allowed", "gpu: optional"),
    ("empty_file", "", "empty file", None),
    ("comment_only", "# nothing here\n", "empty file", None),
    ("not_a_mapping", "- whisper-base\n", "the document must be a mapping", None),
    ("bad_memory", _edit("memory: 4G", "memory: four gigs"), "container.memory: String should match pattern", "memory:"),
    ("zero_concurrency", _edit("max_concurrency: 2", "max_concurrency: 0"), "capabilities.max_concurrency: Input should be greater than or equal to 1",
     "max_concurrency"),
    ("streaming_on_batch", _edit("  streaming: false\n", "  streaming: true\n"), "capabilities.streaming must be true exactly for stage 'realtime'",
     None),
]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A throwaway engines tree with the whisper family, to drop a broken file into."""
    root = tmp_path / "engines"
    shutil.copytree(REPO / "engines/transcribe/whisper", root / "transcribe/whisper")
    return root


@pytest.mark.parametrize("name,text,message,needle", BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_file_gets_precise_message(tree, capsys, monkeypatch, name, text, message, needle):
    path = tree / "transcribe/whisper/variants/base.yaml"
    path.write_text(text)
    monkeypatch.chdir(tree.parent)
    assert validate_engine.main([str(path)]) == 1
    err = capsys.readouterr().err
    line = _line(text, needle) if needle else None
    first = next(l for l in err.splitlines() if l.startswith("error: "))
    assert first.startswith("error: engines/transcribe/whisper/variants/base.yaml:"), err
    assert message in err, err
    if line is not None:
        assert f"base.yaml:{line}: " in err, err


def test_duplicate_ids_across_files(tree, capsys):
    (tree / "transcribe/whisper/variants/base-copy.yaml").write_text(BASE)
    assert validate_engine.main(["--all", "--root", str(tree)]) == 1
    err = capsys.readouterr().err
    assert "base-copy.yaml:3: id: 'whisper-base' does not match its location" in err
    assert err.count("error: ") == 1  # the original base.yaml stays valid


def test_duplicate_ids_among_given_files(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text(BASE)
    b.write_text(BASE)
    assert validate_engine.main([str(a), str(b)]) == 1
    assert "duplicate engine id 'whisper-base'" in capsys.readouterr().err


def test_alias_to_unknown_id(tree, capsys):
    (tree / "aliases.yaml").write_text("fast: whisper-base\nhuge: whisper-huge\n")
    assert validate_engine.main(["--all", "--root", str(tree)]) == 1
    assert "aliases.yaml:2: huge: points at unknown engine id 'whisper-huge'" in capsys.readouterr().err


def test_unpinned_allowed_only_on_request(tree, capsys):
    path = tree / "transcribe/whisper/variants/base.yaml"
    path.write_text(_edit("sha256: d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9", "sha256: null"))
    assert validate_engine.main([str(path)]) == 1
    assert validate_engine.main(["--allow-unpinned", str(path)]) == 0


def test_cli_exit_codes():
    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dalston.tools.validate_engine", *args], cwd=REPO,
                              capture_output=True, text=True)

    assert call("--all").returncode == 0
    assert call().returncode == 2
    assert call("--bogus").returncode == 2
    missing = call("no/such/file.yaml")
    assert missing.returncode == 1 and "no/such/file.yaml:0: no such file" in missing.stderr
    assert call("--help").returncode == 0
