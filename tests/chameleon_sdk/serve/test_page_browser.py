"""The web page in a real browser: Playwright drives the system's Chromium (the Debian package
``chromium``, installed by ``make test`` when missing and run as root) against a live server.

Set ``CHAMELEON_SCREENSHOT=path.png`` to keep the screenshot (docs/serving.png is made this way).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import PIL.Image
import pytest

import chameleon_sdk as cs

from .conftest import IMAGE_CODES, slow_down

CHROMIUM = os.environ.get("CHAMELEON_CHROMIUM", "/usr/bin/chromium")


def _need(condition: bool, reason: str) -> None:
    """Skip without the browser, except in CI, where the browser test must run."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must run the browser test; `make test` installs chromium as root)")
        pytest.skip(reason)


# Records every change of the output area, so the test sees the intermediate states (streamed text,
# preview images) that a fast tiny model replaces within milliseconds.
OBSERVER = """
window.seen = [];
new MutationObserver(() => {
  for (const box of document.querySelectorAll('.output')) {
    const text = box.querySelector('.text');
    const img = box.querySelector('img');
    window.seen.push({text: text ? text.textContent.length : 0, img: img ? img.className : '',
                      codes: img ? Number(img.dataset.codes || 0) : 0});
  }
}).observe(document.getElementById('outputs'), {subtree: true, childList: true, characterData: true,
                                                 attributes: true});
"""


def _wait_until_idle(base: str) -> dict:
    import httpx

    deadline = time.monotonic() + 30
    while True:
        load = httpx.get(f"{base}/healthz").json()
        if load["running"] == 0 or time.monotonic() > deadline:
            return load
        time.sleep(0.02)


def test_page_generates_text_and_an_image(served_pipe, live_server, tmp_path, monkeypatch):
    _need(shutil.which(CHROMIUM) is not None or Path(CHROMIUM).exists(), f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need(False, "playwright is not installed (a test extra)")
    # 5 ms a step: every token's events reach the page in their own network chunk, as with a real
    # model, so the page shows (and the observer records) each state
    slow_down(served_pipe.model, monkeypatch, seconds=0.005)
    base = live_server(cs.serve.create_app(served_pipe, progress_every=16))
    upload = tmp_path / "upload.png"
    PIL.Image.new("RGB", (16, 16), (220, 40, 40)).save(upload)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 760})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(base)
            page.wait_for_function("document.querySelectorAll('#mode option').length === 3")
            page.evaluate(OBSERVER)

            page.set_input_files("#file", str(upload))
            page.wait_for_selector("#attached img")
            page.fill("#prompt", "a red square, described:")
            page.select_option("#mode", "text")
            page.fill("#max_new_tokens", "40")
            page.fill("#seed", "7")
            page.fill("#temperature", "1.0")
            page.click("#generate")
            page.wait_for_selector(".output[data-finished]", timeout=60_000)
            text_states = page.evaluate("window.seen.map(s => s.text)")
            streamed = page.text_content(".output .text") or ""

            page.fill("#prompt", "a picture of a red square")
            page.select_option("#mode", "image")
            page.fill("#max_new_tokens", str(IMAGE_CODES + 1))
            page.check("#guidance")
            page.evaluate("window.seen = []")
            page.click("#generate")
            page.wait_for_selector(".output:nth-child(1) img.final", timeout=60_000)
            page.wait_for_selector(".output:nth-child(1)[data-finished]")
            image_states = page.evaluate("window.seen")
            final = page.get_attribute(".output:nth-child(1) img.final", "src")
            page.screenshot(path=str(tmp_path / "serving.png"))
            outputs = page.locator(".output").count()

            # Stop: the request's row is freed long before its 400 tokens are done (at 10 ms a step)
            slow_down(served_pipe.model, monkeypatch)
            page.select_option("#mode", "text")
            page.fill("#max_new_tokens", "400")
            page.click("#generate")
            page.wait_for_selector(".output:nth-child(1) .text")
            page.click("#stop")
            page.wait_for_selector(".output:nth-child(1)[data-finished=stopped]")
            load = _wait_until_idle(base)
        finally:
            browser.close()
    assert not errors
    # the text arrived in pieces: several lengths were on the page before the last
    assert len(streamed) > 0 and len(set(text_states)) > 2 and max(text_states) == len(streamed)
    # the image: previews (faded, more codes each time) first, then the final image
    previews = [s for s in image_states if s["img"] == "preview" and s["codes"]]
    codes = [s["codes"] for s in previews]
    assert codes == sorted(codes) and len(set(codes)) >= 2 and set(codes) <= {16, 32, 48, 64}
    assert image_states.index(previews[0]) < next(i for i, s in enumerate(image_states) if s["img"] == "final")
    assert final.startswith("data:image/png;base64,")
    assert outputs == 2  # the session's outputs stay listed
    assert load["steps"] < 65 + 40 + 400  # the stopped request did not run to its end
    keep = os.environ.get("CHAMELEON_SCREENSHOT")
    if keep:
        shutil.copy(tmp_path / "serving.png", keep)
