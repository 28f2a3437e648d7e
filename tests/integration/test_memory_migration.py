"""`migrate_memory` between two local-mode Qdrant memories, and `atelier memory migrate`'s refusals.

The copy to and from PostgreSQL runs through the same `export_points` / `import_points`; its end-to-end test
lives with the pgvector backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from atelier.tools.memory.migration import migrate_memory, stored_counts
from atelier.tools.memory.qdrant_store import QdrantMemory
from atelier.tools.memory.store import DOCUMENTS, IMAGES, EmbeddingMismatchError
from tests.fakes.hashing_embedder import HashingEmbedder
from tests.integration.memory_samples import answers, fill
from tests.integration.test_cli import run


@pytest.fixture
def source(tmp_path: Path) -> Iterator[QdrantMemory]:
    """A local-mode memory holding the samples."""
    store = QdrantMemory.in_folder(tmp_path / "source", HashingEmbedder())
    fill(store)
    yield store
    store.close()


@pytest.fixture
def target(tmp_path: Path) -> Iterator[QdrantMemory]:
    """An empty local-mode memory with the same model."""
    store = QdrantMemory.in_folder(tmp_path / "target", HashingEmbedder())
    yield store
    store.close()


def test_migrating_copies_everything_in_batches_and_answers_the_same(source: QdrantMemory,
                                                                     target: QdrantMemory) -> None:
    seen: list[tuple[str, int]] = []
    counts = migrate_memory(source, target, batch=3, progress=lambda c, done: seen.append((c, done)))
    assert counts == stored_counts(source) == {DOCUMENTS: 7, IMAGES: 5}
    assert seen == [(DOCUMENTS, 3), (DOCUMENTS, 6), (DOCUMENTS, 7), (IMAGES, 3), (IMAGES, 5)]
    assert target.count(DOCUMENTS) == 7 and target.count(IMAGES) == 5
    assert answers(target) == answers(source)
    assert target.recorded_model(DOCUMENTS) == source.recorded_model(DOCUMENTS)


def test_migrating_twice_leaves_the_same_memory(source: QdrantMemory, target: QdrantMemory) -> None:
    first = migrate_memory(source, target)
    before = answers(target)
    assert migrate_memory(source, target) == first
    assert (target.count(DOCUMENTS), target.count(IMAGES)) == (7, 5)
    assert answers(target) == before


def test_a_source_that_never_made_its_collections_copies_nothing(tmp_path: Path, target: QdrantMemory) -> None:
    empty = QdrantMemory.in_folder(tmp_path / "empty", HashingEmbedder(), verify_model=False)
    try:
        assert stored_counts(empty) == {DOCUMENTS: 0, IMAGES: 0}
        assert migrate_memory(empty, target) == {DOCUMENTS: 0, IMAGES: 0}
    finally:
        empty.close()


def test_another_model_is_refused_before_anything_is_copied(source: QdrantMemory, tmp_path: Path) -> None:
    other = QdrantMemory.in_folder(tmp_path / "other", HashingEmbedder(32, name="ollama:other"))
    try:
        with pytest.raises(EmbeddingMismatchError) as caught:
            migrate_memory(source, other)
        message = str(caught.value)
        assert "test:hashing-64 (64 dims)" in message and "ollama:other-32 (32 dims)" in message
        assert "ATELIER_EMBED_MODEL" in message and "atelier memory reindex" in message
        assert other.count(DOCUMENTS) == other.count(IMAGES) == 0
    finally:
        other.close()


# --- the command's refusals --------------------------------------------------------------------------------------


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No QDRANT_URL, an empty data folder; returns it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    for name in ("QDRANT_URL", "QDRANT_API_KEY", "ATELIER_MEMORY", "ATELIER_EMBED_MODEL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "data"




@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--to", "qdrant"], "set QDRANT_URL"),
        (["--to", "postgres"], "nothing to migrate to postgres from: QDRANT_URL is not set and there is no local"),
        (["--to", "postgres", "--from", "qdrant"], "set QDRANT_URL"),
        (["--to", "postgres", "--from", "local"], "there is no local memory in"),
        (["--to", "postgres", "--from", "postgres"], "cannot be migrated from postgres to itself"),
    ],
    ids=["to-qdrant-without-url", "nothing-to-copy", "from-qdrant-without-url", "no-local-folder", "to-itself"],
)
def test_the_command_says_what_is_missing(cli_env: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                                          expected: str) -> None:
    code, out, err = run(capsys, "memory", "migrate", *argv)
    assert code == 1 and out == ""
    assert expected in " ".join(err.split()) and "Traceback" not in err
    assert not (cli_env / "qdrant").exists(), "a refused migration creates no memory"


def test_the_command_names_the_backends_it_knows(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "memory", "migrate", "--to", "sqlite")
    assert code == 2 and "use postgres or qdrant" in err
    code, _, err = run(capsys, "memory", "migrate", "--to", "qdrant", "--from", "chroma")
    assert code == 2 and "use local, qdrant or postgres" in err


# --- end to end: an old install's local folder into pgvector --------------------------------------------------------


class _AsMiniLM(HashingEmbedder):
    """Hashed vectors under the packaged model's name and size (what `atelier` itself embeds with)."""

    def __init__(self) -> None:
        super().__init__(dim=384)
        self.name = "all-MiniLM-L6-v2"


def test_an_old_local_folder_moves_into_pgvector_with_the_command(cli_env: Path, capsys: pytest.CaptureFixture[str],
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  embedded_pg_url: str) -> None:
    from atelier.tools.memory.pgvector_store import PgVectorMemory
    from atelier.tools.settings import load_settings

    old = QdrantMemory.in_folder(cli_env / "qdrant", _AsMiniLM())  # where local mode kept the memory
    fill(old)
    expected, counts = answers(old), stored_counts(old)
    old.close()
    monkeypatch.setenv("DATABASE_URL", embedded_pg_url)
    for _ in range(2):  # a second run changes nothing
        code, out, err = run(capsys, "memory", "migrate", "--to", "postgres")
        assert code == 0, err
        assert f"{DOCUMENTS}: " in out and "copied from local to postgres" in out
    moved = PgVectorMemory.open(load_settings(), _AsMiniLM())
    try:
        assert moved.unsettled() == 0, "the command folds what it copied into the search index"
        assert stored_counts(moved) == counts and counts[DOCUMENTS] > 0 and counts[IMAGES] > 0
        assert answers(moved) == expected, "the same questions find the same items with the same scores"
    finally:
        moved.close()
