"""The web console in a real browser (Debian's Chromium) against real `dalston gateway` + `dalston serve`.

whisper-base (real weights) for files, whisper-streaming-tiny-en (real tiny.en weights) for the
microphone, which is Chromium's fake capture device playing beckett.wav. Every test asserts that
the browser logged no console error and no uncaught exception (except, where a test provokes an
HTTP error on purpose, Chromium's own "Failed to load resource" line for that status).
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import httpx
import jiwer
import pytest
import srt

from tests.browser import driver
from tests.fixtures import assets

pytestmark = pytest.mark.slow

BASE, REALTIME = driver.ENGINES


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    with driver.cluster(tmp_path_factory.mktemp("console")) as running:
        yield running


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory):
    wav = driver.fake_microphone_wav(tmp_path_factory.mktemp("mic") / "beckett-mic.wav")
    with driver.browser(wav) as browser:
        yield browser


def no_errors(console: driver.ConsolePage, *allowed_statuses: int) -> None:
    allowed = [f"status of {s} " for s in allowed_statuses]
    unexpected = [e for e in console.errors
                  if not (e.startswith("console: Failed to load resource") and any(a in e for a in allowed))]
    assert unexpected == [], unexpected


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.refs += [v for k, v in attrs if k in ("src", "href") and v]


@pytest.mark.parametrize("which", ["gateway", "engine"])
def test_page_is_keyless_self_contained_and_reveals_nothing(cluster, which):
    url = cluster.gateway.url if which == "gateway" else cluster.engines[BASE].url
    page = httpx.get(url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    parser = _Refs()
    parser.feed(page.text)
    local = [r for r in parser.refs if not r.startswith("data:")]
    assert local and all(r.startswith("/") and not r.startswith("//") for r in local), parser.refs
    for ref in local:
        assert httpx.get(url + ref).status_code == 200, ref
    scripts = [httpx.get(f"{url}/console/js/{name}").text for name in
               ("main.js", "api.js", "models.js", "file.js", "transcript.js", "mic.js", "capture-worklet.js")]
    assert not any(re.search(r"""(from|import\()\s*["']https?:""", s) for s in scripts)  # no CDN modules
    assert httpx.get(url + "/v1/models").status_code == 401  # the page is public; the API is not


def test_models_listed_with_key_and_phone_width(cluster, chromium):
    console = driver.ConsolePage.open(chromium, cluster.gateway.url)
    console.page.focus("#key-input")  # keyboard only: type the key, press Enter
    console.page.keyboard.type(driver.KEY)
    console.page.keyboard.press("Enter")
    rows = {r["model"]: r for r in console.wait_models()}
    assert rows[BASE]["stage"] == "transcribe" and rows[BASE]["status"] == "available"
    assert "fast" in rows[BASE]["aliases"] and rows[BASE]["languages"] == "many (detects)"
    assert rows[BASE]["runs_on"] == "GPU or CPU"
    assert rows[REALTIME]["stage"] == "realtime" and rows[REALTIME]["status"] == "available"
    assert rows["parakeet-0.6b"]["status"].startswith("unavailable") and rows["parakeet-0.6b"]["languages"] == "en"
    assert console.page.evaluate("sessionStorage.getItem('dalston.key')") == driver.KEY
    assert console.page.input_value("#key-input") == ""
    mic_models = console.page.eval_on_selector_all("#mic-model option", "o => o.map(x => x.value)")
    assert REALTIME in mic_models and BASE not in mic_models
    unlabeled = console.page.evaluate("""() => [...document.querySelectorAll('input, select, button')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
        .map(e => e.id)""")
    assert unlabeled == []
    console.page.set_viewport_size({"width": 360, "height": 800})
    assert console.page.evaluate("document.documentElement.scrollWidth") <= 360
    no_errors(console)


def test_engine_serves_the_console_for_its_own_model(cluster, chromium):
    console = driver.ConsolePage.open(chromium, cluster.engines[BASE].url)
    console.enter_key(driver.KEY)
    rows = console.wait_models()
    assert [r["model"] for r in rows] == [BASE]
    assert rows[0]["runs_on"] == "now on CPU" and rows[0]["status"] == "available"
    no_errors(console)


def test_file_transcript_seek_and_downloads(cluster, chromium, tmp_path):
    clip = assets.speech_clip("beckett")
    console = driver.ConsolePage.open(chromium, cluster.gateway.url)
    console.enter_key(driver.KEY)
    console.wait_models()
    console.transcribe(clip, BASE)
    assert console.error_text("#file-error") == ""
    page = console.page
    text = page.text_content("#transcript")
    times = page.eval_on_selector_all("#transcript .time", "b => b.map(x => x.textContent)")
    words = page.eval_on_selector_all("#transcript .word", "w => w.map(x => x.textContent)")
    # the time labels are the segment starts; the words are the transcript
    assert times and all(re.fullmatch(r"\d+:\d\d\.\d", t) for t in times)
    assert assets.normalize_words(" ".join(words)) == assets.reference_words("beckett"), text
    assert page.evaluate("document.querySelector('#work-progress').value") == 1

    # click-to-seek: a word (mouse) or a segment time (button, keyboard) moves the player there and the
    # word under the play position is highlighted
    page.eval_on_selector("#player", "p => { p.muted = true; }")
    word = page.locator("#transcript .word").nth(6)
    word.click()
    page.eval_on_selector("#player", "p => p.pause()")
    start = float(word.get_attribute("data-start"))
    assert page.evaluate("document.querySelector('#player').currentTime") >= start - 0.01
    page.wait_for_function("() => document.querySelector('#transcript .word.current') !== null")
    current = page.eval_on_selector("#transcript .word.current", "w => Number(w.dataset.start)")
    assert start <= current <= page.evaluate("document.querySelector('#player').currentTime")
    page.locator("#transcript .time").first.focus()
    page.keyboard.press("Enter")
    page.eval_on_selector("#player", "p => p.pause()")
    assert page.evaluate("document.querySelector('#player').currentTime") < start

    subtitles = console.download("srt", tmp_path)
    cues = list(srt.parse(subtitles.read_text()))
    assert cues and subtitles.name == "beckett.srt"
    assert assets.normalize_words(" ".join(c.content for c in cues)) == assets.reference_words("beckett")
    direct = httpx.post(f"{cluster.gateway.url}/v1/audio/transcriptions", headers={"authorization": f"Bearer {driver.KEY}"},
                        data={"model": BASE, "response_format": "srt"}, timeout=120,
                        files={"file": (clip.name, clip.read_bytes(), "audio/wav")})
    assert subtitles.read_text() == direct.text  # the page's SRT is the server's rendering, not its own
    body = json.loads(console.download("json", tmp_path).read_text())
    assert body["segments"] and body["words"] and body["duration"] == pytest.approx(9.963, abs=0.01)
    assert console.download("txt", tmp_path).read_text().strip() == body["text"]
    vtt = console.download("vtt", tmp_path).read_text()
    assert vtt.startswith("WEBVTT")
    no_errors(console)


def test_errors_in_plain_words(cluster, chromium, tmp_path):
    console = driver.ConsolePage.open(chromium, cluster.gateway.url)
    console.enter_key("dk_wrong_key")
    console.page.wait_for_selector("#key-error:not([hidden])")
    assert console.error_text("#key-error").startswith("The API key was not accepted")
    assert console.page.is_hidden("#models-table")

    console.enter_key(driver.KEY)
    console.wait_models()
    not_audio = tmp_path / "notes.wav"
    not_audio.write_bytes(b"these are meeting notes, not a recording\n" * 50)
    console.transcribe(not_audio, BASE, drop=True)  # dropped onto the page, not picked
    assert console.page.text_content("#file-name").startswith("notes.wav")
    assert console.error_text("#file-error").startswith("That file is not audio the server can read")
    console.transcribe(assets.speech_clip("beckett"), "parakeet-0.6b")
    message = console.error_text("#file-error")
    assert message.startswith("No engine is running for that model right now. Try again in 5 s"), message
    no_errors(console, 401, 400, 503)


# Refusals the browser tests cannot provoke cheaply on real processes (a full queue, a slow upload, a
# model still loading): the body each is sent with, rendered by the servers' own error type.
@pytest.mark.parametrize("status,code,retry_after,sentence", [
    (429, "rate_limit_exceeded", "3", "The server is busy with other requests. Try again in 3 s."),
    (503, "model_not_ready", "5", "The model is still loading. Try again in 5 s."),
    (503, "too_many_connections", "1", "The server has too many open connections. Try again in 1 s."),
    (503, "shutting_down", "1", "The server is shutting down. Try again in 1 s."),
    (403, "forbidden_credential", None, "That is not a dalston key: paste a key that starts with dk_."),
    (413, "upload_too_large", None, "The file is larger than this server accepts."),
    (408, "request_timeout", None, "The upload was too slow and the server stopped waiting for it."),
    (400, "audio_too_long", None, "The recording is longer than this model accepts."),
    (400, "unsupported_language", None, "This model does not know that language."),
])
def test_every_documented_refusal_has_a_sentence(cluster, chromium, status, code, retry_after, sentence):
    from dalston.errors import ApiError

    body = ApiError(status, f"server words for {code}", code).response().body.decode()
    console = driver.ConsolePage.open(chromium, cluster.gateway.url)
    explained = console.page.evaluate("""async ([status, body, retryAfter]) => {
        const { explain } = await import('/console/js/api.js');
        const failure = explain(status, body, retryAfter);
        return [failure.message, failure.detail];
    }""", [status, body, retry_after])
    assert explained == [sentence, f"server words for {code}"]
    no_errors(console)


def speak_beckett(console: driver.ConsolePage, protocol: str) -> list[dict[str, str]]:
    """Start the fake microphone (the looped clip: 0.5 s quiet, 10 s speech, 3 s quiet), wait for the
    first pass's last word as final, stop, and return the finals."""
    console.enter_key(driver.KEY)
    console.wait_models()
    console.start_mic(REALTIME, protocol)
    console.page.wait_for_function(
        """last => [...document.querySelectorAll('#mic-finals .final')].some(f => f.textContent.toLowerCase().includes(last))""",
        arg=assets.reference_words("beckett")[-1], timeout=90_000)
    console.stop_mic()
    assert console.error_text("#mic-error") == ""
    assert console.page.text_content("#mic-status").startswith("Session ended")
    finals = console.finals()
    reference = assets.reference_words("beckett")
    heard = assets.normalize_words(" ".join(f["text"] for f in finals))
    assert jiwer.wer(" ".join(reference), " ".join(heard[:len(reference)])) <= 0.1, heard
    assert all(re.fullmatch(r"latency \d+ ms", f["latency"]) for f in finals), finals
    return finals


def test_microphone_partials_turn_into_finals(cluster, chromium):
    """dalston protocol: grey partials (which may still change) before each final."""
    console = driver.ConsolePage.open(chromium, cluster.gateway.url)
    finals = speak_beckett(console, "dalston")
    assert int(finals[0]["partials"]) >= 1, "a partial (grey) must be shown before the first final"
    no_errors(console)


def test_microphone_over_the_openai_realtime_protocol(cluster, chromium):
    """OpenAI Realtime protocol through the gateway: the key travels in the subprotocol offer, never a URL."""
    console = driver.ConsolePage.open(chromium, cluster.gateway.url)
    urls: list[str] = []
    console.page.on("websocket", lambda ws: urls.append(ws.url))
    speak_beckett(console, "openai")
    assert urls and all("intent=transcription" in u and driver.KEY not in u for u in urls), urls
    no_errors(console)
