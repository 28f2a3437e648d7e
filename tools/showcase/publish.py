"""Make a showcase's gallery from its finished images and keep it: page and zip in the output store, the manifest
and the outcome in its row. Safe to run again (the same keys are overwritten, the row updated)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from atelier.tools.errors import AtelierError
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import OutputStoreError
from atelier.tools.showcase.gallery import Gallery, GalleryImage, build_gallery
from atelier.tools.showcase.models import Showcase, ShowcaseGoneError, ShowcaseItem, ShowcaseNotReadyError
from atelier.tools.showcase.store import ShowcaseStore

__all__ = ["gallery_file", "gallery_keys", "publish_gallery"]


def gallery_keys(showcase: Showcase) -> tuple[str, str]:
    """The output-store keys of a showcase's page and zip."""
    return f"showcases/{showcase.id}/index.html", f"showcases/{showcase.id}/showcase-{str(showcase.id)[:8]}.zip"


async def _images(ledger: LedgerService, showcase: Showcase,
                  items: list[ShowcaseItem]) -> tuple[dict[int, GalleryImage], list[ShowcaseItem]]:
    """The first image of every item's finished job (as the showcase's owner); items whose image cannot be read
    back get that reason as their error."""
    images: dict[int, GalleryImage] = {}
    checked = []
    for item in items:
        if item.made and item.job_id is not None:
            try:
                found = await ledger.image(item.job_id, 0, owner=showcase.owner)
            except AtelierError as exc:
                item = item.model_copy(update={"error": f"its image could not be read back: {exc}"})
            else:
                images[item.number] = GalleryImage(found.data, found.content_type)
        checked.append(item)
    return images, checked


async def publish_gallery(ledger: LedgerService, store: ShowcaseStore, showcase: Showcase, items: list[ShowcaseItem], *,
                          headline: str, note: str) -> tuple[Showcase, Gallery]:
    """Build the page, manifest and zip; store page and zip; record the outcome (ready, partial or failed)."""
    images, checked = await _images(ledger, showcase, items)
    status = "ready" if len(images) == len(checked) and checked else "failed" if not images else "partial"
    gallery = await asyncio.to_thread(build_gallery, showcase, checked, images, status=status, headline=headline,
                                      note=note, made_at=datetime.now(UTC))
    page_key, zip_key = gallery_keys(showcase)
    page = await asyncio.to_thread(ledger.store.put, page_key, gallery.page.encode(), "text/html; charset=utf-8")
    archive = await asyncio.to_thread(ledger.store.put, zip_key, gallery.zip, "application/zip")
    finished = await store.finish(showcase.id, status=status, items=gallery.items, manifest=gallery.manifest,
                                  page_uri=page.uri, zip_uri=archive.uri, note=note)
    return finished, gallery


async def gallery_file(ledger: LedgerService, showcase: Showcase, which: str) -> bytes:
    """The stored page (`which` = "page") or zip ("zip") of a finished showcase.

    ShowcaseNotReadyError (saying how far it is) before the gallery is made; ShowcaseGoneError when the output store
    cannot give the file back.
    """
    uri = showcase.page_uri if which == "page" else showcase.zip_uri
    if not showcase.finished or uri is None:
        where = (showcase.progress or {}).get("message") or "in progress"
        raise ShowcaseNotReadyError(
            f"showcase {showcase.id} has no gallery yet: it is {showcase.status} ({where}); ask again when "
            f"GET /showcases/{showcase.id} says ready, partial or failed")
    try:
        return await asyncio.to_thread(ledger.store.read, uri)
    except OutputStoreError as exc:
        raise ShowcaseGoneError(f"the gallery of showcase {showcase.id} is no longer in the output store ({exc}); "
                                "run the showcase again") from exc
