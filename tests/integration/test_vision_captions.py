"""Captions where a vision model is configured (ATELIER_VISION_MODEL), through the real surfaces and the fakes.

- the drop zone (`atelier watch DIR --worker`, a process on real PostgreSQL, the fake ComfyUI and the fake Ollama):
  a dropped photo's caption leads its img2img job's prompt and is kept with the job; without a vision model, or
  with Ollama down, the same jobs are made as before and the skip reason is printed and kept;
- the memory's indexer: a generated image's caption joins its record (and its search text) and its job; a vision
  call that fails never fails the job or its indexing — the record and the job say why;
- `atelier doctor`: the vision model's line (unset, ready, not pulled, blind, Ollama down).
"""

from __future__ import annotations

import io
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from PIL import Image

from atelier.tools.intake.dropzone import DEFAULT_PROMPT
from atelier.tools.ledger.indexing import IndexBook
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.indexer import MemoryIndexer
from atelier.tools.memory.qdrant_store import QdrantMemory
from atelier.tools.memory.records import image_point_id
from atelier.tools.memory.store import MemoryStore
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.fakes.comfyui_server import FakeComfyUI
from tests.fakes.ollama_server import FakeOllama
from tests.integration.test_cli import run
from tests.integration.test_dropzone import Watcher, drop, files, wait_until
from tests.integration.test_memory_indexer_faults import SERVER, HashEmbedder, finished_job, index_row

pytestmark = [pytest.mark.timeout(120)]


def photo(colour: tuple[int, int, int], size: tuple[int, int] = (48, 32)) -> bytes:
    """A PNG of one colour (the fake vision model names its size and colour)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "PNG")
    return buffer.getvalue()


def job_rows(url: str) -> dict[str, dict[str, Any]]:
    """Every job by its drop-zone file key: workflow, prompt, status and its caption events."""
    with psycopg.connect(url) as conn:
        jobs = conn.execute("SELECT id, workflow, params->>'prompt', status, idempotency_key FROM jobs").fetchall()
        events = conn.execute("SELECT job_id, data FROM job_events WHERE kind = 'caption' ORDER BY seq").fetchall()
    captions: dict[Any, list[dict[str, Any]]] = {}
    for job_id, data in events:
        captions.setdefault(job_id, []).append(data)
    return {str(key): {"workflow": workflow, "prompt": prompt, "status": status, "captions": captions.get(job, [])}
            for job, workflow, prompt, status, key in jobs}


# --- the drop zone ---------------------------------------------------------------------------------------------


@pytest.fixture
def watch_env(tmp_path: Path, machine_pg_url: str, fake_comfy: FakeComfyUI) -> dict[str, str]:
    """The watcher's environment: real PostgreSQL, the fake ComfyUI, no vision model (tests add one)."""
    env = os.environ | {"DATABASE_URL": machine_pg_url, "COMFYUI_URLS": fake_comfy.url,
                        "ATELIER_DATA_DIR": str(tmp_path / "data"), "ATELIER_OUTPUT_DIR": str(tmp_path / "store"),
                        "ATELIER_LEASE_SECONDS": "2"}
    env.pop("ATELIER_VISION_MODEL", None)
    return env


@pytest.fixture
def watchers(tmp_path: Path) -> Iterator[list[Watcher]]:
    """Watchers a test starts; each is stopped at the end."""
    started: list[Watcher] = []
    yield started
    for watcher in started:
        if watcher.proc is not None and watcher.proc.poll() is None:
            watcher.stop()


def drop_and_wait(root: Path, env: dict[str, str], logs: Path, watchers: list[Watcher],
                  dropped: dict[str, bytes]) -> Watcher:
    """Start `atelier watch root --worker`, drop these files (`workflow/name` → bytes), wait until all are done."""
    logs.mkdir(parents=True, exist_ok=True)
    watcher = Watcher(root, env, logs)
    watchers.append(watcher)
    watcher.start()
    wait_until(lambda: (root / "inbox" / "upscale").is_dir(), 20, "the inbox folders", watcher)
    for name, data in dropped.items():
        drop(root / "inbox" / name, data)
    images = sum(1 for name in dropped if not name.endswith(".txt"))
    wait_until(lambda: len([p for p in files(root / "done") if p.suffix != ".txt"]) == images, 60,
               "every file in done/", watcher)
    assert watcher.stop() == 0, watcher.log_text()
    assert not files(root / "failed"), watcher.log_text()
    return watcher


def by_name(rows: dict[str, dict[str, Any]], workflow: str, data: bytes) -> dict[str, Any]:
    """The job of one dropped file (its key is the workflow and the file's hash)."""
    import hashlib

    return rows[f"drop:{workflow}:{hashlib.sha256(data).hexdigest()}"]


@pytest.mark.slow
def test_a_dropped_photo_is_captioned_and_the_caption_leads_its_prompt(
        tmp_path: Path, watch_env: dict[str, str], machine_pg_url: str, fake_ollama: FakeOllama,
        watchers: list[Watcher]) -> None:
    red, blue, green = photo((220, 30, 30)), photo((40, 70, 210), (64, 40)), photo((40, 170, 60))
    env = watch_env | {"OLLAMA_URL": fake_ollama.url, "ATELIER_VISION_MODEL": "llava"}
    watcher = drop_and_wait(tmp_path / "drop", env, tmp_path / "logs", watchers, {
        "img2img/fox.txt": b"the same scene at night",  # a sidecar prompt: the person's instruction
        "img2img/fox.png": red, "img2img/lake.png": blue, "upscale/field.png": green})
    rows = job_rows(machine_pg_url)

    fox, lake, field = by_name(rows, "img2img", red), by_name(rows, "img2img", blue), by_name(rows, "upscale", green)
    assert fox["status"] == lake["status"] == field["status"] == "succeeded"
    assert fox["prompt"] == "A 48x32 image, mostly red, the same scene at night"
    assert lake["prompt"] == f"A 64x40 image, mostly blue, {DEFAULT_PROMPT}"
    assert fox["captions"] == [{"image": "input", "caption": "A 48x32 image, mostly red.", "model": "llava",
                                "width": 48, "height": 32}]
    # An upscaler takes no prompt: its image is not sent to the vision model, and the job says why.
    assert field["captions"] == [{"image": "input", "skipped": "workflow 'upscale' takes no prompt"}]
    assert len([b for _, path, b in fake_ollama.requests if path == "/api/chat"]) == 2
    log = watcher.log_text()
    assert "captioned: A 48x32 image, mostly red." in log and "caption skipped: workflow 'upscale' takes no" in log


@pytest.mark.slow
def test_without_a_vision_model_the_drop_zone_works_as_before_and_says_why(
        tmp_path: Path, watch_env: dict[str, str], machine_pg_url: str, fake_ollama: FakeOllama,
        watchers: list[Watcher]) -> None:
    red = photo((220, 30, 30))
    env = watch_env | {"OLLAMA_URL": fake_ollama.url}  # Ollama is there, but no vision model is set
    watcher = drop_and_wait(tmp_path / "drop", env, tmp_path / "logs", watchers, {"img2img/fox.png": red})
    fox = by_name(job_rows(machine_pg_url), "img2img", red)
    assert fox["status"] == "succeeded" and fox["prompt"] == DEFAULT_PROMPT  # the job it always made
    assert fox["captions"] == [{"image": "input", "skipped": "ATELIER_VISION_MODEL is not set"}]
    assert not [path for _, path, _ in fake_ollama.requests if path == "/api/chat"]  # (the worker reads /api/ps)
    assert "caption skipped: ATELIER_VISION_MODEL is not set" in watcher.log_text()


@pytest.mark.slow
def test_a_failing_vision_call_never_fails_a_dropped_file(
        tmp_path: Path, watch_env: dict[str, str], machine_pg_url: str, fake_ollama: FakeOllama,
        closed_port_url: str, watchers: list[Watcher]) -> None:
    red, blue = photo((220, 30, 30)), photo((40, 70, 210))
    blind = watch_env | {"OLLAMA_URL": fake_ollama.url, "ATELIER_VISION_MODEL": "llama3.2"}  # cannot see
    drop_and_wait(tmp_path / "blind", blind, tmp_path / "logs-blind", watchers, {"img2img/fox.png": red})
    down = watch_env | {"OLLAMA_URL": closed_port_url, "ATELIER_VISION_MODEL": "llava"}  # Ollama is not there
    watcher = drop_and_wait(tmp_path / "down", down, tmp_path / "logs-down", watchers, {"img2img/lake.png": blue})
    rows = job_rows(machine_pg_url)
    fox, lake = by_name(rows, "img2img", red), by_name(rows, "img2img", blue)
    assert fox["status"] == lake["status"] == "succeeded" and fox["prompt"] == lake["prompt"] == DEFAULT_PROMPT
    [fox_note], [lake_note] = fox["captions"], lake["captions"]
    assert "'llama3.2' cannot see images" in fox_note["skipped"] and "caption" not in fox_note
    assert f"Ollama at {closed_port_url} is unreachable" in lake_note["skipped"]
    assert "caption skipped: Ollama at" in watcher.log_text()


# --- the memory's indexer --------------------------------------------------------------------------------------


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[MemoryStore]:
    """A real memory (qdrant-client's local mode) in the test's folder."""
    store = QdrantMemory.in_folder(tmp_path / "memory", HashEmbedder())
    yield store
    store.close()


@pytest_asyncio.fixture
async def svc(machine_pg_url: str, tmp_path: Path) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database with a local output store."""
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER)
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "outputs")) as service:
        yield service


def indexer_settings(svc: LedgerService, ollama_url: str, model: str | None) -> Settings:
    """The ledger's settings with this Ollama and vision model."""
    return svc.settings.model_copy(update={"ollama_url": ollama_url, "vision_model": model})


@pytest.mark.asyncio
async def test_a_generated_image_is_captioned_in_its_record_its_search_text_and_its_job(
        svc: LedgerService, memory: MemoryStore, fake_ollama: FakeOllama) -> None:
    job = await finished_job(svc, "a fox in the snow", [photo((220, 30, 30), (64, 64)), photo((40, 70, 210))])
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, indexer_settings(svc, fake_ollama.url, "llava"))
    assert await indexer.catch_up() == 2

    first = memory.image(image_point_id(str(job.id), 0), "ana")
    assert first is not None and first.caption == "A 64x64 image, mostly red." and first.caption_model == "llava"
    assert first.caption_skipped is None and first.text == "a fox in the snow\nA 64x64 image, mostly red."
    [hit] = memory.search_images("48x32 image, mostly blue.", "ana", k=1)  # the caption is searchable text
    assert hit.image.output_index == 1 and hit.image.caption == "A 48x32 image, mostly blue."
    assert await IndexBook(svc.ledger.pool).captions(job.id) == [
        {"image": 0, "caption": "A 64x64 image, mostly red.", "model": "llava", "width": 64, "height": 64},
        {"image": 1, "caption": "A 48x32 image, mostly blue.", "model": "llava", "width": 48, "height": 32}]
    row = await index_row(svc, job)
    assert row["memory_indexed_at"] is not None and row["memory_index_error"] is None

    # Recorded again (an indexer that retried, or a second one): one set of captions, the latest.
    book = IndexBook(svc.ledger.pool)
    await book.record_captions([job], [[{"caption": "A fox.", "model": "llava"}]])
    assert await book.captions(job.id) == [{"image": 0, "caption": "A fox.", "model": "llava"}]


@pytest.mark.asyncio
async def test_a_failing_vision_call_never_fails_the_indexing_and_says_why(
        svc: LedgerService, memory: MemoryStore, fake_ollama: FakeOllama, closed_port_url: str) -> None:
    missing = await finished_job(svc, "a heron in the mist", [photo((128, 128, 128))])
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, indexer_settings(svc, fake_ollama.url, "moondream"))
    assert await indexer.catch_up() == 1
    record = memory.image(image_point_id(str(missing.id), 0), "ana")
    assert record is not None and record.caption is None and record.text == "a heron in the mist"
    assert "`ollama pull moondream`" in str(record.caption_skipped)
    [note] = await IndexBook(svc.ledger.pool).captions(missing.id)
    assert note["image"] == 0 and "not pulled" in note["skipped"]
    assert (await index_row(svc, missing))["memory_index_error"] is None  # indexed in full: only the caption is off

    # Ollama down: the first image waits for the refused connection, the next ones are not sent for a while.
    first = await finished_job(svc, "a lighthouse", [photo((240, 220, 40)), photo((40, 200, 220))])
    later = await finished_job(svc, "a lighthouse again", [photo((245, 150, 190))])
    down = MemoryIndexer(svc.ledger, memory, svc.store, indexer_settings(svc, closed_port_url, "llava"))
    assert await down.catch_up() == 3
    notes = [n for job in (first, later) for n in await IndexBook(svc.ledger.pool).captions(job.id)]
    assert "unreachable" in notes[0]["skipped"] and not notes[0]["skipped"].startswith("not sent")
    assert all(n["skipped"].startswith("not sent: Ollama at") for n in notes[1:]), notes
    for job in (first, later):
        row = await index_row(svc, job)
        assert row["memory_indexed_at"] is not None and row["memory_index_attempts"] == 0


@pytest.mark.asyncio
async def test_without_a_vision_model_indexing_is_as_before(
        svc: LedgerService, memory: MemoryStore, fake_ollama: FakeOllama) -> None:
    job = await finished_job(svc, "a paper crane", [photo((255, 255, 255))])
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, indexer_settings(svc, fake_ollama.url, None))
    assert await indexer.catch_up() == 1
    record = memory.image(image_point_id(str(job.id), 0), "ana")
    assert record is not None and record.caption is None and record.text == "a paper crane"
    assert record.caption_skipped == "ATELIER_VISION_MODEL is not set"
    assert await IndexBook(svc.ledger.pool).captions(job.id) == []  # nothing new is recorded with the job
    assert fake_ollama.requests == []


# --- atelier doctor --------------------------------------------------------------------------------------------


def test_doctor_reports_the_vision_model(fake_comfy: FakeComfyUI, fake_ollama: FakeOllama, closed_port_url: str,
                                         monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "400")
    monkeypatch.setenv("ATELIER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COMFYUI_URLS", fake_comfy.url)
    monkeypatch.setenv("OLLAMA_URL", fake_ollama.url)
    monkeypatch.delenv("DATABASE_URL", raising=False)

    def vision_line(model: str | None) -> tuple[int, str]:
        if model is None:
            monkeypatch.delenv("ATELIER_VISION_MODEL", raising=False)
        else:
            monkeypatch.setenv("ATELIER_VISION_MODEL", model)
        code, out, _ = run(capsys, "doctor")
        return code, next(line for line in out.splitlines() if "Vision model" in line)

    code, line = vision_line(None)
    assert code == 0 and " ok " in line and "ATELIER_VISION_MODEL is not set" in line
    code, line = vision_line("llava")
    assert code == 0 and " ok " in line and "llava:latest pulled, vision-capable" in line
    code, line = vision_line("moondream")
    assert code == 1 and "DOWN" in line and "`ollama pull moondream`" in line
    code, line = vision_line("llama3.2")
    assert code == 1 and "DOWN" in line and "cannot see images (capabilities: completion, tools)" in line
    monkeypatch.setenv("OLLAMA_URL", closed_port_url)
    code, line = vision_line("llava")
    assert code == 1 and "DOWN" in line and "unreachable" in line
