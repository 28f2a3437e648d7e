"""The memory on both backends (pgvector in embedded PostgreSQL, Qdrant's API in local mode), the real MiniLM."""

from __future__ import annotations

import asyncio
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
from PIL import Image

from atelier.tools.ledger.models import Job, JobOutput, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.backends import open_memory
from atelier.tools.memory.documents import chunk_file, find_documents
from atelier.tools.memory.embeddings import MiniLMEmbedder
from atelier.tools.memory.indexer import MemoryIndexer
from atelier.tools.memory.records import SHARED
from atelier.tools.memory.store import DOCUMENTS, IMAGES, EmbeddingMismatchError, MemoryLockedError, MemoryStore
from atelier.tools.memory.tools import (
    MemoryContext,
    RateImageArgs,
    ReuseArgs,
    SearchImagesArgs,
    SimilarImagesArgs,
    StyleProfileArgs,
    rate_image,
    search_images,
    similar_images,
    style_profile,
    suggest_reuse,
)
from atelier.tools.outputs.store import LocalOutputStore, output_key
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
ROOT = Path(__file__).resolve().parents[2]
SERVER = "http://127.0.0.1:8188"


@pytest.fixture(scope="session")
def minilm() -> MiniLMEmbedder:
    """The packaged model, loaded once for the run."""
    embedder = MiniLMEmbedder()
    embedder.embed(["warm up"])
    return embedder


@pytest.fixture(params=["postgres", "qdrant"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, embedded_pg_url: str) -> Settings:
    """Settings with a fresh data folder and database; the memory on pgvector or on Qdrant (local mode's API)."""
    return load_settings(data_dir=tmp_path / "data", comfyui_urls=SERVER, database_url=embedded_pg_url,
                         memory_backend=request.param)


@pytest.fixture
def memory(settings: Settings, minilm: MiniLMEmbedder) -> Iterator[MemoryStore]:
    """The memory of the settings' backend."""
    store = open_memory(settings, minilm)
    yield store
    store.close()


def ingest(memory: MemoryStore, owner: str) -> int:
    """Ingest the shipped corpus for `owner`; how many chunks were new."""
    return sum(memory.add_documents(chunk_file(path, owner)) for path in find_documents([CORPUS]))


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("my graphics card only has 4 gigabytes, how do I run the image app?", "comfyui-vram.md"),
        ("how often should I give flour to the bread culture?", "sourdough.md"),
        ("what backdrop do we use when photographing mugs for the coffee company?", "brand-guide.md"),
        ("when do I need a new chain on my bike?", "cycling.txt"),
    ],
)
def test_paraphrased_questions_find_the_right_document(memory: MemoryStore, question: str, expected: str) -> None:
    ingest(memory, SHARED)
    hits = memory.search_documents(question, owner="ana", k=3)
    assert hits and Path(hits[0].source).name == expected, [(Path(h.source).name, h.score) for h in hits]
    assert hits[0].citation().startswith(hits[0].title)


def test_re_ingesting_adds_nothing(memory: MemoryStore) -> None:
    first = ingest(memory, SHARED)
    assert first > 0 and memory.count(DOCUMENTS) == first
    assert ingest(memory, SHARED) == 0
    assert memory.count(DOCUMENTS) == first


def test_a_user_never_sees_another_users_documents(memory: MemoryStore) -> None:
    ingest(memory, "bea")
    assert memory.search_documents("sourdough starter", owner="ana", k=10) == []
    assert {h.owner for h in memory.search_documents("sourdough starter", owner="bea", k=10)} == {"bea"}
    retriever = memory.retriever(owner="ana")
    assert retriever.invoke("sourdough starter") == []
    found = memory.retriever(owner="bea").invoke("feeding the starter")
    assert found and found[0].metadata["owner"] == "bea" and found[0].metadata["source"].endswith("sourdough.md")


def test_pdfs_are_ingested_page_by_page(memory: MemoryStore, tmp_path: Path) -> None:
    pdf = tmp_path / "manual.pdf"
    pdf.write_bytes(_tiny_pdf("Descale the espresso machine monthly with citric acid."))
    chunks = chunk_file(pdf, SHARED)
    assert chunks and chunks[0].page == 1 and "citric acid" in chunks[0].text
    memory.add_documents(chunks)
    assert Path(memory.search_documents("how to remove limescale from the coffee maker", "x")[0].source).name == \
        "manual.pdf"


def test_a_collection_made_by_another_model_is_refused_with_the_fix(settings: Settings,
                                                                   minilm: MiniLMEmbedder) -> None:
    store = open_memory(settings, minilm)
    ingest(store, SHARED)
    store.close()
    other = _Renamed(minilm, "ollama:nomic-embed-text")
    with pytest.raises(EmbeddingMismatchError) as caught:
        open_memory(settings, other)
    message = str(caught.value)
    assert "all-MiniLM-L6-v2" in message and "ollama:nomic-embed-text" in message
    assert "atelier memory reindex" in message
    repaired = open_memory(settings, other, verify_model=False)
    counts = repaired.reindex()
    repaired.close()
    assert counts[DOCUMENTS] > 0
    reopened = open_memory(settings, other)  # now stamped with the new model
    assert reopened.recorded_model(DOCUMENTS) == ("ollama:nomic-embed-text", 384)
    reopened.close()


def test_a_second_process_on_a_local_folder_is_told_to_move_to_postgres(settings: Settings,
                                                                         memory: MemoryStore) -> None:
    if settings.memory_backend != "qdrant":
        pytest.skip("only qdrant-client's local mode locks its folder")
    code = ("from atelier.tools.memory.backends import open_memory\nfrom atelier.tools.settings import load_settings\n"
            f"open_memory(load_settings(data_dir={str(settings.data_dir)!r}, memory_backend='qdrant'))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "MemoryLockedError" in result.stderr
    assert "atelier memory migrate --to postgres" in result.stderr
    with pytest.raises(MemoryLockedError):
        open_memory(settings)  # also from another client in the same process


# --- images through the ledger -----------------------------------------------------------------------


def _png(colour: tuple[int, int, int], stripe: tuple[int, int, int] | None = None) -> bytes:
    """A 64×64 PNG of one colour, with an optional stripe."""
    image = Image.new("RGB", (64, 64), colour)
    if stripe:
        for x in range(64):
            for y in range(20, 30):
                image.putpixel((x, y), stripe)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest_asyncio.fixture
async def ledger_svc(settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on the settings' fresh database with a local output store."""
    async with LedgerService.open(settings,
                                  store=LocalOutputStore(settings.data_dir / "outputs")) as svc:
        yield svc


async def finished_job(svc: LedgerService, prompt: str, owner: str, png: bytes, workflow: str = "txt2img") -> Job:
    """A job that ran: submitted, claimed and completed with one stored image."""
    job = (await svc.submit(JobRequest(params=GenerationParams(prompt=prompt, seed=len(prompt)), owner=owner,
                                       workflow=workflow))).job
    claim = await svc.ledger.claim("w", server=SERVER, vram_free_gb=99, known_servers=[SERVER], lease_seconds=30)
    assert claim is not None and claim.job.id == job.id
    stored = svc.store.put(output_key(str(job.id), 0, when=job.created_at), png)
    output = JobOutput(uri=stored.uri, key=stored.key, size=stored.size, sha256=stored.sha256, node_id="9",
                       comfy_filename="x.png")
    return await svc.ledger.complete(claim.job, [output], gpu_seconds=1.0, actual_cost=0.01)


@pytest.mark.asyncio
async def test_succeeded_jobs_are_indexed_once_and_found_by_text(ledger_svc: LedgerService, memory: MemoryStore,
                                                                 settings: Settings) -> None:
    fox = await finished_job(ledger_svc, "a red fox in the snow, watercolor, soft light", "ana", _png((200, 40, 30)))
    await finished_job(ledger_svc, "a spaceship over mars, cinematic", "ana", _png((20, 20, 90)), "txt2img-hq")
    await finished_job(ledger_svc, "a lighthouse at dusk, oil painting", "bea", _png((250, 200, 60)))
    indexer = MemoryIndexer(ledger_svc.ledger, memory, ledger_svc.store, settings)
    assert await indexer.catch_up() == 3
    assert await indexer.catch_up() == 0 and memory.count(IMAGES) == 3
    ctx = MemoryContext(memory, settings, ledger_svc)
    hits = await search_images(ctx, SearchImagesArgs(query="fox in winter", owner="ana"))
    assert hits[0].image.job_id == str(fox.id) and hits[0].image.uri == fox.outputs[0].uri
    assert {h.image.owner for h in hits} == {"ana"}, "bea's lighthouse must stay invisible to ana"
    only_hq = await search_images(ctx, SearchImagesArgs(query="fox", owner="ana", workflow="txt2img-hq"))
    assert [h.image.prompt for h in only_hq] == ["a spaceship over mars, cinematic"]


@pytest.mark.asyncio
async def test_reuse_is_offered_above_the_threshold_and_not_below(ledger_svc: LedgerService, memory: MemoryStore,
                                                                  settings: Settings) -> None:
    fox = await finished_job(ledger_svc, "a red fox in the snow, watercolor", "ana", _png((200, 40, 30)))
    await MemoryIndexer(ledger_svc.ledger, memory, ledger_svc.store, settings).catch_up()
    ctx = MemoryContext(memory, settings, ledger_svc)
    close = await suggest_reuse(ctx, ReuseArgs(prompt="a red fox in snow, watercolor", owner="ana"))
    assert close is not None and close.hit.image.job_id == str(fox.id) and close.hit.score >= settings.reuse_threshold
    assert await suggest_reuse(ctx, ReuseArgs(prompt="a blue whale under the sea", owner="ana")) is None
    assert await suggest_reuse(ctx, ReuseArgs(prompt="a red fox in snow, watercolor", owner="bea")) is None
    strict = await suggest_reuse(ctx, ReuseArgs(prompt="a red fox in snow, watercolor", owner="ana", threshold=0.999))
    assert strict is None


@pytest.mark.asyncio
async def test_similar_by_look_and_by_meaning(ledger_svc: LedgerService, memory: MemoryStore,
                                              settings: Settings, tmp_path: Path) -> None:
    red = await finished_job(ledger_svc, "a poppy field", "ana", _png((210, 30, 30), (40, 120, 40)))
    red_too = await finished_job(ledger_svc, "a tomato on a plate", "ana", _png((200, 40, 35), (50, 110, 45)))
    await finished_job(ledger_svc, "a glacier lake", "ana", _png((40, 90, 210), (230, 230, 240)))
    await finished_job(ledger_svc, "wild red flowers in a meadow", "ana", _png((240, 240, 240)))
    await MemoryIndexer(ledger_svc.ledger, memory, ledger_svc.store, settings).catch_up()
    ctx = MemoryContext(memory, settings, ledger_svc)
    look = await similar_images(ctx, SimilarImagesArgs(owner="ana", job_id=str(red.id), by="look", k=1))
    assert look[0].image.job_id == str(red_too.id)
    meaning = await similar_images(ctx, SimilarImagesArgs(owner="ana", job_id=str(red.id), by="meaning", k=1))
    assert meaning[0].image.prompt == "wild red flowers in a meadow"
    file = tmp_path / "red.png"
    file.write_bytes(_png((205, 35, 30), (45, 115, 40)))
    by_file = await similar_images(ctx, SimilarImagesArgs(owner="ana", image_path=str(file), by="look", k=2))
    assert {h.image.job_id for h in by_file} == {str(red.id), str(red_too.id)}


@pytest.mark.asyncio
async def test_ratings_reach_ledger_and_memory_and_shape_the_style_profile(
    ledger_svc: LedgerService, memory: MemoryStore, settings: Settings
) -> None:
    liked = await finished_job(ledger_svc, "a fox, watercolor, soft light", "ana", _png((200, 40, 30)))
    also = await finished_job(ledger_svc, "a heron, watercolor, misty morning", "ana", _png((150, 150, 160)))
    meh = await finished_job(ledger_svc, "a car, neon, glossy render", "ana", _png((20, 200, 200)))
    await MemoryIndexer(ledger_svc.ledger, memory, ledger_svc.store, settings).catch_up()
    ctx = MemoryContext(memory, settings, ledger_svc)
    await rate_image(ctx, RateImageArgs(job_id=str(liked.id), owner="ana", stars=5, thumb="up"))
    await rate_image(ctx, RateImageArgs(job_id=str(also.id), owner="ana", stars=4))
    result = await rate_image(ctx, RateImageArgs(job_id=str(meh.id), owner="ana", thumb="down"))
    assert result.thumb == -1
    assert (await ledger_svc.get(liked.id)).rating == 5
    top = await search_images(ctx, SearchImagesArgs(query="animal", owner="ana", min_rating=4))
    assert {h.image.job_id for h in top} == {str(liked.id), str(also.id)}
    profile = await style_profile(ctx, StyleProfileArgs(owner="ana"))
    assert profile.rated == 3 and profile.liked_modifiers[0][0] == "watercolor"
    assert "neon" in [phrase for phrase, _ in profile.disliked_modifiers]
    assert profile.best_prompts[0] == "a fox, watercolor, soft light"
    with pytest.raises(Exception, match="no job"):
        await rate_image(ctx, RateImageArgs(job_id=str(liked.id), owner="bea", stars=1))


@pytest.mark.asyncio
async def test_ratings_given_outside_the_memory_reach_it(ledger_svc: LedgerService, memory: MemoryStore,
                                                         settings: Settings) -> None:
    """A rating through the job API or MCP (the ledger only) is copied onto the image by the memory's indexer."""
    fox = await finished_job(ledger_svc, "a fox, watercolor", "ana", _png((200, 40, 30)))
    owl = await finished_job(ledger_svc, "an owl, watercolor", "ana", _png((90, 80, 70)))
    indexer = MemoryIndexer(ledger_svc.ledger, memory, ledger_svc.store, settings)
    await indexer.catch_up()
    ctx = MemoryContext(memory, settings, ledger_svc)
    await ledger_svc.rate(fox.id, owner="ana", stars=5)  # as POST /jobs/{id}/rating does
    assert await search_images(ctx, SearchImagesArgs(query="fox", owner="ana", min_rating=4)) == []
    assert await indexer.sync_ratings() == 1
    assert await indexer.sync_ratings() == 0, "a copied rating is not copied again"
    top = await search_images(ctx, SearchImagesArgs(query="fox", owner="ana", min_rating=4))
    assert [h.image.job_id for h in top] == [str(fox.id)] and top[0].image.rating == 5

    # A running indexer copies a new rating as soon as the ledger announces it.
    stop = asyncio.Event()
    following = asyncio.create_task(indexer.follow(stop))
    await asyncio.sleep(0.5)
    await ledger_svc.rate(owl.id, owner="ana", stars=4, thumb=1)
    await ledger_svc.rate(fox.id, owner="ana", stars=2)
    for _ in range(100):
        found = await search_images(ctx, SearchImagesArgs(query="watercolor", owner="ana", min_rating=4))
        if [h.image.job_id for h in found] == [str(owl.id)]:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await asyncio.wait_for(following, 10)
    assert [(h.image.job_id, h.image.rating, h.image.thumb) for h in found] == [(str(owl.id), 4, 1)]


def test_processes_share_the_memory_while_an_indexer_follows(settings: Settings, minilm: MiniLMEmbedder) -> None:
    """`atelier memory index --follow` runs in one process; this one records a job and reads the memory meanwhile."""
    import os

    if settings.memory_backend != "postgres":
        pytest.skip("sharing between processes is what the pgvector backend is for (local Qdrant locks its folder)")
    assert settings.database_url is not None
    env = os.environ | {"DATABASE_URL": settings.database_url.get_secret_value(), "ATELIER_MEMORY": "postgres",
                        "ATELIER_DATA_DIR": str(settings.data_dir)}
    indexer = subprocess.Popen([sys.executable, "-m", "atelier.cli.main", "memory", "index", "--follow"], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    async def record() -> str:
        async with LedgerService.open(settings, store=LocalOutputStore(settings.data_dir / "outputs")) as svc:
            job = await finished_job(svc, "a paper crane, origami", "ana", _png((240, 240, 230)))
            for _ in range(300):
                if (await svc.get(job.id)).memory_indexed_at is not None:
                    return str(job.id)
                await asyncio.sleep(0.1)
            raise AssertionError("the following process never indexed the job")

    try:
        assert indexer.stdout is not None
        ready = indexer.stdout.readline()  # printed once the indexer has the memory open
        assert "indexing into" in ready, ready
        store = open_memory(settings, minilm)  # a second process-side client, while the indexer runs
        try:
            store.add_documents(chunk_file(CORPUS / "sourdough.md", "ana"))
            job_id = asyncio.run(record())
            assert store.search_images("origami bird", owner="ana")[0].image.job_id == job_id
        finally:
            store.close()
    finally:
        indexer.terminate()
        output = indexer.communicate(timeout=30)[0]
    assert indexer.returncode == 0, output


class _Renamed:
    """The same vectors under another model name (to provoke a mismatch cheaply)."""

    def __init__(self, inner: MiniLMEmbedder, name: str) -> None:
        self.inner = inner
        self.name = name
        self.dim = inner.dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Delegate."""
        return self.inner.embed(texts)


def _tiny_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica (hand-assembled; pypdf reads it)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


@pytest.mark.asyncio
async def test_submit_with_reuse_offers_the_existing_image_instead_of_generating(
    ledger_svc: LedgerService, settings: Settings, minilm: MiniLMEmbedder
) -> None:
    from typer.testing import CliRunner

    from atelier.cli.main import app

    fox = await finished_job(ledger_svc, "a red fox in the snow, watercolor", "ana", _png((200, 40, 30)))
    store = open_memory(settings, minilm)
    await MemoryIndexer(ledger_svc.ledger, store, ledger_svc.store, settings).catch_up()
    store.close()
    assert settings.database_url is not None
    env = {"DATABASE_URL": settings.database_url.get_secret_value(), "ATELIER_DATA_DIR": str(settings.data_dir),
           "COMFYUI_URLS": SERVER, "ATELIER_MEMORY": settings.memory_backend}
    import asyncio

    runner = CliRunner()
    offered = await asyncio.to_thread(
        runner.invoke, app, ["submit", "a red fox in snow, watercolor", "--reuse", "--owner", "ana"], env=env
    )
    assert offered.exit_code == 0, offered.output
    assert offered.stdout.strip() == str(fox.id) and "run without --reuse to generate anyway" in offered.stderr
    assert len(await ledger_svc.list_jobs()) == 1, "no job was queued"
    fresh = await asyncio.to_thread(runner.invoke, app, ["submit", "a blue whale", "--reuse", "--owner", "ana"],
                                    env=env)
    assert fresh.exit_code == 0 and fresh.stdout.strip() != str(fox.id)
    assert len(await ledger_svc.list_jobs()) == 2


def test_re_ingesting_an_edited_file_replaces_only_what_changed(memory: MemoryStore, tmp_path: Path) -> None:
    doc = tmp_path / "notes.md"
    doc.write_text("# Notes\n\nThe studio opens at nine.\n\n" + "Keep the lens caps on. " * 60)
    source = str(doc.resolve())
    added, removed = memory.replace_source(source, "ana", chunk_file(doc, "ana"))
    assert added > 0 and removed == 0
    before = memory.count(DOCUMENTS)
    doc.write_text(doc.read_text().replace("opens at nine", "opens at ten"))
    added, removed = memory.replace_source(source, "ana", chunk_file(doc, "ana"))
    assert added == removed == 1 and memory.count(DOCUMENTS) == before
    assert "ten" in memory.search_documents("when does the studio open?", "ana", k=1)[0].text
