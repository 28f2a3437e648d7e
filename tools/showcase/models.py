"""Typed rows of the `showcases` table: a product brief, one item per planned shot, and where the gallery stands."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from atelier.tools.errors import AtelierError

__all__ = ["FINISHED", "Showcase", "ShowcaseGoneError", "ShowcaseItem", "ShowcaseNotFoundError",
           "ShowcaseNotReadyError", "ShowcaseProgress", "ShowcaseStatus", "Stage"]

ShowcaseStatus = Literal["rendering", "captioning", "building", "ready", "partial", "failed"]
# ready: every image made; partial: some failed or were not finished in time (named in the gallery); failed: none.
FINISHED: frozenset[str] = frozenset({"ready", "partial", "failed"})
Stage = Literal["images", "captions", "gallery", "done"]


class ShowcaseNotFoundError(AtelierError):
    """No showcase of the caller's has this id (another owner's is answered the same way)."""


class ShowcaseNotReadyError(AtelierError):
    """The showcase's gallery is not made yet; the message says how far it is."""


class ShowcaseGoneError(AtelierError):
    """The gallery is recorded but the output store cannot give its file back."""


class ShowcaseItem(BaseModel):
    """One planned shot: its brief, how it is made (workflow, prompt, seed, job), how it went, its caption and copy."""

    number: int = Field(..., ge=1, description="1-based position in the shot list.")
    purpose: str
    subject: str
    notes: str = ""
    workflow: str
    prompt: str
    negative: str | None = None
    seed: int | None = None
    job_id: str | None = Field(None, description="The ledger job (None: it was not queued).")
    status: str = Field("queued", description="The job's status, or 'not queued' / 'timed out'.")
    error: str | None = None
    caption: str = ""
    marketing_copy: str = ""
    copy_by: Literal["", "model", "brief"] = Field("", description="Who wrote the caption and copy.")
    image: str | None = Field(None, description="The image's file in the zip (images/NN-purpose.ext).")
    content_type: str | None = None
    width: int | None = None
    height: int | None = None

    @property
    def made(self) -> bool:
        """Whether the shot's image exists (its job succeeded)."""
        return self.status == "succeeded" and self.job_id is not None


class ShowcaseProgress(BaseModel):
    """How far a showcase is, across the whole set: images done of total, then captions, then the gallery."""

    stage: Stage
    done: int = Field(..., ge=0)
    total: int = Field(..., ge=0)
    message: str = ""


class Showcase(BaseModel):
    """One row of `showcases`."""

    id: uuid.UUID
    owner: str
    thread: str
    turn: str
    brief: str
    photo: str | None = None
    status: ShowcaseStatus
    progress: dict[str, Any] = Field(default_factory=dict)
    items: list[ShowcaseItem] = Field(default_factory=list)
    manifest: dict[str, Any] | None = None
    page_uri: str | None = None
    zip_uri: str | None = None
    headline: str = ""
    note: str = ""
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None = None

    @field_validator("items", mode="before")
    @classmethod
    def _items_list(cls, value: Any) -> Any:
        """The column is jsonb: accept None as no items."""
        return value or []

    @property
    def finished(self) -> bool:
        """Whether the gallery is made (ready, partial or failed)."""
        return self.status in FINISHED

    def summary(self) -> str:
        """One line for people: status, images made of planned, and the brief's start."""
        made = sum(1 for item in self.items if item.made)
        brief = " ".join(self.brief.split())
        return f"{self.status}: {made}/{len(self.items)} image(s) · {brief[:60]}{'…' if len(brief) > 60 else ''}"
