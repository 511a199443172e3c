"""Every bad request gets its HTTP status and an OpenAI-style error naming what is wrong; the server survives.

The table runs against the same long-lived whisper-base server as the accuracy tests; after it, a
real transcription must still come back right and `/health` must answer.
"""

from __future__ import annotations

import random
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.fixtures import assets
from tests.server.conftest import AUTH, post_audio


@dataclass(frozen=True)
class Case:
    name: str
    status: int
    code: str | None
    files: Callable[[Path], dict] | None = None  # tmp dir -> httpx files=
    data: dict = field(default_factory=dict)
    headers: dict = field(default_factory=lambda: dict(AUTH))
    content: bytes | None = None
    method: str = "POST"
    path: str = "/v1/audio/transcriptions"


def _file(name: str, maker: Callable[[Path], bytes]) -> Callable[[Path], dict]:
    return lambda tmp: {"file": (name, maker(tmp), "application/octet-stream")}


def _clip(_: Path) -> bytes:
    return assets.speech_clip("beckett").read_bytes()


def _ffmpeg(tmp: Path, name: str, *args: str) -> bytes:
    out = tmp / name
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args, str(out)], check=True)
    return out.read_bytes()


CASES = [
    Case("no file field", 400, "missing_file", data={"model": "whisper-base"}),
    Case("file sent as a text field", 400, "invalid_parameter", data={"file": "hello"}),
    Case("empty file", 400, "empty_file", files=_file("empty.wav", lambda _: b"")),
    Case("random bytes", 400, "invalid_audio", files=_file("noise.mp3", lambda _: random.Random(7).randbytes(50_000))),
    Case("truncated wav (header cut)", 400, "invalid_audio", files=_file("cut.wav", lambda t: _clip(t)[:40])),
    Case("truncated wav (data cut)", 400, "truncated_audio", files=_file("half.wav", lambda t: _clip(t)[:150_000])),
    Case("video without audio", 400, "no_audio_stream",
         files=_file("silent.mp4", lambda t: _ffmpeg(t, "v.mp4", "-f", "lavfi", "-i", "testsrc=d=1:s=64x64", "-c:v", "mpeg4"))),
    Case("audio over max_audio_duration", 400, "audio_too_long",
         files=_file("long.ogg", lambda t: _ffmpeg(t, "long.ogg", "-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono",
                                                    "-t", "7300", "-c:a", "libopus", "-b:a", "6k"))),
    Case("unknown model", 404, "model_not_found", files=_file("a.wav", _clip), data={"model": "whisper-huge"}),
    Case("alias of another engine", 404, "model_not_found", files=_file("a.wav", _clip), data={"model": "accurate"}),
    Case("id of another engine", 404, "model_not_found", files=_file("a.wav", _clip), data={"model": "parakeet-0.6b"}),
    Case("bad response_format", 400, "invalid_response_format", files=_file("a.wav", _clip),
         data={"response_format": "docx"}),
    Case("bad language", 400, "unsupported_language", files=_file("a.wav", _clip), data={"language": "xx"}),
    Case("temperature not a number", 400, "invalid_temperature", files=_file("a.wav", _clip), data={"temperature": "hot"}),
    Case("temperature out of range", 400, "invalid_temperature", files=_file("a.wav", _clip), data={"temperature": "1.5"}),
    Case("bad timestamp granularity", 400, "invalid_timestamp_granularities", files=_file("a.wav", _clip),
         data={"response_format": "verbose_json", "timestamp_granularities[]": "char"}),
    Case("granularities without verbose_json", 400, "invalid_timestamp_granularities", files=_file("a.wav", _clip),
         data={"timestamp_granularities[]": "word"}),
    Case("stream with srt", 400, "invalid_parameter", files=_file("a.wav", _clip),
         data={"stream": "true", "response_format": "srt"}),
    Case("stream not a boolean", 400, "invalid_parameter", files=_file("a.wav", _clip), data={"stream": "maybe"}),
    Case("no key", 401, "missing_api_key", files=_file("a.wav", _clip), headers={}),
    Case("wrong key", 401, "invalid_api_key", files=_file("a.wav", _clip), headers={"Authorization": "Bearer dk_wrong"}),
    Case("not a dalston key", 403, "forbidden_credential", files=_file("a.wav", _clip),
         headers={"Authorization": "Bearer sk-openai-style"}),
    Case("basic auth instead of bearer", 401, "missing_api_key", files=_file("a.wav", _clip),
         headers={"Authorization": "Basic dXNlcjpwYXNz"}),
    Case("oversized upload", 413, "upload_too_large", files=_file("big.wav", lambda _: b"\0" * (9 * 1024 * 1024))),
    Case("JSON body instead of multipart", 400, "invalid_content_type", content=b'{"file": "x"}',
         headers={**AUTH, "Content-Type": "application/json"}),
    Case("malformed multipart", 400, "invalid_multipart", content=b"--xyz\r\nContent-Disposition: form-data\r\n\r\n",
         headers={**AUTH, "Content-Type": "multipart/form-data; boundary=xyz"}),
    Case("GET on the upload route", 405, "method_not_allowed", method="GET"),
    Case("unknown route", 404, "not_found", path="/v1/audio/speech"),
    Case("models without key", 401, "missing_api_key", method="GET", path="/v1/models", headers={}),
]


def test_table_has_at_least_fifteen_cases():
    assert len(CASES) >= 15 and len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, base_server, tmp_path: Path):
    with httpx.Client(base_url=base_server.url, timeout=120) as client:
        if case.method == "GET":
            response = client.get(case.path, headers=case.headers)
        elif case.content is not None:
            response = client.post(case.path, content=case.content, headers=case.headers)
        else:
            response = client.post(case.path, headers=case.headers, data=case.data,
                                   files=case.files(tmp_path) if case.files else None)
    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == case.code
    assert len(error["message"]) > 10 and "Traceback" not in error["message"]
    if case.status == 401:
        assert response.headers.get("www-authenticate") == "Bearer"


def test_server_still_serves_after_the_table(client, base_server):
    assert httpx.get(base_server.url + "/health").status_code == 200
    response = post_audio(client, assets.speech_clip("beckett"))
    assert response.status_code == 200
    assert assets.normalize_words(response.json()["text"]) == assets.reference_words("beckett")
    assert base_server.state.admission.in_flight == 0 and base_server.state.admission.queued == 0


def test_error_bodies_never_repeat_a_huge_input(base_server) -> None:
    """A 10 KB model name (or language, or format) comes back as at most ~256 characters of it (issue 11.6)."""
    url = base_server.url
    for field in ("model", "language", "response_format"):
        r = httpx.post(f"{url}/v1/audio/transcriptions", headers=AUTH, data={field: "x" * 10_000},
                       files={"file": ("a.wav", b"RIFF", "audio/wav")}, timeout=60)
        assert 400 <= r.status_code < 500, (field, r.status_code)
        assert len(r.content) < 1500, (field, len(r.content))
        assert "(10000 characters)" in r.json()["error"]["message"], r.json()
