"""Write screenshots of the web console's states to docs/img/ (docs/CONSOLE.md shows them).

    python scripts/console_screenshots.py            # ~1 min: gateway + whisper-base + whisper-streaming-tiny-en
    python scripts/console_screenshots.py --out /tmp/shots

Runs the same real processes and the same system Chromium as tests/browser/test_console.py
(driver: tests/browser/driver.py), with the cached test weights and clips (`python -m
tests.fixtures.assets --all`). Each screenshot is one section of the page, so the PNGs stay small.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import driver  # noqa: E402
from tests.fixtures import assets  # noqa: E402


def shoot(console: driver.ConsolePage, selector: str, path: Path) -> None:
    console.page.locator(selector).screenshot(path=str(path), animations="disabled")
    print(f"console_screenshot path={path} bytes={path.stat().st_size}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    base, realtime = driver.ENGINES
    # latencies in the live screenshot depend on the machine's load: say what it was
    print("console_screenshots load_average=%.2f,%.2f,%.2f cpus=%d" % (*os.getloadavg(), os.cpu_count() or 0))
    with tempfile.TemporaryDirectory(prefix="dalston-console-") as tmp:
        work = Path(tmp)
        wav = driver.fake_microphone_wav(work / "beckett-mic.wav")
        with driver.cluster(work) as cluster, driver.browser(wav) as chromium:
            url = cluster.gateway.url
            wrong = driver.ConsolePage.open(chromium, url)
            wrong.enter_key("dk_not_a_real_key")
            wrong.page.wait_for_selector("#key-error:not([hidden])")
            shoot(wrong, "#key-section", args.out / "console-bad-key.png")

            console = driver.ConsolePage.open(chromium, url)
            console.enter_key(driver.KEY)
            console.wait_models()
            shoot(console, "#models-section", args.out / "console-models.png")

            console.transcribe(assets.speech_clip("beckett"), base)
            page = console.page
            page.eval_on_selector("#player", "p => { p.muted = true; }")
            page.locator("#transcript .word").nth(6).click()   # seek to "Try again": that word lights up
            page.eval_on_selector("#player", "p => p.pause()")
            shoot(console, "#file-section", args.out / "console-file.png")

            console.start_mic(realtime)
            last = assets.reference_words("beckett")[-1]
            page.wait_for_function("""last => [...document.querySelectorAll('#mic-finals .final')]
                .some(f => f.textContent.toLowerCase().includes(last))""", arg=last, timeout=90_000)
            page.wait_for_function("() => document.querySelector('#mic-partial').textContent.trim() !== ''",
                                   timeout=30_000)  # the next pass of the looped clip: grey partial text
            shoot(console, "#mic-section", args.out / "console-live.png")
            console.stop_mic()

            phone = driver.ConsolePage.open(chromium, url, width=375, height=740)
            phone.enter_key(driver.KEY)
            phone.wait_models()
            phone.transcribe(assets.speech_clip("beckett"), base)
            shoot(phone, "#file-section", args.out / "console-phone.png")
            errors = [e for c in (console, phone) for e in c.errors]
            if errors:
                print("console_errors " + " | ".join(errors), file=sys.stderr)
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
