"""The memory as tools: plain typed async functions with pydantic argument schemas, for agents and front ends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, Field, model_validator

from atelier.tools.errors import AtelierError
from atelier.tools.memory.images import colour_layout
from atelier.tools.memory.records import DocumentHit, ImageHit, image_point_id
from atelier.tools.memory.store import MemoryStore
from atelier.tools.memory.style import StyleProfile, build_profile
from atelier.tools.settings import Settings
from atelier.tools.vision import VisionNotConfiguredError, caption_image

if TYPE_CHECKING:
    from atelier.tools.ledger.service import LedgerService

__all__ = [
    "MemoryContext", "RateImageArgs", "RatingResult", "ReuseArgs", "ReuseSuggestion", "SearchDocumentsArgs",
    "SearchImagesArgs", "SimilarImagesArgs", "StyleProfileArgs", "rate_image", "search_documents", "search_images",
    "similar_images", "style_profile", "suggest_reuse",
]


@dataclass
class MemoryContext:
    """What the memory tools act on: the store, the ledger (for ratings) and the settings."""

    memory: MemoryStore
    settings: Settings
    ledger: LedgerService | None = None


class SearchDocumentsArgs(BaseModel):
    """Find passages in the ingested documents."""

    query: str = Field(..., min_length=1, description="The question or topic.")
    owner: str = Field(..., min_length=1, description="Whose documents (plus shared ones).")
    k: int = Field(5, ge=1, le=50, description="How many passages.")


class SearchImagesArgs(BaseModel):
    """Find earlier images by what they show."""

    query: str = Field(..., min_length=1, description="What the image should show.")
    owner: str = Field(..., min_length=1, description="Whose images (plus shared ones).")
    k: int = Field(8, ge=1, le=100)
    workflow: str | None = Field(None, description="Only images made by this workflow.")
    min_rating: int | None = Field(None, ge=1, le=5, description="Only images rated at least this.")


class SimilarImagesArgs(BaseModel):
    """Find images like a given one: by meaning (caption/prompt) or by look (colours and layout)."""

    owner: str = Field(..., min_length=1)
    job_id: str | None = Field(None, description="An image in the memory, by its job id.")
    image_path: str | None = Field(None, description="Any image file.")
    by: Literal["meaning", "look"] = "meaning"
    k: int = Field(8, ge=1, le=100)

    @model_validator(mode="after")
    def _one_source(self) -> SimilarImagesArgs:
        """Exactly one of job_id and image_path."""
        if (self.job_id is None) == (self.image_path is None):
            raise ValueError("give exactly one of job_id (an image in the memory) and image_path (a file)")
        return self


class RateImageArgs(BaseModel):
    """Rate one of your images: stars 1–5 and/or a thumb."""

    job_id: str = Field(..., min_length=4)
    owner: str = Field(..., min_length=1)
    stars: int | None = Field(None, ge=1, le=5)
    thumb: Literal["up", "down"] | None = None

    @model_validator(mode="after")
    def _something(self) -> RateImageArgs:
        """A rating needs stars or a thumb."""
        if self.stars is None and self.thumb is None:
            raise ValueError("give stars (1-5) or a thumb (up/down)")
        return self


class RatingResult(BaseModel):
    """The rating now stored on the job and its images."""

    job_id: str
    stars: int | None
    thumb: int | None


class StyleProfileArgs(BaseModel):
    """A person's best-rated styles and modifiers."""

    owner: str = Field(..., min_length=1)
    limit: int = Field(10, ge=1, le=50)


class ReuseArgs(BaseModel):
    """Is there already an image close enough to this request?"""

    prompt: str = Field(..., min_length=1)
    owner: str = Field(..., min_length=1)
    threshold: float | None = Field(None, gt=0, le=1, description="Default: ATELIER_REUSE_THRESHOLD.")


class ReuseSuggestion(BaseModel):
    """An existing image to offer before generating (the caller may still generate anyway)."""

    hit: ImageHit
    threshold: float


async def search_documents(ctx: MemoryContext, args: SearchDocumentsArgs) -> list[DocumentHit]:
    """Passages most related to the query, with sources for citations."""
    return await asyncio.to_thread(ctx.memory.search_documents, args.query, args.owner, args.k)


async def search_images(ctx: MemoryContext, args: SearchImagesArgs) -> list[ImageHit]:
    """Earlier images closest to the query, filtered by workflow and rating."""
    return await asyncio.to_thread(ctx.memory.search_images, args.query, args.owner, args.k,
                                   workflow=args.workflow, min_rating=args.min_rating)


def _similar(ctx: MemoryContext, args: SimilarImagesArgs) -> list[ImageHit]:
    """The blocking part of similar_images."""
    using = "text" if args.by == "meaning" else "pixels"
    if args.job_id is not None:
        point = image_point_id(args.job_id, 0)
        if ctx.memory.image(point, args.owner) is None:
            raise AtelierError(f"no image of job {args.job_id} in your memory; search with `atelier memory search`")
        vector = ctx.memory.image_vectors(point)[using]
        return ctx.memory.similar_to_vector(vector, using, args.owner, args.k, exclude=point)
    path = Path(str(args.image_path)).expanduser()
    if not path.is_file():
        raise AtelierError(f"image file {path} does not exist")
    data = path.read_bytes()
    if args.by == "look":
        layout = colour_layout(data, max_pixels=ctx.settings.max_image_pixels)
        return ctx.memory.similar_to_vector(layout, "pixels", args.owner, args.k)
    try:
        caption = caption_image(data, ctx.settings)
    except VisionNotConfiguredError:
        raise AtelierError("finding images by meaning from a file needs a caption: set ATELIER_VISION_MODEL to an "
                           "Ollama vision model (e.g. llava), or search by look") from None
    return ctx.memory.similar_to_vector(ctx.memory.embedder.embed([caption.text])[0], "text", args.owner, args.k)


async def similar_images(ctx: MemoryContext, args: SimilarImagesArgs) -> list[ImageHit]:
    """Images like one in the memory or like a file: by meaning or by look."""
    return await asyncio.to_thread(_similar, ctx, args)


async def rate_image(ctx: MemoryContext, args: RateImageArgs) -> RatingResult:
    """Store a rating through LedgerService.rate, as every front end does, and on the image in the memory at once
    (only the image's owner may; the indexer would copy it later, see tools/memory/indexer.py)."""
    if ctx.ledger is None:
        raise AtelierError("rating needs the job ledger; open the memory tools with a ledger")
    thumb = None if args.thumb is None else (1 if args.thumb == "up" else -1)
    job = await ctx.ledger.rate(args.job_id, owner=args.owner, stars=args.stars, thumb=thumb)
    points = [image_point_id(str(job.id), i) for i in range(max(1, len(job.outputs)))]
    await asyncio.to_thread(ctx.memory.set_rating, points, rating=job.rating, thumb=job.thumb)
    return RatingResult(job_id=str(job.id), stars=job.rating, thumb=job.thumb)


async def style_profile(ctx: MemoryContext, args: StyleProfileArgs) -> StyleProfile:
    """The person's best-rated modifiers, workflows and prompts (and what they disliked)."""
    records = await asyncio.to_thread(lambda: list(ctx.memory.owned_images(args.owner)))
    return build_profile(args.owner, records, args.limit)


async def suggest_reuse(ctx: MemoryContext, args: ReuseArgs) -> ReuseSuggestion | None:
    """The closest existing image when it is at least `threshold` similar (no GPU needed), else None."""
    threshold = args.threshold if args.threshold is not None else ctx.settings.reuse_threshold
    hits = await asyncio.to_thread(ctx.memory.search_images, args.prompt, args.owner, 1)
    if hits and hits[0].score >= threshold:
        return ReuseSuggestion(hit=hits[0], threshold=threshold)
    return None
