"""RAG with images and edits through the compiled supervisor: earlier images beside new variations, and an edit of
the conversation's last image, with the fakes, the machine's PostgreSQL and a real memory."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from PIL import Image

from atelier.agents.image_edit import edit_instruction
from atelier.agents.image_options import options_subject, variation_briefs
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.backends import open_memory
from atelier.tools.memory.records import EarlierImage, ImageRecord
from atelier.tools.memory.store import PIXEL_DIM, MemoryStore
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.fakes.chat_model import ScriptedChatModel
from tests.integration.test_memory import finished_job

PROMPTS = ["a red fox in the snow", "a fox cub asleep in autumn leaves", "a lighthouse at dusk"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No approval needed for a few images; a ComfyUI that is never reached (nothing runs the jobs)."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9", approval_cost=10,
                         approval_gpu_seconds=10_000)


@pytest_asyncio.fixture
async def ledger(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as svc:
        yield svc


@pytest.fixture
def memory(settings: Settings) -> Iterator[MemoryStore]:
    """A memory holding Ana's three earlier images and one of Bea's (a fox too)."""
    store = open_memory(settings)
    flat = [1.0 / PIXEL_DIM**0.5] * PIXEL_DIM
    records = [ImageRecord(job_id=f"00000000-0000-4000-8000-00000000000{i}", owner="ana", prompt=prompt,
                           workflow="txt2img", uri=f"file:///out/{i}.png", created_at="2026-11-25T00:00:00+00:00")
               for i, prompt in enumerate(PROMPTS)]
    records.append(ImageRecord(job_id="00000000-0000-4000-8000-000000000009", owner="bea", prompt="bea's secret fox",
                               workflow="txt2img", uri="file:///out/9.png", created_at="2026-11-25T00:00:00+00:00"))
    store.add_images(records, [flat] * len(records))
    try:
        yield store
    finally:
        store.close()


def graph_of(settings: Settings, llm: ScriptedChatModel, *, memory: MemoryStore | None = None,
             ledger: LedgerService | None = None) -> Any:
    """The compiled supervisor with 24 GB of free VRAM."""

    async def vram() -> float:
        return 24.0

    deps = SupervisorDeps(settings=settings, llm=llm, memory=memory, ledger=ledger, vram_probe=vram)
    return build_supervisor(deps=deps).compile(checkpointer=InMemorySaver())


def run(thread: str, owner: str = "ana", **options: Any) -> dict[str, Any]:
    """A run config acting for `owner`, with run options."""
    return {"configurable": {"thread_id": thread, "owner": owner, **options}}


def png(colour: str = "red") -> bytes:
    """A small PNG."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(buffer, format="PNG")
    return buffer.getvalue()


def test_the_subject_of_a_request_for_options_in_both_languages() -> None:
    assert options_subject("Show me designs similar to minimalist tech branding") == "minimalist tech branding"
    assert options_subject("find earlier images of foxes") == "foxes"
    assert options_subject("Mostre imagens parecidas com meu logo rústico") == "meu logo rústico"
    assert options_subject("Encontre minhas fotos anteriores de raposas?") == "raposas"
    assert edit_instruction("Edit my last image: add a red hat") == "add a red hat"
    assert edit_instruction("Mude o fundo desta foto para azul") == "Mude o fundo desta foto para azul"


def test_variations_start_fresh_then_follow_the_closest_earlier_images() -> None:
    earlier = [EarlierImage(job_id=f"j{i}", prompt=p, workflow="txt2img", uri="file:///x.png", score=0.9 - i / 10)
               for i, p in enumerate(PROMPTS)]
    briefs = variation_briefs("foxes", earlier, 3)
    assert [b.subject for b in briefs] == ["foxes"] * 3
    assert briefs[0].notes == "" and PROMPTS[0] in briefs[1].notes and PROMPTS[1] in briefs[2].notes
    assert variation_briefs("foxes", [], 2)[1].notes == "" and variation_briefs("foxes", earlier, 0) == []


@pytest.mark.asyncio
async def test_options_show_the_owners_earlier_images_beside_new_variations_without_an_llm_call(
        settings: Settings, memory: MemoryStore, ledger: LedgerService) -> None:
    llm = ScriptedChatModel(replies=[])
    graph = graph_of(settings, llm, memory=memory, ledger=ledger)
    out = await graph.ainvoke({"messages": [HumanMessage("find earlier images of foxes")]}, run("o1"))
    assert out["intent"] == "images" and llm.calls == []
    earlier = out["options"]["earlier"]
    assert [e["prompt"] for e in earlier][:2] == PROMPTS[:2]  # most similar first
    assert "bea's secret fox" not in str(out)  # another owner's image is never an option
    assert out["options"]["variations"] == 3 and len(out["jobs"]) == 3
    jobs = [await ledger.get(j, owner="ana") for j in out["jobs"]]
    assert all("fox" in str(job.params["prompt"]) for job in jobs)
    assert len({job.params["seed"] for job in jobs}) == 3  # three different pictures, not one thrice
    text = out["messages"][-2].content
    assert text.startswith("3 earlier image(s) like “foxes”") and "Making 3 new variation(s)" in text


@pytest.mark.asyncio
async def test_run_options_set_how_many_and_refuse_what_is_out_of_bounds(
        settings: Settings, memory: MemoryStore, ledger: LedgerService) -> None:
    llm = ScriptedChatModel(replies=[])
    graph = graph_of(settings, llm, memory=memory, ledger=ledger)
    out = await graph.ainvoke({"messages": [HumanMessage("find earlier images of foxes")]},
                              run("o2", similar=1, variations=0))
    assert len(out["options"]["earlier"]) == 1 and out.get("jobs") == [] and out["trail"] == ["options"]
    assert "No new variations were asked for" in out["messages"][-1].content
    out = await graph.ainvoke({"messages": [HumanMessage("find earlier images of foxes")]},
                              run("o3", variations=999))
    assert out.get("jobs") == [] and "variations 0–16" in out["messages"][-1].content


@pytest.mark.asyncio
async def test_without_a_memory_the_reply_says_why_and_still_makes_variations(settings: Settings,
                                                                              ledger: LedgerService) -> None:
    async def vram() -> float:
        return 24.0

    deps = SupervisorDeps(settings=settings, llm=ScriptedChatModel(replies=[]), ledger=ledger, vram_probe=vram,
                          memory_problem="the vector extension is not installed")
    graph: Any = build_supervisor(deps=deps).compile(checkpointer=InMemorySaver())
    out = await graph.ainvoke({"messages": [HumanMessage("show me options like my fox logo")]}, run("o4"))
    assert "cannot search your earlier images right now: the vector extension" in out["messages"][-2].content
    assert len(out["jobs"]) == 3


@pytest.mark.asyncio
async def test_an_edit_changes_the_last_image_of_the_conversation(settings: Settings, ledger: LedgerService) -> None:
    made = await finished_job(ledger, "a red fox", "ana", png())
    llm = ScriptedChatModel(replies=[])
    graph = graph_of(settings, llm, ledger=ledger)
    await graph.aupdate_state(run("e1"), {"jobs": [str(made.id)]})
    out = await graph.ainvoke({"messages": [HumanMessage("Edit my last image: add a red hat")]}, run("e1"))
    assert out["intent"] == "edit" and llm.calls == [] and len(out["jobs"]) == 1
    job = await ledger.get(out["jobs"][0], owner="ana")
    assert job.params["prompt"] == "add a red hat" and job.params["input_image"].endswith(".png")
    assert job.workflow.rsplit("/", 1)[-1] in {"img2img", "qwen-image-edit"}
    assert f"the image of job {str(made.id)[:8]}" in out["messages"][-2].content


@pytest.mark.asyncio
async def test_an_edit_never_reads_another_owners_image_named_in_the_state(settings: Settings,
                                                                           ledger: LedgerService) -> None:
    theirs = await finished_job(ledger, "bea's fox", "bea", png("blue"))
    graph = graph_of(settings, ScriptedChatModel(replies=[]), ledger=ledger)
    await graph.aupdate_state(run("e2"), {"jobs": [str(theirs.id)], "previous_jobs": ["../../etc/passwd", 7]})
    out = await graph.ainvoke({"messages": [HumanMessage("Edit the last image: make it blue")]}, run("e2"))
    assert out.get("jobs") == [] and "no image to edit in this conversation" in out["messages"][-1].content
    out = await graph.ainvoke({"messages": [HumanMessage("Edit the last image: make it blue")]},
                              run("e3", input_image="../secrets.png"))
    assert out.get("jobs") == [] and "input_image" in out["messages"][-1].content


@pytest.mark.asyncio
async def test_an_answer_from_documents_is_illustrated_from_the_same_call(settings: Settings,
                                                                          ledger: LedgerService) -> None:
    from atelier.tools.memory.documents import chunk_file, find_documents

    store = open_memory(settings)
    try:
        corpus = Path(__file__).resolve().parents[1] / "data" / "corpus"
        for path in find_documents([corpus]):
            store.add_documents(chunk_file(path, "ana"))
        llm = ScriptedChatModel(replies=[
            "Our cups sit on dark walnut, never white [1].\n[picture]\nsubject: a copper cup on a dark walnut "
            "table\nsetting: a quiet cafe counter\nmood: warm, low morning light\n[/picture]",
            "Dark walnut [1].",
        ])
        graph = graph_of(settings, llm, memory=store, ledger=ledger)
        ask = "According to our brand guide, what does the cup background look like? Show me."
        out = await graph.ainvoke({"messages": [HumanMessage(ask)]}, run("rag-pic"))
        assert out["intent"] == "retrieve" and len(llm.calls) == 1 and out["trail"][:2] == ["retrieve", "design"]
        answer = out["messages"][1].content
        assert answer.startswith("Our cups sit on dark walnut") and "[picture]" not in answer and "Sources:" in answer
        system = str(llm.calls[0][0].content)
        assert "Lumen Coffee brand guide" in system and "[picture]" in system
        job = await ledger.get(out["jobs"][0], owner="ana")
        assert "copper cup on a dark walnut table" in job.params["prompt"] and "cafe counter" in job.params["prompt"]
        worded = await graph.ainvoke({"messages": [HumanMessage("according to our brand guide, which colours do "
                                                                "we use?")]}, run("rag-words"))
        assert worded["trail"] == ["retrieve"] and worded["jobs"] == [] and len(llm.calls) == 2
        assert "[picture]" not in str(llm.calls[1][0].content), "a question in words is not asked for a picture"
    finally:
        store.close()
