"""The pgvector backend's own promises: the schema in the ledger's migrations, HNSW per dimension, filters that
never starve, a clear error on a server without pgvector, and several processes at once."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import psycopg
import pytest

from atelier.tools.ledger.migrations import applied_versions
from atelier.tools.memory.pgvector_store import PgVectorMemory
from atelier.tools.memory.records import SHARED, DocumentChunk, ImageRecord
from atelier.tools.memory.store import DOCUMENTS, IMAGES, PIXEL_DIM, MemoryUnavailableError
from atelier.tools.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]


class HashEmbedder:
    """Deterministic unit vectors from a text's hash: fast, and equal texts give equal vectors."""

    def __init__(self, dim: int = 32, name: str = "test-hash") -> None:
        self.dim = dim
        self.name = name

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text."""
        out = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")
            vector = np.random.default_rng(seed).standard_normal(self.dim)
            out.append([float(x) for x in vector / np.linalg.norm(vector)])
        return out


@pytest.fixture
def settings(tmp_path: Path, embedded_pg_url: str) -> Settings:
    """The memory on pgvector in a fresh embedded database."""
    return load_settings(data_dir=tmp_path / "data", database_url=embedded_pg_url, memory_backend="postgres")


@pytest.fixture
def memory(settings: Settings) -> Iterator[PgVectorMemory]:
    """A pgvector memory with the hash embedder."""
    store = PgVectorMemory.open(settings, HashEmbedder())
    yield store
    store.close()


def _image(job: int, owner: str, workflow: str = "txt2img", rating: int | None = None) -> ImageRecord:
    """An image record with a distinct prompt."""
    return ImageRecord(job_id=f"00000000-0000-0000-0000-{job:012d}", owner=owner, prompt=f"picture {job}",
                       workflow=workflow, uri=f"file:///{job}.png", rating=rating, created_at="2026-12-06T00:00:00Z")


def _pixels(seed: int) -> list[float]:
    """A unit colour-layout vector."""
    vector = np.random.default_rng(seed).random(PIXEL_DIM)
    return [float(x) for x in vector / np.linalg.norm(vector)]


def test_the_schema_is_migration_9_with_an_hnsw_index_for_the_models_dimension(memory: PgVectorMemory,
                                                                                embedded_pg_url: str) -> None:
    with psycopg.connect(embedded_pg_url) as conn:
        assert 9 in applied_versions(conn)
        indexes = {str(r[0]): str(r[1]) for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename LIKE 'memory_%'")}
    assert "hnsw" in indexes["memory_documents_hnsw_32"] and "(embedding)::vector(32)" in \
        indexes["memory_documents_hnsw_32"]
    assert "hnsw" in indexes["memory_images_hnsw_32"]
    assert memory.recorded_model(DOCUMENTS) == ("test-hash", 32) == memory.recorded_model(IMAGES)


@pytest.mark.parametrize("path", ["hnsw", "exact"])
def test_a_selective_filter_still_returns_k_rows_best_first(memory: PgVectorMemory, path: str) -> None:
    """Both search paths: HNSW with iterative scans (without them, HNSW filters after its candidate list and
    returns too few rows) and the exact scan of a small filtered set."""
    memory.exact_up_to = 0 if path == "hnsw" else 2_000
    records = [_image(i, "crowd" if i % 50 else "ana", "txt2img-hq" if i % 100 == 0 else "txt2img",
                      rating=5 if i % 200 == 0 else None) for i in range(3000)]
    memory.add_images(records, [_pixels(i) for i in range(3000)])
    assert memory.count(IMAGES) == 3000 and memory.unsettled() == 3000
    if path == "hnsw":
        assert memory.settle() == 3000 and memory.unsettled() == 0
    query = memory.embedder.embed(["picture 7"])[0]
    hits = memory.similar_to_vector(query, "text", "ana", 8)
    assert len(hits) == 8 and {h.image.owner for h in hits} == {"ana"}
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    scored = [(float(np.dot(query, v)), r) for r, v in
              zip(records, memory.embedder.embed([r.text for r in records]), strict=True)]
    exact = sorted((score, r.job_id) for score, r in scored if r.owner == "ana")
    assert {h.image.job_id for h in hits} == {job for _, job in exact[-8:]}, "recall@8 on 60 rows must be exact"
    narrow = memory.similar_to_vector(query, "text", "ana", 8, workflow="txt2img-hq", min_rating=5)
    matching = sorted((score, r.job_id) for score, r in scored
                      if r.owner == "ana" and r.workflow == "txt2img-hq" and r.rating == 5)
    assert len(matching) == 15 and {h.image.job_id for h in narrow} == {job for _, job in matching[-8:]}
    by_look = memory.similar_to_vector(_pixels(100), "pixels", "ana", 3, exclude=records[100].point_id)
    assert len(by_look) == 3 and records[100].job_id not in {h.image.job_id for h in by_look}


def test_fresh_rows_are_found_before_and_after_they_are_folded_into_the_index(memory: PgVectorMemory) -> None:
    memory.exact_up_to = 0  # the HNSW path, with its fresh rows scored exactly beside it
    records = [_image(i, "ana") for i in range(200)]
    memory.add_images(records[:100], [_pixels(i) for i in range(100)])
    assert memory.settle(limit=60) == 60 and memory.unsettled() == 40
    memory.add_images(records[100:], [_pixels(i) for i in range(100, 200)])
    for label in ("half folded", "all folded"):
        for probe in (records[5], records[80], records[150]):  # folded, fresh, fresh
            hits = memory.search_images(probe.text, "ana", k=3)
            assert hits[0].image.job_id == probe.job_id and hits[0].score == pytest.approx(1.0, abs=1e-5), label
        memory.settle()
    assert memory.unsettled() == 0
    memory.add_images([records[5].model_copy(update={"prompt": "a new caption"})], [_pixels(5)])
    assert memory.unsettled() == 1, "a changed row leaves the index until it is folded again"
    assert memory.search_images("a new caption", "ana", k=1)[0].image.job_id == records[5].job_id


def test_owners_see_their_own_and_shared_items_only(memory: PgVectorMemory) -> None:
    chunks = [DocumentChunk(text=f"note {i} about {who}", owner=who, source=f"/{who}.md", title=who, chunk=i,
                            content_hash=f"{who}{i}") for i in range(5) for who in ("ana", "bea", SHARED)]
    assert memory.add_documents(chunks) == 15 and memory.add_documents(chunks) == 0
    assert {h.owner for h in memory.search_documents("note about bea", "ana", k=15)} == {"ana", SHARED}
    assert {d.metadata["owner"] for d in memory.retriever("bea", k=15).invoke("note")} == {"bea", SHARED}
    memory.add_images([_image(1, "bea")], [_pixels(1)])
    assert memory.image(_image(1, "bea").point_id, "ana") is None
    assert memory.image(_image(1, "bea").point_id, "bea") is not None
    assert list(memory.owned_images("ana")) == []


def test_ratings_update_the_filter_column_and_the_record(memory: PgVectorMemory) -> None:
    record = _image(3, "ana")
    memory.add_images([record], [_pixels(3)])
    memory.set_rating([record.point_id], rating=4, thumb=1)
    memory.set_rating([record.point_id], rating=None, thumb=-1)
    stored = memory.image(record.point_id, "ana")
    assert stored is not None and (stored.rating, stored.thumb) == (4, -1)
    assert len(memory.similar_to_vector(memory.embedder.embed([record.text])[0], "text", "ana", min_rating=4)) == 1


def test_reindex_with_another_dimension_rebuilds_the_index(settings: Settings, memory: PgVectorMemory,
                                                           embedded_pg_url: str) -> None:
    memory.add_documents([DocumentChunk(text="kettle descaling", owner="ana", source="/k.md", title="k", chunk=0,
                                        content_hash="k")])
    wider = PgVectorMemory.open(settings, HashEmbedder(48, "wider"), verify_model=False)
    try:
        assert wider.reindex() == {DOCUMENTS: 1, IMAGES: 0}
        assert wider.recorded_model(DOCUMENTS) == ("wider", 48)
        assert wider.search_documents("kettle descaling", "ana")[0].score == pytest.approx(1.0, abs=1e-5)
    finally:
        wider.close()
    with psycopg.connect(embedded_pg_url) as conn:
        names = {str(r[0]) for r in conn.execute("SELECT indexname FROM pg_indexes WHERE indexname LIKE '%hnsw%'")}
    assert names == {"memory_documents_hnsw_48", "memory_images_hnsw_48"}


def test_a_server_without_pgvector_keeps_its_ledger_and_names_the_fix(tmp_path: Path, machine_pg_url: str) -> None:
    """The machine's PostgreSQL 15 has no pgvector: the ledger migrates, the memory explains what to install."""
    settings = load_settings(data_dir=tmp_path / "data", database_url=machine_pg_url, memory_backend="postgres")
    with pytest.raises(MemoryUnavailableError) as caught:
        PgVectorMemory.open(settings, HashEmbedder())
    message = str(caught.value)
    assert "postgresql-15-pgvector" in message and "CREATE EXTENSION vector" in message
    assert "QDRANT_URL" in message
    with psycopg.connect(machine_pg_url) as conn:
        assert applied_versions(conn)[-1] >= 9, "the ledger's migrations still ran to the end"
        assert conn.execute("SELECT to_regclass('memory_documents')").fetchone() == (None,)


def test_processes_open_and_write_the_memory_at_once(settings: Settings, embedded_pg_url: str) -> None:
    """Four processes stamp the collections and write at the same moment: no lock, no duplicate index, all rows."""
    code = (
        "import sys\nfrom tests.integration.test_memory_pgvector import HashEmbedder, _image, _pixels\n"
        "from atelier.tools.memory.pgvector_store import PgVectorMemory\n"
        "from atelier.tools.settings import load_settings\n"
        f"s = load_settings(data_dir={str(settings.data_dir)!r}, database_url={embedded_pg_url!r})\n"
        "n = int(sys.argv[1])\nm = PgVectorMemory.open(s, HashEmbedder())\n"
        "m.add_images([_image(n * 100 + i, 'ana') for i in range(50)], [_pixels(i) for i in range(50)])\n"
        "m.close()\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for n in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors
    store = PgVectorMemory.open(settings, HashEmbedder())
    try:
        assert store.count(IMAGES) == 200
    finally:
        store.close()
