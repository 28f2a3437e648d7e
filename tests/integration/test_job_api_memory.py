"""The job API has the memory: it opens the shared one, indexes what succeeds, and searches for the caller only."""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from atelier.api.jobs import build_job_api
from atelier.tools.ledger.models import JobOutput, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.backends import open_memory
from atelier.tools.memory.documents import chunk_file
from atelier.tools.memory.records import SHARED
from atelier.tools.outputs.store import output_key
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
SERVER = "http://127.0.0.1:8188"


def _png() -> bytes:
    """A small PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (240, 240, 230)).save(buffer, "PNG")
    return buffer.getvalue()


async def _finished_job(settings: Settings, prompt: str) -> str:
    """A job of the local user that ran and stored one image (as a worker in another process would)."""
    async with LedgerService.open(settings) as svc:
        job = (await svc.submit(JobRequest(params=GenerationParams(prompt=prompt, seed=1), owner="local",
                                           workflow="txt2img"))).job
        claim = await svc.ledger.claim("w", server=SERVER, vram_free_gb=99, known_servers=[SERVER], lease_seconds=30)
        assert claim is not None
        stored = svc.store.put(output_key(str(job.id), 0, when=job.created_at), _png())
        output = JobOutput(uri=stored.uri, key=stored.key, size=stored.size, sha256=stored.sha256, node_id="9",
                           comfy_filename="x.png")
        await svc.ledger.complete(claim.job, [output], gpu_seconds=1.0, actual_cost=0.01)
        return str(job.id)


def test_the_api_searches_the_shared_memory_and_indexes_new_jobs(tmp_path: Path, embedded_pg_url: str) -> None:
    settings = load_settings(data_dir=tmp_path / "data", database_url=embedded_pg_url, comfyui_urls=SERVER,
                             memory_backend="postgres")
    writer = open_memory(settings)  # another process's view of the same memory (the CLI's `atelier ingest`)
    writer.add_documents(chunk_file(CORPUS / "sourdough.md", SHARED) + chunk_file(CORPUS / "cycling.txt", "bea"))
    with TestClient(build_job_api(settings), base_url="http://127.0.0.1") as http:
        found = http.get("/memory/documents", params={"q": "how often do I feed the starter?", "k": 3})
        assert found.status_code == 200, found.text
        assert Path(found.json()[0]["source"]).name == "sourdough.md"
        private = http.get("/memory/documents", params={"q": "when do I replace my bike chain?", "k": 10})
        assert all(hit["owner"] != "bea" for hit in private.json()), "another user's documents stay invisible"
        assert http.get("/memory/documents", params={"q": "", "k": 3}).status_code == 422
        assert http.get("/memory/documents", params={"q": "x" * 2001}).status_code == 422
        assert http.get("/memory/images", params={"q": "origami", "owner": "bea"}).status_code == 200  # ignored

        job_id = asyncio.run(_finished_job(settings, "a paper crane, origami"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the API's own indexer follows the ledger
            images = http.get("/memory/images", params={"q": "origami bird"}).json()
            if images:
                break
            time.sleep(0.2)
        assert images and images[0]["image"]["job_id"] == job_id
    writer.close()


def test_a_server_without_pgvector_answers_503_with_the_fix(tmp_path: Path, machine_pg_url: str) -> None:
    settings = load_settings(data_dir=tmp_path / "data", database_url=machine_pg_url, comfyui_urls=SERVER,
                             memory_backend="postgres")
    with TestClient(build_job_api(settings), base_url="http://127.0.0.1") as http:
        assert http.get("/health").status_code == 200, "the ledger works without the memory"
        answer = http.get("/memory/images", params={"q": "fox"})
    assert answer.status_code == 503
    assert "CREATE EXTENSION vector" in answer.json()["detail"]


@pytest.fixture(autouse=True)
def _no_ambient_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settings name their database; nothing from the environment."""
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("QDRANT_URL", raising=False)
