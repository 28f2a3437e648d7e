"""The Qdrant backend through Qdrant's API, in qdrant-client's local mode, with a tiny hashing embedder.

Local mode runs the same client calls as a server for collections, vectors, filters, scrolls and upserts, so
the schema, the model stamp, owner isolation, the filters, replace_source, export/import and reindex are checked
for real here. What it cannot prove: payload indexes. Local mode accepts `create_payload_index` and builds
nothing (it filters point by point and reports no payload schema), so these tests can only check which indexes
QdrantMemory asks for — fields, types, the owner as tenant — not that a Qdrant server builds them, that the
planner uses them, or how fast filtered searches are there (bench/memory_search.py measures that).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from qdrant_client import QdrantClient, models

from atelier.tools.memory.qdrant_store import QdrantMemory
from atelier.tools.memory.records import SHARED
from atelier.tools.memory.store import DOCUMENTS, IMAGES, PIXEL_DIM, EmbeddingMismatchError
from tests.fakes.hashing_embedder import HashingEmbedder
from tests.integration.memory_samples import BLUE, RED, answers, chunk, fill, image, pixels

TENANT = models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True)
WANTED_INDEXES = sorted([
    (DOCUMENTS, "metadata.owner", TENANT),
    (DOCUMENTS, "metadata.source", models.PayloadSchemaType.KEYWORD),
    (IMAGES, "metadata.owner", TENANT),
    (IMAGES, "metadata.workflow", models.PayloadSchemaType.KEYWORD),
    (IMAGES, "metadata.rating", models.PayloadSchemaType.INTEGER),
], key=repr)


class IndexSpy:
    """Records the payload indexes asked for and reports them in `get_collection`, as a server does.

    Local mode reports no payload schema at all, so without the report every open would ask again (harmless);
    with it, the test sees that an index a collection has is not asked for twice.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, str, Any]] = []  # (collection, field, schema) in the order asked
        self.present: dict[str, dict[str, Any]] = {}
        create, get, delete = (QdrantClient.create_payload_index, QdrantClient.get_collection,
                               QdrantClient.delete_collection)

        def create_index(client: QdrantClient, collection_name: str, field_name: str, field_schema: Any = None,
                         **kwargs: Any) -> models.UpdateResult:
            self.calls.append((collection_name, field_name, field_schema))
            self.present.setdefault(collection_name, {})[field_name] = field_schema
            return create(client, collection_name, field_name, field_schema=field_schema, **kwargs)

        def get_collection(client: QdrantClient, collection_name: str, **kwargs: Any) -> models.CollectionInfo:
            info = get(client, collection_name, **kwargs)
            schema = {field: models.PayloadIndexInfo(data_type=models.PayloadSchemaType.KEYWORD, points=0)
                      for field in self.present.get(collection_name, {})}
            return info.model_copy(update={"payload_schema": schema})

        def delete_collection(client: QdrantClient, collection_name: str, **kwargs: Any) -> bool:
            self.present.pop(collection_name, None)
            return delete(client, collection_name, **kwargs)

        monkeypatch.setattr(QdrantClient, "create_payload_index", create_index)
        monkeypatch.setattr(QdrantClient, "get_collection", get_collection)
        monkeypatch.setattr(QdrantClient, "delete_collection", delete_collection)

    def asked(self) -> list[tuple[str, str, Any]]:
        """The indexes asked for, in a fixed order."""
        return sorted(self.calls, key=repr)


@pytest.fixture
def embedder() -> HashingEmbedder:
    """The hashing embedder (64 dims)."""
    return HashingEmbedder()


@pytest.fixture
def memory(tmp_path: Path, embedder: HashingEmbedder) -> Iterator[QdrantMemory]:
    """A local-mode memory holding the samples."""
    store = QdrantMemory.in_folder(tmp_path / "qdrant", embedder)
    fill(store)
    yield store
    store.close()


def test_collections_have_the_schema_and_the_model_stamp(tmp_path: Path, embedder: HashingEmbedder) -> None:
    store = QdrantMemory.in_folder(tmp_path / "qdrant", embedder)
    try:
        documents = store.client.get_collection(DOCUMENTS).config.params.vectors
        assert documents == models.VectorParams(size=embedder.dim, distance=models.Distance.COSINE)
        images = store.client.get_collection(IMAGES).config.params.vectors
        assert isinstance(images, dict) and set(images) == {"text", "pixels"}
        assert (images["text"].size, images["text"].distance) == (embedder.dim, models.Distance.COSINE)
        assert (images["pixels"].size, images["pixels"].distance) == (PIXEL_DIM, models.Distance.COSINE)
        assert store.recorded_model(DOCUMENTS) == store.recorded_model(IMAGES) == ("test:hashing-64", 64)
        assert store.count(DOCUMENTS) == store.count(IMAGES) == 0
    finally:
        store.close()


def test_a_collection_made_by_another_model_is_refused_with_the_fix(memory: QdrantMemory, tmp_path: Path) -> None:
    memory.close()
    with pytest.raises(EmbeddingMismatchError) as caught:
        QdrantMemory.in_folder(tmp_path / "qdrant", HashingEmbedder(32, name="ollama:other"))
    message = str(caught.value)
    assert "test:hashing-64 (64 dims)" in message and "ollama:other-32 (32 dims)" in message
    assert "atelier memory reindex" in message and "ATELIER_EMBED_MODEL" in message
    reopened = QdrantMemory.in_folder(tmp_path / "qdrant", HashingEmbedder())  # the right model still opens it
    assert reopened.count(DOCUMENTS) == 7
    reopened.close()


def test_the_payload_indexes_are_asked_for_with_the_collections(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                embedder: HashingEmbedder) -> None:
    spy = IndexSpy(monkeypatch)
    QdrantMemory.in_folder(tmp_path / "qdrant", embedder).close()
    assert spy.asked() == WANTED_INDEXES
    owner = next(schema for collection, field, schema in spy.calls if field == "metadata.owner")
    assert isinstance(owner, models.KeywordIndexParams) and owner.is_tenant is True
    spy.calls.clear()
    QdrantMemory.in_folder(tmp_path / "qdrant", embedder).close()
    assert spy.calls == [], "an index the collection reports is not asked for again"


def test_an_existing_collection_without_indexes_gets_them_when_opened(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path,
                                                                      embedder: HashingEmbedder) -> None:
    monkeypatch.setattr(QdrantClient, "create_payload_index", lambda *args, **kwargs: None)  # as before issue 17
    old = QdrantMemory.in_folder(tmp_path / "qdrant", embedder)
    fill(old)
    old.close()
    monkeypatch.undo()
    spy = IndexSpy(monkeypatch)
    store = QdrantMemory.in_folder(tmp_path / "qdrant", embedder)
    try:
        assert spy.asked() == WANTED_INDEXES
        assert store.count(DOCUMENTS) == 7 and store.count(IMAGES) == 5, "the collections were kept, not rebuilt"
    finally:
        store.close()


def test_owners_see_their_documents_and_shared_ones_only(memory: QdrantMemory) -> None:
    ana = memory.search_documents("sourdough starter flour", "ana", k=10)
    assert {h.owner for h in ana} == {"ana", SHARED} and ana[0].source == "/docs/ana/bread.md"
    assert all("rye" not in h.text for h in ana), "bea's starter stays hers"
    assert {h.owner for h in memory.search_documents("bike chain", "carl", k=10)} == {SHARED}
    found = memory.retriever("bea", k=10).invoke("sourdough starter")
    assert {d.metadata["owner"] for d in found} == {"bea", SHARED}
    assert found[0].page_content == "my sourdough starter secret is rye flour"
    assert {d.metadata["owner"] for d in memory.retriever("carl", k=10).invoke("sourdough")} == {SHARED}


def test_owners_see_their_images_and_shared_ones_only(memory: QdrantMemory) -> None:
    ana = memory.search_images("red fox", "ana", k=10)
    assert {h.image.owner for h in ana} == {"ana", SHARED}
    assert ana[0].image.prompt == "a red fox in the snow"
    assert {h.image.owner for h in memory.search_images("red fox", "carl", k=10)} == {SHARED}
    assert memory.image(image("bea-fox").point_id, "ana") is None
    assert memory.image(image("bea-fox").point_id, "bea") == image("bea-fox")
    assert memory.image(image("shared-fox").point_id, "ana") == image("shared-fox")
    assert {r.prompt for r in memory.owned_images("ana")} == {
        "a red fox in the snow", "a fox cub sleeping in red leaves", "a glacier lake under blue sky"}

    # bea's fox has exactly the colours asked for, yet ana never sees it
    by_look = memory.similar_to_vector(pixels(RED), "pixels", "ana", k=10, exclude=image("ana-fox").point_id)
    assert [h.image.job_id for h in by_look][:2] == [image("ana-cub").job_id, image("shared-fox").job_id]
    assert image("bea-fox").job_id not in {h.image.job_id for h in by_look}
    assert image("ana-fox").job_id not in {h.image.job_id for h in by_look}
    stored = memory.image_vectors(image("ana-lake").point_id)
    assert stored["pixels"] == pytest.approx(pixels(BLUE), abs=1e-6)
    by_meaning = memory.similar_to_vector(stored["text"], "text", "bea", k=10)
    assert {h.image.owner for h in by_meaning} == {"bea", SHARED}


def test_workflow_and_rating_filters(memory: QdrantMemory) -> None:
    assert [h.image.prompt for h in memory.search_images("fox", "ana", workflow="txt2img-hq")] == [
        "a fox cub sleeping in red leaves"]
    assert {h.image.prompt for h in memory.search_images("fox", "ana", min_rating=4)} == {
        "a red fox in the snow", "a fox sculpture in bronze"}
    assert memory.search_images("fox", "ana", workflow="txt2img-hq", min_rating=3) == []
    hq = memory.similar_to_vector(pixels(RED), "pixels", "ana", workflow="txt2img-hq")
    assert [h.image.workflow for h in hq] == ["txt2img-hq"]
    memory.set_rating([image("ana-lake").point_id], rating=4, thumb=1)
    rated = {h.image.prompt: h.image for h in memory.search_images("lake", "ana", min_rating=4)}
    assert rated["a glacier lake under blue sky"].thumb == 1
    assert memory.similar_to_vector(pixels(BLUE), "pixels", "ana", k=1, min_rating=5)[0].image.rating == 5


def test_replace_source_touches_one_owners_file_only(memory: QdrantMemory) -> None:
    source = "/docs/ana/bread.md"
    kept = chunk("bake the bread at high heat with steam", "ana", source, 0)
    added = chunk("let the dough rest overnight in the fridge", "ana", source, 1)
    assert memory.replace_source(source, "ana", [kept, added]) == (1, 1)
    assert memory.replace_source(source, "ana", [kept, added]) == (0, 0)
    texts = {h.text for h in memory.search_documents("bread dough sourdough", "ana", k=10) if h.source == source}
    assert texts == {kept.text, added.text}
    assert memory.replace_source("/docs/bea/bread.md", "ana", []) == (0, 0), "bea's file of that name is hers"
    assert any("rye" in h.text for h in memory.search_documents("sourdough", "bea", k=10))
    assert memory.count(DOCUMENTS) == 7


def test_export_and_import_between_two_folders_give_the_same_answers(memory: QdrantMemory, tmp_path: Path,
                                                                     embedder: HashingEmbedder) -> None:
    copy = QdrantMemory.in_folder(tmp_path / "copy", embedder)
    try:
        for collection in (DOCUMENTS, IMAGES):
            assert copy.import_points(collection, list(memory.export_points(collection))) == memory.count(collection)
            assert copy.count(collection) == memory.count(collection)
        assert answers(copy) == answers(memory)
        point = image("ana-cub").point_id
        copied, original = copy.image_vectors(point), memory.image_vectors(point)
        assert set(copied) == {"text", "pixels"} and all(copied[n] == pytest.approx(original[n]) for n in copied)
        assert copy.image(point, "ana") == memory.image(point, "ana")
    finally:
        copy.close()


def test_reindex_re_embeds_with_the_new_model_and_keeps_the_rest(monkeypatch: pytest.MonkeyPatch,
                                                                 memory: QdrantMemory, tmp_path: Path) -> None:
    memory.set_rating([image("ana-lake").point_id], rating=3, thumb=None)
    memory.close()
    spy = IndexSpy(monkeypatch)
    new = HashingEmbedder(32, name="test:other")
    store = QdrantMemory.in_folder(tmp_path / "qdrant", new, verify_model=False)
    try:
        assert store.reindex() == {DOCUMENTS: 7, IMAGES: 5}
        assert store.recorded_model(DOCUMENTS) == store.recorded_model(IMAGES) == ("test:other-32", 32)
        assert store.client.get_collection(DOCUMENTS).config.params.vectors == models.VectorParams(
            size=32, distance=models.Distance.COSINE)
        assert spy.asked() == WANTED_INDEXES, "the rebuilt collections get their indexes again"
        assert store.search_documents("bike chain", "bea", k=1)[0].source == "/docs/bea/bike.md"
        assert store.image(image("ana-lake").point_id, "ana").rating == 3  # type: ignore[union-attr]
        assert store.image_vectors(image("ana-lake").point_id)["pixels"] == pytest.approx(pixels(BLUE), abs=1e-6)
        assert len(store.image_vectors(image("ana-lake").point_id)["text"]) == 32
    finally:
        store.close()
    QdrantMemory.in_folder(tmp_path / "qdrant", new).close()  # the new model now opens it with the check
