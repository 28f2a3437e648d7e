"""A product showcase in headless Chromium, on the real chat server with the fake ComfyUI and fake Ollama: make one
from the Gallery tab (approval, progress, the finished gallery with captions and downloads), then open its page from
the job API and check it renders under its Content-Security-Policy. Screenshots go to tests/artifacts/; the gallery
page's is also the README's (docs/images/showcase-gallery.png) when ATELIER_UPDATE_DOCS_IMAGES=1.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.chat_server import ServerThread, chat_settings
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.showcases import COPY, PLAN

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(os.environ.get("ATELIER_SCREENSHOTS", Path(__file__).resolve().parents[1] / "artifacts"))
DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "showcase-gallery.png"
LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]
BRIEF = "Our hand-hammered copper espresso cup & saucer — a spring catalogue page for café owners"

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium (see .ci/run)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright."""
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


def test_a_showcase_made_in_the_gallery_tab_and_its_page(
    browser: Any, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, embedded_pg_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    fake_comfy.step_seconds = 0.05
    fake_ollama.script("llama3.2", [json.dumps(PLAN), json.dumps(COPY)])
    settings = chat_settings(tmp_path, fake_comfy.url, fake_ollama.url, embedded_pg_url)
    with ServerThread(settings, embedded_pg_url) as url:
        page = browser.new_page(viewport={"width": 1366, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Gallery").click()
        page.locator("#showcase-brief textarea").fill(BRIEF)
        page.locator("#showcase-make").click()
        approval = page.locator("#showcase-status")
        expect(approval.get_by_text("Generate these images?", exact=False)).to_be_visible(timeout=30_000)
        expect(approval.locator("li")).to_have_count(4)
        page.screenshot(path=str(SHOTS / "showcase-1-approval.png"), full_page=True)
        page.locator("#showcase-approval").get_by_role("button", name="Approve").click()
        expect(approval.get_by_text("The showcase is made (ready)", exact=False)).to_be_visible(timeout=120_000)
        header = page.locator("#showcase-header")
        expect(header.get_by_role("heading", name=COPY["headline"])).to_be_visible()
        expect(header.get_by_text(BRIEF)).to_be_visible()
        shots = page.locator("#showcase-gallery")
        expect(shots.get_by_text("Morning ritual", exact=False)).to_be_visible(timeout=30_000)
        expect(page.locator("#showcase-files").get_by_text(".zip", exact=False)).to_be_visible()
        page.screenshot(path=str(SHOTS / "showcase-2-gallery-tab.png"), full_page=True)

        listed = page.request.get(f"{url}api/showcases").json()
        assert [s["status"] for s in listed] == ["ready"] and listed[0]["brief"] == BRIEF
        violations: list[str] = []
        gallery = browser.new_page(viewport={"width": 1280, "height": 900})
        gallery.on("console", lambda message: violations.append(message.text) if message.type == "error" else None)
        answer = gallery.goto(f"{url}api/showcases/{listed[0]['id']}/page")
        assert answer is not None and answer.ok and "sandbox" in answer.headers["content-security-policy"]
        pictures = gallery.locator("article img")
        expect(pictures).to_have_count(4)
        assert all(pictures.nth(i).evaluate("img => img.complete && img.naturalWidth > 0") for i in range(4))
        expect(gallery.get_by_role("heading", name=COPY["headline"])).to_be_visible()
        expect(gallery.get_by_text(BRIEF)).to_be_visible()
        # The style block ran under the policy (its hash), so the page looks as designed.
        assert gallery.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(250, 248, 245)"
        assert violations == [], violations
        gallery.locator("details").first.evaluate("details => { details.open = true; }")  # how the hero was made
        gallery.screenshot(path=str(SHOTS / "showcase-3-page.png"), full_page=True)
        if os.environ.get("ATELIER_UPDATE_DOCS_IMAGES") == "1":
            DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(SHOTS / "showcase-3-page.png", DOCS_IMAGE)
        gallery.close()
        page.close()
