"""The memory's indexer never dies: each fault it meets is injected, on both kinds of real PostgreSQL.

Faults: an output file that is gone, decompression bombs (a small PNG whose header claims huge dimensions, over
Pillow's limit and over ATELIER_MAX_IMAGE_PIXELS), a damaged PNG, a memory that is unreachable (the exception a real
qdrant-client raises for a server that refuses connections), a job the memory always refuses, a rating the memory
does not take and then does, and an unexpected exception inside `follow`. The memory is a real MemoryStore
(qdrant-client's local mode in the test's folder) with a small deterministic embedder; faults are switched on and
off on its `add_images` / `set_rating`. Time is driven by moving `memory_index_retry_at` into the past and by an
injected clock for ratings; only `follow` waits for real, with a back-off of a fraction of a second.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import logging
import math
import socket
import struct
import zlib
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import pytest_asyncio
from PIL import Image
from qdrant_client import QdrantClient
from typer.testing import CliRunner

from atelier.cli.main import app
from atelier.tools.ledger.indexing import MEMORY_INDEX
from atelier.tools.ledger.models import Job, JobOutput, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.indexer import MemoryIndexer
from atelier.tools.memory.qdrant_store import QdrantMemory
from atelier.tools.memory.records import ImageRecord, image_point_id
from atelier.tools.memory.store import IMAGES, PIXEL_DIM, MemoryStore
from atelier.tools.outputs.store import LocalOutputStore, output_key
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings

SERVER = "http://127.0.0.1:8188"
NEUTRAL = [1.0 / math.sqrt(PIXEL_DIM)] * PIXEL_DIM

pytestmark = pytest.mark.asyncio


class HashEmbedder:
    """A small deterministic bag-of-words embedder (the model is not what these tests are about)."""

    name = "test-hash-32"
    dim = 32

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One unit vector per text: word counts hashed into 32 buckets."""
        vectors = []
        for text in texts:
            vector = [0.0] * self.dim
            for word in text.lower().split():
                vector[hashlib.sha256(word.encode()).digest()[0] % self.dim] += 1.0
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            vectors.append([v / norm for v in vector])
        return vectors


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Faults:
    """Switches faults on a real memory's writes: an outage (both writes), jobs it refuses, ratings it refuses."""

    def __init__(self, memory: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
        self.down = False
        self.refused_jobs: set[str] = set()
        self.calls: Counter[str] = Counter()
        real_add, real_rate = memory.add_images, memory.set_rating

        def add_images(records: Sequence[ImageRecord], pixels: Sequence[list[float]]) -> int:
            self.calls["add_images"] += 1
            if self.down:
                unreachable()
            if {r.job_id for r in records} & self.refused_jobs:
                raise ValueError("payload rejected by the memory")
            return real_add(records, pixels)

        def set_rating(point_ids: Sequence[str], *, rating: int | None, thumb: int | None) -> None:
            self.calls["set_rating"] += 1
            if self.down:
                unreachable()
            real_rate(point_ids, rating=rating, thumb=thumb)

        monkeypatch.setattr(memory, "add_images", add_images)
        monkeypatch.setattr(memory, "set_rating", set_rating)


def unreachable() -> None:
    """Raise what qdrant-client raises when its server refuses connections (a real client, a closed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = QdrantClient(url=f"http://127.0.0.1:{port}", timeout=2, check_compatibility=False)
    try:
        client.get_collections()
    finally:
        client.close()
    raise AssertionError("a closed port answered")


# --- images ------------------------------------------------------------------------------------------------


def png(colour: tuple[int, int, int]) -> bytes:
    """A 64×64 PNG of one colour with a stripe (a real, readable image)."""
    image = Image.new("RGB", (64, 64), colour)
    for x in range(64):
        for y in range(20, 30):
            image.putpixel((x, y), (255 - colour[0], 255 - colour[1], 255 - colour[2]))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes whose header claims `width`×`height` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 256))
            + chunk(b"IEND", b""))


def damaged_png() -> bytes:
    """A real PNG cut off halfway through its pixel data."""
    data = png((10, 200, 90))
    return data[: len(data) // 2]


# --- the ledger, the memory, jobs ---------------------------------------------------------------------------


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh data folder and the default back-off (5 s doubling, 10 min at most), 3 attempts."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER, memory_index_attempts=3)


@pytest_asyncio.fixture
async def svc(pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database (machine PostgreSQL 15 and the embedded server) with a local output store."""
    async with LedgerService.open(settings, conninfo=pg_url,
                                  store=LocalOutputStore(settings.data_dir / "outputs")) as service:
        yield service


@pytest.fixture
def memory(tmp_path: Path) -> Iterator[MemoryStore]:
    """A real memory (qdrant-client's local mode) in the test's folder."""
    store = QdrantMemory.in_folder(tmp_path / "memory", HashEmbedder())
    yield store
    store.close()


@pytest.fixture
def faults(memory: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> Faults:
    """Faults to switch on the memory's writes (none at first)."""
    return Faults(memory, monkeypatch)


async def finished_job(svc: LedgerService, prompt: str, images: Sequence[bytes], owner: str = "ana") -> Job:
    """A job that ran: submitted, claimed and completed with these stored images."""
    job = (await svc.submit(JobRequest(params=GenerationParams(prompt=prompt, seed=len(prompt)), owner=owner,
                                       workflow="txt2img"))).job
    claim = await svc.ledger.claim("w", server=SERVER, vram_free_gb=99, known_servers=[SERVER], lease_seconds=30)
    assert claim is not None and claim.job.id == job.id
    outputs = []
    for index, data in enumerate(images):
        stored = svc.store.put(output_key(str(job.id), index, when=job.created_at), data)
        outputs.append(JobOutput(uri=stored.uri, key=stored.key, size=stored.size, sha256=stored.sha256,
                                 node_id="9", comfy_filename=f"x{index}.png"))
    return await svc.ledger.complete(claim.job, outputs, gpu_seconds=1.0, actual_cost=0.01)


async def index_row(svc: LedgerService, job: Job) -> dict[str, Any]:
    """The job's memory-indexing columns."""
    async with svc.ledger.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT memory_indexed_at, memory_index_error, memory_index_attempts, memory_index_failed_at, "
            "memory_index_retry_at, memory_index_skipped_at FROM jobs WHERE id = %s", (job.id,))
        row = await cur.fetchone()
    assert row is not None
    return dict(row)


async def cli(pg_url: str, settings: Settings, *args: str) -> tuple[int, str]:
    """Run the `atelier` command line on this database (in a thread: it runs its own event loop)."""
    env = {"DATABASE_URL": pg_url, "ATELIER_DATA_DIR": str(settings.data_dir), "COMFYUI_URLS": SERVER}
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args), env=env)
    return result.exit_code, result.output


async def make_retries_due(svc: LedgerService) -> None:
    """Move every waiting retry into the past (instead of sleeping through the back-off)."""
    async with svc.ledger.pool.connection() as conn:
        await conn.execute("UPDATE jobs SET memory_index_retry_at = now() - interval '1 second' "
                           "WHERE memory_index_retry_at IS NOT NULL")


# --- images that cannot be read --------------------------------------------------------------------------------


async def test_unreadable_images_are_indexed_without_their_pixels_and_say_why(
    svc: LedgerService, memory: MemoryStore, settings: Settings
) -> None:
    good = await finished_job(svc, "a red fox in the snow", [png((200, 40, 30))])
    gone = await finished_job(svc, "a heron in the mist", [png((150, 150, 160))])
    Path(svc.store.link(gone.outputs[0].uri)).unlink()  # the output file disappeared
    huge = await finished_job(svc, "a lighthouse at dusk", [bomb_png(100_000, 100_000)])  # over Pillow's own limit
    sneaky = await finished_job(svc, "a glacier lake", [bomb_png(9_000, 9_000)])  # under Pillow's, over ours
    cut = await finished_job(svc, "a paper crane", [damaged_png()])
    mixed = await finished_job(svc, "two owls at night", [png((20, 20, 90)), bomb_png(60_000, 60_000)])

    indexer = MemoryIndexer(svc.ledger, memory, svc.store, settings)
    assert await indexer.catch_up() == 7, "every image is stored, the unreadable ones without their pixels"
    assert await indexer.catch_up() == 0 and memory.count(IMAGES) == 7

    expected = [(gone, "does not exist"), (huge, "decompression bomb"), (sneaky, "decompression bomb"),
                (cut, "a damaged image (image file is truncated"), (mixed, "image 1: a decompression bomb")]
    for job, words in expected:
        row = await index_row(svc, job)
        assert row["memory_indexed_at"] is not None and row["memory_index_attempts"] == 0
        assert words in row["memory_index_error"], row
    assert "9000×9000 pixels, over the limit of 67,108,864" in (await index_row(svc, sneaky))["memory_index_error"]
    good_row = await index_row(svc, good)
    assert good_row["memory_indexed_at"] is not None and good_row["memory_index_error"] is None

    # The bad images are stored with a neutral layout (their prompts still find them); good pixels are kept.
    for job, index in ((gone, 0), (huge, 0), (sneaky, 0), (cut, 0), (mixed, 1)):
        point = image_point_id(str(job.id), index)
        assert memory.image(point, "ana") is not None
        assert memory.image_vectors(point)["pixels"] == pytest.approx(NEUTRAL)
    for job in (good, mixed):
        assert memory.image_vectors(image_point_id(str(job.id), 0))["pixels"] != pytest.approx(NEUTRAL)

    state = await svc.memory_index_status(recent=10)
    assert (state.indexed, state.partial, state.waiting, state.retrying, state.skipped) == (6, 5, 0, 0, 0)
    assert {p.job_id for p in state.recent} == {j.id for j, _ in expected} and {p.state for p in state.recent} == {
        "indexed"}


# --- a memory that does not take the images ---------------------------------------------------------------------


async def test_an_unreachable_memory_is_retried_with_backoff_then_skipped_and_can_be_retried(
    svc: LedgerService, memory: MemoryStore, settings: Settings, faults: Faults, pg_url: str
) -> None:
    first = await finished_job(svc, "a fox", [png((200, 40, 30))])
    second = await finished_job(svc, "an owl", [png((90, 80, 70))])
    third = await finished_job(svc, "a whale", [png((20, 60, 200))])
    clock = FakeClock()
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, settings, clock=clock)
    faults.down = True

    assert await indexer.catch_up() == 0, "no crash: the round ends"
    assert faults.calls["add_images"] == 2, "two failures in a row end the round: the memory is likely down"
    row = await index_row(svc, first)
    assert row["memory_index_attempts"] == 1 and row["memory_indexed_at"] is None
    assert row["memory_index_retry_at"] - row["memory_index_failed_at"] == timedelta(seconds=5)
    assert "ResponseHandlingException" in row["memory_index_error"] and "onnect" in row["memory_index_error"]
    assert (await index_row(svc, third))["memory_index_attempts"] == 0, "the third was not tried in that round"
    clock.now += 4.9
    assert await indexer.catch_up() == 0 and faults.calls["add_images"] == 2, "the next round waits 5 s"

    # Jobs never tried go before retries; retries wait for their time.
    clock.now += 0.2
    assert await indexer.catch_up() == 0 and faults.calls["add_images"] == 3
    assert (await index_row(svc, third))["memory_index_attempts"] == 1
    assert await indexer.catch_up() == 0 and faults.calls["add_images"] == 3, "nothing is due: nothing is tried"
    state = await svc.memory_index_status()
    assert (state.waiting, state.retrying, state.skipped) == (0, 3, 0) and state.next_retry_at is not None

    # The back-off doubles at each failure; out of attempts (3 here), the job is skipped with its reason.
    await make_retries_due(svc)
    await indexer.catch_up()
    row = await index_row(svc, first)
    assert row["memory_index_attempts"] == 2
    assert row["memory_index_retry_at"] - row["memory_index_failed_at"] == timedelta(seconds=10)
    for _ in range(3):
        await make_retries_due(svc)
        clock.now += 600  # past the pause between failing rounds
        await indexer.catch_up()
    for job in (first, second, third):
        row = await index_row(svc, job)
        assert row["memory_index_attempts"] == 3 and row["memory_index_skipped_at"] is not None
        assert row["memory_index_retry_at"] is None and row["memory_indexed_at"] is None
    calls = faults.calls["add_images"]
    await make_retries_due(svc)
    clock.now += 600
    assert await indexer.catch_up() == 0 and faults.calls["add_images"] == calls, "skipped jobs are left alone"
    state = await svc.memory_index_status()
    assert (state.waiting, state.retrying, state.skipped) == (0, 0, 3)
    assert [p.state for p in state.recent] == ["skipped"] * 3 and "ResponseHandlingException" in state.recent[0].reason
    code, shown = await cli(pg_url, settings, "memory", "status")
    assert code == 0 and "waiting 0, retrying 0, skipped 3" in shown, shown
    assert f"{first.id} skipped after 3 attempts at " in shown and "ResponseHandlingException" in shown, shown
    code, shown = await cli(pg_url, settings, "memory", "status", "--json")
    assert code == 0 and json.loads(shown)["skipped"] == 3 and len(json.loads(shown)["recent"]) == 3

    # The memory is back: a job finished now is indexed at once; the skipped ones on request.
    faults.down = False
    clock.now += 600
    fourth = await finished_job(svc, "a crane", [png((240, 240, 230))])
    assert await indexer.catch_up() == 1 and (await index_row(svc, fourth))["memory_indexed_at"] is not None
    code, shown = await cli(pg_url, settings, "memory", "status", "--retry-skipped")
    assert code == 0 and "3 skipped job(s) will be indexed again" in shown and "retrying 0, skipped 0" in shown, shown
    assert await indexer.catch_up() == 3 and memory.count(IMAGES) == 4
    state = await svc.memory_index_status()
    assert (state.indexed, state.waiting, state.retrying, state.skipped) == (4, 0, 0, 0)


async def test_a_job_the_memory_always_refuses_delays_nobody(
    svc: LedgerService, memory: MemoryStore, settings: Settings, faults: Faults
) -> None:
    refused = await finished_job(svc, "a strange payload", [png((1, 2, 3))])
    others = [await finished_job(svc, f"a good image number {n}", [png((40 * n, 90, 90))]) for n in range(1, 4)]
    faults.refused_jobs.add(str(refused.id))
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, settings)

    assert await indexer.catch_up() == 3, "the jobs after the refused one are indexed in the same round"
    assert faults.calls["add_images"] == 4, "the refused job is tried once per round, not in a loop"
    for job in others:
        assert (await index_row(svc, job))["memory_indexed_at"] is not None
    for _ in range(2):
        await make_retries_due(svc)
        await indexer.catch_up()
    row = await index_row(svc, refused)
    assert row["memory_index_skipped_at"] is not None and row["memory_index_attempts"] == 3
    assert row["memory_index_error"] == "ValueError: payload rejected by the memory"
    assert faults.calls["add_images"] == 6


# --- ratings ------------------------------------------------------------------------------------------------


async def test_a_rating_the_memory_does_not_take_stays_pending_and_is_copied_after_the_backoff(
    svc: LedgerService, memory: MemoryStore, settings: Settings, faults: Faults
) -> None:
    fox = await finished_job(svc, "a fox, watercolor", [png((200, 40, 30))])
    clock = FakeClock()
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, settings, clock=clock)
    await indexer.catch_up()
    await svc.rate(fox.id, owner="ana", stars=5, thumb=1)
    point = image_point_id(str(fox.id), 0)
    faults.down = True

    assert await indexer.sync_ratings() == 0, "no crash"
    assert faults.calls["set_rating"] == 1
    assert [r.job_id for r in await svc.ledger.ratings_to_sync()] == [fox.id], "the rating is still pending"
    assert (await svc.memory_index_status()).ratings_pending == 1

    clock.now += 4.9  # within the back-off (5 s): not even tried
    assert await indexer.sync_ratings() == 0 and faults.calls["set_rating"] == 1
    clock.now += 0.2  # due, still down: the next wait doubles (10 s)
    assert await indexer.sync_ratings() == 0 and faults.calls["set_rating"] == 2
    faults.down = False
    clock.now += 9.9
    assert await indexer.sync_ratings() == 0 and faults.calls["set_rating"] == 2
    clock.now += 0.2
    assert await indexer.sync_ratings() == 1
    record = memory.image(point, "ana")
    assert record is not None and (record.rating, record.thumb) == (5, 1)
    assert await svc.ledger.ratings_to_sync() == [] and (await svc.memory_index_status()).ratings_pending == 0
    await svc.rate(fox.id, owner="ana", stars=2)
    assert await indexer.sync_ratings() == 1, "after a success there is no back-off left"


# --- follow -------------------------------------------------------------------------------------------------


async def wait_for(what: str, check: Any, rounds: int = 400) -> None:
    """Poll an async check every 50 ms until it holds (an AssertionError naming `what` if it never does)."""
    for _ in range(rounds):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_follow_outlives_faults_and_keeps_indexing(
    svc: LedgerService, memory: MemoryStore, tmp_path: Path, faults: Faults, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="atelier.tools.memory.indexer")
    settings = load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER, memory_index_attempts=50,
                             memory_index_backoff_seconds=0.2, memory_index_backoff_max_seconds=0.5)
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, settings)
    real_unindexed = svc.ledger.unindexed
    injected: list[str] = []

    async def unindexed(limit: int = 64) -> list[Job]:
        if not injected:  # the first call fails with something that is not a database error
            injected.append("done")
            raise RuntimeError("injected fault in the ledger read")
        return await real_unindexed(limit)

    monkeypatch.setattr(svc.ledger, "unindexed", unindexed)
    before = await finished_job(svc, "a fox before the fault", [png((200, 40, 30))])
    stop = asyncio.Event()
    following = asyncio.create_task(indexer.follow(stop))

    async def indexed(job: Job) -> bool:
        return (await index_row(svc, job))["memory_indexed_at"] is not None

    try:
        await wait_for("the job finished before the fault is indexed", lambda: indexed(before))
        assert "injected fault in the ledger read" in caplog.text and "starting again" in caplog.text
        assert not following.done()

        # The memory goes away: a job that succeeds now is retried (no notification needed), then indexed once it
        # is back.
        faults.down = True
        during = await finished_job(svc, "an owl during the outage", [png((90, 80, 70))])

        async def retried() -> bool:
            return bool((await index_row(svc, during))["memory_index_attempts"] >= 2)

        await wait_for("the job is retried while the memory is down", retried)
        faults.down = False
        await wait_for("the job is indexed once the memory is back", lambda: indexed(during))
        assert not following.done()

        # Later jobs are indexed as they succeed.
        after = await finished_job(svc, "a whale after it all", [png((20, 60, 200))])
        await wait_for("a later job is indexed", lambda: indexed(after))
        assert memory.count(IMAGES) == 3 and not following.done()
    finally:
        stop.set()
        await asyncio.wait_for(following, 10)
    assert following.exception() is None


async def test_follow_survives_losing_its_database_connection(
    svc: LedgerService, memory: MemoryStore, settings: Settings, pg_url: str
) -> None:
    """The LISTEN connection is killed under it: follow connects again and goes on."""
    indexer = MemoryIndexer(svc.ledger, memory, svc.store, settings)
    stop = asyncio.Event()
    following = asyncio.create_task(indexer.follow(stop))
    try:
        first = await finished_job(svc, "a fox", [png((200, 40, 30))])

        async def indexed(job: Job) -> bool:
            return (await index_row(svc, job))["memory_indexed_at"] is not None

        await wait_for("the first job is indexed", lambda: indexed(first))
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as admin:
            cur = await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query = %s", (f"LISTEN {MEMORY_INDEX}",))
            assert await cur.fetchall(), "the indexer's LISTEN connection was found"
        second = await finished_job(svc, "an owl", [png((90, 80, 70))])
        await wait_for("a job after the lost connection is indexed", lambda: indexed(second))
        assert not following.done()
    finally:
        stop.set()
        await asyncio.wait_for(following, 10)

