"""The memory in PostgreSQL with pgvector: the ledger's own database, so every Atelier process shares one memory.

Tables come from the ledger's migration 9 (`atelier_memory_schema()`); vectors have the embedding model's
dimension, recorded per collection in `memory_collections`, and each collection gets an HNSW expression index for
that dimension (`(embedding::vector(N)) vector_cosine_ops`), built here when a collection is stamped. Owner
isolation is in every `WHERE` clause. A filter that leaves few rows (one person among many users) is answered by an
exact scan of those rows; a broad one by the HNSW index with pgvector's iterative scans
(`hnsw.iterative_scan = relaxed_order`, pgvector ≥ 0.8), which keep scanning until enough rows pass the filter,
their slightly unordered results re-sorted by distance. Writes go through binary COPY and land unfolded
(`indexed = false`, outside the partial HNSW index: searched exactly, no graph work on the write); `settle()`
folds them into the index later, as Qdrant's optimiser indexes its fresh segments.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from typing import Any, LiteralString

import numpy as np
import psycopg
from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pgvector.psycopg import register_vector
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool
from pydantic import ConfigDict

from atelier.tools.memory.embeddings import Embedder, build_embedder
from atelier.tools.memory.records import SHARED, DocumentChunk, DocumentHit, ImageHit, ImageRecord
from atelier.tools.memory.store import (
    DOCUMENTS,
    IMAGES,
    PIXEL_DIM,
    EmbeddingMismatchError,
    MemoryStore,
    MemoryUnavailableError,
    StoredPoint,
)
from atelier.tools.settings import Settings

__all__ = ["PgVectorMemory"]

_TABLES: dict[str, LiteralString] = {DOCUMENTS: "memory_documents", IMAGES: "memory_images"}
_INDEX_LOCK = 0x41_74_4D_49  # advisory lock: one process builds a collection's HNSW index
_EF_SEARCH = 200  # HNSW candidate list: recall@8 at 100k in bench/memory_search.py
_BATCH = 1000
# A denser graph than pgvector's defaults (16, 64): near-duplicate prompts (one prompt, many seeds) form tight
# clusters that a sparse graph can leave unreachable; at 100k, recall@8 0.90 → 0.985 (bench/memory_search.py).
_HNSW_M = 32
_HNSW_EF_CONSTRUCTION = 128
_SETTLE_BATCH = 2000  # rows folded into the HNSW index per transaction
_EXACT_UP_TO = 2_000  # filters passing at most this many rows are scored exactly (a few ms, recall 1)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Each pooled connection: pgvector's types, and iterative HNSW scans so filters never starve results."""
    register_vector(conn)
    conn.execute(f"SET hnsw.ef_search = {_EF_SEARCH}")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")


def _vector(values: Sequence[float]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A float32 array pgvector's adapter sends as a vector."""
    return np.asarray(values, dtype=np.float32)


def _floats(value: Any) -> list[float]:
    """A stored vector as a list (pgvector's loaders give a numpy array or a `Vector`)."""
    if hasattr(value, "to_list"):
        return [float(x) for x in value.to_list()]
    return [float(x) for x in value]


def _unavailable(conn: psycopg.Connection[Any]) -> MemoryUnavailableError:
    """Why this server cannot hold the memory, with the fix."""
    version = int(str(conn.execute("SHOW server_version_num").fetchone()[0])) // 10000  # type: ignore[index]
    database = conn.info.dbname
    available = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'").fetchone()
    alternatives = ("or use the embedded PostgreSQL (unset DATABASE_URL; it ships pgvector), or a Qdrant server "
                    "(QDRANT_URL, ATELIER_MEMORY=qdrant)")
    if not available:
        return MemoryUnavailableError(
            f"the PostgreSQL {version} server behind DATABASE_URL has no pgvector, which the memory needs: install "
            f"it on that server (Debian/Ubuntu: `apt install postgresql-{version}-pgvector`; Red Hat: "
            f"`dnf install pgvector_{version}`; macOS: `brew install pgvector`), then run `CREATE EXTENSION vector;` "
            f"in database {database!r} as a superuser — {alternatives}")
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    except psycopg.Error as exc:
        return MemoryUnavailableError(
            f"pgvector is installed on the server but could not be enabled in database {database!r} "
            f"({str(exc).strip()}): ask its administrator to run `CREATE EXTENSION vector;` there — {alternatives}")
    return MemoryUnavailableError(f"the memory's tables could not be created in database {database!r}")


class PgVectorMemory(MemoryStore):
    """Documents and images in PostgreSQL tables with pgvector, read per owner (plus shared items)."""

    exact_up_to = _EXACT_UP_TO  # filters passing at most this many rows are scored exactly

    def __init__(self, pool: ConnectionPool[psycopg.Connection[Any]], embedder: Embedder, location: str) -> None:
        self.pool = pool
        self.embedder = embedder
        self.location = location

    @classmethod
    def open(cls, settings: Settings, embedder: Embedder | None = None, *, verify_model: bool = True,
             conninfo: str | None = None) -> PgVectorMemory:
        """The memory in Atelier's database (DATABASE_URL or the embedded server), schema and collections checked.

        `verify_model=False` skips the model check: only `reindex` should, since it repairs a mismatch.
        """
        from atelier.tools.ledger.migrations import apply_migrations
        from atelier.tools.ledger.service import database_url

        conninfo = conninfo or database_url(settings)
        apply_migrations(conninfo)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            ready = conn.execute("SELECT to_regclass('memory_images') IS NOT NULL").fetchone()
            if not (ready and ready[0]):
                created = conn.execute("SELECT atelier_memory_schema()").fetchone()
                if not (created and created[0]):
                    raise _unavailable(conn)
            version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            if version and tuple(int(p) for p in str(version[0]).split(".")[:2]) < (0, 8):
                raise MemoryUnavailableError(
                    f"pgvector {version[0]} is too old for the memory's filtered searches (0.8 or newer): upgrade the "
                    "package on the server, then run `ALTER EXTENSION vector UPDATE;`")
            location = f"postgresql {conn.info.host or 'socket'}/{conn.info.dbname}"
        pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            conninfo, min_size=1, max_size=settings.memory_pool_size, configure=_configure,
            kwargs={"autocommit": True}, check=ConnectionPool.check_connection, name="atelier-memory", open=True)
        store = cls(pool, embedder or build_embedder(settings), location)
        store.checked(verify_model)
        return store

    def close(self) -> None:
        """Close the connection pool."""
        self.pool.close()

    # --- collections and the model that made them --------------------------------------------------

    def recorded_model(self, collection: str) -> tuple[str, int] | None:
        """(model, dimension) that embedded a collection, or None for a new one."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT model, dim FROM memory_collections WHERE name = %s", (collection,)).fetchone()
        return (str(row[0]), int(row[1])) if row else None

    def _stamp(self, conn: psycopg.Connection[Any], collection: str) -> None:
        """Record the configured model for a collection and make sure its HNSW index exists (one builder)."""
        table, dim = _TABLES[collection], self.embedder.dim
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INDEX_LOCK,))
            conn.execute(
                "INSERT INTO memory_collections (name, model, dim) VALUES (%s, %s, %s) ON CONFLICT (name) DO UPDATE "
                "SET model = EXCLUDED.model, dim = EXCLUDED.dim, updated_at = now()",
                (collection, self.embedder.name, dim))
            conn.execute(sql.SQL(
                "CREATE INDEX IF NOT EXISTS {index} ON {table} USING hnsw ((embedding::vector({dim})) "
                "vector_cosine_ops) WITH (m = {m}, ef_construction = {ef}) WHERE indexed").format(
                    index=sql.Identifier(f"{table}_hnsw_{dim}"), table=sql.Identifier(table), dim=sql.Literal(dim),
                    m=sql.Literal(_HNSW_M), ef=sql.Literal(_HNSW_EF_CONSTRUCTION)))

    def ensure_collections(self) -> None:
        """Stamp new collections with the configured model; EmbeddingMismatchError when one was made by another."""
        for collection in (DOCUMENTS, IMAGES):
            recorded = self.recorded_model(collection)
            if recorded is not None and recorded != (self.embedder.name, self.embedder.dim):
                raise EmbeddingMismatchError(
                    f"the memory collection {collection} was embedded with {recorded[0]} ({recorded[1]} dims) "
                    f"but the configured model is {self.embedder.name} ({self.embedder.dim} dims); "
                    "run `atelier memory reindex` to re-embed it, or set ATELIER_EMBED_MODEL back")
            if recorded is None:
                with self.pool.connection() as conn:
                    self._stamp(conn, collection)

    def count(self, collection: str) -> int:
        """How many items a collection holds."""
        with self.pool.connection() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(_TABLES[collection])))
            return int(row.fetchone()[0])  # type: ignore[index]

    def settle(self, limit: int | None = None) -> int:
        """Fold fresh rows into the HNSW indexes (the slow part of writing, done here, not on the write); how many.

        Writes store rows with `indexed = false`: searchable at once (scored exactly) at the speed of COPY. Whoever
        has time folds them in — the indexer after each catch-up, `atelier ingest` and `atelier memory migrate` at
        their end — in batches that other processes skip (SKIP LOCKED), so several may settle at once.
        """
        folded = 0
        for table in _TABLES.values():
            here, caught_up = 0, False
            while limit is None or folded < limit:
                batch = _SETTLE_BATCH if limit is None else min(_SETTLE_BATCH, limit - folded)
                with self.pool.connection() as conn:
                    moved = conn.execute(sql.SQL(
                        "UPDATE {table} SET indexed = true WHERE id IN (SELECT id FROM {table} WHERE NOT indexed "
                        "LIMIT %s FOR UPDATE SKIP LOCKED)").format(table=sql.Identifier(table)), (batch,)).rowcount
                folded, here = folded + moved, here + moved
                if moved < batch:
                    caught_up = True
                    break
            if here and caught_up:  # clear the old row versions: counting and exact scans then read the index only
                with self.pool.connection() as conn:
                    conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(table)))
        return folded

    def unsettled(self) -> int:
        """How many rows wait to be folded into the HNSW indexes."""
        total = 0
        with self.pool.connection() as conn:
            for table in _TABLES.values():
                row = conn.execute(sql.SQL("SELECT count(*) FROM {} WHERE NOT indexed").format(
                    sql.Identifier(table))).fetchone()
                total += int(row[0]) if row else 0
        return total

    # --- writing -------------------------------------------------------------------------------------

    def _existing(self, collection: str, ids: Sequence[str]) -> set[str]:
        """Which of these ids are stored already."""
        if not ids:
            return set()
        with self.pool.connection() as conn:
            rows = conn.execute(sql.SQL("SELECT id::text FROM {} WHERE id = ANY(%s::uuid[])").format(
                sql.Identifier(_TABLES[collection])), (list(ids),)).fetchall()
        return {str(r[0]) for r in rows}

    def _upsert(self, collection: str, rows: Sequence[tuple[Any, ...]]) -> int:
        """Binary COPY rows into a temporary table, then insert or update them by id in one statement."""
        if not rows:
            return 0
        table = _TABLES[collection]
        if collection == DOCUMENTS:
            columns: LiteralString = "id, owner, source, content, metadata, embedding"
            types = ["uuid", "text", "text", "text", "jsonb", "vector"]
            update: LiteralString = ("owner = EXCLUDED.owner, source = EXCLUDED.source, content = EXCLUDED.content, "
                                     "metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, indexed = false")
        else:
            columns = "id, owner, workflow, rating, content, metadata, embedding, pixels"
            types = ["uuid", "text", "text", "int2", "text", "jsonb", "vector", "vector"]
            update = ("owner = EXCLUDED.owner, workflow = EXCLUDED.workflow, rating = EXCLUDED.rating, "
                      "content = EXCLUDED.content, metadata = EXCLUDED.metadata, embedding = EXCLUDED.embedding, "
                      "pixels = EXCLUDED.pixels, indexed = false")
        staging = sql.Identifier(f"{table}_incoming")
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {staging} (LIKE {table} INCLUDING DEFAULTS) "
                                 "ON COMMIT DELETE ROWS").format(staging=staging, table=sql.Identifier(table)))
            with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
                    staging, sql.SQL(columns))) as copy:
                copy.set_types(types)
                for row in rows:
                    copy.write_row(row)
            conn.execute(sql.SQL(
                "INSERT INTO {table} ({columns}) SELECT DISTINCT ON (id) {columns} FROM {staging} "
                "ON CONFLICT (id) DO UPDATE SET {update}").format(
                    table=sql.Identifier(table), columns=sql.SQL(columns), staging=staging, update=sql.SQL(update)))
        return len(rows)

    @staticmethod
    def _document_row(point_id: str, payload: dict[str, Any], vector: Sequence[float]) -> tuple[Any, ...]:
        """A documents row from a LangChain-layout payload."""
        meta = dict(payload.get("metadata") or {})
        return (uuid.UUID(point_id), str(meta.get("owner", SHARED)), str(meta.get("source", "")),
                str(payload.get("page_content", "")), Jsonb(meta), _vector(vector))

    @staticmethod
    def _image_row(point_id: str, payload: dict[str, Any], text: Sequence[float],
                   pixels: Sequence[float]) -> tuple[Any, ...]:
        """An images row from a LangChain-layout payload."""
        meta = dict(payload.get("metadata") or {})
        rating = meta.get("rating")
        return (uuid.UUID(point_id), str(meta.get("owner", SHARED)), str(meta.get("workflow", "")),
                int(rating) if rating is not None else None, str(payload.get("page_content", "")), Jsonb(meta),
                _vector(text), _vector(pixels))

    # --- documents -----------------------------------------------------------------------------------

    def add_documents(self, chunks: Sequence[DocumentChunk]) -> int:
        """Embed and store chunks not stored yet (same owner and content → same id); how many were new."""
        existing = self._existing(DOCUMENTS, [c.point_id for c in chunks])
        fresh = list({c.point_id: c for c in chunks if c.point_id not in existing}.values())
        if not fresh:
            return 0
        vectors = self.embedder.embed([c.text for c in fresh])
        return self._upsert(DOCUMENTS, [self._document_row(c.point_id, c.payload(), v)
                                        for c, v in zip(fresh, vectors, strict=True)])

    def replace_source(self, source: str, owner: str, chunks: Sequence[DocumentChunk]) -> tuple[int, int]:
        """Make the stored chunks of one file (for one owner) exactly `chunks`: (added, removed)."""
        keep = [uuid.UUID(c.point_id) for c in chunks]
        with self.pool.connection() as conn:
            removed = conn.execute(
                "DELETE FROM memory_documents WHERE owner = %s AND source = %s AND NOT (id = ANY(%s))",
                (owner, source, keep)).rowcount
        return self.add_documents(chunks), removed

    def _nearest(self, table: LiteralString, column: LiteralString, vector: Sequence[float], k: int,
                 where: sql.Composable, params: Sequence[Any]) -> list[tuple[str, dict[str, Any], float]]:
        """(content, metadata, cosine similarity) of the k nearest rows passing `where`, best first.

        When at most `exact_up_to` rows pass the filter (several filters, a small memory), they are scored exactly
        from the B-tree's rows: exact recall, and faster than walking HNSW for a few matches. Otherwise the HNSW
        index answers for folded rows and fresh rows (not folded yet) are scored exactly, both re-sorted. Colour
        layouts ("pixels", searched rarely) are always scored exactly: no index to maintain on every write.
        """
        dim = len(vector)
        if column == "pixels" or self._matching(table, where, params) <= self.exact_up_to:
            # An expression no HNSW index covers: the planner filters first and scores every passing row exactly.
            query = sql.SQL(
                "SELECT content, metadata, {column} <=> %s::vector AS distance FROM {table} WHERE {where} "
                "ORDER BY distance LIMIT %s").format(column=sql.Identifier(column), table=sql.Identifier(table),
                                                     where=where)
            values: tuple[Any, ...] = (_vector(vector), *params, k)
        else:
            # Folded rows through the partial HNSW index (iterative, relaxed order), fresh ones exactly; re-sorted.
            query = sql.SQL(
                "WITH hits AS MATERIALIZED ("
                "(SELECT content, metadata, embedding::vector({dim}) <=> %s::vector({dim}) AS distance FROM {table} "
                "WHERE indexed AND {where} ORDER BY distance LIMIT %s) UNION ALL "
                "(SELECT content, metadata, embedding <=> %s::vector AS distance FROM {table} "
                "WHERE NOT indexed AND {where} ORDER BY distance LIMIT %s)) "
                "SELECT content, metadata, distance FROM hits ORDER BY distance LIMIT %s").format(
                    dim=sql.Literal(dim), table=sql.Identifier(table), where=where)
            values = (_vector(vector), *params, k, _vector(vector), *params, k, k)
        with self.pool.connection() as conn:
            rows = conn.execute(query, values).fetchall()
        return [(str(r[0]), dict(r[1]), 1.0 - float(r[2])) for r in rows]

    def _matching(self, table: LiteralString, where: sql.Composable, params: Sequence[Any]) -> int:
        """How many rows pass `where`, counted from the B-tree up to `exact_up_to + 1`."""
        query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {where} LIMIT %s) AS passing").format(
            table=sql.Identifier(table), where=where)
        with self.pool.connection() as conn:
            row = conn.execute(query, (*params, self.exact_up_to + 1)).fetchone()
        return int(row[0]) if row else 0

    def search_documents(self, query: str, owner: str, k: int = 5) -> list[DocumentHit]:
        """The chunks most related to `query` that `owner` may see."""
        vector = self.embedder.embed([query])[0]
        rows = self._nearest("memory_documents", "embedding", vector, k, sql.SQL("owner = ANY(%s)"),
                             [[owner, SHARED]])
        return [DocumentHit.from_payload({"page_content": text, "metadata": meta}, score)
                for text, meta, score in rows]

    def retriever(self, owner: str, k: int = 4) -> BaseRetriever:
        """A LangChain retriever over the documents `owner` may see."""
        return _DocumentRetriever(store=self, owner=owner, k=k)

    # --- images --------------------------------------------------------------------------------------

    def has_image(self, point_id: str) -> bool:
        """Whether an image is stored."""
        return bool(self._existing(IMAGES, [point_id]))

    def add_images(self, records: Sequence[ImageRecord], pixels: Sequence[list[float]]) -> int:
        """Store image records with their text and colour-layout vectors (upsert by id)."""
        if not records:
            return 0
        texts = self.embedder.embed([r.text for r in records])
        return self._upsert(IMAGES, [self._image_row(r.point_id, r.payload(), t, p)
                                     for r, t, p in zip(records, texts, pixels, strict=True)])

    def _image_filter(self, owner: str, workflow: str | None, min_rating: int | None,
                      exclude: str | None = None) -> tuple[sql.Composable, list[Any]]:
        """The WHERE clause (owner or shared, then the optional filters) and its parameters."""
        parts: list[sql.Composable] = [sql.SQL("owner = ANY(%s)")]
        params: list[Any] = [[owner, SHARED]]
        if workflow:
            parts.append(sql.SQL("workflow = %s"))
            params.append(workflow)
        if min_rating:
            parts.append(sql.SQL("rating >= %s"))
            params.append(min_rating)
        if exclude is not None:
            parts.append(sql.SQL("id <> %s::uuid"))
            params.append(exclude)
        return sql.SQL(" AND ").join(parts), params

    def search_images(self, query: str, owner: str, k: int = 8, *, workflow: str | None = None,
                      min_rating: int | None = None) -> list[ImageHit]:
        """Images whose caption or prompt is closest to `query`, among those `owner` may see."""
        vector = self.embedder.embed([query])[0]
        return self.similar_to_vector(vector, "text", owner, k, workflow=workflow, min_rating=min_rating)

    def image(self, point_id: str, owner: str) -> ImageRecord | None:
        """One image record if `owner` may see it."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT content, metadata FROM memory_images WHERE id = %s::uuid AND owner = ANY(%s)",
                               (point_id, [owner, SHARED])).fetchone()
        return ImageRecord.from_payload({"page_content": row[0], "metadata": row[1]}) if row else None

    def image_vectors(self, point_id: str) -> dict[str, list[float]]:
        """The stored vectors of one image ("text", "pixels")."""
        with self.pool.connection() as conn:
            row = conn.execute("SELECT embedding, pixels FROM memory_images WHERE id = %s::uuid",
                               (point_id,)).fetchone()
        return {"text": _floats(row[0]), "pixels": _floats(row[1])} if row else {}

    def similar_to_vector(self, vector: list[float], using: str, owner: str, k: int = 8, *,
                          exclude: str | None = None, workflow: str | None = None,
                          min_rating: int | None = None) -> list[ImageHit]:
        """Images near a given text or pixel vector (`using`: "text" or "pixels")."""
        where, params = self._image_filter(owner, workflow, min_rating, exclude)
        column: LiteralString = "pixels" if using == "pixels" else "embedding"
        rows = self._nearest("memory_images", column, vector, k, where, params)
        return [ImageHit.from_payload({"page_content": text, "metadata": meta}, score) for text, meta, score in rows]

    def set_rating(self, point_ids: Sequence[str], *, rating: int | None, thumb: int | None) -> None:
        """Store a rating on images (the column filters use, and the record's own fields)."""
        patch = {key: value for key, value in (("rating", rating), ("thumb", thumb)) if value is not None}
        if not patch or not point_ids:
            return
        with self.pool.connection() as conn:
            conn.execute("UPDATE memory_images SET rating = COALESCE(%s, rating), metadata = metadata || %s "
                         "WHERE id = ANY(%s::uuid[])", (rating, Jsonb(patch), list(point_ids)))

    def owned_images(self, owner: str) -> Iterator[ImageRecord]:
        """Every image of one owner (not shared ones), for style profiles."""
        with self.pool.connection() as conn, conn.transaction(), \
                conn.cursor(name="atelier_owned_images", row_factory=dict_row) as cursor:
            cursor.itersize = _BATCH
            cursor.execute("SELECT content, metadata FROM memory_images WHERE owner = %s", (owner,))
            for row in cursor:
                yield ImageRecord.from_payload({"page_content": row["content"], "metadata": row["metadata"]})

    # --- maintenance ---------------------------------------------------------------------------------

    def reindex(self) -> dict[str, int]:
        """Re-embed every collection with the configured model (texts come from the stored rows)."""
        counts: dict[str, int] = {}
        for collection, table in _TABLES.items():
            with self.pool.connection() as conn:
                rows = conn.execute(sql.SQL("SELECT id::text, content FROM {}").format(sql.Identifier(table)))
                items = [(str(r[0]), str(r[1])) for r in rows.fetchall()]
                self._drop_other_indexes(conn, table)  # an index of the old dimension would refuse the new vectors
                for start in range(0, len(items), 128):
                    chunk = items[start:start + 128]
                    vectors = self.embedder.embed([text for _, text in chunk])
                    with conn.transaction(), conn.cursor() as cursor:
                        cursor.executemany(sql.SQL("UPDATE {} SET embedding = %s WHERE id = %s::uuid").format(
                            sql.Identifier(table)), [(_vector(v), i) for (i, _), v in zip(chunk, vectors,
                                                                                            strict=True)])
                self._stamp(conn, collection)
            counts[collection] = len(items)
        return counts

    def _drop_other_indexes(self, conn: psycopg.Connection[Any], table: LiteralString) -> None:
        """Drop HNSW indexes built for another dimension than the configured model's."""
        keep = f"{table}_hnsw_{self.embedder.dim}"
        names = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = %s AND indexname LIKE %s",
                             (table, f"{table}_hnsw_%")).fetchall()
        for (name,) in names:
            if name != keep:
                conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(sql.Identifier(str(name))))

    def export_points(self, collection: str) -> Iterator[StoredPoint]:
        """Every item of a collection with its payload and vectors (for `atelier memory migrate`)."""
        images = collection == IMAGES
        columns: LiteralString = "id::text, content, metadata, embedding" + (", pixels" if images else "")
        with self.pool.connection() as conn, conn.transaction(), conn.cursor(name="atelier_export") as cursor:
            cursor.itersize = _BATCH
            cursor.execute(sql.SQL("SELECT {} FROM {}").format(sql.SQL(columns), sql.Identifier(_TABLES[collection])))
            for row in cursor:
                vectors = {"text": _floats(row[3])}
                if images:
                    vectors["pixels"] = _floats(row[4])
                yield StoredPoint(id=str(row[0]), payload={"page_content": row[1], "metadata": dict(row[2])},
                                  vectors=vectors)

    def import_points(self, collection: str, points: Sequence[StoredPoint]) -> int:
        """Store exported items as they are (no re-embedding: the collections must share a model); how many."""
        neutral = [1.0 / PIXEL_DIM**0.5] * PIXEL_DIM
        total = 0
        for start in range(0, len(points), _BATCH):
            batch = points[start:start + _BATCH]
            if collection == DOCUMENTS:
                rows = [self._document_row(p.id, p.payload, p.vectors["text"]) for p in batch]
            else:
                rows = [self._image_row(p.id, p.payload, p.vectors["text"], p.vectors.get("pixels") or neutral)
                        for p in batch]
            total += self._upsert(collection, rows)
        return total


class _DocumentRetriever(BaseRetriever):
    """LangChain's retriever interface over `PgVectorMemory.search_documents` for one owner."""

    store: PgVectorMemory
    owner: str
    k: int = 4

    model_config = ConfigDict(arbitrary_types_allowed=True)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        """The owner's (and shared) chunks nearest to the query, as LangChain documents."""
        hits = self.store.search_documents(query, self.owner, self.k)
        return [Document(page_content=h.text, metadata={"source": h.source, "title": h.title, "page": h.page,
                                                        "chunk": h.chunk, "owner": h.owner, "score": h.score})
                for h in hits]
