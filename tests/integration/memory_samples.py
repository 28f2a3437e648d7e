"""A small memory for backend tests: documents and images of two owners and shared ones, and what to ask of it."""

from __future__ import annotations

import hashlib
import math
import uuid
from pathlib import Path
from typing import Any

from atelier.tools.memory.records import SHARED, DocumentChunk, ImageRecord
from atelier.tools.memory.store import PIXEL_DIM, MemoryStore

DOCUMENTS: dict[tuple[str, str], list[str]] = {
    ("ana", "/docs/ana/bread.md"): ["feed the sourdough starter flour and water every day",
                                    "bake the bread at high heat with steam"],
    ("bea", "/docs/bea/bread.md"): ["my sourdough starter secret is rye flour"],
    ("bea", "/docs/bea/bike.md"): ["replace the bike chain when it stretches", "oil the bike chain after rain"],
    (SHARED, "/docs/shared/studio.md"): ["the studio opens at nine", "keep the lens caps on the cameras"],
}

RED, ORANGE, BLUE = (0.9, 0.1, 0.1), (0.9, 0.5, 0.1), (0.1, 0.2, 0.9)

# (key, owner, prompt, workflow, rating, colour)
IMAGES: list[tuple[str, str, str, str, int | None, tuple[float, float, float]]] = [
    ("ana-fox", "ana", "a red fox in the snow", "txt2img", 5, RED),
    ("ana-cub", "ana", "a fox cub sleeping in red leaves", "txt2img-hq", 2, (0.85, 0.15, 0.12)),
    ("ana-lake", "ana", "a glacier lake under blue sky", "txt2img", None, BLUE),
    ("bea-fox", "bea", "a red fox at night", "txt2img", 5, RED),
    ("shared-fox", SHARED, "a fox sculpture in bronze", "txt2img", 4, ORANGE),
]

QUERIES = ["sourdough starter flour", "bike chain", "when does the studio open", "bread"]
IMAGE_QUERIES = ["fox", "red fox", "lake", "sculpture"]
OWNERS = ["ana", "bea", "carl"]


def chunk(text: str, owner: str, source: str, index: int) -> DocumentChunk:
    """A document chunk as `chunk_file` makes them."""
    return DocumentChunk(text=text, owner=owner, source=source, title=Path(source).stem, chunk=index,
                         content_hash=hashlib.sha256(text.encode()).hexdigest())


def pixels(colour: tuple[float, float, float]) -> list[float]:
    """A unit colour-layout vector of one flat colour."""
    raw = list(colour) * (PIXEL_DIM // 3)
    norm = math.sqrt(sum(x * x for x in raw))
    return [x / norm for x in raw]


def image(key: str) -> ImageRecord:
    """The sample image called `key`."""
    _, owner, prompt, workflow, rating, _ = next(row for row in IMAGES if row[0] == key)
    return ImageRecord(job_id=str(uuid.uuid5(uuid.NAMESPACE_URL, key)), owner=owner, prompt=prompt, workflow=workflow,
                       uri=f"file:///outputs/{key}.png", rating=rating, created_at="2026-01-01T00:00:00+00:00")


def fill(memory: MemoryStore) -> None:
    """Store every sample document and image."""
    for (owner, source), texts in DOCUMENTS.items():
        memory.add_documents([chunk(text, owner, source, i) for i, text in enumerate(texts)])
    memory.add_images([image(row[0]) for row in IMAGES], [pixels(row[5]) for row in IMAGES])


def _ranked(hits: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """Hits best first, ties in a fixed order (two stores may break ties differently)."""
    return sorted(((round(score, 5), key) for score, key in hits), key=lambda hit: (-hit[0], hit[1]))


def answers(memory: MemoryStore) -> list[Any]:
    """What every sample question returns, for every owner (to compare two stores)."""
    found: list[Any] = []
    for owner in OWNERS:
        for query in QUERIES:
            found.append(_ranked([(h.score, f"{h.owner}:{h.source}:{h.text}")
                                  for h in memory.search_documents(query, owner, k=10)]))
        for query in IMAGE_QUERIES:
            found.append(_ranked([(h.score, h.image.job_id) for h in memory.search_images(query, owner, k=10)]))
        found.append(_ranked([(h.score, h.image.job_id)
                              for h in memory.similar_to_vector(pixels(RED), "pixels", owner, k=10)]))
    return found
