"""The tiny cache-aware parakeet behind `dalston gateway`, reached with the official `openai` SDK.

Real processes: a gateway and `dalston serve parakeet-streaming-tiny` (the tiny NeMo checkpoint built
for this run, pinned by sha256 in its test variant) registered with it. The session names no
`?model=`; the gateway routes it by `session.audio.input.transcription.model`.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from dalston.engine_sdk import SAMPLE_RATE
from tests.gateway import processes as p
from tests.gateway.test_e2e import available, wait_until
from tests.nemo.conftest import target_words, words_of
from tests.realtime.openai_sdk import check_early_deltas, run_sdk_session

pytestmark = pytest.mark.slow


def test_openai_session_through_the_gateway(nemo_engines_root: Path, nemo_model_root: Path, keys_file: Path,
                                            tmp_path: Path, clip) -> None:
    env = p.base_env(nemo_engines_root, nemo_model_root)
    gw = p.gateway(env, keys_file, tmp_path).start()
    engine = None
    try:
        gw.wait_http("/health", 30)
        engine = p.engine("parakeet-streaming-tiny", env, keys_file, tmp_path, gw.url).start()
        engine.wait_http("/ready", 300)
        wait_until(lambda: available(gw.url, "parakeet-streaming-tiny"), 30)
        audio = clip("beckett")
        run = asyncio.run(run_sdk_session(gw.url, audio, model="parakeet-streaming-tiny"))
        assert not run.errors, run.errors
        check_early_deltas(run, len(audio) / SAMPLE_RATE)
        assert words_of(run.text) == target_words(), run.text
    finally:
        for proc in (engine, gw):
            if proc is not None:
                proc.stop()
