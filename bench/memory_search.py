"""Memory scale: indexing throughput and search latency of the image memory in Qdrant local mode.

For 10k and 100k images (the sizes the issue names) in a fresh local-mode folder, through MemoryStore:
- indexing: images/s to upsert records (payload + 384-d text vector + colour layout). The vectors are
  MiniLM vectors of 500 real prompts, recombined per image (embedding 100k prompts would take ~7 min on
  2 cores); MiniLM's own throughput is measured separately on those 500 prompts;
- search: p50/p95 of `search_images` (owner filter, k=8) over 200 queries (40 at 100k), beside a baseline in the
  same run: an exact numpy scan of the same vectors (what local mode amounts to, without its overhead).
Run: .venv/bin/python bench/memory_search.py [--sizes 10000 100000] [--prompts 500] [--queries 200] [--smoke]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from rich.progress import Progress

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from atelier.tools.memory.backends import open_memory
from atelier.tools.memory.embeddings import MiniLMEmbedder
from atelier.tools.memory.records import ImageRecord
from atelier.tools.memory.store import PIXEL_DIM
from atelier.tools.settings import load_settings
from bench.smoke import parse_args

SUBJECTS = ["a red fox", "a lighthouse", "a bowl of ramen", "a vintage car", "a mountain lake", "a robot",
            "a cat on a sofa", "a city street", "a sailing boat", "a coffee cup", "a castle", "a forest path"]
STYLES = ["watercolor", "oil painting", "studio photo", "pixel art", "cinematic", "line drawing", "3d render",
          "film grain", "soft light", "neon", "golden hour", "minimalist"]
OWNERS = [f"user{i}" for i in range(20)]
K = 8  # images per search
SMOKE = {"sizes": [120], "prompts": 24, "queries": 8}


class _Recombined:
    """Serves precomputed vectors for texts (the benchmark measures the store, not the model)."""

    name = "all-MiniLM-L6-v2"
    dim = 384

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Look the vectors up."""
        return [self.table[t] for t in texts]


def prompts(count: int, rng: random.Random) -> list[str]:
    """Prompts like people write them: a subject and two or three modifiers."""
    return [f"{rng.choice(SUBJECTS)}, {', '.join(rng.sample(STYLES, rng.randint(2, 3)))}" for _ in range(count)]


def run(size: int, table: dict[str, list[float]], texts: list[str], queries: list[str]) -> dict[str, float]:
    """Index `size` images, then time searches; returns the figures."""
    rng = random.Random(size)
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(data_dir=Path(folder))
        store = open_memory(settings, _Recombined(table))  # type: ignore[arg-type]
        started = time.perf_counter()
        batch = 1000
        with Progress() as bar:
            task = bar.add_task(f"indexing {size:,}", total=size)
            for first in range(0, size, batch):
                records, layouts = [], []
                for i in range(first, min(size, first + batch)):
                    prompt = rng.choice(texts)
                    records.append(ImageRecord(job_id=f"00000000-0000-4000-8000-{i:012d}", owner=rng.choice(OWNERS),
                                               prompt=prompt, workflow="txt2img", uri=f"file:///x/{i}.png",
                                               seed=i, created_at="2026-11-25T00:00:00+00:00"))
                    layout = np.random.default_rng(i).normal(size=PIXEL_DIM)
                    layouts.append(list(layout / np.linalg.norm(layout)))
                store.add_images(records, layouts)
                bar.advance(task, len(records))
        index_seconds = time.perf_counter() - started
        latencies = []
        queries = queries[: max(40, 2_000_000 // size)]  # 200 queries at 10k, 40 at 100k (each scans everything)
        for query in queries:
            t0 = time.perf_counter()
            store.search_images(query, owner=rng.choice(OWNERS), k=K)
            latencies.append(time.perf_counter() - t0)
        # Baseline: an exact numpy scan over the same vectors, owner filter included.
        vectors = np.array([table[rng.choice(texts)] for _ in range(size)], dtype=np.float32)
        owners = np.array([rng.choice(OWNERS) for _ in range(size)])
        base = []
        for query in queries:
            t0 = time.perf_counter()
            mask = owners == rng.choice(OWNERS)
            scores = vectors[mask] @ np.array(table[query], dtype=np.float32)
            np.argpartition(-scores, K)[:K] if scores.size > K else np.argsort(-scores)
            base.append(time.perf_counter() - t0)
        store.close()
    return {
        "index_per_s": size / index_seconds,
        "p50_ms": statistics.median(latencies) * 1000,
        "p95_ms": statistics.quantiles(latencies, n=20)[18] * 1000,
        "base_p50_ms": statistics.median(base) * 1000,
    }


def slower(figures: dict[str, float]) -> float:
    """How many times slower local mode's median search is than the numpy scan's."""
    return figures["p50_ms"] / figures["base_p50_ms"] if figures["base_p50_ms"] > 0 else float("inf")


def main() -> None:
    """Embed a prompt pool with MiniLM, then measure each size."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--prompts", type=int, default=500, help="real prompts embedded with MiniLM")
    parser.add_argument("--queries", type=int, default=200, help="search queries at most per size")
    args = parse_args(parser, SMOKE)
    rng = random.Random(7)
    texts = list(dict.fromkeys(prompts(args.prompts, rng)))
    queries = [f"{rng.choice(SUBJECTS)} in {rng.choice(STYLES)}" for _ in range(args.queries)]
    embedder = MiniLMEmbedder()
    embedder.embed(["warm up"])
    t0 = time.perf_counter()
    vectors = embedder.embed(texts)
    minilm_rate = len(texts) / (time.perf_counter() - t0)
    table = dict(zip(texts, vectors, strict=True)) | dict(zip(queries, embedder.embed(queries), strict=True))
    print(f"MiniLM on CPU: {minilm_rate:.0f} prompts/s embedded")
    for size in args.sizes:
        figures = run(size, table, texts, queries)
        print(f"{size:>7,} images, local mode: index {figures['index_per_s']:7.0f} images/s, search p50 "
              f"{figures['p50_ms']:6.1f} ms, p95 {figures['p95_ms']:6.1f} ms; exact numpy scan p50 "
              f"{figures['base_p50_ms']:5.1f} ms (local mode {slower(figures):.0f}x slower)")
    print("Local mode scans every point on each search (no HNSW index); past ~10k images or with several "
          "processes, run a Qdrant server (QDRANT_URL) for indexed, millisecond searches.")


if __name__ == "__main__":
    main()
