"""tools/vision.py on the fake Ollama: the wire format, shrinking, images refused before any call, typed failures."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from atelier.tools.catalog import list_templates
from atelier.tools.schemas import MAX_PROMPT_CHARS
from atelier.tools.settings import Settings, load_settings
from atelier.tools.vision import (
    CAPTION_PROMPT,
    MAX_CAPTION_CHARS,
    NOT_CONFIGURED,
    VisionImageError,
    VisionModelError,
    VisionNotConfiguredError,
    VisionUnavailableError,
    caption_image,
    caption_or_skip,
    prompt_with_caption,
    vision_status,
    why_not_captioned,
)
from tests.fakes.ollama_server import FakeOllama


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    """A fresh fake Ollama (llama3.2, llava, two embedding models)."""
    with FakeOllama() as server:
        yield server


def settings_for(fake: FakeOllama | str, model: str | None = "llava", **more: Any) -> Settings:
    """Settings pointing at the fake (or a URL) with this vision model."""
    url = fake if isinstance(fake, str) else fake.url
    return load_settings(ollama_url=url, vision_model=model, **more)


def png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    """A PNG of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims `width`×`height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 256))
            + chunk(b"IEND", b""))


def chats(fake: FakeOllama) -> list[dict[str, Any]]:
    """The /api/chat bodies the fake received."""
    return [body for method, path, body in fake.requests if (method, path) == ("POST", "/api/chat")]


def test_the_caption_goes_out_as_ollama_images_in_the_user_message(fake: FakeOllama) -> None:
    caption = caption_image(png((40, 20), (220, 30, 30)), settings_for(fake))
    assert caption.text == "A 40x20 image, mostly red." and caption.model == "llava"
    assert (caption.width, caption.height, caption.sent_width, caption.sent_height) == (40, 20, 40, 20)
    [body] = chats(fake)
    assert body["model"] == "llava" and body["stream"] is True and body["tools"] == []
    [message] = body["messages"]
    assert set(message) == {"role", "content", "images"} and message["role"] == "user"
    assert message["content"].strip() == CAPTION_PROMPT
    [image] = message["images"]
    with Image.open(io.BytesIO(base64.b64decode(image, validate=True))) as sent:
        assert sent.format == "PNG" and sent.size == (40, 20)


def test_a_big_photo_is_shrunk_before_it_is_sent(fake: FakeOllama) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (3000, 1500), (40, 70, 210)).save(buffer, "JPEG", quality=80)
    caption = caption_image(buffer.getvalue(), settings_for(fake))
    assert caption.text == "A 1024x512 image, mostly blue."  # the fake describes what it received
    assert (caption.width, caption.height, caption.sent_width, caption.sent_height) == (3000, 1500, 1024, 512)
    assert caption_image(png((800, 400), (40, 170, 60)), settings_for(fake), max_side=200).text == \
        "A 200x100 image, mostly green."


def test_the_exif_orientation_is_applied_before_the_model_looks(fake: FakeOllama) -> None:
    buffer = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise: the picture is taller than it is stored
    Image.new("RGB", (60, 30), (245, 140, 30)).save(buffer, "JPEG", exif=exif.tobytes())
    assert caption_image(buffer.getvalue(), settings_for(fake)).text == "A 30x60 image, mostly orange."


@pytest.mark.parametrize(("data", "words"), [
    (b"", "empty"),
    (b"GIF89a but not really an image", "not an image Pillow can read"),
    (png((64, 64), (1, 2, 3))[:60], "damaged image"),
    (bomb_png(100_000, 100_000), "decompression bomb"),
    (bomb_png(5_000, 5_000), "5000×5000 pixels, over the limit of 1,048,576 (ATELIER_MAX_IMAGE_PIXELS)"),
    (b"\x89PNG" + b"\0" * 3000, "over the limit of 2,048 (ATELIER_MAX_UPLOAD_BYTES)"),
], ids=["empty", "not-an-image", "cut-short", "pillow-bomb", "over-our-pixels", "over-our-bytes"])
def test_bad_images_are_refused_before_any_call(fake: FakeOllama, data: bytes, words: str) -> None:
    settings = settings_for(fake, max_image_pixels=1024 * 1024, max_upload_bytes=2048)
    with pytest.raises(VisionImageError) as refused:
        caption_image(data, settings)
    assert words in str(refused.value)
    skipped = caption_or_skip(data, settings)
    assert skipped.caption is None and words in str(skipped.skipped) and not skipped.unavailable
    assert fake.requests == []  # nothing reached Ollama


def test_without_a_vision_model_nothing_is_sent_and_the_reason_is_plain(fake: FakeOllama) -> None:
    settings = settings_for(fake, model=None)
    with pytest.raises(VisionNotConfiguredError, match=r"ATELIER_VISION_MODEL is not set.*ollama pull llava"):
        caption_image(png((8, 8), (0, 0, 0)), settings)
    attempt = caption_or_skip(png((8, 8), (0, 0, 0)), settings)
    assert attempt.caption is None and attempt.skipped == NOT_CONFIGURED == "ATELIER_VISION_MODEL is not set"
    assert attempt.record() == {"skipped": NOT_CONFIGURED}
    assert fake.requests == []


def test_each_failure_names_its_fix(fake: FakeOllama, closed_port_url: str) -> None:
    image = png((16, 16), (220, 30, 30))
    with pytest.raises(VisionModelError, match=r"not pulled.*`ollama pull moondream`"):
        caption_image(image, settings_for(fake, "moondream"))
    with pytest.raises(VisionModelError, match=r"'llama3.2' cannot see images.*llava"):
        caption_image(image, settings_for(fake, "llama3.2"))  # the fake answers as llama-server does: HTTP 500
    with pytest.raises(VisionModelError, match="cannot see images"):
        caption_image(image, settings_for(fake, "all-minilm"))  # an embedding model does not chat
    with pytest.raises(VisionUnavailableError, match=r"unreachable.*ollama serve"):
        caption_image(image, settings_for(closed_port_url))
    fake.script("llava", [{"error": "llama runner process has terminated", "status": 500}, "   "])
    with pytest.raises(VisionUnavailableError, match="HTTP 500: llama runner process has terminated"):
        caption_image(image, settings_for(fake))
    with pytest.raises(VisionModelError, match="answered with no caption"):
        caption_image(image, settings_for(fake))
    down = caption_or_skip(image, settings_for(closed_port_url))
    assert down.unavailable and "unreachable" in str(down.skipped)
    assert caption_or_skip(image, settings_for(fake, "llama3.2")).unavailable is False


def test_a_model_slower_than_the_timeout_is_given_up(fake: FakeOllama) -> None:
    fake.pause()  # the request is held before the model answers
    try:
        with pytest.raises(VisionUnavailableError, match=r"did not answer within 0.5 s"):
            caption_image(png((16, 16), (220, 30, 30)), settings_for(fake), timeout_seconds=0.5)
    finally:
        fake.resume()


def test_a_rambling_caption_is_cut_to_one_line(fake: FakeOllama) -> None:
    fake.script("llava", ["A lighthouse\n\non a cliff,   " + "with waves " * 200])
    text = caption_image(png((16, 16), (255, 255, 255)), settings_for(fake)).text
    assert "\n" not in text and "  " not in text and len(text) <= MAX_CAPTION_CHARS + 1 and text.endswith("…")
    assert text.startswith("A lighthouse on a cliff, with waves")


@pytest.mark.asyncio
async def test_the_status_says_set_pulled_and_able_to_see(fake: FakeOllama, closed_port_url: str) -> None:
    unset = await vision_status(settings_for(fake, None))
    assert not unset.configured and not unset.ready and "ATELIER_VISION_MODEL is not set" in unset.details[0]
    ready = await vision_status(settings_for(fake, "llava"))
    assert ready.ready and ready.capabilities == ["completion", "vision"] and "llava:latest" in ready.details[0]
    blind = await vision_status(settings_for(fake, "llama3.2:latest"))
    assert blind.pulled and not blind.ready and "cannot see images (capabilities: completion, tools)" in \
        str(blind.problem)
    missing = await vision_status(settings_for(fake, "moondream"))
    assert missing.configured and not missing.pulled and "`ollama pull moondream`" in str(missing.problem)
    down = await vision_status(settings_for(closed_port_url, "llava"))
    assert not down.reachable and "unreachable" in str(down.problem)


def test_the_caption_leads_an_img2img_prompt_and_is_left_out_where_it_does_not_help() -> None:
    assert prompt_with_caption("A red fox on snow.", "the same scene at night") == \
        "A red fox on snow, the same scene at night"
    assert prompt_with_caption(None, "the same scene at night") == "the same scene at night"
    long_instruction = "x" * (MAX_PROMPT_CHARS - 5)
    assert prompt_with_caption("A red fox on snow.", long_instruction) == long_instruction  # both would not fit
    shipped = {t.name: t for t in list_templates(load_settings().workflow_dirs).templates}
    assert why_not_captioned(shipped["img2img"]) is None
    assert why_not_captioned(shipped["upscale"]) == "workflow 'upscale' takes no prompt"
    assert "edits from an instruction" in str(why_not_captioned(shipped["qwen-image-edit"]))
