"""Attacks on the drop zone (`atelier watch DIR`): what someone who can write into the inbox can make it read.

Covers: a link dropped as a prompt or image (never followed), a sidecar prompt that is a link to a private file
(never read), an oversized prompt (read bounded, refused), a decompression bomb (refused before it is decoded),
and that input images end up in the inputs store under their hash, not as paths into the drop folder.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from PIL import Image

from atelier.tools.intake.dropzone import DropZone, DropZoneOptions
from atelier.tools.ledger.service import LedgerService

pytestmark = pytest.mark.asyncio


def _png(size: tuple[int, int] = (64, 64), mode: str = "RGB") -> bytes:
    """A small real PNG (or a large, highly compressible one)."""
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, format="PNG")
    return buffer.getvalue()


async def _settle(zone: DropZone) -> None:
    """Two scans: the first sees each file, the second takes the stable ones."""
    await zone.scan()
    await zone.scan()


async def test_links_bounded_reads_and_bombs(local_svc: LedgerService, tmp_path: Path) -> None:
    secret = tmp_path / "private-notes.txt"
    secret.write_text("the owner's private notes")
    root = tmp_path / "drop"
    zone = DropZone(root, local_svc, DropZoneOptions(stable_seconds=0))
    zone.prepare()
    inbox = root / "inbox"
    # A link dropped as a prompt, and as an image: never taken.
    os.symlink(secret, inbox / "txt2img" / "link.txt")
    os.symlink(secret, inbox / "img2img" / "link.png")
    # An image whose sidecar prompt is a link to the private file: the image goes, the link is not read.
    (inbox / "img2img" / "photo.png").write_bytes(_png())
    os.symlink(secret, inbox / "img2img" / "photo.txt")
    # A prompt far longer than a prompt, and a decompression bomb (81 megapixels of one colour, a few KB).
    (inbox / "txt2img" / "huge.txt").write_text("a fox " * 20_000)
    (inbox / "upscale" / "bomb.png").write_bytes(_png((9000, 9000), mode="1"))
    await _settle(zone)

    assert (inbox / "txt2img" / "link.txt").is_symlink() and (inbox / "img2img" / "link.png").is_symlink()
    failed = {p.name: p.read_text() for p in (root / "failed").rglob("*.error.txt")}
    assert "over 65,536 bytes" in failed["huge.txt.error.txt"]
    assert "pixels, over the limit" in failed["bomb.png.error.txt"] and "ATELIER_MAX_IMAGE_PIXELS" in \
        failed["bomb.png.error.txt"]
    jobs = await local_svc.list_jobs()
    assert len(jobs) == 1, [j.params for j in jobs]
    (photo,) = jobs
    assert "private notes" not in photo.params["prompt"]
    stored = local_svc.settings.data_dir / "inputs" / photo.params["input_image"]
    assert stored.is_file() and stored.read_bytes() == _png()
    assert not any("private" in p.read_text(errors="ignore") for p in (root / "processing").rglob("*")
                   if p.is_file() and not p.is_symlink())
