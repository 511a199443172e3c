"""faster-whisper (CTranslate2) loading and result mapping, shared by the whisper and whisper-streaming families.

Both families load the same kind of weights the same way; only what they do with the model differs.
Everything variant-specific comes from `spec.runtime` (a `FasterWhisperRuntime`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dalston.engine_sdk.types import Segment, Word
from dalston.runtimes.cpus import available_cpus
from dalston.spec import EngineSpec, FasterWhisperRuntime

log = logging.getLogger("dalston.runtimes")


def cuda_available() -> bool:
    try:
        import ctranslate2

        return bool(ctranslate2.get_cuda_device_count() > 0)
    except Exception:  # no CUDA runtime at all
        return False


def load_model(spec: EngineSpec, weights_dir: Path) -> tuple[Any, str, str]:
    """(WhisperModel, device, compute_type): CUDA when present, else CPU, with the runtime's compute type.

    `num_workers = max_concurrency` lets CTranslate2 run that many decodes in parallel on one model.
    On CPU, `cpu_threads` is the CPUs this process may use (`available_cpus`: affinity and cgroup
    quota), not CTranslate2's default, which counts the machine's and oversubscribes a pinned or
    quota-limited engine. `local_files_only`: a directory path never touches a hub, this makes that explicit.
    """
    from faster_whisper import WhisperModel

    runtime = spec.runtime
    assert isinstance(runtime, FasterWhisperRuntime), f"{spec.id}: runtime.kind is not faster-whisper"
    device = "cuda" if cuda_available() else "cpu"
    compute_type = runtime.compute_type_gpu if device == "cuda" else runtime.compute_type_cpu
    threads = {"cpu_threads": available_cpus()} if device == "cpu" else {}
    model = WhisperModel(str(weights_dir), device=device, compute_type=compute_type,
                         num_workers=spec.capabilities.max_concurrency, local_files_only=True, **threads)
    log.info("faster_whisper_loaded engine_id=%s device=%s compute_type=%s workers=%d cpu_threads=%s", spec.id,
             device, compute_type, spec.capabilities.max_concurrency, threads.get("cpu_threads", "default"))
    return model, device, compute_type


def to_segment(index: int, segment: Any) -> Segment:
    """A faster-whisper segment -> dalston Segment (text stripped, words kept with probabilities)."""
    words = tuple(Word(float(w.start), float(w.end), w.word, float(w.probability)) for w in (segment.words or ()))
    temperature = getattr(segment, "temperature", None)
    return Segment(index, float(segment.start), float(segment.end), segment.text.strip(),
                   float(segment.avg_logprob), float(segment.no_speech_prob), words, seek=int(segment.seek),
                   tokens=tuple(int(t) for t in segment.tokens),
                   temperature=None if temperature is None else float(temperature),
                   compression_ratio=float(segment.compression_ratio))


def to_segments(segments: Iterable[Any]) -> tuple[Segment, ...]:
    return tuple(to_segment(i, s) for i, s in enumerate(segments))
