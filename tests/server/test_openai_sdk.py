"""The official `openai` Python SDK against dalston serve (whisper-base over loopback): every response format.

The SDK is the client users bring; it must parse each body into its own types (`Transcription`,
`TranscriptionVerbose` with segments and/or words, plain strings for text/srt/vtt) with the fields
filled the way OpenAI fills them, and carry dalston's extension fields through `extra_body`.
"""

from __future__ import annotations

import pytest
import srt as srt_parser

from tests.fixtures import assets
from tests.fixtures.serving import TEST_KEY


@pytest.fixture(scope="module")
def sdk(base_server):
    openai = pytest.importorskip("openai")
    with openai.OpenAI(base_url=f"{base_server.url}/v1", api_key=TEST_KEY, max_retries=0, timeout=300) as client:
        yield client


def _create(sdk, **kwargs):
    with open(assets.speech_clip("beckett"), "rb") as audio:
        return sdk.audio.transcriptions.create(model="whisper-base", file=audio, language="en", **kwargs)


def test_json(sdk) -> None:
    result = _create(sdk, response_format="json")
    assert type(result).__name__ == "Transcription"
    assert "tried" in result.text.lower()
    assert result.usage is not None and result.usage.type == "duration" and result.usage.seconds > 9


@pytest.mark.parametrize("response_format", ["text", "srt", "vtt"])
def test_text_formats_are_strings(sdk, response_format: str) -> None:
    result = _create(sdk, response_format=response_format)
    assert isinstance(result, str) and "tried" in result.lower()
    if response_format == "srt":
        assert len(list(srt_parser.parse(result))) >= 2
    if response_format == "vtt":
        assert result.startswith("WEBVTT")


@pytest.mark.parametrize("granularities", [None, ["segment"], ["word"], ["word", "segment"]])
def test_verbose_json_with_each_granularity(sdk, granularities: list[str] | None) -> None:
    kwargs = {} if granularities is None else {"timestamp_granularities": granularities}
    result = _create(sdk, response_format="verbose_json", **kwargs)
    assert type(result).__name__ == "TranscriptionVerbose"
    assert result.language == "english" and result.duration == pytest.approx(9.96, abs=0.05)
    assert result.usage is not None and result.usage.seconds == result.duration
    wanted = set(granularities or ["segment"])
    assert (result.segments is not None) == ("segment" in wanted)
    assert (result.words is not None) == ("word" in wanted)
    for segment in result.segments or []:
        assert segment.tokens and segment.seek >= 0 and segment.temperature is not None
        assert segment.avg_logprob < 0 and segment.compression_ratio > 0 and 0 <= segment.no_speech_prob <= 1
        assert segment.text.endswith(".")  # sentences
    for word in result.words or []:
        assert word.start <= word.end and word.word == word.word.strip()


def test_extension_fields_through_extra_body(sdk) -> None:
    result = _create(sdk, response_format="srt", extra_body={"max_line_count": "1", "max_line_width": "20"})
    assert all(len(c.content) <= 20 and "\n" not in c.content for c in srt_parser.parse(result))


def test_sdk_sees_a_clear_error(sdk) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        _create(sdk, response_format="srt", extra_body={"vad_threshold": "2"})
    assert err.value.body["param"] == "vad_threshold"  # type: ignore[index]
