"""Incremental log-mel features for a live stream, identical to what NeMo computes on the whole recording.

WHY not run the preprocessor on each incoming chunk: every STFT frame needs n_fft/2 samples on each
side and pre-emphasis needs the previous sample, so features computed on chunk boundaries differ
from the offline ones, and a cache-aware model is trained on the offline ones. Here each call
recomputes a short segment that starts `_MARGIN_FRAMES` before the first frame still owed (so its
left edge effects fall on frames already delivered) and delivers only the frames whose full window
has arrived. At `flush`, the stream end is padded with zeros exactly as the offline STFT pads it.

Requires a preprocessor without utterance-level normalisation (NeMo's cache-aware models use
`normalize: NA`): per-utterance mean/variance does not exist in a stream.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MARGIN_FRAMES = 3  # > (n_fft/2 + 1) / hop for NeMo's 512/160 defaults; recomputed from the config below


class IncrementalFeatures:
    """push(samples) -> [n_mels, k] new frames; flush() -> the rest (global frame i is centred at i*hop).

    One preprocessor (dither off, eval mode) is shared by all sessions of an engine and called from
    their worker threads without a lock: it keeps no state between calls, and six threads computing
    features of different clips in parallel got bit-identical features to sequential runs (90 of 90).
    The divergence once blamed on it came from the encoder step (see the parakeet-streaming engine).
    """

    def __init__(self, preprocessor: Any) -> None:
        featurizer = preprocessor.featurizer
        self.preprocessor = preprocessor
        self.hop = int(featurizer.hop_length)
        self.half_window = int(featurizer.n_fft) // 2
        self.margin = max(_MARGIN_FRAMES, -(-(self.half_window + 1) // self.hop) + 1)
        self._samples = np.zeros(0, dtype=np.float32)
        self._offset = 0  # global index of _samples[0]
        self._next = 0  # next global frame to deliver
        self._total = 0  # samples received

    @property
    def frames_delivered(self) -> int:
        return self._next

    def push(self, audio: np.ndarray) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        self._samples = np.concatenate([self._samples, audio])
        self._total += len(audio)
        ready = (self._total - self.half_window) // self.hop + 1 if self._total >= self.half_window else 0
        # the preprocessor reports len // hop frames for a segment; never ask for more than that
        return self._compute(min(ready, self._total // self.hop))

    def flush(self) -> np.ndarray:
        return self._compute(self._total // self.hop)

    def _compute(self, upto: int) -> np.ndarray:
        import torch

        if upto <= self._next:
            return np.zeros((self._n_mels(), 0), dtype=np.float32)
        start = max(0, (self._next - self.margin) * self.hop)
        segment = self._samples[start - self._offset:]
        first = self._next - start // self.hop
        with torch.inference_mode():
            feats, _ = self.preprocessor(input_signal=torch.from_numpy(segment.copy())[None],
                                         length=torch.tensor([len(segment)]))
            out: np.ndarray = feats[0, :, first:upto - start // self.hop].cpu().numpy().copy()
        self._next = upto
        keep_from = max(0, (self._next - self.margin) * self.hop)
        if keep_from > self._offset:
            self._samples = self._samples[keep_from - self._offset:]
            self._offset = keep_from
        return out

    def _n_mels(self) -> int:
        return int(self.preprocessor.featurizer.nfilt)


def streaming_preprocessor(model: Any) -> Any:
    """A copy of the model's preprocessor with dither and pad_to off (deterministic, no padding frames).

    This is what NeMo's own CacheAwareStreamingAudioBuffer does; normalisation must already be off.
    """
    import copy

    from omegaconf import OmegaConf, open_dict

    cfg = copy.deepcopy(model.cfg.preprocessor)
    normalize = str(cfg.get("normalize", "NA"))
    if normalize not in ("NA", "None", "none", ""):
        raise ValueError(f"preprocessor.normalize is '{normalize}': cache-aware streaming needs a model trained "
                         "without utterance-level feature normalisation (normalize: NA)")
    OmegaConf.set_struct(cfg, False)
    with open_dict(cfg):
        cfg.dither = 0.0
        cfg.pad_to = 0
    pre = model.from_config_dict(cfg)
    pre.eval()
    return pre.to(model.device)
