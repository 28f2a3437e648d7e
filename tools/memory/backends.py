"""Which memory backend a process opens: `memory_backend` reads ATELIER_MEMORY, `open_memory` opens it."""

from __future__ import annotations

import asyncio
import logging

from atelier.tools.errors import AtelierError
from atelier.tools.memory.embeddings import Embedder
from atelier.tools.memory.store import Backend, MemoryStore
from atelier.tools.settings import Settings

__all__ = ["memory_backend", "open_memory", "open_memory_or_reason"]

log = logging.getLogger(__name__)


def memory_backend(settings: Settings) -> Backend:
    """The backend the settings choose (ATELIER_MEMORY; auto: qdrant with QDRANT_URL, else postgres)."""
    if settings.memory_backend != "auto":
        return settings.memory_backend
    return "qdrant" if settings.qdrant_url else "postgres"


def open_memory(settings: Settings, embedder: Embedder | None = None, *, verify_model: bool = True,
                backend: Backend | None = None) -> MemoryStore:
    """Open the backend the settings choose (or `backend`); `verify_model=False` skips the model check (reindex)."""
    if (backend or memory_backend(settings)) == "qdrant":
        from atelier.tools.memory.qdrant_store import QdrantMemory

        return QdrantMemory.open(settings, embedder, verify_model=verify_model)
    from atelier.tools.memory.pgvector_store import PgVectorMemory

    return PgVectorMemory.open(settings, embedder, verify_model=verify_model)


async def open_memory_or_reason(settings: Settings, who: str) -> tuple[MemoryStore | None, str | None]:
    """The memory, or None and why it could not be opened (logged: `who` runs without it)."""
    try:
        return await asyncio.to_thread(open_memory, settings), None
    except AtelierError as exc:
        log.warning("%s runs without the memory: %s", who, exc)
        return None, str(exc)
