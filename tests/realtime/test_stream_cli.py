"""`dalston stream` as a user runs it: a subprocess against a real server on loopback.

Good path: finals printed one per line with their times, `--json` prints every event, exit 0.
Bad paths: each gets exit status 1 or 2 and one line naming the problem, never a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dalston.auth import KeyStore, hash_key
from tests.fixtures import assets
from tests.realtime.conftest import Loaded

KEY = "dk_stream_cli"


def dalston_stream(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dalston.cli", "stream", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", "DALSTON_API_KEY": ""})


@pytest.fixture()
def served(tiny_engine: Loaded, realtime_server: Any, tmp_path: Path) -> str:
    keys = tmp_path / "keys"
    keys.write_text(hash_key(KEY) + "\n")
    return realtime_server(tiny_engine, keys=KeyStore.from_file(keys))


def test_prints_finals_and_exits_0(served: str) -> None:
    clip = str(assets.speech_clip("beckett.wav"))
    done = dalston_stream(clip, "--model", "whisper-streaming-tiny-en", "--url", served, "--api-key", KEY,
                          "--language", "en")
    assert done.returncode == 0, done.stderr
    finals = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert len(finals) >= 2, done.stdout  # the pause after "Try again." splits beckett in two
    words = assets.normalize_words(" ".join(line.split("]", 1)[1] for line in finals))
    assert words == assets.reference_words("beckett"), done.stdout
    assert "Traceback" not in done.stderr


def test_json_prints_every_event(served: str) -> None:
    done = dalston_stream(str(assets.speech_clip("beckett.wav")), "--model", "whisper-streaming-tiny-en",
                          "--url", served + "/v1/realtime", "--api-key", KEY, "--json", "--chunk-ms", "100")
    assert done.returncode == 0, done.stderr
    types = [json.loads(line)["type"] for line in done.stdout.splitlines()]
    assert types[0] == "session.begin" and types[-1] == "session.end", types
    assert "transcript.partial" in types and "transcript.final" in types and "vad.speech_start" in types


@pytest.mark.parametrize("case", ["wrong key", "unknown model", "missing file", "not audio", "nothing listening",
                                  "bad chunk size"])
def test_bad_invocations_fail_with_one_clear_line(case: str, served: str, tmp_path: Path) -> None:
    clip = str(assets.speech_clip("beckett.wav"))
    args = {"wrong key": [clip, "--model", "whisper-streaming-tiny-en", "--url", served, "--api-key", "dk_wrong"],
            "unknown model": [clip, "--model", "whisper-base", "--url", served, "--api-key", KEY],
            "missing file": [str(tmp_path / "nope.wav"), "--model", "x", "--url", served],
            "not audio": [str(_text_file(tmp_path)), "--model", "x", "--url", served],
            "nothing listening": [clip, "--model", "x", "--url", "ws://127.0.0.1:9"],
            "bad chunk size": [clip, "--model", "x", "--url", served, "--chunk-ms", "0"]}[case]
    expected = {"wrong key": "invalid_api_key", "unknown model": "model_not_found", "missing file": "no such file",
                "not audio": "cannot decode audio", "nothing listening": "cannot reach",
                "bad chunk size": "--chunk-ms"}[case]
    done = dalston_stream(*args)
    assert done.returncode in (1, 2), (done.returncode, done.stdout, done.stderr)
    assert expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _text_file(tmp_path: Path) -> Path:
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n")
    return path


@pytest.mark.parametrize("extra,expected", [([], None), (["--api-key", "dk_wrong"], "invalid_api_key")],
                         ids=["good", "wrong key"])
def test_openai_protocol(served: str, extra: list[str], expected: str | None) -> None:
    """`--protocol openai`: the same words from OpenAI items (24 kHz base64 appends), or one clear error line."""
    from tests.realtime.openai_sdk import check_deltas

    clip = str(assets.speech_clip("beckett.wav"))
    done = dalston_stream(clip, "--model", "whisper-streaming-tiny-en", "--url", served, "--language", "en",
                          "--protocol", "openai", "--json", *(extra or ["--api-key", KEY]))
    assert "Traceback" not in done.stderr
    if expected:
        assert done.returncode == 1 and expected in done.stderr, done.stderr
        return
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["type"] == "session.created"
    check_deltas(events)
    completed = [e["transcript"] for e in events if e["type"] == "conversation.item.input_audio_transcription.completed"]
    assert assets.normalize_words(" ".join(completed)) == assets.reference_words("beckett"), completed
