"""NeMo ASR loading, decoder selection and result mapping, shared by the parakeet and parakeet-streaming families.

Both families restore the variant's pinned `.nemo` file the same way and pick the decoder head the
variant names (`runtime.decoder`: tdt | rnnt | ctc). A checkpoint that lacks that head is a load error
naming the file and what it does have, never a silent fallback: the variant file is the source of
truth, and a TDT variant quietly served by a CTC head would be a different product.

NeMo and torch are imported inside functions: this module is importable without the `nemo` extra
(the catalog, CLI and Whisper images never pay for torch).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from dalston import segmenting
from dalston.engine_sdk.types import Segment, Word
from dalston.spec import EngineSpec, NemoRuntime

log = logging.getLogger("dalston.nemo")


class NemoLoadError(RuntimeError):
    """The variant's `.nemo` file is missing or does not have what the variant says it has."""


def torch_device() -> str:
    """'cuda' when torch sees a GPU, else 'cpu'."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def quiet_nemo() -> None:
    """NeMo logs every config key at INFO on restore; keep warnings only (our own key=value lines stay)."""
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.WARNING)


def load_asr_model(spec: EngineSpec, weights_dir: Path) -> tuple[Any, str]:
    """Restore `weights_dir / runtime.model_file` on the GPU when present, else CPU; eval mode, frozen.

    `map_location` puts the weights straight on the target device (no CPU copy of a 2 GB model first).
    """
    runtime = spec.runtime
    assert isinstance(runtime, NemoRuntime), f"{spec.id}: runtime.kind is not nemo"
    path = Path(weights_dir) / runtime.model_file
    if not path.is_file():
        raise NemoLoadError(f"{path}: the {spec.id} weight file is missing (runtime.model_file: {runtime.model_file}); "
                            f"run `dalston models pull {spec.id}` or point --model-dir at the directory holding it")
    import torch

    quiet_nemo()
    from nemo.collections.asr.models import ASRModel

    device = torch_device()
    if device == "cpu" and spec.container.gpu == "required":
        log.warning("nemo_cpu_fallback engine_id=%s reason=no_cuda_device note='container.gpu is required; "
                    "expect real-time factors far above performance.rtf_gpu'", spec.id)
    try:
        model = ASRModel.restore_from(str(path), map_location=torch.device(device))
    except Exception as exc:
        raise NemoLoadError(f"{path}: NeMo could not restore this file ({type(exc).__name__}: {exc})") from exc
    model.eval()
    model.freeze()
    return model, device


def decoder_heads(model: Any) -> set[str]:
    """The decoder kinds a restored checkpoint can run: subset of {'tdt', 'rnnt', 'ctc'}.

    A transducer head is TDT when its decoding/loss config says so (durations predicted by the
    joint), else plain RNNT; hybrid RNNT-CTC checkpoints also have a CTC head.
    """
    from nemo.collections.asr.models import (
        EncDecCTCModel,
        EncDecHybridRNNTCTCModel,
        EncDecRNNTModel,
    )

    heads: set[str] = set()
    if isinstance(model, EncDecRNNTModel):
        cfg = model.cfg
        model_type = str((cfg.get("decoding") or {}).get("model_type", "") or "")
        loss_name = str((cfg.get("loss") or {}).get("loss_name", "") or "")
        heads.add("tdt" if model_type == "tdt" or loss_name.startswith("tdt") else "rnnt")
        if isinstance(model, EncDecHybridRNNTCTCModel):
            heads.add("ctc")
    elif isinstance(model, EncDecCTCModel):
        heads.add("ctc")
    return heads


def select_decoder(model: Any, decoder: str, *, model_file: str, timestamps: bool = True) -> None:
    """Switch the model to greedy decoding on the `decoder` head, with timestamps computed.

    Greedy batched decoding is what NVIDIA reports Parakeet WERs with and the fastest on CPU and GPU.
    """
    from omegaconf import open_dict

    heads = decoder_heads(model)
    if decoder not in heads:
        raise NemoLoadError(f"{model_file}: runtime.decoder is '{decoder}' but this checkpoint "
                            f"({type(model).__name__}) has only: {', '.join(sorted(heads)) or 'no ASR decoder'}")
    hybrid = "ctc" in heads and len(heads) > 1
    if decoder == "ctc":
        cfg = model.cfg.aux_ctc.decoding if hybrid else model.cfg.decoding
    else:
        cfg = model.cfg.decoding
    with open_dict(cfg):
        cfg.strategy = "greedy_batch"
        cfg.compute_timestamps = timestamps
    if hybrid:
        model.change_decoding_strategy(decoding_cfg=cfg, decoder_type="rnnt" if decoder != "ctc" else "ctc",
                                       verbose=False)
    else:
        model.change_decoding_strategy(cfg, verbose=False)


def hotword_phrases(hotwords: str) -> list[str]:
    """'Dalston, Parakeet\nNeMo' -> ['Dalston', 'Parakeet', 'NeMo']: phrases are comma/line separated."""
    return [p.strip() for p in re.split(r"[,\n;]", hotwords) if p.strip()]


@contextlib.contextmanager
def boosted(model: Any, decoder: str, phrases: Sequence[str], alpha: float) -> Iterator[None]:
    """Decode with NeMo's phrase boosting tree (GPU-PB; it runs on CPU too) for `phrases`, then restore.

    NeMo 3.0.0 builds the tree from `greedy.boosting_tree.key_phrases_list` for greedy TDT, RNNT and
    CTC decoding (`rnnt_decoding.py`, `ctc_decoding.py`); the model-wide decoding strategy is switched,
    so only the thread that owns the model (the batcher's dispatcher) may call this.
    """
    from omegaconf import open_dict

    hybrid_ctc = decoder == "ctc" and "aux_ctc" in model.cfg
    original = copy.deepcopy(model.cfg.aux_ctc.decoding if hybrid_ctc else model.cfg.decoding)
    cfg = copy.deepcopy(original)
    with open_dict(cfg):
        cfg.greedy.boosting_tree = {"key_phrases_list": list(phrases), "use_triton": False}
        cfg.greedy.boosting_tree_alpha = alpha
    _change(model, cfg, decoder, hybrid_ctc)
    try:
        yield
    finally:
        _change(model, original, decoder, hybrid_ctc)


def _change(model: Any, cfg: Any, decoder: str, hybrid_ctc: bool) -> None:
    if "aux_ctc" in model.cfg:
        model.change_decoding_strategy(decoding_cfg=cfg, decoder_type="ctc" if hybrid_ctc else "rnnt", verbose=False)
    else:
        model.change_decoding_strategy(cfg, verbose=False)


def _seconds(value: Any) -> float:
    return round(float(value), 3)


def hypothesis_words(hypothesis: Any, *, offset: float = 0.0, duration: float | None = None) -> list[Word]:
    """The words of `hypothesis.text`, timed by the decoder's subword timestamps, clamped into [0, duration].

    WHY not NeMo's own `timestamp['word']`: NeMo groups subwords into words with a different rule than
    it renders the text with (the text drops the space of a lone '▁' before punctuation and keeps
    tokens without '▁' attached; the word grouper splits there), so on CTC output its words do not
    concatenate to the text ('f', 'ailed' for 'failed'; '..' for '....'). Here the text is the authority:
    its whitespace-separated words are matched, character by character, against the subword entries
    (`timestamp['char']`, one per emitted token, in order, for TDT, RNNT and CTC heads alike), and each
    word spans from its first subword's start to its last subword's end. Should the characters ever
    disagree (a tokenizer whose pieces do not spell the text), NeMo's words are used instead. Either
    way a transcript's text is its words joined (`join_words`), so the two always agree.
    """
    words = _words_from_subwords(hypothesis)
    if words is None:
        words = _nemo_words(hypothesis)
    out: list[Word] = []
    for text, start, end in words:
        if duration is not None:
            start, end = min(max(start, 0.0), duration), min(max(end, 0.0), duration)
        start = max(start, out[-1].start - offset if out else 0.0)  # NeMo never goes back; guard rounding
        out.append(Word(_seconds(start + offset), _seconds(max(end, start) + offset), text))
    return out


def _stamps(hypothesis: Any, kind: str) -> list[dict[str, Any]]:
    stamps = getattr(hypothesis, "timestamp", None) or {}
    return list(stamps.get(kind, ()) or ()) if isinstance(stamps, dict) else []


def _words_from_subwords(hypothesis: Any) -> list[tuple[str, float, float]] | None:
    """(word, start, end) for each word of the text from the per-token entries; None if they disagree."""
    text = _raw_text(hypothesis)
    tokens = _stamps(hypothesis, "char")
    if not text or not tokens or any("start" not in t or "end" not in t for t in tokens):
        return None
    owner: list[int] = []  # for every non-space character of the tokens, the token it came from
    spelled: list[str] = []
    for i, token in enumerate(tokens):
        piece = token.get("char", "")
        piece = "".join(piece) if isinstance(piece, (list, tuple)) else str(piece)
        piece = re.sub(r"[\s▁]", "", piece)
        spelled.append(piece)
        owner.extend([i] * len(piece))
    if "".join(spelled) != re.sub(r"\s", "", text):
        return None
    words: list[tuple[str, float, float]] = []
    position = 0
    for word in text.split():
        first, last = owner[position], owner[position + len(word) - 1]
        position += len(word)
        words.append((word, float(tokens[first]["start"]), float(tokens[last]["end"])))
    return words


def _nemo_words(hypothesis: Any) -> list[tuple[str, float, float]]:
    words = []
    for item in _stamps(hypothesis, "word"):
        text = str(item.get("word", "")).strip()
        if text:
            words.append((text, float(item.get("start", 0.0)), float(item.get("end", 0.0))))
    return words


def _raw_text(hypothesis: Any) -> str:
    text = getattr(hypothesis, "text", hypothesis)
    return re.sub(r"\s+", " ", text if isinstance(text, str) else "").strip()


def segments_from_words(words: Sequence[Word]) -> tuple[Segment, ...]:
    """Sentence segments (<= 30 s), cut the same way for every family (`dalston.segmenting`)."""
    return segmenting.segments_from_words(words)


def join_words(words: Iterable[Word]) -> str:
    return " ".join(w.word for w in words).strip()
