"""Memory pieces without services: Ollama embedder (MockTransport), chunking, style, colour layout (captions:
tests/unit/test_vision.py)."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import httpx
import pytest
from PIL import Image

from atelier.tools.errors import AtelierError
from atelier.tools.memory.documents import DocumentError, chunk_file, find_documents
from atelier.tools.memory.embeddings import EmbedError, MiniLMEmbedder, OllamaEmbedder, build_embedder
from atelier.tools.memory.images import colour_layout
from atelier.tools.memory.records import ImageRecord
from atelier.tools.memory.style import build_profile, liking
from atelier.tools.settings import load_settings


def _embed_server(status: int = 200, vectors: list[list[float]] | None = None) -> httpx.MockTransport:
    """An /api/embed that answers `vectors` (or an error status with Ollama's error body)."""

    def handle(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        assert request.url.path == "/api/embed" and isinstance(body["input"], list)
        if status != 200:
            return httpx.Response(status, json={"error": f'model "{body["model"]}" not found, try pulling it first'})
        return httpx.Response(200, json={"model": body["model"], "embeddings": vectors or
                                         [[0.6, 0.8] for _ in body["input"]]})

    return httpx.MockTransport(handle)


def test_ollama_embedder_names_itself_and_learns_its_dimension() -> None:
    embedder = OllamaEmbedder("http://ollama:11434", "nomic-embed-text", transport=_embed_server())
    assert embedder.name == "ollama:nomic-embed-text"
    assert embedder.embed(["a", "b"]) == [[0.6, 0.8], [0.6, 0.8]]
    assert embedder.dim == 2 and embedder.embed([]) == []


def test_ollama_embedder_errors_name_the_fix() -> None:
    missing = OllamaEmbedder("http://ollama:11434", "nope", transport=_embed_server(status=404))
    with pytest.raises(EmbedError, match="ollama pull nope"):
        missing.embed(["x"])

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = OllamaEmbedder("http://ollama:11434", "m", transport=httpx.MockTransport(refuse))
    with pytest.raises(EmbedError, match="unset ATELIER_EMBED_MODEL"):
        down.embed(["x"])


def test_the_embedder_follows_the_settings() -> None:
    assert isinstance(build_embedder(load_settings()), MiniLMEmbedder)
    chosen = build_embedder(load_settings(embed_model="nomic-embed-text"))
    assert isinstance(chosen, OllamaEmbedder) and chosen.model == "nomic-embed-text"


def _png(colour: tuple[int, int, int]) -> bytes:
    """A small PNG of one colour."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), colour).save(buffer, "PNG")
    return buffer.getvalue()


def test_colour_layout_is_unit_length_and_tells_colours_apart() -> None:
    red, red2, blue = colour_layout(_png((220, 20, 20))), colour_layout(_png((210, 30, 25))), colour_layout(
        _png((20, 20, 220)))
    assert math.isclose(sum(v * v for v in red), 1.0, rel_tol=1e-6)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(red, red2) > cosine(red, blue)
    with pytest.raises(AtelierError, match="PNG, JPEG or WebP"):
        colour_layout(b"not an image")


def test_finding_and_chunking_documents(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Guide\n\n" + "Paragraph about lighting. " * 80)
    (tmp_path / "skip.bin").write_bytes(b"\x00")
    (tmp_path / "empty.txt").write_text("")
    files = find_documents([tmp_path])
    assert [f.name for f in files] == ["a.md", "empty.txt"]
    chunks = chunk_file(files[0], "ana")
    assert len(chunks) > 1 and all(c.title == "Guide" and c.owner == "ana" for c in chunks)
    assert len({c.content_hash for c in chunks}) == len(chunks), "a passage repeated in one file is stored once"
    assert [c.chunk for c in chunks] == list(range(len(chunks)))
    assert chunk_file(files[1], "ana") == []
    with pytest.raises(DocumentError, match="unsupported file type"):
        find_documents([tmp_path / "skip.bin"])
    with pytest.raises(DocumentError, match="does not exist"):
        find_documents([tmp_path / "nope.md"])
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DocumentError, match="not UTF-8"):
        chunk_file(tmp_path / "latin1.txt", "ana")


def _record(prompt: str, rating: int | None = None, thumb: int | None = None, workflow: str = "txt2img") -> ImageRecord:
    """A rated image record."""
    return ImageRecord(job_id="00000000-0000-4000-8000-000000000001", owner="ana", prompt=prompt, workflow=workflow,
                       uri="file:///x.png", rating=rating, thumb=thumb, created_at="2026-11-25T00:00:00+00:00")


def test_style_profile_weighs_modifiers_by_how_much_they_were_liked() -> None:
    records = [
        _record("a fox, watercolor, soft light", rating=5, thumb=1),
        _record("a heron, watercolor, misty", rating=4, workflow="txt2img-hq"),
        _record("a car, neon, glossy", thumb=-1),
        _record("a tree, charcoal"),  # unrated: ignored
    ]
    assert liking(records[0]) == 3.5 and liking(records[2]) == -1.5 and liking(records[3]) == 0
    profile = build_profile("ana", records)
    assert profile.rated == 3
    assert profile.liked_modifiers[0] == ("watercolor", 4.5)
    assert ("neon", 1.5) in profile.disliked_modifiers
    assert profile.liked_workflows[0][0] == "txt2img"
    assert profile.best_prompts == ["a fox, watercolor, soft light", "a heron, watercolor, misty"]
