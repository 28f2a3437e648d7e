"""A showcase's gallery: a self-contained HTML page (images as data URIs), a manifest JSON and a zip of both plus the
image files. Pure functions over the items and the image bytes (no I/O); tools/showcase/publish.py stores them.

Every string on the page is escaped: briefs, subjects, prompts, captions and copy come from people and models, and
none of them may become markup. The page carries its own Content-Security-Policy (no scripts, no requests: images
only from data: URIs, the one style block by its hash), and the job API serves it with the same policy as a header.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape
from typing import Any

from PIL import Image, UnidentifiedImageError

from atelier.tools.showcase.models import Showcase, ShowcaseItem

__all__ = ["IMAGE_TYPES", "MANIFEST_SCHEMA", "PAGE_CSP", "Gallery", "GalleryImage", "build_gallery", "image_name",
           "render_page"]

MANIFEST_SCHEMA = "atelier.showcase/1"
# The only image types the page embeds (what ComfyUI's savers write), with the suffix their file gets in the zip.
IMAGE_TYPES: dict[str, str] = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}

_STYLE = """
:root{color-scheme:light;--ink:#1d1b19;--muted:#6b645c;--line:#e6e0d8;--paper:#faf8f5;--card:#fff;--accent:#8a5a2b}
*{box-sizing:border-box}
body{margin:0;font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--ink);
background:var(--paper)}
header{padding:48px 6vw 24px;border-bottom:1px solid var(--line);background:var(--card)}
header p.kicker{margin:0 0 8px;text-transform:uppercase;letter-spacing:.14em;font-size:12px;color:var(--accent)}
header h1{margin:0 0 12px;font-size:clamp(26px,4vw,42px);line-height:1.15;font-weight:650}
header p.brief{margin:0;max-width:70ch;color:var(--muted)}
p.note{margin:16px 0 0;padding:10px 14px;border-left:3px solid var(--accent);background:#fbf3ea;max-width:80ch}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:28px;padding:32px 6vw 48px}
article{background:var(--card);border:1px solid var(--line);border-radius:14px;overflow:hidden;display:flex;
flex-direction:column}
article img{display:block;width:100%;height:auto;aspect-ratio:auto;background:#eee}
article .missing{display:flex;align-items:center;justify-content:center;min-height:220px;padding:24px;
background:repeating-linear-gradient(45deg,#f3eee8,#f3eee8 10px,#ece5dc 10px,#ece5dc 20px);color:var(--muted);
text-align:center}
article .text{padding:18px 20px 20px}
article .purpose{margin:0 0 4px;text-transform:uppercase;letter-spacing:.12em;font-size:11px;color:var(--accent)}
article h2{margin:0 0 8px;font-size:20px;line-height:1.3}
article p.copy{margin:0 0 10px}
article p.meta{margin:0 0 10px;font-size:13px;color:var(--muted)}
details{font-size:13px;color:var(--muted)}
details summary{cursor:pointer}
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 12px;margin:10px 0 0}
dt{font-weight:600}
dd{margin:0;overflow-wrap:anywhere}
footer{padding:0 6vw 40px;color:var(--muted);font-size:13px}
""".strip()
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()
PAGE_CSP = (f"default-src 'none'; img-src data:; style-src 'sha256-{_STYLE_HASH}'; base-uri 'none'; "
            "form-action 'none'")
"""The page's policy (also sent by the job API, with frame-ancestors and sandbox, which a meta tag cannot carry)."""


@dataclass(frozen=True)
class GalleryImage:
    """The bytes of one item's image and their content type."""

    data: bytes
    content_type: str


@dataclass(frozen=True)
class Gallery:
    """What a showcase's gallery is made of: the page, the manifest (and its JSON) and the zip of all three."""

    page: str
    manifest: dict[str, Any]
    manifest_json: str
    zip: bytes
    items: list[ShowcaseItem]


def image_name(item: ShowcaseItem, content_type: str) -> str:
    """The image's file in the zip: images/NN-purpose.ext (the purpose reduced to a–z, 0–9 and hyphens)."""
    slug = re.sub(r"[^a-z0-9]+", "-", item.purpose.lower()).strip("-")[:24].strip("-") or "image"
    return f"images/{item.number:02d}-{slug}{IMAGE_TYPES[content_type]}"


def _size(data: bytes) -> tuple[int, int] | None:
    """An image's (width, height) from its header; None when Pillow cannot read it."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    return int(width), int(height)


def _placed(items: Sequence[ShowcaseItem], images: Mapping[int, GalleryImage]) -> list[ShowcaseItem]:
    """Items with their image file, type and size filled in (only for readable images of an allowed type)."""
    placed = []
    for item in items:
        image = images.get(item.number)
        size = _size(image.data) if image is not None and image.content_type in IMAGE_TYPES else None
        if image is None or size is None:
            placed.append(item.model_copy(update={"image": None, "content_type": None, "width": None,
                                                  "height": None}))
            continue
        placed.append(item.model_copy(update={"image": image_name(item, image.content_type),
                                              "content_type": image.content_type, "width": size[0],
                                              "height": size[1]}))
    return placed


def _manifest(showcase: Showcase, items: Sequence[ShowcaseItem], *, status: str, headline: str, note: str,
              made_at: datetime) -> dict[str, Any]:
    """The manifest: the showcase, its files and every item (how it was made, its caption and copy, its file)."""
    writers = {item.copy_by for item in items if item.made}
    return {
        "schema": MANIFEST_SCHEMA,
        "id": str(showcase.id),
        "brief": showcase.brief,
        "photo": showcase.photo,
        "status": status,
        "headline": headline,
        "copy_by": writers.pop() if len(writers) == 1 else ("mixed" if writers else ""),
        "note": note,
        "created_at": showcase.created_at.isoformat(),
        "made_at": made_at.isoformat(),
        "files": {"page": "index.html", "manifest": "manifest.json",
                  "images": [item.image for item in items if item.image]},
        "items": [item.model_dump(mode="json") for item in items],
    }


def _card(item: ShowcaseItem, image: GalleryImage | None) -> str:
    """One item's card: the image (or why there is none), its caption and copy, and how it was made."""
    if item.image and image is not None:
        data = base64.b64encode(image.data).decode()
        alt = escape(item.caption or item.subject)
        picture = (f'<img src="data:{escape(image.content_type)};base64,{data}" alt="{alt}" '
                   f'width="{item.width}" height="{item.height}">')
    else:
        why = item.error or f"the image is {item.status}"
        picture = (f'<div class="missing"><p>Image {item.number} ({escape(item.purpose)}) was not made: '
                   f"{escape(why)}</p></div>")
    rows = [("Purpose", item.purpose), ("Subject", item.subject), ("Notes", item.notes), ("Workflow", item.workflow),
            ("Seed", "" if item.seed is None else str(item.seed)), ("Prompt", item.prompt),
            ("Negative", item.negative or ""), ("Job", item.job_id or "not queued"), ("File", item.image or ""),
            ("Caption by", {"model": "the model", "brief": "the brief"}.get(item.copy_by, ""))]
    details = "".join(f"<dt>{escape(name)}</dt><dd>{escape(value)}</dd>" for name, value in rows if value)
    caption = escape(item.caption or item.subject)
    copy = f'<p class="copy">{escape(item.marketing_copy)}</p>' if item.marketing_copy else ""
    made = " · ".join([item.workflow, *([f"seed {item.seed}"] if item.seed is not None else [])])
    return (f'<article id="image-{item.number}">{picture}<div class="text">'
            f'<p class="purpose">{item.number:02d} · {escape(item.purpose)}</p><h2>{caption}</h2>{copy}'
            f'<p class="meta">{escape(made)}</p>'
            f"<details><summary>How it was made</summary><dl>{details}</dl></details></div></article>")


def _when(stamp: Any) -> str:
    """An ISO time as `YYYY-MM-DD HH:MM UTC` (as given when it is not one)."""
    try:
        moment = datetime.fromisoformat(str(stamp))
    except ValueError:
        return str(stamp or "")
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def render_page(manifest: Mapping[str, Any], items: Sequence[ShowcaseItem], images: Mapping[int, GalleryImage]) -> str:
    """The self-contained HTML page: header (headline, brief, note), one card per item, a footer."""
    headline = str(manifest.get("headline") or "Product showcase")
    note = str(manifest.get("note") or "")
    made = sum(1 for item in items if item.image)
    cards = "\n".join(_card(item, images.get(item.number) if item.image else None) for item in items)
    note_html = f'<p class="note">{escape(note)}</p>' if note else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{escape(PAGE_CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{escape(headline)}</title>
<style>{_STYLE}</style>
</head>
<body>
<header>
<p class="kicker">Product showcase · {made} of {len(items)} image(s)</p>
<h1>{escape(headline)}</h1>
<p class="brief">{escape(str(manifest.get("brief", "")))}</p>
{note_html}
</header>
<main>
{cards}
</main>
<footer>Showcase {escape(str(manifest.get("id", "")))} · made by Atelier on {escape(_when(manifest.get("made_at")))}
· manifest.json lists every image, its workflow, seed and prompt.</footer>
</body>
</html>
"""


def _zip(page: str, manifest_json: str, items: Sequence[ShowcaseItem], images: Mapping[int, GalleryImage],
         made_at: datetime) -> bytes:
    """The zip: index.html, manifest.json and images/NN-purpose.ext (images stored as they are: already packed)."""
    stamp = (max(made_at.year, 1980), made_at.month, made_at.day, made_at.hour, made_at.minute, made_at.second)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data, method in (("index.html", page.encode(), zipfile.ZIP_DEFLATED),
                                   ("manifest.json", manifest_json.encode(), zipfile.ZIP_DEFLATED)):
            archive.writestr(zipfile.ZipInfo(name, stamp), data, compress_type=method)
        for item in items:
            if item.image:
                archive.writestr(zipfile.ZipInfo(item.image, stamp), images[item.number].data,
                                 compress_type=zipfile.ZIP_STORED)
    return buffer.getvalue()


def build_gallery(showcase: Showcase, items: Sequence[ShowcaseItem], images: Mapping[int, GalleryImage], *,
                  status: str, headline: str, note: str, made_at: datetime) -> Gallery:
    """Page, manifest and zip for `items` (with captions) and the images made, by item number."""
    placed = _placed(items, images)
    manifest = _manifest(showcase, placed, status=status, headline=headline, note=note, made_at=made_at)
    manifest_json = json.dumps(manifest, ensure_ascii=False, indent=2)
    page = render_page(manifest, placed, images)
    return Gallery(page=page, manifest=manifest, manifest_json=manifest_json,
                   zip=_zip(page, manifest_json, placed, images, made_at), items=placed)
