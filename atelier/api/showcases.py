"""`GET /showcases` and one showcase's manifest, gallery page and zip (the showcase graph makes them).

A user sees only their own showcases: another owner's is a 404 in the same words as an unknown id (an admin may
open anyone's, as with jobs). The page is served with a Content-Security-Policy that allows no script, no request
and no framing (images come as data: URIs, the one style block by its hash) and as a sandboxed document, so even a
page made from a hostile brief can do nothing but show itself.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see jobs.py).
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from atelier.tools.accounts.models import Principal
from atelier.tools.ledger.service import LedgerService
from atelier.tools.showcase.gallery import PAGE_CSP
from atelier.tools.showcase.models import Showcase, ShowcaseItem
from atelier.tools.showcase.publish import gallery_file
from atelier.tools.showcase.store import ShowcaseStore

__all__ = ["PAGE_HEADERS", "SHOWCASE_ID_PATTERN", "ShowcaseSummary", "ShowcaseView", "add_showcase_routes"]

SHOWCASE_ID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
ShowcaseId = Annotated[str, Path(pattern=SHOWCASE_ID_PATTERN, examples=["7684338f-7b2b-4503-826b-dcbe7aaff77e"],
                                 description="The showcase's id.")]
PAGE_HEADERS = {
    "Content-Security-Policy": f"{PAGE_CSP}; frame-ancestors 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "private, no-cache",
}


class ShowcaseSummary(BaseModel):
    """A showcase in the list: how far it is and where its gallery is."""

    id: str
    status: str = Field(..., description="rendering, captioning, building; then ready, partial (images missing, "
                                         "named in the gallery) or failed (no image made).")
    brief: str
    images: int = Field(..., description="Images made so far.")
    planned: int = Field(..., description="Images planned.")
    progress: dict[str, Any] = Field(..., description="stage (images, captions, gallery, done), done, total, message.")
    created_at: str
    finished_at: str | None
    page: str | None = Field(None, description="The gallery page (once finished).")
    zip: str | None = Field(None, description="The zip: page, manifest and images (once finished).")

    @classmethod
    def of(cls, showcase: Showcase, base_url: str) -> "ShowcaseSummary":
        """Build from a row."""
        return cls(**_summary(showcase, base_url))


class ShowcaseView(ShowcaseSummary):
    """One showcase: the summary, every item and, once finished, the gallery's manifest."""

    headline: str
    note: str = Field(..., description="What did not go to plan (captions from the briefs, images not made).")
    photo: str | None = Field(None, description="The product photo every shot was made from, if any.")
    items: list[ShowcaseItem]
    manifest: dict[str, Any] | None = Field(None, description="The gallery's manifest.json (once finished).")

    @classmethod
    def of(cls, showcase: Showcase, base_url: str) -> "ShowcaseView":
        """Build from a row."""
        return cls(**_summary(showcase, base_url), headline=showcase.headline, note=showcase.note,
                   photo=showcase.photo, items=showcase.items, manifest=showcase.manifest)


def _summary(showcase: Showcase, base_url: str) -> dict[str, Any]:
    """The summary's fields of a row."""
    link = f"{base_url}/showcases/{showcase.id}"
    return {"id": str(showcase.id), "status": showcase.status, "brief": showcase.brief,
            "images": sum(1 for item in showcase.items if item.made), "planned": len(showcase.items),
            "progress": showcase.progress, "created_at": showcase.created_at.isoformat(),
            "finished_at": showcase.finished_at.isoformat() if showcase.finished_at else None,
            "page": f"{link}/page" if showcase.page_uri else None, "zip": f"{link}/zip" if showcase.zip_uri else None}


def add_showcase_routes(api: FastAPI, ledger: Callable[[Request], LedgerService], caller: Callable[..., Any],
                        errors: Callable[..., dict[int | str, dict[str, Any]]]) -> None:
    """Add the showcase routes (any authenticated caller, for their own showcases)."""
    Caller = Annotated[Principal, Depends(caller)]

    def base(request: Request) -> str:
        return str(request.base_url).rstrip("/")

    async def visible(request: Request, showcase_id: str, principal: Principal) -> Showcase:
        """A showcase the caller may see (another user's is answered as unknown)."""
        return await ShowcaseStore.for_service(ledger(request)).get(showcase_id, owner=principal.sees_only)

    @api.get("/showcases", response_model=list[ShowcaseSummary], tags=["showcases"],
             summary="Your showcases, newest first", responses=errors(401, 403, 422))
    async def showcases(request: Request, principal: Caller,
                        limit: Annotated[int, Query(ge=1, le=200)] = 50) -> list[ShowcaseSummary]:
        """The caller's showcases (run one with the `showcase` graph, the chat's Gallery tab or MCP's `showcase`)."""
        found = await ShowcaseStore.for_service(ledger(request)).recent(principal.user_id, limit)
        return [ShowcaseSummary.of(showcase, base(request)) for showcase in found]

    @api.get("/showcases/{showcase_id}", response_model=ShowcaseView, tags=["showcases"],
             summary="One showcase and its manifest", responses=errors(401, 403, 404, 422))
    async def showcase(showcase_id: ShowcaseId, request: Request, principal: Caller) -> ShowcaseView:
        """Status and progress, every image (workflow, seed, prompt, caption, copy) and the gallery's manifest."""
        return ShowcaseView.of(await visible(request, showcase_id, principal), base(request))

    @api.get("/showcases/{showcase_id}/page", tags=["showcases"], summary="The gallery page (HTML)",
             response_class=Response,
             responses={200: {"content": {"text/html": {"schema": {"type": "string"}}},
                              "description": "A self-contained page: images as data: URIs, no scripts"},
                        **errors(401, 403, 404, 409, 410, 422)})
    async def page(showcase_id: ShowcaseId, request: Request, principal: Caller) -> Response:
        """The gallery page, under a policy that lets it load and run nothing (409 until the gallery is made)."""
        found = await visible(request, showcase_id, principal)
        data = await gallery_file(ledger(request), found, "page")
        return Response(data, media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    @api.get("/showcases/{showcase_id}/zip", tags=["showcases"], summary="The gallery as a zip",
             response_class=Response,
             responses={200: {"content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
                              "description": "index.html, manifest.json and images/NN-purpose.png"},
                        **errors(401, 403, 404, 409, 410, 422)})
    async def archive(showcase_id: ShowcaseId, request: Request, principal: Caller) -> Response:
        """The page, the manifest and the image files in one zip (409 until the gallery is made)."""
        found = await visible(request, showcase_id, principal)
        data = await gallery_file(ledger(request), found, "zip")
        name = f"showcase-{str(found.id)[:8]}.zip"
        return Response(data, media_type="application/zip",
                        headers={"Content-Disposition": f'attachment; filename="{name}"',
                                 "X-Content-Type-Options": "nosniff"})
