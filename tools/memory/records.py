"""What the memory stores and returns: document chunks, image records and search hits (pydantic)."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["SHARED", "DocumentChunk", "DocumentHit", "EarlierImage", "ImageHit", "ImageRecord", "chunk_point_id",
           "image_point_id"]

SHARED = "shared"  # the owner of items every user may see
_NAMESPACE = uuid.UUID("0b7f4d3c-9a51-4c7e-8f22-5e6d1a2b3c4d")


def chunk_point_id(owner: str, content_hash: str) -> str:
    """The same owner and content always give the same point id (re-ingesting adds nothing)."""
    return str(uuid.uuid5(_NAMESPACE, f"doc:{owner}:{content_hash}"))


def image_point_id(job_id: str, index: int) -> str:
    """One point per output image of a job."""
    return str(uuid.uuid5(_NAMESPACE, f"img:{job_id}:{index}"))


class DocumentChunk(BaseModel):
    """One piece of a document, with where it came from."""

    text: str
    owner: str
    source: str
    title: str
    chunk: int
    content_hash: str
    page: int | None = None

    @property
    def point_id(self) -> str:
        """Its id in Qdrant."""
        return chunk_point_id(self.owner, self.content_hash)

    def payload(self) -> dict[str, Any]:
        """LangChain's layout: page_content plus metadata (which carries the owner)."""
        meta = self.model_dump(exclude={"text"})
        return {"page_content": self.text, "metadata": meta}


class DocumentHit(BaseModel):
    """A chunk found for a question, with its source for citations."""

    text: str
    source: str
    title: str
    page: int | None = None
    chunk: int
    owner: str
    score: float

    @classmethod
    def from_payload(cls, payload: dict[str, Any], score: float) -> DocumentHit:
        """Rebuild from a stored payload."""
        meta = payload.get("metadata") or {}
        return cls(text=str(payload.get("page_content", "")), source=meta.get("source", ""),
                   title=meta.get("title", ""), page=meta.get("page"), chunk=int(meta.get("chunk", 0)),
                   owner=meta.get("owner", ""), score=score)

    def citation(self) -> str:
        """'title (source, p. N)'."""
        page = f", p. {self.page}" if self.page else ""
        return f"{self.title} ({self.source}{page})"


class ImageRecord(BaseModel):
    """One image Atelier made, as the memory keeps it."""

    job_id: str
    output_index: int = 0
    owner: str
    prompt: str
    negative: str | None = None
    workflow: str
    params: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    uri: str
    rating: int | None = None
    thumb: int | None = None
    tags: list[str] = Field(default_factory=list)
    caption: str | None = None
    created_at: str

    @property
    def point_id(self) -> str:
        """Its id in Qdrant."""
        return image_point_id(self.job_id, self.output_index)

    @property
    def text(self) -> str:
        """What stands for the image in text search: its caption, else its prompt."""
        return self.caption or self.prompt

    def payload(self) -> dict[str, Any]:
        """LangChain's layout: page_content (caption or prompt) plus metadata."""
        return {"page_content": self.text, "metadata": self.model_dump(mode="json")}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> ImageRecord:
        """Rebuild from a stored payload."""
        return cls.model_validate(payload.get("metadata") or {})


class ImageHit(BaseModel):
    """An image found for a request, with how close it is (cosine similarity, 1 = same)."""

    image: ImageRecord
    score: float

    @classmethod
    def from_payload(cls, payload: dict[str, Any], score: float) -> ImageHit:
        """Rebuild from a stored payload."""
        return cls(image=ImageRecord.from_payload(payload), score=score)


class EarlierImage(BaseModel):
    """An image from the memory shown as an option: its job, what it showed and how close it is (1 = same)."""

    job_id: str
    output_index: int = 0
    prompt: str
    workflow: str
    uri: str
    score: float
    caption: str | None = None
    rating: int | None = None

    @classmethod
    def of(cls, hit: ImageHit) -> EarlierImage:
        """An option from a memory hit."""
        image = hit.image
        return cls(job_id=image.job_id, output_index=image.output_index, prompt=image.prompt,
                   workflow=image.workflow, uri=image.uri, score=round(hit.score, 4), caption=image.caption,
                   rating=image.rating)
