"""Images into the memory: a record per job output, a caption when a vision model is set, a colour layout.

The colour layout is our own small descriptor (the image shrunk to 8×8, RGB, mean-centred): offline and
instant, it finds images that *look* alike (palette and composition) without a CLIP model, which would
need weights this stack cannot download. Meaning-level similarity uses the text vector (caption/prompt).
"""

from __future__ import annotations

import base64
import io
import logging
import math
import struct
import zlib

import httpx
from PIL import Image, UnidentifiedImageError

from atelier.tools.errors import AtelierError
from atelier.tools.ledger.models import Job
from atelier.tools.memory.records import ImageRecord
from atelier.tools.memory.store import PIXEL_DIM
from atelier.tools.settings import Settings

__all__ = ["CAPTION_PROMPT", "caption_image", "colour_layout", "records_for_job"]

log = logging.getLogger(__name__)

CAPTION_PROMPT = "Describe this image in one sentence: subject, style, colours and composition."


def colour_layout(data: bytes, *, max_pixels: int | None = None) -> list[float]:
    """A 192-number colour-layout vector of an image (8×8 RGB, mean-centred, unit length).

    AtelierError when the data is not an image, is damaged, or is a decompression bomb: more than
    `max_pixels` (or than Pillow's own limit) by its header, refused before its pixels are decoded.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            limits = [n for n in (max_pixels, Image.MAX_IMAGE_PIXELS) if n]
            if limits and width * height > min(limits):
                raise AtelierError(
                    f"a decompression bomb: {width}×{height} pixels, over the limit of {min(limits):,} "
                    "(ATELIER_MAX_IMAGE_PIXELS); its pixels are not read")
            small = image.convert("RGB").resize((8, 8), Image.Resampling.BOX)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise AtelierError(f"a decompression bomb ({exc}); its pixels are not read") from None
    except UnidentifiedImageError as exc:
        raise AtelierError(f"not an image Pillow can read ({exc}); use a PNG, JPEG or WebP file") from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, zlib.error) as exc:
        raise AtelierError(f"a damaged image ({exc or type(exc).__name__}); generate it again") from exc
    values = [channel / 255.0 for channel in small.tobytes()]
    mean = sum(values) / len(values)
    centred = [v - mean for v in values]
    norm = math.sqrt(sum(v * v for v in centred))
    if norm == 0:  # a flat image: a fixed direction keeps cosine defined
        return [1.0 / math.sqrt(PIXEL_DIM)] * PIXEL_DIM
    return [v / norm for v in centred]


def caption_image(settings: Settings, data: bytes, *, transport: httpx.BaseTransport | None = None) -> str | None:
    """A one-sentence caption from the Ollama vision model (ATELIER_VISION_MODEL); None when unset or failing."""
    if not settings.vision_model:
        return None
    body = {"model": settings.vision_model, "stream": False,
            "messages": [{"role": "user", "content": CAPTION_PROMPT,
                          "images": [base64.b64encode(data).decode()]}]}
    try:
        with httpx.Client(base_url=settings.ollama_url, timeout=settings.http_timeout_seconds,
                          transport=transport) as http:
            response = http.post("/api/chat", json=body)
            response.raise_for_status()
            text = str(response.json().get("message", {}).get("content", "")).strip()
    except (httpx.HTTPError, ValueError) as exc:
        log.warning("captioning with %s failed (%s); the prompt stands for the image", settings.vision_model, exc)
        return None
    return text or None


def records_for_job(job: Job, captions: list[str | None]) -> list[ImageRecord]:
    """One record per stored output of a succeeded job."""
    params = dict(job.params)
    return [
        ImageRecord(
            job_id=str(job.id), output_index=index, owner=job.owner, prompt=str(params.get("prompt", "")),
            negative=params.get("negative"), workflow=job.workflow.rsplit("/", 1)[-1], params=params,
            seed=params.get("seed"), uri=output.uri, rating=job.rating, thumb=job.thumb, tags=list(job.tags),
            caption=captions[index] if index < len(captions) else None,
            created_at=(job.finished_at or job.created_at).isoformat(),
        )
        for index, output in enumerate(job.outputs)
    ]
