"""`hotwords` biases Whisper towards a made-up term spoken by espeak-ng; `prompt` stays OpenAI's prompt.

Without hints both Whisper models hear "Quixtrelane" as ordinary words ("Quick Strelain",
"Quick Trilane"); with `hotwords=Quixtrelane` they spell it as hinted. whisper-base is asked over HTTP
(the form field), whisper-tiny-en in process (the engine option).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from dalston.audio import decode_audio
from dalston.catalog import Catalog
from dalston.engine_sdk import TranscribeOptions, create_engine
from tests.fixtures import assets
from tests.server.conftest import post_audio

TERM = "Quixtrelane"
SENTENCE = f"The new drug is called {TERM}. Doctors prescribe {TERM} for headaches."


@pytest.fixture(scope="module")
def term_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    espeak = shutil.which("espeak-ng")
    assert espeak, "espeak-ng is a test dependency (scripts/system-packages.sh)"
    path = tmp_path_factory.mktemp("hotwords") / "term.wav"
    subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(path), SENTENCE], check=True)
    return path


def test_hotwords_over_http_whisper_base(client, term_clip: Path) -> None:
    plain = post_audio(client, term_clip, language="en").json()["text"]
    hinted = post_audio(client, term_clip, language="en", hotwords=TERM).json()["text"]
    assert TERM not in plain, plain
    assert hinted.count(TERM) == 2, hinted


def test_hotwords_in_process_whisper_tiny_en(term_clip: Path, engines_with_test_variants, model_dir_for) -> None:
    engine = create_engine(Catalog.load(engines_with_test_variants).get("whisper-tiny-en"))
    engine.load(assets.model_dir_for("whisper-tiny-en", model_dir_for("whisper-base").parent,
                                     engines_root=engines_with_test_variants))
    audio = decode_audio(term_clip).samples
    plain = engine.transcribe(audio, TranscribeOptions(language="en")).text
    hinted = engine.transcribe(audio, TranscribeOptions(language="en", hotwords=TERM)).text
    assert TERM not in plain and hinted.count(TERM) == 2, (plain, hinted)
