"""OpenAI Realtime transcription sessions through `dalston gateway`, with the official `openai` SDK.

Real processes: a gateway and `dalston serve whisper-streaming-tiny-en` / `whisper-streaming-base`
on their real weights, registered with it. The SDK connects to the gateway with only
`?intent=transcription`; the gateway answers `session.created` itself and routes the session by the
model its `session.update` names. Every session's deltas are checked against its `completed`
transcripts (`tests.realtime.openai_sdk.check_deltas`).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json

import jiwer
import pytest
import websockets

from tests.fixtures import assets
from tests.gateway import processes as p
from tests.gateway.test_e2e import available, wait_until
from tests.realtime.openai_sdk import check_deltas, check_early_deltas, resample_pcm16, run_sdk_session

pytestmark = pytest.mark.slow

KEY = "dk_test"
COMPLETED = "conversation.item.input_audio_transcription.completed"


@pytest.fixture(scope="module")
def gateway_url(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("openai-rt-gw")
    engines = assets.engines_tree(root)
    models = root / "models"
    variants = ("whisper-streaming-tiny-en", "whisper-streaming-base")
    for engine_id in variants:
        assets.model_dir_for(engine_id, models, engines_root=engines)
    keys = root / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines, models)
    gw = p.gateway(env, keys, root).start()
    procs = [gw]
    try:
        gw.wait_http("/health", 30)
        for engine_id in variants:
            procs.append(p.engine(engine_id, env, keys, root, gw.url).start())
        for proc in procs[1:]:
            proc.wait_http("/ready", 180)
        wait_until(lambda: all(available(gw.url, v) for v in variants), 30)
        yield gw.url
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture(scope="module")
def clip_audio():
    from dalston.commands.stream import load_audio_16k

    return lambda name: load_audio_16k(assets.speech_clip(name))


def wer(text: str) -> float:
    return float(jiwer.wer(" ".join(assets.reference_words("beckett")), " ".join(assets.normalize_words(text))))


@pytest.mark.parametrize("model", ["whisper-streaming-tiny-en", "whisper-streaming-base"])
def test_sdk_session_routed_by_its_transcription_model(model: str, gateway_url: str, clip_audio) -> None:
    """No ?model=: the gateway routes by session.audio.input.transcription.model; paced in real time."""
    run = asyncio.run(run_sdk_session(gateway_url, clip_audio("beckett.wav"), model=model))
    assert not run.errors, run.errors
    types = [e.type for e in run.events]
    assert types.count("session.created") == 1 and types[:2] == ["session.created", "session.updated"], types[:4]
    assert run.of("session.updated")[0]["session"]["audio"]["input"]["transcription"]["model"] == model
    check_early_deltas(run, len(clip_audio("beckett.wav")) / 16000)
    assert wer(run.text) <= 0.10, run.text


def test_beta_client_and_model_query(gateway_url: str, clip_audio) -> None:
    """The beta client (transcription_session.*), and `?model=` routing without waiting for an update."""
    audio = clip_audio("beckett.wav")
    beta = asyncio.run(run_sdk_session(gateway_url, audio, beta=True, model="whisper-streaming-tiny-en",
                                       realtime=False))
    assert [e.type for e in beta.events][:2] == ["transcription_session.created", "transcription_session.updated"]
    assert wer(beta.text) <= 0.10, beta.text
    direct = asyncio.run(run_sdk_session(gateway_url, audio, realtime=False,
                                         extra_query={"model": "whisper-streaming-tiny-en"}))
    assert wer(direct.text) <= 0.10, direct.text


def test_routing_errors_keep_the_session_open(gateway_url: str, clip_audio) -> None:
    """Audio before any update, no model, an unknown model: an error each, then the same connection
    is routed by a good update and transcribes; the browser subprotocol key authenticates."""
    pcm = resample_pcm16(clip_audio("beckett.wav")[: 16000 * 3], 24000)
    appends = [json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(pcm[i:i + 4800]).decode()})
               for i in range(0, len(pcm), 4800)]

    def update(model: str | None) -> str:
        transcription = {"language": "en", **({"model": model} if model else {})}
        return json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "transcription": transcription, "turn_detection": None}}}})

    async def scenario() -> tuple[list[dict], str | None]:
        url = gateway_url.replace("http://", "ws://") + "/v1/realtime?intent=transcription"
        events: list[dict] = []
        async with websockets.connect(url, subprotocols=["realtime", f"openai-insecure-api-key.{KEY}"]) as ws:
            for message in [appends[0], update(None), update("no-such-model"), update("whisper-streaming-tiny-en"),
                            *appends, json.dumps({"type": "input_audio_buffer.commit"}),
                            json.dumps({"type": "input_audio_buffer.commit", "event_id": "sentinel"})]:
                await ws.send(message)
            async with asyncio.timeout(120):
                while True:
                    event = json.loads(await ws.recv())
                    if event["type"] == "error" and event["error"]["event_id"] == "sentinel":
                        break
                    events.append(event)
            return events, ws.subprotocol

    events, subprotocol = asyncio.run(scenario())
    assert subprotocol == "realtime"
    codes = [e["error"]["code"] for e in events if e["type"] == "error"]
    assert codes == ["session_not_configured", "model_required", "model_not_found"], events
    check_deltas(events)
    transcripts = [e["transcript"] for e in events if e["type"] == COMPLETED]
    assert assets.normalize_words(" ".join(transcripts))[:2] == ["ever", "tried"], events[-3:]


def test_wrong_key_is_refused_at_the_handshake(gateway_url: str) -> None:
    import openai

    async def connect() -> None:
        client = openai.AsyncOpenAI(api_key="dk_wrong", base_url=gateway_url + "/v1", max_retries=0)
        async with client.realtime.connect(extra_query={"intent": "transcription"}):
            pass

    with pytest.raises(Exception) as info:
        asyncio.run(connect())
    assert "401" in str(info.value), info.value
