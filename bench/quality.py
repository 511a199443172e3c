"""Transcript quality per variant we can run here: WER on real speech and words invented on non-speech, VAD on/off.

    python bench/quality.py                         # whisper-base and whisper-tiny-en (~10 min on 2 shared cores)
    python bench/quality.py --variants whisper-tiny-en --parakeet   # + the tiny NeMo TDT (structure only)

For every variant, in process (the family engine exactly as `dalston serve` loads it, the variant's
own YAML: beam size, guards, VAD settings), with `vad_filter` on and off per request:

* WER on the clips with a reference transcript: beckett (~10 s), two_cities (~44 s) and a ~3-minute
  splice of them with 1.5 s pauses (`tests.fixtures.noise.long_speech`; batched pipeline for Whisper).
  endgame_nagg_nell has no reference transcript here, so it has no WER row.
* Invented words: how many words come out of 30 s of digital silence, 30 s of white noise at -30 dBFS
  (seed 14), 30 s of a 440 Hz tone, and how many are placed inside the 20 s of silence spliced into
  beckett (`tests.fixtures.noise`).
* Seconds of decode per clip (not a latency benchmark: `bench/server.py --vad-ab` is).

The tiny Parakeet model was trained on beckett only: its WER elsewhere means nothing, its invented-word
counts show the VAD gating. Prints a table, writes JSON (default bench/results/quality.json).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import jiwer  # noqa: E402
import numpy as np  # noqa: E402

from tests.fixtures import assets, noise  # noqa: E402

REFERENCED = ("beckett", "two_cities")


def wer(reference: str, hypothesis: str) -> float:
    return float(jiwer.wer(" ".join(assets.normalize_words(reference)), " ".join(assets.normalize_words(hypothesis))
                           or "<empty>"))


def inputs() -> dict[str, tuple[np.ndarray, str | None]]:
    """name -> (audio, reference text or None for non-speech)."""
    out: dict[str, tuple[np.ndarray, str | None]] = {n: (noise._load(n), assets.reference_text(n)) for n in REFERENCED}
    long, names = noise.long_speech(order=REFERENCED)
    out["concat_3min"] = (long, " ".join(assets.reference_text(n) for n in names))
    for name, make in noise.NON_SPEECH.items():
        out[name] = (make(), None)
    return out


def load_engines(variants: list[str], parakeet: bool, work: Path) -> dict[str, Any]:
    from dalston.catalog import Catalog
    from dalston.engine_sdk import create_engine

    engines_root = assets.engines_tree(work / "engines")
    loaded = {}
    for variant in variants:
        engine = create_engine(Catalog.load(engines_root).get(variant))
        engine.load(assets.model_dir_for(variant, work / "models", engines_root=engines_root))
        loaded[variant] = engine
    if parakeet:
        from tests.fixtures import nemo_models

        tree = nemo_models.engines_tree_with_tiny_models(work / "nemo-engines")
        engine = create_engine(Catalog.load(tree).get("parakeet-tiny-tdt"))
        engine.load(nemo_models.model_dir_for("parakeet-tiny-tdt", work / "nemo-models", engines_root=tree))
        loaded["parakeet-tiny-tdt"] = engine
    return loaded


def run(engines: dict[str, Any]) -> dict[str, Any]:
    from dalston.engine_sdk import TranscribeOptions

    clips = inputs()
    gap_audio, gap_start, gap_end = noise.speech_with_gap("beckett", 20.0)
    results: dict[str, Any] = {}
    for variant, engine in engines.items():
        for vad in (True, False):
            key = f"{variant} vad={'on' if vad else 'off'}"
            row: dict[str, Any] = {}
            options = TranscribeOptions(language="en", vad_filter=vad, word_timestamps=True)
            for name, (audio, reference) in clips.items():
                started = time.perf_counter()
                transcript = engine.transcribe(audio, options)
                seconds = time.perf_counter() - started
                words = len(assets.normalize_words(transcript.text))
                row[name] = ({"wer": round(wer(reference, transcript.text), 4)} if reference is not None
                             else {"invented_words": words, "text": transcript.text[:120]})
                row[name]["decode_s"] = round(seconds, 2)
                print(f"{key:32s} {name:12s} {json.dumps(row[name])}", flush=True)
            transcript = engine.transcribe(gap_audio, options)
            inside = [w.word for w in transcript.words if w.start > gap_start + 0.5 and w.end < gap_end - 0.5]
            row["beckett_20s_gap"] = {"words_in_gap": len(inside), "text": " ".join(inside)[:120]}
            results[key] = row
    return results


def print_table(results: dict[str, Any]) -> None:
    print("\n| variant | VAD | WER beckett | WER two_cities | WER 3-min splice | invented: silence / noise / tone | words in 20 s gap |")
    print("|---|---|---|---|---|---|---|")
    for key, row in results.items():
        variant, vad = key.split(" vad=")
        invented = " / ".join(str(row[n]["invented_words"]) for n in ("silence", "white_noise", "tone_440hz"))
        print(f"| {variant} | {vad} | {row['beckett']['wer']:.3f} | {row['two_cities']['wer']:.3f} | "
              f"{row['concat_3min']['wer']:.3f} | {invented} | {row['beckett_20s_gap']['words_in_gap']} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default="whisper-base,whisper-tiny-en")
    parser.add_argument("--parakeet", action="store_true", help="also the tiny NeMo TDT test model (needs nemo)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "quality.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dalston-bench-quality-") as tmp:
        engines = load_engines([v for v in args.variants.split(",") if v], args.parakeet, Path(tmp))
        started = time.time()
        results = run(engines)
    print_table(results)
    out = {"benchmark": "quality", "command": "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "loadavg": [round(x, 2) for x in os.getloadavg()], "seconds": round(time.time() - started, 1),
           "results": results}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
