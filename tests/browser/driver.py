"""Drive the web console in the system Chromium: real `dalston gateway` + `dalston serve` processes.

Shared by tests/browser/test_console.py (which asserts) and scripts/console_screenshots.py (which
writes docs/img/). Chromium is Debian's `chromium` (installed by scripts/test.sh), driven by
Playwright for Python through `executable_path`: no browser is ever downloaded. Its fake capture
device plays a wav file as the microphone.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import shutil
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fixtures import assets
from tests.gateway import processes as p

KEY = "dk_console_test"
ENGINES = ("whisper-base", "whisper-streaming-tiny-en")


@dataclass
class Cluster:
    gateway: p.Proc
    engines: dict[str, p.Proc]
    root: Path


def wait_available(gateway_url: str, engine_ids: tuple[str, ...], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    headers = {"authorization": f"Bearer {KEY}"}
    while time.monotonic() < deadline:
        data = httpx.get(f"{gateway_url}/v1/models", headers=headers, timeout=5).json()["data"]
        if all(any(m["id"] == e and m["available"] for m in data) for e in engine_ids):
            return
        time.sleep(0.2)
    raise TimeoutError(f"{engine_ids} not available at {gateway_url} within {timeout}s")


@contextlib.contextmanager
def cluster(root: Path, engine_ids: tuple[str, ...] = ENGINES) -> Iterator[Cluster]:
    """A gateway and one engine process per id, with real weights, registered and ready."""
    engines_dir = assets.engines_tree(root)
    models = root / "models"
    for engine_id in engine_ids:
        assets.model_dir_for(engine_id, models, engines_root=engines_dir)
    keys = root / "keys.txt"
    keys.write_text(hashlib.sha256(KEY.encode()).hexdigest() + "\n")
    env = p.base_env(engines_dir, models)
    gw = p.gateway(env, keys, root, interval=0.5, timeout=5.0).start()
    procs: dict[str, p.Proc] = {}
    try:
        gw.wait_http("/health", 30)
        for engine_id in engine_ids:
            procs[engine_id] = p.engine(engine_id, env, keys, root, gw.url).start()
        for proc in procs.values():
            proc.wait_http("/ready", 180)
        wait_available(gw.url, engine_ids)
        yield Cluster(gw, procs, root)
    finally:
        for proc in [*procs.values(), gw]:
            proc.stop()


def fake_microphone_wav(target: Path, clip: str = "beckett", lead_s: float = 0.5, tail_s: float = 3.0) -> Path:
    """The clip with quiet before and after: the fake device loops the file, the pause ends the utterance."""
    with wave.open(str(assets.speech_clip(clip)), "rb") as src:
        params, frames = src.getparams(), src.readframes(src.getnframes())
    silence = b"\x00" * params.sampwidth * params.nchannels
    with wave.open(str(target), "wb") as out:
        out.setparams(params)
        out.writeframes(silence * int(lead_s * params.framerate) + frames + silence * int(tail_s * params.framerate))
    return target


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("the chromium package is not installed (scripts/system-packages.sh chromium:chromium)")
    return path


@contextlib.contextmanager
def browser(fake_audio: Path) -> Iterator[Any]:
    """Headless system Chromium with a fake microphone playing `fake_audio`."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=chromium_path(), headless=True, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_audio}", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class ConsolePage:
    """One tab on the console, recording every browser console error and uncaught exception."""

    page: Any
    errors: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, chromium: Any, url: str, *, width: int = 1000, height: int = 900,
             downloads: bool = True) -> ConsolePage:
        context = chromium.new_context(viewport={"width": width, "height": height}, accept_downloads=downloads)
        page = context.new_page()
        console = cls(page)
        page.on("console", lambda m: m.type == "error" and console.errors.append(f"console: {m.text}"))
        page.on("pageerror", lambda exc: console.errors.append(f"uncaught: {exc}"))
        page.goto(url + "/")
        page.wait_for_selector("#key-input")
        return console

    def enter_key(self, key: str) -> None:
        self.page.fill("#key-input", key)
        self.page.click("#key-form button[type=submit]")

    def wait_models(self, timeout_ms: float = 15_000) -> list[dict[str, str]]:
        """The rows of the models table: model, stage, languages, runs on, aliases, status."""
        self.page.wait_for_selector("#models-table:not([hidden]) #models-body tr", timeout=timeout_ms)
        rows = self.page.eval_on_selector_all("#models-body tr", """rows => rows.map(r => {
            const cells = [...r.children].map(c => c.textContent.trim());
            return {model: cells[0], stage: cells[1], languages: cells[2], runs_on: cells[3], aliases: cells[4],
                    status: cells[5]};
        })""")
        return list(rows)

    def transcribe(self, path: Path, model: str, *, response_format: str = "verbose_json", words: bool = True,
                   language: str = "", drop: bool = False, timeout_ms: float = 120_000) -> None:
        if drop:
            self.drop_file(path)
        else:
            self.page.set_input_files("#file-input", str(path))
        self.page.select_option("#file-model", model)
        self.page.select_option("#file-format", response_format)
        self.page.fill("#file-language", language)
        if response_format == "verbose_json":
            self.page.set_checked("#file-words", words)
        self.page.click("#file-submit")
        self.page.wait_for_function("""() => document.querySelector('#file-status').textContent.startsWith('Done')
            || !document.querySelector('#file-error').hidden""", timeout=timeout_ms)

    def drop_file(self, path: Path) -> None:
        """Drag-and-drop: a `drop` event carrying the file, as the browser fires it for a dragged file."""
        self.page.evaluate("""([name, b64]) => {
            const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name));
            document.querySelector('#drop-zone').dispatchEvent(
                new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true}));
        }""", [path.name, base64.b64encode(path.read_bytes()).decode()])

    def error_text(self, selector: str) -> str:
        element = self.page.query_selector(selector)
        return "" if element is None or element.is_hidden() else element.text_content().strip()

    def download(self, kind: str, target_dir: Path) -> Path:
        with self.page.expect_download(timeout=120_000) as info:
            self.page.click(f"#downloads button[data-format={kind}]")
        download = info.value
        target = target_dir / download.suggested_filename
        download.save_as(str(target))
        return target

    def start_mic(self, model: str, protocol: str = "dalston") -> None:
        self.page.select_option("#mic-model", model)
        self.page.select_option("#mic-protocol", protocol)
        self.page.click("#mic-start")

    def stop_mic(self, timeout_ms: float = 60_000) -> None:
        self.page.click("#mic-stop")
        self.page.wait_for_function("() => !document.querySelector('#mic-start').disabled", timeout=timeout_ms)

    def finals(self) -> list[dict[str, str]]:
        return list(self.page.eval_on_selector_all("#mic-finals li", """items => items.map(li => ({
            text: li.querySelector('.final').textContent, latency: li.querySelector('.latency').textContent,
            partials: li.dataset.partials, start: li.dataset.start, end: li.dataset.end}))"""))
