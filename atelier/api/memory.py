"""`GET /memory/documents` and `GET /memory/images`: the caller's memory (plus shared items) through the job API.

The job API opens the same memory as every other process (pgvector in the shared database, or the Qdrant server)
and runs the memory indexer beside it, so images made through the API are found here and everywhere else. Searches
act for the authenticated caller only: the owner is never a parameter.
"""

# No `from __future__ import annotations`: FastAPI reads these annotations at runtime (see jobs.py).
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request

from atelier.tools.accounts.models import Principal
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.records import DocumentHit, ImageHit
from atelier.tools.memory.store import MemoryStore, MemoryUnavailableError
from atelier.tools.settings import Settings
from atelier.tools.toolkit import (
    SearchDocumentsArgs,
    SearchImagesArgs,
    ToolContext,
    search_documents,
    search_images,
)

__all__ = ["add_memory_routes"]


def _context(request: Request, principal: Principal, settings: Settings,
             ledger: Callable[[Request], LedgerService]) -> ToolContext:
    """The toolkit's context for this caller, or MemoryUnavailableError saying why this process has no memory."""
    memory: MemoryStore | None = getattr(request.app.state, "memory", None)
    if memory is None:
        problem = getattr(request.app.state, "memory_problem", None) or "the memory is not open in this process"
        raise MemoryUnavailableError(problem)
    return ToolContext(settings=settings, ledger=ledger(request), owner=principal.user_id, memory=memory)


def add_memory_routes(api: FastAPI, settings: Settings, ledger: Callable[[Request], LedgerService],
                      caller: Callable[..., Any],
                      errors: Callable[..., dict[int | str, dict[str, Any]]]) -> None:
    """Add the two memory searches (any authenticated caller; each sees their own items and shared ones)."""
    Caller = Annotated[Principal, Depends(caller)]

    @api.get("/memory/documents", response_model=list[DocumentHit], tags=["memory"], summary="Search your documents",
             responses=errors(400, 401, 503))
    async def documents(request: Request, principal: Caller,
                        q: Annotated[str, Query(min_length=1, max_length=2000, description="The question.")],
                        k: Annotated[int, Query(ge=1, le=50)] = 5) -> list[DocumentHit]:
        """Passages from the caller's (and shared) ingested documents, best first, with their sources."""
        return await search_documents(_context(request, principal, settings, ledger), SearchDocumentsArgs(query=q, k=k))

    @api.get("/memory/images", response_model=list[ImageHit], tags=["memory"], summary="Search your earlier images",
             responses=errors(400, 401, 503))
    async def images(request: Request, principal: Caller,
                     q: Annotated[str, Query(min_length=1, max_length=2000, description="What the image shows.")],
                     k: Annotated[int, Query(ge=1, le=50)] = 8,
                     workflow: Annotated[str | None, Query(max_length=200)] = None,
                     min_rating: Annotated[int | None, Query(ge=1, le=5)] = None) -> list[ImageHit]:
        """The caller's (and shared) images closest to the query, optionally by workflow and minimum rating."""
        args = SearchImagesArgs(query=q, k=k, workflow=workflow, min_rating=min_rating)
        return await search_images(_context(request, principal, settings, ledger), args)

