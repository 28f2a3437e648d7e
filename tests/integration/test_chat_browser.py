"""The chat in headless Chromium, on the real server with the fake ComfyUI and fake Ollama on loopback.

Ask a plain question and read the streamed answer; ask for a picture and watch its progress, then the image;
approve a costly plan; rate an image and find it in the gallery; see the clear message when ComfyUI is down.
Screenshots of each state go to tests/artifacts/ (not committed).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.chat_server import ServerThread, chat_settings
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(os.environ.get("ATELIER_SCREENSHOTS", Path(__file__).resolve().parents[1] / "artifacts"))
LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update"]

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


def _say(page: Any, text: str) -> None:
    box = page.locator("#message textarea")
    box.fill(text)
    box.press("Enter")


def test_chat_answers_illustrates_asks_approval_and_rates(
    browser: Any, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, embedded_pg_url: str, tmp_path: Path
) -> None:
    """On the embedded PostgreSQL: the gallery searches the memory, which needs its pgvector."""
    from playwright.sync_api import expect

    fake_comfy.step_seconds = 0.25
    fake_ollama.script("llama3.2", [
        "Sage green suits a calm kitchen: it pairs with wood and brass.",
        json.dumps({"briefs": [
            {"purpose": "hero", "subject": "a ceramic teapot on linen"},
            {"purpose": "lifestyle", "subject": "the teapot on a breakfast table"},
            {"purpose": "detail", "subject": "the teapot's glaze"},
            {"purpose": "thumbnail", "subject": "the teapot"},
        ]}),
    ])
    settings = chat_settings(tmp_path, fake_comfy.url, fake_ollama.url, embedded_pg_url)
    with ServerThread(settings, embedded_pg_url) as url:
        page = browser.new_page(viewport={"width": 1366, "height": 1000})
        page.goto(url)
        chat = page.locator("#chat")

        _say(page, "Which colours go well with a sage green kitchen?")
        expect(chat.get_by_text("Sage green suits a calm kitchen", exact=False)).to_be_visible(timeout=30_000)
        page.screenshot(path=str(SHOTS / "chat-1-answer.png"), full_page=True)

        _say(page, "draw a lighthouse at dusk")
        expect(chat.get_by_text("step", exact=False).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(SHOTS / "chat-2-progress.png"), full_page=True)
        expect(chat.get_by_text("Done:", exact=False).first).to_be_visible(timeout=60_000)
        image = chat.locator("img").last
        expect(image).to_be_visible(timeout=10_000)
        image.evaluate("img => img.complete || new Promise(done => img.addEventListener('load', done, {once: true}))")
        assert image.evaluate("img => img.naturalWidth") > 0
        page.screenshot(path=str(SHOTS / "chat-3-image.png"), full_page=True)

        _say(page, "Plan a product shoot for our teapot: hero, lifestyle, detail and thumbnail images")
        approval = page.locator("#approval")
        expect(approval.get_by_text("Generate these images?", exact=False)).to_be_visible(timeout=30_000)
        page.screenshot(path=str(SHOTS / "chat-4-approval.png"), full_page=True)
        approval.get_by_role("button", name="Approve").click()
        expect(chat.get_by_text("Rendering", exact=False).first).to_be_visible(timeout=30_000)
        expect(chat.get_by_text("Done:", exact=False)).to_have_count(5, timeout=120_000)
        page.screenshot(path=str(SHOTS / "chat-5-approved.png"), full_page=True)

        # Rate the lighthouse 5 stars from the chat, then find it in the gallery.
        lighthouse = chat.get_by_test_id("bot").filter(has_text="Done:").filter(has_text="lighthouse")
        buttons = lighthouse.locator("xpath=ancestor::div[contains(@class, 'message-row')][1]"
                                     "/following-sibling::div[contains(@class, 'message-buttons')][1]")
        buttons.hover()
        _rate(buttons, "★5")
        expect(page.locator("#rating-note").get_by_text("★5", exact=False)).to_be_visible(timeout=15_000)
        page.get_by_role("tab", name="Gallery").click()
        page.get_by_label("Search your images").fill("lighthouse at dusk")
        page.get_by_role("button", name="Search").click()
        gallery = page.locator("#gallery")
        expect(gallery.get_by_role("button", name="Thumbnail 1 of")).to_contain_text("lighthouse at dusk",
                                                                                     timeout=30_000)
        expect(gallery.get_by_text("★5", exact=False)).to_have_count(1)
        page.screenshot(path=str(SHOTS / "chat-6-gallery.png"), full_page=True)
        page.close()


def _rate(buttons: Any, option: str) -> None:
    """Under a message: open the feedback flag menu and pick an option (★n), or click 'Like'/'Dislike'."""
    if option in {"Like", "Dislike"}:
        buttons.get_by_label(option, exact=True).click()
        return
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    # The menu closes when the chat re-renders under it (a late update, slower on a busy machine), so open it and
    # pick the option again until the click lands.
    choice = buttons.get_by_role("button", name=option, exact=True)
    for _attempt in range(8):
        try:
            buttons.hover()
            buttons.get_by_label("Feedback", exact=True).click(timeout=5_000)
            expect(choice).to_be_visible(timeout=3_000)
            choice.click(timeout=3_000)
            return
        except (AssertionError, PlaywrightTimeoutError):
            continue
    raise AssertionError(f"the feedback menu never let us pick {option}")


def test_services_down_are_said_in_the_page(
    browser: Any, closed_port_url: str, machine_pg_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    settings = chat_settings(tmp_path, closed_port_url, closed_port_url, machine_pg_url)  # nothing listens there
    with ServerThread(settings, machine_pg_url) as url:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url)
        banner = page.locator("#service-banner")
        expect(banner.get_by_text("ComfyUI is not reachable", exact=False)).to_be_visible(timeout=30_000)
        expect(banner.get_by_text("COMFYUI_URLS", exact=False)).to_be_visible()
        expect(banner.get_by_text("Ollama is not reachable", exact=False)).to_be_visible()
        expect(banner.get_by_text("ollama serve", exact=False)).to_be_visible()
        _say(page, "Which colours go well with a sage green kitchen?")
        expect(page.locator("#chat").get_by_text("ollama serve", exact=False)).to_be_visible(timeout=30_000)
        page.screenshot(path=str(SHOTS / "chat-services-down.png"), full_page=True)
        page.close()


def test_with_accounts_a_person_logs_in_with_an_api_key_and_sees_their_queue(
    browser: Any, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, machine_pg_url: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    from tests.integration.test_chat_accounts import _make_users, _settings

    settings = _settings(tmp_path, fake_comfy.url, fake_ollama.url, machine_pg_url)
    with ThreadPoolExecutor(1) as pool:  # Playwright's sync API holds this thread's event loop
        keys = pool.submit(_make_users, settings, machine_pg_url).result()
    with ServerThread(settings, machine_pg_url) as url:
        page = browser.new_page(viewport={"width": 1366, "height": 900})
        page.goto(url)
        expect(page.get_by_text("one of your API keys", exact=False)).to_be_visible(timeout=30_000)
        page.get_by_label("username").fill("ana")
        page.get_by_label("password").fill(keys["bo"])  # bo's key is not ana's
        page.get_by_role("button", name="Login").click()
        expect(page.get_by_text("Incorrect credentials", exact=False)).to_be_visible(timeout=10_000)
        page.screenshot(path=str(SHOTS / "chat-login-refused.png"), full_page=True)
        page.get_by_label("username").fill("ana")  # a refused login clears the form
        page.get_by_label("password").fill(keys["ana"])
        page.get_by_role("button", name="Login").click()
        expect(page.locator("#message textarea")).to_be_visible(timeout=30_000)
        expect(page.locator("#signed-in")).to_contain_text("Signed in as ana", timeout=10_000)
        _say(page, "draw a paper boat on a pond")
        expect(page.locator("#chat").get_by_text("Done:", exact=False)).to_be_visible(timeout=60_000)
        page.get_by_role("tab", name="Queue").click()
        page.get_by_role("button", name="Refresh").click()
        expect(page.get_by_text("paper boat", exact=False).last).to_be_visible(timeout=10_000)
        page.screenshot(path=str(SHOTS / "chat-login-queue.png"), full_page=True)
        page.locator("#log-out").click()
        expect(page.get_by_role("button", name="Login")).to_be_visible(timeout=10_000)
        page.close()


def _choose(page: Any, field: str, option: str) -> None:
    """Pick the option that starts with `option` in the Gradio dropdown `field` (its elem_id)."""
    from playwright.sync_api import expect

    page.locator(f"#{field} input").click()
    choice = page.get_by_role("option").filter(has_text=option).first
    expect(choice).to_be_visible(timeout=10_000)
    choice.click()


def _settled(page: Any) -> None:
    """Wait until no component of the page shows a pending update (before a screenshot)."""
    from playwright.sync_api import expect

    expect(page.locator("[data-testid='status-tracker']:not(.hide)")).to_have_count(0, timeout=15_000)


def _type(page: Any, field: str, text: str) -> None:
    """Fill the Gradio text box `field` (its elem_id)."""
    page.locator(f"#{field} textarea, #{field} input").first.fill(text)


def test_the_prompts_tab_adds_renders_and_tests_prompts(
    browser: Any, fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, embedded_pg_url: str, tmp_path: Path
) -> None:
    """Add a prompt and a version, see a refusal keep the form, render, start an A/B test, read its report, stop
    it; what was typed (HTML too) is shown as text. On the embedded PostgreSQL (its pgvector opens the memory), so
    the page has no warning above it."""
    from playwright.sync_api import expect

    from tests.integration.test_chat_prompts import rated_arms

    settings = chat_settings(tmp_path, fake_comfy.url, fake_ollama.url, embedded_pg_url)
    shots = tmp_path / "shots"
    shots.mkdir()
    with ServerThread(settings, embedded_pg_url) as url:
        page = browser.new_page(viewport={"width": 1366, "height": 1000})
        page.goto(url)
        page.get_by_role("tab", name="Prompts").click()
        save_note = page.locator("#save-note")
        _type(page, "prompt-name", "hero")
        _type(page, "prompt-purpose", "hero")
        _type(page, "prompt-template", "{{ subject }}, <b>soft</b> light")
        _type(page, "prompt-defaults", "subject = a ceramic teapot")
        _type(page, "prompt-description", "<i>hero shots</i>")
        page.get_by_role("button", name="Save prompt").click()
        expect(save_note).to_contain_text("Saved hero@1", timeout=15_000)

        # A template that does not parse is refused in words; the form keeps what was typed.
        broken = "{{ subject }}, hard light, {{ lens "
        _type(page, "prompt-template", broken)
        page.get_by_role("button", name="Save prompt").click()
        expect(save_note).to_contain_text("Not saved. The prompt template is not valid Jinja2", timeout=15_000)
        expect(page.locator("#prompt-template textarea")).to_have_value(broken)
        _settled(page)
        page.screenshot(path=str(shots / "prompts-1-refused.png"), full_page=True)
        _type(page, "prompt-template", "{{ subject }}, hard light, 85mm")
        _type(page, "prompt-name", "<img src=x onerror=alert(1)>")
        page.get_by_role("button", name="Save prompt").click()
        expect(save_note).to_contain_text("Not saved. Name: '<img src=x onerror=alert(1)>' is not a valid prompt name",
                                          timeout=15_000)
        assert save_note.locator("img").count() == 0, "what was typed is shown as text, never as HTML"
        _type(page, "prompt-name", "hero")
        _type(page, "prompt-negative", "blurry")
        _type(page, "prompt-note", "harder light")
        page.get_by_role("button", name="Save prompt").click()
        expect(save_note).to_contain_text("Saved hero@2", timeout=15_000)
        library = page.locator("#prompt-library")
        soft = library.get_by_role("gridcell", name="{{ subject }}, <b>soft</b> light", exact=True)
        expect(soft).to_be_visible()
        assert library.locator("b", has_text="soft").count() == 0, "a template's HTML is shown, never rendered"

        _choose(page, "render-version", "hero@1")
        expect(page.locator("#render-values textarea")).to_have_value("subject = a ceramic teapot", timeout=10_000)
        _type(page, "render-values", "subject = a linen lamp")
        page.get_by_role("button", name="Render").click()
        expect(page.locator("#rendered textarea")).to_have_value("a linen lamp, <b>soft</b> light", timeout=15_000)
        expect(page.locator("#render-note")).to_contain_text("Rendered hero@1")

        _type(page, "ab-name", "light")
        _type(page, "ab-purpose", "hero")
        _choose(page, "ab-arm-a", "hero@1")
        _choose(page, "ab-arm-b", "hero@2")
        _type(page, "ab-min-ratings", "3")
        page.get_by_role("button", name="Start test").click()
        expect(page.locator("#ab-note")).to_contain_text("Started light: A: hero@1 (50%) · B: hero@2 (50%)",
                                                         timeout=15_000)
        expect(page.locator("#ab-tests").get_by_role("gridcell", name="running", exact=True)).to_be_visible()

        rated_arms(url, "light", {"A": 5, "B": 2}, per_arm=3)  # images made and rated through /api
        _choose(page, "ab-test", "light")
        page.get_by_role("button", name="Show report").click()
        expect(page.locator("#ab-verdict")).to_contain_text("Significant: A is better", timeout=15_000)
        expect(page.locator("#ab-arms").get_by_role("gridcell", name="3 (100%)", exact=True)).to_be_visible()
        page.get_by_role("button", name="Refresh").click()
        expect(library.get_by_role("gridcell", name="3/3", exact=True)).to_be_visible(timeout=15_000)
        _settled(page)
        page.screenshot(path=str(shots / "prompts-2-report.png"), full_page=True)

        page.get_by_role("button", name="Stop test").click()
        expect(page.locator("#ab-note")).to_contain_text("Stopped light; its report stays.", timeout=15_000)
        expect(page.locator("#ab-tests").get_by_role("gridcell", name="stopped", exact=True)).to_be_visible()
        expect(page.locator("#ab-verdict")).to_contain_text("light (stopped for purpose hero)")
        _settled(page)
        page.screenshot(path=str(shots / "prompts-3-stopped.png"), full_page=True)
        page.close()
