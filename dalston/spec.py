"""The engine variant schema: one YAML file per deployable engine, read by these pydantic models.

Every model forbids unknown fields, so a typo in a variant file is an error rather than a silently
ignored setting. The JSON Schema (`dalston schema`) is exported from these models, never written
by hand. Engine code reads every size-specific value from here (`runtime`), never from constants.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

SCHEMA_VERSION = "1.1"
HF_BASE_URL = "https://huggingface.co"

Stage = Literal[
    "prepare", "transcribe", "align", "diarize", "pii_detect", "audio_redact", "refine", "merge", "realtime"
]
GpuModel = Literal[
    "t4", "l4", "l40s", "a10g", "a100", "h100", "h200", "v100", "rtx3090", "rtx4090", "a6000"
]
AudioFormat = Literal["wav", "mp3", "flac", "ogg", "opus", "m4a", "webm", "mp4", "aac", "pcm16", "float32"]
Ct2ComputeType = Literal[
    "default", "auto", "int8", "int8_float16", "int8_float32", "int8_bfloat16", "int16", "float16",
    "bfloat16", "float32",
]

EngineId = Annotated[str, Field(pattern=r"^[a-z][a-z0-9.-]*[a-z0-9]$", max_length=63)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
Revision = Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")]
RepoId = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")]
FileName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]
Memory = Annotated[str, Field(pattern=r"^[1-9][0-9]*(\.[0-9]+)?[KMGT]i?$", description="e.g. 4G, 512Mi")]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Container(_Strict):
    """How the engine's container is scheduled."""

    gpu: Literal["required", "optional", "none"]
    memory: Memory
    model_cache: str = Field("/models", pattern=r"^/", description="default root of the weights directories")


class Capabilities(_Strict):
    """What a client may ask of the engine; the server enforces these limits."""

    languages: list[str] = Field(description='ISO 639-1 codes, or ["multilingual"]')
    max_audio_duration: int = Field(gt=0, description="seconds")
    streaming: bool
    word_timestamps: bool
    translation: bool = False
    max_concurrency: int = Field(ge=1, le=1024, description="inferences (batch) or sessions (realtime) at once")

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if code != "multilingual" and not (len(code) in (2, 3) and code.isalpha() and code.islower()):
                raise ValueError(f"'{code}' is not an ISO 639-1 code or 'multilingual'")
        return value


class Input(_Strict):
    audio_formats: list[AudioFormat] = Field(min_length=1)
    sample_rate: int = Field(ge=8000, le=48000)
    channels: int = Field(ge=1, le=2)


class HfCompat(_Strict):
    pipeline_tag: str
    library_name: str
    license: str
    source_model: RepoId


class Hardware(_Strict):
    """What an operator must provision; drives node selection in generated manifests."""

    min_vram_gb: float = Field(ge=0)
    recommended_gpu: list[GpuModel]
    supports_cpu: bool
    min_ram_gb: float = Field(gt=0)


class Performance(_Strict):
    rtf_gpu: float | None = Field(None, gt=0, description="real-time factor on the recommended GPU")
    rtf_cpu: float | None = Field(None, gt=0, description="real-time factor on a 2-core x86 CPU")
    warm_start_latency_ms: int | None = Field(None, ge=0)


class WeightFile(_Strict):
    """One file the engine loads, pinned by the upstream size and sha256."""

    name: FileName
    size: int = Field(gt=0, description="bytes")
    sha256: Sha256 | None = Field(description="lowercase hex; null marks an unpinned file and is rejected")

    @field_validator("sha256")
    @classmethod
    def _pinned(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None and not (info.context or {}).get("allow_unpinned"):
            raise ValueError("missing hash: pin the real upstream sha256 (null is only allowed with --allow-unpinned)")
        return value


class Weights(_Strict):
    """Upstream files at one pinned revision; what `dalston models pull` and the Nix FODs fetch."""

    repo: RepoId
    revision: Revision
    files: list[WeightFile] = Field(min_length=1)

    @field_validator("files")
    @classmethod
    def _unique(cls, files: list[WeightFile]) -> list[WeightFile]:
        names = [f.name for f in files]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate file names: {', '.join(dupes)}")
        return files

    def url_for(self, file: WeightFile, base: str = HF_BASE_URL) -> str:
        """The file's URL under `base`; a mirror uses the same `<repo>/resolve/<revision>/<file>` layout."""
        return f"{base.rstrip('/')}/{self.repo}/resolve/{self.revision}/{file.name}"

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class WhisperStreaming(_Strict):
    """LocalAgreement policy: commit words two consecutive decodes agree on; trim the buffer."""

    policy: Literal["local-agreement"] = "local-agreement"
    min_chunk_ms: int = Field(1000, ge=100, description="decode the buffer at most this often")
    min_chunk_floor_ms: int | None = Field(None, ge=100, description="adaptive step: re-decode as often as "
                                           "this when decodes are fast, up to min_chunk_ms when they are slow")
    max_buffer_seconds: float = Field(15.0, gt=1, le=30, description="trim the buffer beyond this")
    tail_decode: bool = Field(True, description="re-decode only from a committed sentence end on (plus ~1 s of "
                              "committed speech), not the whole utterance; the final still decodes the whole utterance")
    short_encoder_pad_ms: int | None = Field(None, ge=0, le=30000, description="re-decodes encode only their window "
                                             "plus this much padding, not Whisper's full 30 s (None: full 30 s)")

    @model_validator(mode="after")
    def _floor_below_step(self) -> WhisperStreaming:
        if self.min_chunk_floor_ms is not None and self.min_chunk_floor_ms > self.min_chunk_ms:
            raise ValueError(f"min_chunk_floor_ms ({self.min_chunk_floor_ms}) must not exceed min_chunk_ms "
                             f"({self.min_chunk_ms})")
        return self


class VadSettings(_Strict):
    """Silero VAD (shipped in faster-whisper) settings; every request may override each one."""

    threshold: float = Field(0.5, gt=0, lt=1, description="speech probability above which a frame is speech")
    min_silence_duration_ms: int = Field(160, ge=0, le=60000, description="silence this long ends a speech chunk")
    speech_pad_ms: int = Field(400, ge=0, le=5000, description="kept on each side of a speech chunk")


class WhisperGuards(_Strict):
    """faster-whisper's checks against invented text; null disables a threshold. Overridable per request."""

    no_speech_threshold: float | None = Field(0.6, ge=0, le=1, description="skip a window this likely silent...")
    log_prob_threshold: float | None = Field(-1.0, le=0, description="...whose tokens are this unlikely")
    compression_ratio_threshold: float | None = Field(2.4, gt=0, description="retry hotter above (repetition)")
    condition_on_previous_text: bool = Field(True, description="prompt each window with the previous text")


class FasterWhisperRuntime(_Strict):
    """Load parameters for faster-whisper (CTranslate2) families."""

    kind: Literal["faster-whisper"]
    compute_type_gpu: Ct2ComputeType = "float16"
    compute_type_cpu: Ct2ComputeType = "int8"
    beam_size: int = Field(5, ge=1, le=16)
    batch_size: int = Field(8, ge=1, le=128, description="BatchedInferencePipeline batch size; 1 disables it")
    vad_filter: bool = Field(False, description="decode only what the VAD calls speech (silence gives no text)")
    vad: VadSettings = VadSettings()
    guards: WhisperGuards = WhisperGuards()
    streaming: WhisperStreaming | None = None


class NemoStreaming(_Strict):
    """Cache-aware streaming (per-session encoder caches) or buffered chunked inference."""

    mode: Literal["cache-aware", "buffered"]
    att_context_size: list[int] | None = Field(None, min_length=2, max_length=2, description="[left, right] frames")
    chunk_seconds: float | None = Field(None, gt=0, description="buffered: audio decided per step")
    context_seconds: float | None = Field(None, gt=0, description="buffered: the whole decode window around a chunk")

    @model_validator(mode="after")
    def _mode_fields(self) -> NemoStreaming:
        if self.mode == "cache-aware" and self.att_context_size is None:
            raise ValueError("cache-aware streaming needs att_context_size: [left, right]")
        if self.mode == "buffered" and (self.chunk_seconds is None or self.context_seconds is None):
            raise ValueError("buffered streaming needs chunk_seconds and context_seconds")
        return self


class NemoRuntime(_Strict):
    """Load parameters for NeMo ASR families (Parakeet, FastConformer)."""

    kind: Literal["nemo"]
    model_file: FileName
    decoder: Literal["tdt", "rnnt", "ctc"]
    batch_size: int = Field(8, ge=1, le=256)
    local_attention_above_seconds: float | None = Field(None, gt=0, description="switch to local attention beyond")
    local_attention_context: list[int] | None = Field(None, min_length=2, max_length=2)
    vad_filter: bool = Field(False, description="drop words outside VAD speech (silence gives no text)")
    vad: VadSettings = VadSettings()
    hotwords_alpha: float = Field(1.0, gt=0, le=10, description="weight of the hotwords boosting tree")
    streaming: NemoStreaming | None = None


Runtime = Annotated[Union[FasterWhisperRuntime, NemoRuntime], Field(discriminator="kind")]


class EngineSpec(_Strict):
    """One deployable engine variant: the whole contents of a `variants/<size>.yaml` or `engine.yaml`."""

    schema_version: Literal["1.1"]
    id: EngineId
    stage: Stage
    name: str = Field(min_length=1)
    version: str = Field(pattern=r"^[0-9]+\.[0-9]+\.[0-9]+([-+][0-9A-Za-z.-]+)?$")
    description: str = Field(min_length=1)
    container: Container
    capabilities: Capabilities
    input: Input
    hf_compat: HfCompat | None = None
    hardware: Hardware
    performance: Performance = Performance()
    weights: Weights | None = None
    runtime: Runtime | None = None

    @model_validator(mode="after")
    def _consistent(self) -> EngineSpec:
        gpu, hw = self.container.gpu, self.hardware
        if gpu == "required" and hw.supports_cpu:
            raise ValueError("container.gpu is 'required' but hardware.supports_cpu is true")
        if gpu != "required" and not hw.supports_cpu:
            raise ValueError(f"hardware.supports_cpu is false but container.gpu is '{gpu}' (use 'required')")
        if gpu == "none" and (hw.min_vram_gb or hw.recommended_gpu):
            raise ValueError("container.gpu is 'none' but hardware asks for VRAM or a GPU model")
        if gpu != "none" and not hw.recommended_gpu:
            raise ValueError("hardware.recommended_gpu must name at least one GPU when container.gpu is not 'none'")
        if self.runtime is not None and self.weights is None:
            raise ValueError("runtime is set but weights is missing: every model must pin its files")
        if isinstance(self.runtime, NemoRuntime) and self.weights is not None:
            if self.runtime.model_file not in {f.name for f in self.weights.files}:
                raise ValueError(f"runtime.model_file '{self.runtime.model_file}' is not one of weights.files")
        realtime = self.stage == "realtime"
        if realtime != self.capabilities.streaming:
            raise ValueError("capabilities.streaming must be true exactly for stage 'realtime'")
        if self.runtime is not None and realtime != (self.runtime.streaming is not None):
            raise ValueError("runtime.streaming must be set exactly for stage 'realtime'")
        return self

    @property
    def is_streaming(self) -> bool:
        return self.stage == "realtime"


def json_schema() -> dict[str, Any]:
    """The JSON Schema of a variant file, as `dalston schema` prints it."""
    schema = EngineSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://dalston.dev/schemas/engine-{SCHEMA_VERSION}.json"
    return schema
