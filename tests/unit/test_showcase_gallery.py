"""The gallery builder alone: every string escaped, the page's policy matching its style, the zip and the manifest."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import uuid
import zipfile
from datetime import UTC, datetime

from PIL import Image

from atelier.tools.showcase.gallery import PAGE_CSP, GalleryImage, build_gallery, image_name
from atelier.tools.showcase.models import Showcase, ShowcaseItem

EVIL = '<script>alert(1)</script>"\'&<img src=x onerror=alert(2)>'
WHEN = datetime(2026, 5, 1, 12, 30, tzinfo=UTC)


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (40, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def _showcase(items: list[ShowcaseItem]) -> Showcase:
    return Showcase(id=uuid.UUID("12345678-1234-4234-8234-123456789abc"), owner="ana", thread="t", turn="1",
                    brief=EVIL, status="building", items=items, created_at=WHEN, updated_at=WHEN)


def _item(number: int, **changes: object) -> ShowcaseItem:
    values: dict[str, object] = {"number": number, "purpose": EVIL, "subject": EVIL, "notes": EVIL,
                                 "workflow": "txt2img", "prompt": EVIL, "negative": EVIL, "seed": 7,
                                 "job_id": str(uuid.uuid4()), "status": "succeeded", "caption": EVIL,
                                 "marketing_copy": EVIL, "copy_by": "model"}
    return ShowcaseItem.model_validate({**values, **changes})


def test_every_string_is_escaped_and_only_data_images_are_embedded() -> None:
    items = [_item(1), _item(2, status="failed", error=EVIL, job_id=None)]
    gallery = build_gallery(_showcase(items), items, {1: GalleryImage(_png((200, 100, 50)), "image/png")},
                            status="partial", headline=EVIL, note=EVIL, made_at=WHEN)
    page = gallery.page
    assert "<script>" not in page and "<img src=x" not in page and "onerror=alert(2)>" not in page
    assert page.count("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;") >= 10
    assert re.findall(r'<img src="([^"]{0,22})', page) == ["data:image/png;base64,"]
    assert "Image 2 (&lt;script&gt;" in page and "was not made: &lt;script&gt;" in page
    assert "made by Atelier on 2026-05-01 12:30 UTC" in page
    assert gallery.manifest["brief"] == EVIL and gallery.manifest["status"] == "partial"
    assert [item["image"] for item in gallery.manifest["items"]] == ["images/01-script-alert-1-script-im.png",
                                                                     None]


def test_the_policy_allows_exactly_the_pages_style_block() -> None:
    items = [_item(1, purpose="hero")]
    page = build_gallery(_showcase(items), items, {1: GalleryImage(_png((1, 2, 3)), "image/png")}, status="ready",
                         headline="h", note="", made_at=WHEN).page
    style = re.search(r"<style>(.*?)</style>", page, re.S)
    assert style is not None
    digest = base64.b64encode(hashlib.sha256(style.group(1).encode()).digest()).decode()
    assert f"style-src 'sha256-{digest}'" in PAGE_CSP and "script-src" not in PAGE_CSP
    assert PAGE_CSP.startswith("default-src 'none'; img-src data:;")
    assert f'content="{PAGE_CSP.replace(chr(39), "&#x27;")}"' in page, "the page carries its own policy"


def test_the_zip_holds_the_page_the_manifest_and_the_image_files_as_made() -> None:
    hero, detail = _png((10, 20, 30), (64, 48)), _png((90, 80, 70))
    items = [_item(1, purpose="Hero shot"), _item(2, purpose="detail"), _item(3, purpose="gone", status="timed out")]
    images = {1: GalleryImage(hero, "image/png"), 2: GalleryImage(detail, "image/png")}
    gallery = build_gallery(_showcase(items), items, images, status="partial", headline="h", note="n", made_at=WHEN)
    with zipfile.ZipFile(io.BytesIO(gallery.zip)) as zipped:
        assert zipped.namelist() == ["index.html", "manifest.json", "images/01-hero-shot.png", "images/02-detail.png"]
        assert zipped.read("images/01-hero-shot.png") == hero and zipped.read("index.html").decode() == gallery.page
        assert json.loads(zipped.read("manifest.json")) == gallery.manifest
    first = gallery.manifest["items"][0]
    assert (first["width"], first["height"], first["content_type"]) == (64, 48, "image/png")
    assert gallery.manifest["files"]["images"] == ["images/01-hero-shot.png", "images/02-detail.png"]


def test_an_image_of_another_type_or_unreadable_is_left_out_and_named_missing() -> None:
    items = [_item(1, purpose="hero"), _item(2, purpose="svg")]
    images = {1: GalleryImage(b"not an image", "image/png"),
              2: GalleryImage(b"<svg onload=alert(1)></svg>", "image/svg+xml")}
    gallery = build_gallery(_showcase(items), items, images, status="failed", headline="h", note="", made_at=WHEN)
    assert "<img" not in gallery.page and "svg+xml" not in gallery.page
    assert [item.image for item in gallery.items] == [None, None]
    assert image_name(_item(4, purpose="../../etc"), "image/jpeg") == "images/04-etc.jpg"
