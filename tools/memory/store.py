"""The memory's one interface, `MemoryStore`, and `open_memory`, which picks its backend from the settings.

Two backends keep the same collections with the same meaning — documents (chunks with their source and page) and
images (a text vector of the prompt or caption, a colour-layout vector, the rating) — and the same rules: every
read takes an `owner` and sees only that owner's items and shared ones, and each collection is stamped with the
model that embedded it.

- PostgreSQL + pgvector (tools/memory/pgvector_store.py), the default: the ledger's own database (embedded or
  DATABASE_URL), so every Atelier process shares one memory.
- A Qdrant server (tools/memory/qdrant_store.py), with QDRANT_URL: the user's own stack and the scale-out path.

`open_memory` (tools/memory/backends.py) opens the one `ATELIER_MEMORY` chooses (auto, postgres, qdrant; auto means
qdrant when QDRANT_URL is set, else postgres).
`atelier memory migrate --to …` copies one backend into the other (`export_points` / `import_points`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from langchain_core.retrievers import BaseRetriever

from atelier.tools.errors import AtelierError
from atelier.tools.memory.embeddings import Embedder
from atelier.tools.memory.records import DocumentChunk, DocumentHit, ImageHit, ImageRecord
from atelier.tools.settings import Settings

__all__ = ["DOCUMENTS", "IMAGES", "PIXEL_DIM", "Backend", "EmbeddingMismatchError", "MemoryLockedError",
           "MemoryStore", "MemoryUnavailableError", "StoredPoint", "memory_path"]

DOCUMENTS = "atelier_documents"
IMAGES = "atelier_images"
PIXEL_DIM = 192

Backend = Literal["postgres", "qdrant"]


class MemoryLockedError(AtelierError):
    """The local memory folder (qdrant-client's local mode, tests and old installs) is open in another process."""


class EmbeddingMismatchError(AtelierError):
    """A collection was embedded by another model than the one configured now."""


class MemoryUnavailableError(AtelierError):
    """The memory's backend cannot be used (no pgvector on the server, Qdrant unreachable): the message says why."""


def memory_path(settings: Settings) -> Path:
    """The folder of the old local-mode memory (what `atelier memory migrate` can copy from)."""
    return settings.data_dir / "qdrant"


@dataclass(frozen=True)
class StoredPoint:
    """One stored item as both backends can export and import it, without re-embedding.

    `payload` is LangChain's layout (`page_content` plus `metadata`, which carries the owner); `vectors` maps
    "text" (and, for images, "pixels") to the stored vector.
    """

    id: str
    payload: dict[str, Any]
    vectors: dict[str, list[float]] = field(default_factory=dict)


class MemoryStore(ABC):
    """Documents and images, embedded by one model per collection, read per owner (plus shared items)."""

    embedder: Embedder
    location: str

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def checked(self, verify_model: bool) -> MemoryStore:
        """This store with its collections ensured when `verify_model` (closed again if that fails)."""
        if verify_model:
            try:
                self.ensure_collections()
            except BaseException:
                self.close()
                raise
        return self

    # --- collections and the model that made them ----------------------------------------------------------

    @abstractmethod
    def ensure_collections(self) -> None:
        """Create missing collections; EmbeddingMismatchError when one was made by another model."""

    @abstractmethod
    def recorded_model(self, collection: str) -> tuple[str, int] | None:
        """(model, dimension) that embedded a collection, or None for a new one."""

    @abstractmethod
    def count(self, collection: str) -> int:
        """How many items a collection holds."""

    # --- documents -------------------------------------------------------------------------------------------

    @abstractmethod
    def add_documents(self, chunks: Sequence[DocumentChunk]) -> int:
        """Embed and store chunks not stored yet (same owner and content → same id); how many were new."""

    @abstractmethod
    def replace_source(self, source: str, owner: str, chunks: Sequence[DocumentChunk]) -> tuple[int, int]:
        """Make the stored chunks of one file (for one owner) exactly `chunks`: (added, removed)."""

    @abstractmethod
    def search_documents(self, query: str, owner: str, k: int = 5) -> list[DocumentHit]:
        """The chunks most related to `query` that `owner` may see."""

    @abstractmethod
    def retriever(self, owner: str, k: int = 4) -> BaseRetriever:
        """A LangChain retriever over the documents `owner` may see."""

    # --- images ----------------------------------------------------------------------------------------------

    @abstractmethod
    def has_image(self, point_id: str) -> bool:
        """Whether an image point is stored."""

    @abstractmethod
    def add_images(self, records: Sequence[ImageRecord], pixels: Sequence[list[float]]) -> int:
        """Store image records with their text and colour-layout vectors (upsert by id)."""

    @abstractmethod
    def search_images(self, query: str, owner: str, k: int = 8, *, workflow: str | None = None,
                      min_rating: int | None = None) -> list[ImageHit]:
        """Images whose caption or prompt is closest to `query`, among those `owner` may see."""

    @abstractmethod
    def image(self, point_id: str, owner: str) -> ImageRecord | None:
        """One image record if `owner` may see it."""

    @abstractmethod
    def image_vectors(self, point_id: str) -> dict[str, list[float]]:
        """The stored vectors of one image ("text", "pixels")."""

    @abstractmethod
    def similar_to_vector(self, vector: list[float], using: str, owner: str, k: int = 8, *,
                          exclude: str | None = None, workflow: str | None = None,
                          min_rating: int | None = None) -> list[ImageHit]:
        """Images near a given text or pixel vector (`using`: "text" or "pixels")."""

    @abstractmethod
    def set_rating(self, point_ids: Sequence[str], *, rating: int | None, thumb: int | None) -> None:
        """Store a rating on image points."""

    @abstractmethod
    def owned_images(self, owner: str) -> Iterator[ImageRecord]:
        """Every image of one owner (not shared ones), for style profiles."""

    # --- maintenance -----------------------------------------------------------------------------------------

    def settle(self, limit: int | None = None) -> int:
        """Fold recent writes into the search index (at most `limit` items); how many.

        Recent writes are searchable at once either way; a backend that indexes on its own (Qdrant) returns 0.
        """
        return 0

    def unsettled(self) -> int:
        """How many items wait to be folded into the search index (0 for backends that index on their own)."""
        return 0

    @abstractmethod
    def reindex(self) -> dict[str, int]:
        """Re-embed every collection with the configured model (texts come from the stored payloads)."""

    @abstractmethod
    def export_points(self, collection: str) -> Iterator[StoredPoint]:
        """Every item of a collection with its payload and vectors (for `atelier memory migrate`)."""

    @abstractmethod
    def import_points(self, collection: str, points: Sequence[StoredPoint]) -> int:
        """Store exported items as they are (no re-embedding: the collections must share a model); how many."""
