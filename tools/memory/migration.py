"""Copy one memory backend into another (`atelier memory migrate`): stored vectors move as they are, not re-embedded.

`migration_source` says where the command copies from: `--to postgres` reads the Qdrant server at QDRANT_URL, else
the old local-mode folder; `--to qdrant` needs QDRANT_URL and reads PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

from atelier.tools.memory.backends import open_memory
from atelier.tools.memory.embeddings import MINILM_NAME, Embedder
from atelier.tools.memory.store import (
    DOCUMENTS,
    IMAGES,
    Backend,
    EmbeddingMismatchError,
    MemoryStore,
    MemoryUnavailableError,
    StoredPoint,
    memory_path,
)
from atelier.tools.settings import Settings

__all__ = ["Source", "migrate_memory", "migration_source", "open_source", "stored_counts"]

Source = Literal["local", "qdrant", "postgres"]


def _batches(points: Iterator[StoredPoint], size: int) -> Iterator[list[StoredPoint]]:
    """`points` in lists of at most `size`."""
    batch: list[StoredPoint] = []
    for point in points:
        batch.append(point)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _check_model(source: MemoryStore, target: MemoryStore, collection: str) -> bool:
    """Whether the source holds the collection; EmbeddingMismatchError when its model is not the target's."""
    recorded = source.recorded_model(collection)
    if recorded is None:
        return False  # every backend stamps a collection when it creates it: unstamped means never made
    wanted = (target.embedder.name, target.embedder.dim)
    if recorded != wanted:
        raise EmbeddingMismatchError(
            f"cannot copy {collection} from {source.location} into {target.location}: it was embedded with "
            f"{recorded[0]} ({recorded[1]} dims) and the target embeds with {wanted[0]} ({wanted[1]} dims); "
            f"set ATELIER_EMBED_MODEL to the source's model (unset means {MINILM_NAME}) and migrate again, "
            "then run `atelier memory reindex` on the new backend if you want another model"
        )
    return True


def stored_counts(source: MemoryStore) -> dict[str, int]:
    """How many items each collection of `source` holds (0 for one it never made): the progress bars' totals."""
    return {c: source.count(c) if source.recorded_model(c) is not None else 0 for c in (DOCUMENTS, IMAGES)}


def migrate_memory(source: MemoryStore, target: MemoryStore, *, batch: int = 512,
                   progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Copy documents and images from `source` into `target` (upsert by id: running it again changes nothing).

    Both collections are checked first, so a model mismatch copies nothing; `progress(collection, copied so far)`
    is called after each batch. A copy, not a sync: items deleted from the source since an earlier run stay in the
    target. Returns how many items each collection copied.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    present = [c for c in (DOCUMENTS, IMAGES) if _check_model(source, target, c)]
    copied = {DOCUMENTS: 0, IMAGES: 0}
    for collection in present:
        for points in _batches(source.export_points(collection), batch):
            copied[collection] += target.import_points(collection, points)
            if progress is not None:
                progress(collection, copied[collection])
    return copied


def migration_source(settings: Settings, to: Backend, source: Source | None = None) -> Source:
    """Where `--to` copies from unless `--from` says: MemoryUnavailableError when there is nothing to copy."""
    if source is None:
        if to == "qdrant":
            source = "postgres"
        elif settings.qdrant_url:
            source = "qdrant"
        elif memory_path(settings).is_dir():
            source = "local"
        else:
            raise MemoryUnavailableError(
                f"nothing to migrate to postgres from: QDRANT_URL is not set and there is no local memory in "
                f"{memory_path(settings)}; set QDRANT_URL to copy from a Qdrant server, or pass --from"
            )
    if source == to:
        raise MemoryUnavailableError(f"the memory cannot be migrated from {source} to itself: pick another --to")
    if source == "local" and not memory_path(settings).is_dir():
        raise MemoryUnavailableError(f"there is no local memory in {memory_path(settings)} to migrate from "
                                     "(it lives in ATELIER_DATA_DIR/qdrant): check ATELIER_DATA_DIR")
    if "qdrant" in (source, to) and not settings.qdrant_url:
        raise MemoryUnavailableError(f"migrating {'to' if to == 'qdrant' else 'from'} Qdrant needs its server: "
                                     "set QDRANT_URL (for example http://localhost:6333) and QDRANT_API_KEY if any")
    return source


def open_source(settings: Settings, source: Source, embedder: Embedder) -> MemoryStore:
    """Open the store to copy from, without creating or checking its collections (`migrate_memory` checks)."""
    if source == "local":
        from atelier.tools.memory.qdrant_store import QdrantMemory

        return QdrantMemory.in_folder(memory_path(settings), embedder, verify_model=False)
    return open_memory(settings, embedder, verify_model=False, backend=source)

