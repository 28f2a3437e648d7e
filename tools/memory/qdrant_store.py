"""The memory on a Qdrant server (QDRANT_URL): documents and images, each collection stamped with its model.

Owner isolation lives here, not in callers: every read takes an `owner` and sees only that owner's items
and those marked shared. Each collection gets payload indexes for what its reads filter on, the owner as Qdrant's
tenant key. qdrant-client's local mode (a folder, one process at a time) is only for tests and old installs.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from langchain_core.vectorstores import VectorStoreRetriever
from langchain_qdrant import QdrantVectorStore
from qdrant_client import QdrantClient, models

from atelier.tools.memory.embeddings import Embedder, LangChainEmbeddings, build_embedder
from atelier.tools.memory.records import SHARED, DocumentChunk, DocumentHit, ImageHit, ImageRecord
from atelier.tools.memory.store import (
    DOCUMENTS,
    IMAGES,
    PIXEL_DIM,
    EmbeddingMismatchError,
    MemoryLockedError,
    MemoryStore,
    StoredPoint,
    memory_path,
)
from atelier.tools.settings import Settings

__all__ = ["PAYLOAD_INDEXES", "QdrantMemory"]

META = "atelier_meta"
_META_NAMESPACE = uuid.UUID("6f1d2a8e-3c4b-4e55-9a77-0d5c1e2f3a4b")

# What each collection's reads filter on. The owner is the tenant: Qdrant keeps each owner's points together.
_TENANT = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
PAYLOAD_INDEXES: dict[str, dict[str, models.PayloadSchemaType | models.KeywordIndexParams]] = {
    DOCUMENTS: {"metadata.owner": _TENANT, "metadata.source": models.PayloadSchemaType.KEYWORD},
    IMAGES: {"metadata.owner": _TENANT, "metadata.workflow": models.PayloadSchemaType.KEYWORD,
             "metadata.rating": models.PayloadSchemaType.INTEGER},
}


def _owner_filter(owner: str, extra: Sequence[models.Condition] = ()) -> models.Filter:
    """Only this owner's points and shared ones (plus any extra conditions)."""
    visible = models.FieldCondition(key="metadata.owner", match=models.MatchAny(any=[owner, SHARED]))
    return models.Filter(must=[visible, *extra])


class QdrantMemory(MemoryStore):
    """Documents and images in Qdrant, embedded by one model per collection."""

    def __init__(self, client: QdrantClient, embedder: Embedder, location: str) -> None:
        self.client = client
        self.embedder = embedder
        self.location = location

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None, *, verify_model: bool = True) -> QdrantMemory:
        """The Qdrant server at QDRANT_URL (without one: the old local-mode folder); collections created and checked.

        `verify_model=False` skips the model check: only `reindex` should, since it repairs a mismatch.
        """
        embedder = embedder or build_embedder(settings)
        if not settings.qdrant_url:
            return cls.in_folder(memory_path(settings), embedder, verify_model=verify_model)
        key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        client = QdrantClient(url=settings.qdrant_url, api_key=key, timeout=int(settings.http_timeout_seconds))
        return cls._checked(cls(client, embedder, settings.qdrant_url), verify_model)

    @classmethod
    def in_folder(cls, folder: Path, embedder: Embedder, *, verify_model: bool = True) -> QdrantMemory:
        """qdrant-client's local mode in `folder` (tests, and the memory of older installs to migrate from).

        It speaks Qdrant's API but allows one process per folder (MemoryLockedError names the fix), evaluates
        filters point by point, and accepts payload indexes without building them.
        """
        folder.mkdir(parents=True, exist_ok=True)
        try:
            client = QdrantClient(path=str(folder))
        except RuntimeError as exc:
            if "already accessed" not in str(exc):
                raise
            raise MemoryLockedError(
                f"the memory in {folder} is open in another Atelier process (local Qdrant allows one); stop it, or "
                "move the memory to PostgreSQL (`atelier memory migrate --to postgres`), which every process shares"
            ) from None
        return cls._checked(cls(client, embedder, f"local {folder}"), verify_model)

    @classmethod
    def _checked(cls, store: QdrantMemory, verify_model: bool) -> QdrantMemory:
        """`store` with its collections ensured (closed again when that fails)."""
        store.checked(verify_model)
        return store

    def close(self) -> None:
        """Release the client (and the local folder)."""
        self.client.close()

    # --- collections and the model that made them --------------------------------------------------

    def _meta_id(self, collection: str) -> str:
        """The meta point of a collection."""
        return str(uuid.uuid5(_META_NAMESPACE, collection))

    def recorded_model(self, collection: str) -> tuple[str, int] | None:
        """(model, dimension) that embedded a collection, or None for a new one."""
        if not self.client.collection_exists(META):
            return None
        found = self.client.retrieve(META, [self._meta_id(collection)], with_payload=True)
        if not found or not found[0].payload:
            return None
        return str(found[0].payload["model"]), int(found[0].payload["dim"])

    def _record_model(self, collection: str) -> None:
        """Stamp a collection with the configured embedder."""
        if not self.client.collection_exists(META):
            self.client.create_collection(META, vectors_config=models.VectorParams(size=1,
                                                                                 distance=models.Distance.DOT))
        point = models.PointStruct(id=self._meta_id(collection), vector=[0.0],
                                   payload={"collection": collection, "model": self.embedder.name,
                                            "dim": self.embedder.dim})
        self.client.upsert(META, [point])

    def _vectors_config(self, collection: str) -> Any:
        """Documents: one unnamed text vector; images: a named text vector and a colour-layout vector."""
        text = models.VectorParams(size=self.embedder.dim, distance=models.Distance.COSINE)
        if collection == DOCUMENTS:
            return text
        return {"text": text, "pixels": models.VectorParams(size=PIXEL_DIM, distance=models.Distance.COSINE)}

    def _create_collection(self, collection: str) -> None:
        """Create a collection with its vectors and payload indexes."""
        self.client.create_collection(collection, vectors_config=self._vectors_config(collection))
        self._ensure_indexes(collection)

    def _ensure_indexes(self, collection: str) -> None:
        """Create the collection's payload indexes it lacks (local mode accepts them and builds nothing)."""
        existing = self.client.get_collection(collection).payload_schema
        with warnings.catch_warnings():  # local mode warns that they have no effect there: its docstring says so
            warnings.filterwarnings("ignore", "Payload indexes have no effect", UserWarning)
            for field, schema in PAYLOAD_INDEXES[collection].items():
                if field not in existing:
                    self.client.create_payload_index(collection, field, field_schema=schema)

    def ensure_collections(self) -> None:
        """Create missing collections and indexes; EmbeddingMismatchError when one was made by another model."""
        for collection in (DOCUMENTS, IMAGES):
            exists = self.client.collection_exists(collection)
            recorded = self.recorded_model(collection) if exists else None
            if recorded is not None and recorded != (self.embedder.name, self.embedder.dim):
                raise EmbeddingMismatchError(
                    f"the memory collection {collection} was embedded with {recorded[0]} ({recorded[1]} dims) "
                    f"but the configured model is {self.embedder.name} ({self.embedder.dim} dims); "
                    "run `atelier memory reindex` to re-embed it, or set ATELIER_EMBED_MODEL back"
                )
            if exists:
                self._ensure_indexes(collection)
            else:
                self._create_collection(collection)
            if recorded is None:
                self._record_model(collection)

    def count(self, collection: str) -> int:
        """How many points a collection holds."""
        return self.client.count(collection, exact=True).count

    # --- documents -----------------------------------------------------------------------------------

    def _existing(self, collection: str, ids: Sequence[str]) -> set[str]:
        """Which of these point ids are stored already."""
        found: set[str] = set()
        for start in range(0, len(ids), 256):
            found |= {str(p.id) for p in self.client.retrieve(collection, list(ids[start:start + 256]),
                                                              with_payload=False, with_vectors=False)}
        return found

    def add_documents(self, chunks: Sequence[DocumentChunk]) -> int:
        """Embed and store chunks not stored yet (same owner and content → same id); how many were new."""
        existing = self._existing(DOCUMENTS, [c.point_id for c in chunks])
        fresh = [c for c in chunks if c.point_id not in existing]
        if not fresh:
            return 0
        vectors = self.embedder.embed([c.text for c in fresh])
        points = [models.PointStruct(id=c.point_id, vector=v, payload=c.payload()) for c, v in
                  zip(fresh, vectors, strict=True)]
        self.client.upsert(DOCUMENTS, points)
        return len(fresh)

    def replace_source(self, source: str, owner: str, chunks: Sequence[DocumentChunk]) -> tuple[int, int]:
        """Make the stored chunks of one file (for one owner) exactly `chunks`: (added, removed)."""
        keep = {c.point_id for c in chunks}
        only = models.Filter(must=[
            models.FieldCondition(key="metadata.source", match=models.MatchValue(value=source)),
            models.FieldCondition(key="metadata.owner", match=models.MatchValue(value=owner)),
        ])
        stale: list[Any] = []
        offset: Any = None
        while True:
            points, offset = self.client.scroll(DOCUMENTS, scroll_filter=only, limit=256, offset=offset,
                                                with_payload=False)
            stale.extend(p.id for p in points if str(p.id) not in keep)
            if offset is None:
                break
        if stale:
            self.client.delete(DOCUMENTS, points_selector=models.PointIdsList(points=stale))
        return self.add_documents(chunks), len(stale)

    def search_documents(self, query: str, owner: str, k: int = 5) -> list[DocumentHit]:
        """The chunks most related to `query` that `owner` may see."""
        vector = self.embedder.embed([query])[0]
        hits = self.client.query_points(DOCUMENTS, query=vector, query_filter=_owner_filter(owner), limit=k,
                                        with_payload=True).points
        return [DocumentHit.from_payload(h.payload or {}, h.score) for h in hits]

    def retriever(self, owner: str, k: int = 4) -> VectorStoreRetriever:
        """A LangChain retriever over the documents `owner` may see."""
        store = QdrantVectorStore(client=self.client, collection_name=DOCUMENTS,
                                  embedding=LangChainEmbeddings(self.embedder))
        return store.as_retriever(search_kwargs={"k": k, "filter": _owner_filter(owner)})

    # --- images --------------------------------------------------------------------------------------

    def has_image(self, point_id: str) -> bool:
        """Whether an image point is stored."""
        return bool(self._existing(IMAGES, [point_id]))

    def add_images(self, records: Sequence[ImageRecord], pixels: Sequence[list[float]]) -> int:
        """Store image records with their text and colour-layout vectors (upsert by id)."""
        if not records:
            return 0
        texts = self.embedder.embed([r.text for r in records])
        points = [models.PointStruct(id=r.point_id, vector={"text": t, "pixels": p}, payload=r.payload())
                  for r, t, p in zip(records, texts, pixels, strict=True)]
        self.client.upsert(IMAGES, points)
        return len(points)

    def _image_conditions(self, workflow: str | None, min_rating: int | None) -> list[models.Condition]:
        """Optional workflow and rating filters."""
        conditions: list[models.Condition] = []
        if workflow:
            conditions.append(models.FieldCondition(key="metadata.workflow", match=models.MatchValue(value=workflow)))
        if min_rating:
            conditions.append(models.FieldCondition(key="metadata.rating", range=models.Range(gte=min_rating)))
        return conditions

    def search_images(self, query: str, owner: str, k: int = 8, *, workflow: str | None = None,
                      min_rating: int | None = None) -> list[ImageHit]:
        """Images whose caption or prompt is closest to `query`, among those `owner` may see."""
        vector = self.embedder.embed([query])[0]
        return self._query_images(vector, "text", owner, k, self._image_conditions(workflow, min_rating))

    def _query_images(self, vector: list[float], using: str, owner: str, k: int,
                      conditions: Sequence[models.Condition], exclude: str | None = None) -> list[ImageHit]:
        """Run one image query with the owner filter."""
        query_filter = _owner_filter(owner, conditions)
        if exclude is not None:
            query_filter.must_not = [models.HasIdCondition(has_id=[exclude])]
        hits = self.client.query_points(IMAGES, query=vector, using=using, query_filter=query_filter, limit=k,
                                        with_payload=True).points
        return [ImageHit.from_payload(h.payload or {}, h.score) for h in hits]

    def image(self, point_id: str, owner: str) -> ImageRecord | None:
        """One image record if `owner` may see it."""
        found = self.client.retrieve(IMAGES, [point_id], with_payload=True, with_vectors=True)
        if not found or not found[0].payload:
            return None
        record = ImageRecord.from_payload(found[0].payload)
        return record if record.owner in (owner, SHARED) else None

    def image_vectors(self, point_id: str) -> dict[str, list[float]]:
        """The stored vectors of one image."""
        found = self.client.retrieve(IMAGES, [point_id], with_payload=False, with_vectors=True)
        vectors = found[0].vector if found else None
        return {k: list(v) for k, v in vectors.items()} if isinstance(vectors, dict) else {}  # type: ignore[arg-type]

    def similar_to_vector(self, vector: list[float], using: str, owner: str, k: int = 8, *,
                          exclude: str | None = None, workflow: str | None = None,
                          min_rating: int | None = None) -> list[ImageHit]:
        """Images near a given text or pixel vector."""
        return self._query_images(vector, using, owner, k, self._image_conditions(workflow, min_rating), exclude)

    def set_rating(self, point_ids: Sequence[str], *, rating: int | None, thumb: int | None) -> None:
        """Store a rating on image points."""
        payload: dict[str, Any] = {}
        if rating is not None:
            payload["rating"] = rating
        if thumb is not None:
            payload["thumb"] = thumb
        if payload:
            self.client.set_payload(IMAGES, payload=payload, points=list(point_ids), key="metadata")

    def owned_images(self, owner: str) -> Iterator[ImageRecord]:
        """Every image of one owner (not shared ones), for style profiles."""
        only = models.Filter(must=[models.FieldCondition(key="metadata.owner", match=models.MatchValue(value=owner))])
        offset: Any = None
        while True:
            points, offset = self.client.scroll(IMAGES, scroll_filter=only, limit=256, offset=offset,
                                                with_payload=True)
            for point in points:
                yield ImageRecord.from_payload(point.payload or {})
            if offset is None:
                return

    # --- re-embedding ----------------------------------------------------------------------------------

    def reindex(self) -> dict[str, int]:
        """Re-embed every collection with the configured model (texts come from the stored payloads)."""
        counts = {}
        for collection in (DOCUMENTS, IMAGES):
            points = []
            offset: Any = None
            while self.client.collection_exists(collection):
                batch, offset = self.client.scroll(collection, limit=256, offset=offset, with_payload=True,
                                                   with_vectors=True)
                points.extend(batch)
                if offset is None:
                    break
            if self.client.collection_exists(collection):
                self.client.delete_collection(collection)
            self._create_collection(collection)
            for start in range(0, len(points), 128):
                chunk = points[start:start + 128]
                texts = self.embedder.embed([str((p.payload or {}).get("page_content", "")) for p in chunk])
                rebuilt = []
                for point, text_vector in zip(chunk, texts, strict=True):
                    if collection == DOCUMENTS:
                        vector: Any = text_vector
                    else:
                        old = point.vector if isinstance(point.vector, dict) else {}
                        pixels = old.get("pixels") or [1.0 / PIXEL_DIM**0.5] * PIXEL_DIM
                        vector = {"text": text_vector, "pixels": list(pixels)}
                    rebuilt.append(models.PointStruct(id=point.id, vector=vector, payload=point.payload))
                self.client.upsert(collection, rebuilt)
            self._record_model(collection)
            counts[collection] = len(points)
        return counts

    # --- migration ---------------------------------------------------------------------------------------

    def export_points(self, collection: str) -> Iterator[StoredPoint]:
        """Every point of a collection with its payload and vectors."""
        offset: Any = None
        while self.client.collection_exists(collection):
            batch, offset = self.client.scroll(collection, limit=256, offset=offset, with_payload=True,
                                               with_vectors=True)
            for point in batch:
                vector: Any = point.vector
                vectors: dict[str, list[float]] = (
                    {str(name): [float(x) for x in v] for name, v in vector.items()} if isinstance(vector, dict)
                    else {"text": [float(x) for x in vector]} if vector is not None else {})
                yield StoredPoint(id=str(point.id), payload=dict(point.payload or {}), vectors=vectors)
            if offset is None:
                return

    def import_points(self, collection: str, points: Sequence[StoredPoint]) -> int:
        """Upsert exported points as they are."""
        built = []
        for point in points:
            vector: Any = point.vectors.get("text", []) if collection == DOCUMENTS else dict(point.vectors)
            built.append(models.PointStruct(id=point.id, vector=vector, payload=point.payload))
        for start in range(0, len(built), 256):
            self.client.upsert(collection, built[start:start + 256])
        return len(built)
