"""Full-size architecture twins of the shipped parakeet-streaming variants, with random weights, built at bench time.

No Parakeet weights are reachable here, and the tiny test checkpoints (64-wide, 2 layers) cost almost
nothing per step, so they cannot show what many sessions on one engine do to latency. A twin has the
real model's architecture and therefore its real compute per step; its weights are random (seeded),
so its words are meaningless. Sessions-per-engine and latency curves on a twin are what an operator
would see on the same CPU with the real checkpoint, as far as the model is concerned.

Where each dimension comes from (NeMo's published configs, NVIDIA/NeMo `examples/asr/conf/fastconformer/`):

* `fast-conformer_transducer_bpe.yaml`, its table of recommended sizes:
  XLarge (616M): d_model 1024, 8 heads, 24 layers, conv kernel 9, pred/joint hidden 640, 2 prediction
  LSTM layers, xscaling on.  XXLarge (1.2B): d_model 1024, 8 heads, 42 layers, conv kernel 5, 640,
  2 LSTM layers, xscaling off.  Both: dw_striding 8x subsampling with 256 channels, feed-forward
  expansion 4, rel_pos attention, 80 mel features, 25 ms / 10 ms windows, n_fft 512.
* `cache_aware_streaming/fastconformer_transducer_bpe_streaming.yaml`: what makes the encoder
  cache-aware: `normalize: NA`, causal downsampling, `conv_context_size: causal`, layer norm in the
  convolution module, `att_context_style: chunked_limited`, and the multi-lookahead list
  [[70,13],[70,6],[70,1],[70,0]] (nemotron-speech-streaming-en-0.6b's model card lists the same four
  chunk sizes: 1120/560/160/80 ms). The shipped variant streams with [70, 6].
* nemotron-speech-streaming-en-0.6b = the XLarge size made cache-aware (its card: 600M parameters,
  24-layer cache-aware FastConformer, RNNT decoder, 8x downsampling); parakeet-rnnt-1.1b = the
  XXLarge size, offline (full attention, per-feature normalisation).
* Vocabulary: 1024 sentencepiece pieces, NeMo's recommendation and the size of the Parakeet English
  tokenizers. The twin's tokenizer is trained here on seeded random letter strings, so the joint's
  output layer has the real width.
* Decoding: greedy_batch, as the variants run, with `max_symbols` capped at 1 per encoder frame
  (`MAX_SYMBOLS`): an untrained joint rarely predicts blank and would otherwise emit up to 10
  tokens on every frame (NeMo's default cap), ten prediction-network steps per frame, which no
  trained model does; real speech is well under one token per 80 ms frame.

Cache: `<assets cache>/nemo-twins/<recipe hash>/<name>.nemo` (the hash covers this file, NeMo and torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures import assets  # noqa: E402

VOCAB_SIZE = 1024
MAX_SYMBOLS = 1
SAMPLE_RATE = 16000


@dataclass(frozen=True)
class Twin:
    name: str
    of: str  # the shipped variant it stands in for
    n_layers: int
    conv_kernel_size: int
    xscaling: bool
    cache_aware: bool

    @property
    def file_name(self) -> str:
        return f"{self.name}.nemo"


TWINS: dict[str, Twin] = {t.name: t for t in (
    Twin("nemotron-streaming-0.6b-twin", "parakeet-streaming-0.6b", n_layers=24, conv_kernel_size=9, xscaling=True,
         cache_aware=True),
    Twin("parakeet-rnnt-1.1b-twin", "parakeet-streaming-1.1b", n_layers=42, conv_kernel_size=5, xscaling=False,
         cache_aware=False),
)}


def recipe_hash() -> str:
    import nemo
    import torch

    digest = hashlib.sha256(Path(__file__).read_bytes())
    for part in (nemo.__version__, torch.__version__):
        digest.update(b"\0" + part.encode())
    return digest.hexdigest()[:16]


def cache_dir() -> Path:
    return assets.cache_root() / "nemo-twins" / recipe_hash()


def built(name: str) -> Path:
    """The twin's `.nemo`, built (about a minute and 2.5-4.5 GB of disk) unless cached."""
    twin = TWINS[name]
    target = cache_dir() / twin.file_name
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with assets._locked(assets.cache_root()):
        if not target.is_file():
            work = Path(tempfile.mkdtemp(prefix=".twin-", dir=target.parent))
            try:
                started = time.monotonic()
                tokenizer = _tokenizer(work / "tokenizer")
                model = _model(twin, tokenizer)
                params = sum(p.numel() for p in model.parameters())
                model.save_to(str(work / twin.file_name))
                (work / f"{name}.json").write_text(json.dumps({
                    "twin": name, "of": twin.of, "parameters": params,
                    "build_seconds": round(time.monotonic() - started, 1)}, indent=2))
                os.replace(work / f"{name}.json", target.parent / f"{name}.json")
                os.replace(work / twin.file_name, target)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return target


def report(name: str) -> dict[str, Any]:
    built(name)
    return json.loads((cache_dir() / f"{name}.json").read_text())


def _tokenizer(out: Path) -> Path:
    """A 1024-piece BPE sentencepiece model on seeded random letter strings (the twin's output is meaningless)."""
    import sentencepiece as spm

    out.mkdir(parents=True)
    rng = random.Random(0)
    letters = "etaoinshrdlucmfwypvbgkqjxz"
    weights = [13, 9, 8, 8, 7, 7, 6, 6, 6, 4, 4, 3, 3, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1]
    lines = [" ".join("".join(rng.choices(letters, weights, k=rng.randint(2, 9))) for _ in range(12))
             for _ in range(4000)]
    corpus = out / "text.txt"
    corpus.write_text("\n".join(lines) + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(out / "tokenizer"), vocab_size=VOCAB_SIZE, model_type="bpe",
        character_coverage=1.0, bos_id=-1, eos_id=-1, num_threads=1, minloglevel=2)
    tokens = []
    for line in (out / "tokenizer.vocab").read_text(encoding="utf-8").splitlines():
        piece = line.split("\t")[0]
        if piece in ("<s>", "</s>", "<pad>", "<unk>"):
            continue
        token = piece[1:] if piece.startswith("\u2581") else f"##{piece}"
        tokens.append(token or piece[0])
    (out / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    corpus.unlink()
    return out


def config(twin: Twin, tokenizer_dir: Path) -> Any:
    from omegaconf import OmegaConf

    encoder: dict[str, Any] = {
        "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": 80, "feat_out": -1,
        "n_layers": twin.n_layers, "d_model": 1024, "subsampling": "dw_striding", "subsampling_factor": 8,
        "subsampling_conv_channels": 256, "ff_expansion_factor": 4, "self_attention_model": "rel_pos",
        "n_heads": 8, "att_context_size": [-1, -1], "att_context_style": "regular", "xscaling": twin.xscaling,
        "untie_biases": True, "pos_emb_max_len": 5000, "conv_kernel_size": twin.conv_kernel_size,
        "conv_norm_type": "batch_norm", "dropout": 0.0, "dropout_pre_encoder": 0.0, "dropout_emb": 0.0,
        "dropout_att": 0.0,
    }
    preprocessor = {
        "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor", "sample_rate": SAMPLE_RATE,
        "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01, "window": "hann",
        "features": 80, "n_fft": 512, "log": True, "frame_splicing": 1, "dither": 1e-5, "pad_to": 0,
    }
    if twin.cache_aware:
        preprocessor["normalize"] = "NA"
        encoder.update({"att_context_size": [[70, 13], [70, 6], [70, 1], [70, 0]], "att_context_style": "chunked_limited",
                        "conv_context_size": "causal", "causal_downsampling": True, "conv_norm_type": "layer_norm"})
    return OmegaConf.create({
        "sample_rate": SAMPLE_RATE,
        "tokenizer": {"dir": str(tokenizer_dir), "type": "bpe"},
        "preprocessor": preprocessor, "encoder": encoder, "spec_augment": None,
        "train_ds": None, "test_ds": None,
        "validation_ds": {"manifest_filepath": None, "sample_rate": SAMPLE_RATE, "batch_size": 1, "shuffle": False},
        "model_defaults": {"enc_hidden": 1024, "pred_hidden": 640, "joint_hidden": 640},
        "decoder": {"_target_": "nemo.collections.asr.modules.RNNTDecoder", "normalization_mode": None,
                    "random_state_sampling": False, "blank_as_pad": True,
                    "prednet": {"pred_hidden": 640, "pred_rnn_layers": 2, "t_max": None, "dropout": 0.0}},
        "joint": {"_target_": "nemo.collections.asr.modules.RNNTJoint", "log_softmax": None,
                  "preserve_memory": False, "fuse_loss_wer": False, "fused_batch_size": 4,
                  "jointnet": {"joint_hidden": 640, "activation": "relu", "dropout": 0.0}},
        "decoding": {"strategy": "greedy_batch", "greedy": {"max_symbols": MAX_SYMBOLS}},
        "loss": {"loss_name": "default"},
        "optim": {"name": "adamw", "lr": 1e-3},
    })


def _model(twin: Twin, tokenizer_dir: Path) -> Any:
    import torch

    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from dalston.runtimes.nemo import quiet_nemo

    quiet_nemo()
    torch.manual_seed(0)
    model = EncDecRNNTBPEModel(cfg=config(twin, tokenizer_dir))
    model.eval()
    return model


def main() -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    for name in sys.argv[1:] or list(TWINS):
        path = built(name)
        print(f"nemo_twin name={name} bytes={path.stat().st_size} path={path} {json.dumps(report(name))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
