"""Images into the memory: a record per job output, a caption when a vision model is set, a colour layout.

The colour layout is our own small descriptor (the image shrunk to 8×8, RGB, mean-centred): offline and
instant, it finds images that *look* alike (palette and composition) without a CLIP model, which would
need weights this stack cannot download. Meaning-level similarity uses the text vector (prompt and caption).
Captions come from tools/vision.py; a record without one says why (`caption_skipped`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from PIL import Image

from atelier.tools.ledger.models import Job
from atelier.tools.memory.records import ImageRecord
from atelier.tools.memory.store import PIXEL_DIM
from atelier.tools.vision import CaptionAttempt, open_image

__all__ = ["colour_layout", "records_for_job"]


def colour_layout(data: bytes, *, max_pixels: int | None = None) -> list[float]:
    """A 192-number colour-layout vector of an image (8×8 RGB, mean-centred, unit length).

    UnreadableImageError (an AtelierError) when the data is not an image, is damaged, or is a decompression bomb:
    more than `max_pixels` (or than Pillow's own limit) by its header, refused before its pixels are decoded
    (tools/vision.py's `open_image`, the guard the vision model's images pass too).
    """
    with open_image(data, max_pixels=max_pixels) as image:
        small = image.convert("RGB").resize((8, 8), Image.Resampling.BOX)
    values = [channel / 255.0 for channel in small.tobytes()]
    mean = sum(values) / len(values)
    centred = [v - mean for v in values]
    norm = math.sqrt(sum(v * v for v in centred))
    if norm == 0:  # a flat image: a fixed direction keeps cosine defined
        return [1.0 / math.sqrt(PIXEL_DIM)] * PIXEL_DIM
    return [v / norm for v in centred]


def records_for_job(job: Job, captions: Sequence[CaptionAttempt | None]) -> list[ImageRecord]:
    """One record per stored output of a succeeded job, with its caption or why it has none."""
    params = dict(job.params)
    records = []
    for index, output in enumerate(job.outputs):
        attempt = captions[index] if index < len(captions) else None
        caption = attempt.caption if attempt is not None else None
        records.append(ImageRecord(
            job_id=str(job.id), output_index=index, owner=job.owner, prompt=str(params.get("prompt", "")),
            negative=params.get("negative"), workflow=job.workflow.rsplit("/", 1)[-1], params=params,
            seed=params.get("seed"), uri=output.uri, rating=job.rating, thumb=job.thumb, tags=list(job.tags),
            caption=caption.text if caption is not None else None,
            caption_model=caption.model if caption is not None else None,
            caption_skipped=attempt.skipped if attempt is not None else None,
            created_at=(job.finished_at or job.created_at).isoformat(),
        ))
    return records
