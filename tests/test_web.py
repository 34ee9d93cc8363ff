"""The web page at `/`, driven in headless Chromium (Debian's package, through playwright):
upload a conversation, see the transcript, language and timeline the API gives for it,
compare two speakers, record from Chromium's fake microphone, and look at the screenshot."""

import os
import shutil

import httpx
import numpy as np
import pytest

TOKEN = "web-token"
VIEWPORT = {"width": 1100, "height": 1000}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
STEP_TIMEOUT_MS = 20_000
RECORD_S = 1.5
# A rendered page is far from blank: text, bars and the timeline cover a good part of it.
MIN_INKED_FRACTION = 0.03
MIN_PIXEL_STD = 10.0


def _chromium() -> str | None:
    found = os.environ.get("POLYHEAD_CHROMIUM")
    return found if found and os.path.isfile(found) else next(filter(None, map(shutil.which, BROWSERS)), None)


def _wait_done(page):
    page.wait_for_selector('#status[data-state="done"], #status[data-state="error"]', timeout=STEP_TIMEOUT_MS)
    assert page.get_attribute("#status", "data-state") == "done", page.inner_text("#status")


def test_page_uploads_records_verifies_and_renders(tiny_run, live_server, tmp_path):
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH (scripts/install_browser.sh installs Debian's); set POLYHEAD_CHROMIUM")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    from polyhead.serving import create_app

    folder, run = tiny_run
    url = live_server(create_app(run, token=TOKEN, registry_path=tmp_path / "speakers.sqlite"))
    conversation = next((folder / "audio" / "conversations_test").glob("*.wav"))
    a, b = sorted((folder / "audio" / "speaker_test").rglob("*.wav"))[:2]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    expected = httpx.post(f"{url}/v1/audio/analyze", files={"file": (conversation.name, conversation.read_bytes())},
                          headers=auth, timeout=60).json()
    speakers = httpx.post(f"{url}/v1/audio/diarize", files={"file": (conversation.name, conversation.read_bytes())},
                          headers=auth, timeout=60).json()
    verdict = httpx.post(f"{url}/v1/speakers/verify", files={"file_a": ("a.wav", a.read_bytes()),
                                                             "file_b": ("b.wav", b.read_bytes())},
                         headers=auth, timeout=60).json()

    with sync_playwright() as p:
        # The fake device gives getUserMedia a beeping microphone without asking anyone.
        browser = p.chromium.launch(executable_path=chromium, headless=True,
                                    args=["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(f"{url}/")
            page.wait_for_selector("body[data-ready]")
            assert page.is_visible("#token")  # the server asks for a token, so the page does too
            page.fill("#token", TOKEN)

            page.set_input_files("#file", str(conversation))
            _wait_done(page)
            text = page.inner_text("#transcript")
            assert text == (expected["text"] or "(no words recognised)")
            assert page.get_attribute("#language .bar.top", "data-label") == expected["language"]
            assert page.locator("#language .bar").count() == len(expected["language_probs"])
            assert page.locator("#timeline rect.segment").count() == len(expected["segments"])
            assert page.locator("#timeline rect.word").count() == len(expected["words"])
            assert page.locator("#timeline rect.speaker-segment").count() == len(speakers["segments"])
            assert page.locator("#timeline line.tick").count() >= 2
            assert f"{expected['duration']:.2f} s" in page.inner_text("#duration")

            page.set_input_files("#verify-a", str(a))
            page.set_input_files("#verify-b", str(b))
            page.click("#verify")
            page.wait_for_selector("#verify-result .decision", timeout=STEP_TIMEOUT_MS)
            assert float(page.get_attribute("#verify-result", "data-score")) == pytest.approx(verdict["score"])

            shot = tmp_path / "page.png"
            page.screenshot(path=str(shot))

            page.click("#record")
            page.wait_for_selector("#record.recording", timeout=STEP_TIMEOUT_MS)
            page.wait_for_timeout(1000 * RECORD_S)
            page.click("#record")
            _wait_done(page)
            recorded = float(page.inner_text("#duration").split()[0])
            assert RECORD_S * 0.5 < recorded < RECORD_S * 3  # the fake microphone's beeps, as WAV
        finally:
            browser.close()

    image = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert image.shape == (VIEWPORT["height"], VIEWPORT["width"])
    assert (image < 200).mean() > MIN_INKED_FRACTION
    assert image.std() > MIN_PIXEL_STD
