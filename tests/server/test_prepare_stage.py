"""The audio-prepare engine (prepare stage) served like every variant: decode, report, return 16 kHz mono WAV."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from dalston.audio import decode_audio
from tests.fixtures import assets
from tests.fixtures.serving import running_server
from tests.server.conftest import AUTH


@pytest.fixture(scope="module")
def prepare_server(engines_with_test_variants: Path, tmp_path_factory, keys_file: Path):
    with running_server("audio-prepare", engines_root=engines_with_test_variants,
                        model_dir=tmp_path_factory.mktemp("no-weights"), keys_file=keys_file) as running:
        yield running


def test_reports_what_it_decoded(prepare_server, tmp_path):
    stereo = tmp_path / "stereo.mp3"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(assets.speech_clip("beckett")), "-ac", "2", "-ar", "44100",
                    str(stereo)], check=True)
    response = httpx.post(prepare_server.url + "/v1/audio/prepare", headers=AUTH,
                          files={"file": ("s.mp3", stereo.read_bytes())}, timeout=60)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["sample_rate"] == 16000 and report["channels"] == 1
    assert report["source_channels"] == 2 and report["source_sample_rate"] == 44100 and report["codec"].startswith("mp3")
    assert report["duration"] == pytest.approx(9.96, abs=0.1)


def test_returns_16k_mono_wav_with_the_same_samples(prepare_server):
    clip = assets.speech_clip("beckett")
    response = httpx.post(prepare_server.url + "/v1/audio/prepare", headers=AUTH, data={"response_format": "wav"},
                          files={"file": ("b.wav", clip.read_bytes())}, timeout=60)
    assert response.status_code == 200 and response.headers["content-type"] == "audio/wav"
    with wave.open(io.BytesIO(response.content)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 16000, 2)
        got = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.float32) / 32768
    expected = decode_audio(clip).samples
    assert len(got) == len(expected) and np.max(np.abs(got - expected)) < 1e-3


def test_prepare_engine_has_no_transcription_route_and_rejects_bad_input(prepare_server):
    assert httpx.post(prepare_server.url + "/v1/audio/transcriptions", headers=AUTH,
                      files={"file": ("b.wav", b"x")}).status_code == 404
    bad = httpx.post(prepare_server.url + "/v1/audio/prepare", headers=AUTH, files={"file": ("n.bin", b"\x00junk" * 99)})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_audio"
