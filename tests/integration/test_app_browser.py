"""The Gradio page in headless Chromium: services table from the doctor, and a generation with its image."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fakes.comfyui_server import FakeComfyUI

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path(os.environ.get("ATELIER_SCREENSHOTS", "/tmp/atelier-screenshots"))

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not CHROMIUM.exists():
    if os.environ.get("CI"):
        raise RuntimeError("CI must install Debian's chromium (see .ci/run)")
    pytest.skip("Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def page_url(fake_comfy: FakeComfyUI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("COMFYUI_URLS", fake_comfy.url)
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("OLLAMA_URL", "http://127.0.0.1:9")
    monkeypatch.chdir(tmp_path)
    import app
    from tools.settings import load_settings

    settings = load_settings()
    settings.outputs.mkdir(parents=True)
    port = _free_port()
    blocks = app.build_app(settings)
    blocks.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                          allowed_paths=[str(settings.outputs)])
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        blocks.close()


def test_services_and_generation_in_the_browser(page_url: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(page_url)
        page.get_by_role("tab", name="Services").click()
        expect(page.get_by_text("0.3.64").first).to_be_visible(timeout=20_000)
        expect(page.get_by_text("Ollama").first).to_be_visible()
        page.screenshot(path=str(SHOTS / "services.png"), full_page=True)

        page.get_by_role("tab", name="Generate").click()
        page.get_by_label("Prompt").fill("a red fox in snow, watercolor")
        page.get_by_label("Seed (empty = random)").fill("42")
        page.get_by_role("button", name="Generate").click()
        expect(page.get_by_text("seed 42").first).to_be_visible(timeout=30_000)
        gallery_image = page.locator("img[src*='.png']").first
        expect(gallery_image).to_be_visible(timeout=10_000)
        width = gallery_image.evaluate("img => img.naturalWidth")
        assert width == 512
        page.screenshot(path=str(SHOTS / "generate.png"), full_page=True)
        browser.close()
