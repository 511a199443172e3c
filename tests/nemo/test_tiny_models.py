"""The tiny NeMo test models themselves: honest builds, pinned by hash, and the training loss they used.

The losses in tests/fixtures/nemo_models.py are our own (NeMo's CPU transducer losses are too slow
or CUDA-only here), so they are checked against NeMo's reference implementations on random joints,
ragged batches included. The reference implementations allocate on CUDA; on this CPU-only test
they run with `Tensor.cuda` patched to a no-op, which changes where they compute, not what.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dalston.catalog import Catalog
from tests.fixtures import assets, nemo_models


def test_build_report_says_what_was_trained() -> None:
    report = nemo_models.build_report()
    assert set(report["models"]) == set(nemo_models.MODELS)
    for name, model in nemo_models.MODELS.items():
        facts = report["models"][name]
        print(f"nemo_tiny_model name={name} {facts}")
        if model.max_steps:
            assert facts["learned_clip"], f"{name} did not learn the training clip within {model.max_steps} steps: {facts}"
        else:
            assert facts["steps"] == 0 and not facts["learned_clip"]


def test_variants_pin_the_files_built_for_this_run(nemo_engines_root: Path, nemo_model_root: Path) -> None:
    catalog = Catalog.load(nemo_engines_root)
    built = nemo_models.built_models()
    ids = [i for i in catalog.engines if i.startswith(("parakeet-tiny", "parakeet-streaming-tiny"))]
    assert sorted(ids) == sorted(["parakeet-tiny-tdt", "parakeet-tiny-ctc", "parakeet-streaming-tiny",
                                  "parakeet-streaming-tiny-rnnt", "parakeet-streaming-tiny-buffered"])
    for variant_id in ids:
        spec = catalog.get(variant_id).spec
        (weight,) = spec.weights.files
        path = nemo_model_root / variant_id / weight.name
        assert path.resolve() == built[Path(spec.runtime.model_file).stem].resolve()
        assert weight.size == path.stat().st_size and weight.sha256 == assets.sha256_of(path)
    # shipped trees never see the test-only NeMo variants
    assert not any(i.startswith("parakeet-tiny") for i in Catalog.load().engines)


@pytest.fixture
def cpu_reference_losses(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    from nemo.collections.asr.losses.rnnt_pytorch import RNNTLossPytorch, TDTLossPytorch

    return RNNTLossPytorch, TDTLossPytorch


def test_transducer_loss_equals_nemo_reference(cpu_reference_losses) -> None:
    rnnt_reference, tdt_reference = cpu_reference_losses
    torch.manual_seed(0)
    vocab, durations = 5, [0, 1, 2, 3]
    labels = torch.tensor([[1, 3, 2], [2, 4, 0]])
    frames, label_lens = torch.tensor([7, 5]), torch.tensor([3, 2])
    joint = torch.randn(2, 7, 4, vocab + 1 + len(durations))
    expected = tdt_reference(blank=vocab, durations=durations, reduction="none", sigma=0.05)(
        acts=joint, labels=labels, act_lens=frames, label_lens=label_lens)
    got = nemo_models.transducer_nll(joint, labels, frames, label_lens, vocab, durations, sigma=0.05)
    torch.testing.assert_close(got, expected.to(got.dtype), atol=1e-4, rtol=1e-4)
    joint = torch.randn(2, 7, 4, vocab + 1)
    expected = rnnt_reference(blank=vocab, reduction="none")(acts=joint, labels=labels, act_lens=frames,
                                                             label_lens=label_lens)
    got = nemo_models.transducer_nll(joint, labels, frames, label_lens, vocab)
    torch.testing.assert_close(got, expected.to(got.dtype), atol=1e-4, rtol=1e-4)
