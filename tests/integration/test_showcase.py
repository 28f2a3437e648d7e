"""The showcase graph end to end on the machine's PostgreSQL, a worker and the fake ComfyUI: a brief (or a product
photo) → the shot list → approval → images → captions and copy in one LLM call → a gallery (page, manifest, zip)."""

from __future__ import annotations

import asyncio
import io
import json
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from PIL import Image

from atelier.tools.inputs import InputStore
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from atelier.tools.showcase.store import ShowcaseStore
from tests.fakes.chat_model import ScriptedChatModel
from tests.fakes.comfyui_server import FakeComfyUI
from tests.showcases import COPY, PLAN, config, make_showcase, running_worker

pytestmark = pytest.mark.asyncio

ASK = {"messages": [HumanMessage("A showcase for our hand-hammered copper espresso cup")]}


@pytest.fixture
def settings(tmp_path: Path, fake_comfy: FakeComfyUI) -> Settings:
    """Thresholds that make a four-image showcase ask for approval; the fake ComfyUI."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls=fake_comfy.url, approval_cost=0.02,
                         approval_gpu_seconds=60, lease_seconds=3)


@pytest_asyncio.fixture
async def ledger(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database, outputs in a folder."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as svc:
        yield svc


async def _run(graph: Any, payload: Any, cfg: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Stream one run: its final state and the showcase's progress events in order."""
    events: list[dict[str, Any]] = []
    async for mode, chunk in graph.astream(payload, cfg, stream_mode=["custom", "updates"]):
        if mode == "custom":
            events.append(chunk)
    return (await graph.aget_state(cfg)).values, events


async def test_a_brief_becomes_a_captioned_gallery_after_approval(settings: Settings, ledger: LedgerService) -> None:
    llm = ScriptedChatModel(replies=[PLAN, COPY])
    graph = make_showcase(settings, llm, ledger, InMemorySaver())
    paused = await graph.ainvoke(ASK, config("cup"))
    asked = paused["__interrupt__"][0].value
    assert paused["routed_by"] == "fixed" and paused["trail"] == ["plan", "design"], "no routing: always a showcase"
    assert asked["estimate"]["images"] == 4 and await ledger.list_jobs() == [], "nothing is spent before approval"
    async with running_worker(ledger):
        state, events = await _run(graph, Command(resume={"action": "approve"}), config("cup"))
    assert state["trail"] == ["plan", "design", "approve", "submit", "wait", "captions", "gallery"]
    assert len(llm.calls) == 2, "one call for the plan, one for every caption and copy"
    assert "ana" in {job.owner for job in await ledger.list_jobs()} and len(await ledger.list_jobs()) == 4
    reply = state["messages"][-1].content
    showcase_id = state["showcase"]["id"]
    assert reply.startswith("Your showcase is ready: 4 of 4 image(s), captions and copy by the model.")
    assert f"GET /showcases/{showcase_id}/page" in reply

    # Progress across the whole set: images done of 4, then captions, then the gallery (total = 4 + 2).
    stages = [(e["stage"], e["done"], e["total"]) for e in events if not e["message"].startswith("still waiting")]
    assert stages[0] == ("images", 0, 6) and stages[-1] == ("done", 6, 6)
    assert [s for s in stages if s[0] == "images"][-1] == ("images", 4, 6)
    assert [s[0] for s in stages[-3:]] == ["captions", "gallery", "done"]
    assert [s[1] for s in stages] == sorted(s[1] for s in stages), "progress only moves forward"
    assert {e["showcase"] for e in events} == {showcase_id}

    showcase = await ShowcaseStore.for_service(ledger).get(showcase_id, owner="ana")
    assert showcase.status == "ready" and showcase.headline == COPY["headline"] and showcase.note == ""
    assert [i.caption for i in showcase.items] == [c["caption"] for c in COPY["images"]]
    assert {i.copy_by for i in showcase.items} == {"model"}
    jobs = {str(job.id): job for job in await ledger.list_jobs()}
    for item in showcase.items:
        job = jobs[item.job_id or ""]
        assert item.seed == job.params["seed"] and item.workflow == job.workflow and item.prompt == job.params["prompt"]
    manifest = showcase.manifest or {}
    assert manifest["schema"] == "atelier.showcase/1" and manifest["copy_by"] == "model"
    assert [i["image"] for i in manifest["items"]] == ["images/01-hero.png", "images/02-lifestyle.png",
                                                       "images/03-detail.png", "images/04-thumbnail.png"]
    page = Path((showcase.page_uri or "").removeprefix("file://")).read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "Morning ritual" in page
    assert "Hand-hammered copper on dark walnut." in page and str(showcase.items[0].seed) in page
    with zipfile.ZipFile(io.BytesIO(Path((showcase.zip_uri or "").removeprefix("file://")).read_bytes())) as zipped:
        assert sorted(zipped.namelist()) == ["images/01-hero.png", "images/02-lifestyle.png", "images/03-detail.png",
                                             "images/04-thumbnail.png", "index.html", "manifest.json"]
        assert json.loads(zipped.read("manifest.json")) == manifest
        assert zipped.read("index.html").decode() == page
        hero = Image.open(io.BytesIO(zipped.read("images/01-hero.png")))
        assert hero.size == (manifest["items"][0]["width"], manifest["items"][0]["height"])

    # The same turn run again (a double click on approve) queues nothing and makes no second showcase.
    again = await graph.ainvoke(Command(resume={"action": "approve"}), config("cup"))
    assert again["showcase"]["id"] == showcase_id and len(await ledger.list_jobs()) == 4
    assert len(await ShowcaseStore.for_service(ledger).recent("ana")) == 1 and len(llm.calls) == 2


async def test_the_gallery_is_made_with_brief_captions_when_the_copywriter_fails(
    settings: Settings, ledger: LedgerService
) -> None:
    misfit = {"headline": "Copper", "images": []}
    llm = ScriptedChatModel(replies=[PLAN, misfit, misfit])  # an answer that does not fit, twice (one retry)
    graph = make_showcase(settings, llm, ledger, InMemorySaver())
    await graph.ainvoke(ASK, config("plain"))
    async with running_worker(ledger):
        state = await graph.ainvoke(Command(resume={"action": "approve"}), config("plain"))
    reply = state["messages"][-1].content
    assert "4 of 4 image(s), captions and copy from the shot briefs" in reply
    assert "the copywriter model could not write them (its answer did not fit" in reply
    showcase = await ShowcaseStore.for_service(ledger).get(state["showcase"]["id"], owner="ana")
    assert showcase.status == "ready" and {i.copy_by for i in showcase.items} == {"brief"}
    assert showcase.items[0].caption == "A copper espresso cup"
    assert showcase.items[0].marketing_copy == "Hero image: a copper espresso cup (dark walnut table)."
    assert "copywriter model could not write them" in (showcase.manifest or {})["note"]
    assert "did not fit" in str(llm.calls[2][-1].content), "the retry told the model what was wrong"


async def test_waiting_is_bounded_and_the_gallery_names_what_did_not_finish(
    settings: Settings, ledger: LedgerService
) -> None:
    settings.showcase_wait_seconds = 0.5
    llm = ScriptedChatModel(replies=[PLAN])  # no image made: the copywriter is not asked
    graph = make_showcase(settings, llm, ledger, InMemorySaver())
    await graph.ainvoke(ASK, config("late"))
    state = await graph.ainvoke(Command(resume={"action": "approve"}), config("late"))  # no worker runs
    reply = state["messages"][-1].content
    assert reply.startswith("No image of the showcase could be made: 0 of 4 image(s).")
    assert "image 1 (hero): not finished after 0.5 s (job " in reply
    assert "is still queued; it goes on: GET /jobs/" in reply
    showcase = await ShowcaseStore.for_service(ledger).get(state["showcase"]["id"], owner="ana")
    assert showcase.status == "failed" and {i.status for i in showcase.items} == {"timed out"}
    assert len(llm.calls) == 1
    page = Path((showcase.page_uri or "").removeprefix("file://")).read_text()
    assert page.count("was not made: not finished after 0.5 s") == 4


async def test_a_cancelled_image_is_named_and_the_others_make_a_partial_gallery(
    settings: Settings, ledger: LedgerService
) -> None:
    llm = ScriptedChatModel(replies=[PLAN, COPY])
    graph = make_showcase(settings, llm, ledger, InMemorySaver())
    await graph.ainvoke(ASK, config("cancel"))
    run = asyncio.create_task(graph.ainvoke(Command(resume={"action": "approve"}), config("cancel")))
    while len(await ledger.list_jobs()) < 4:
        await asyncio.sleep(0.05)
    detail = next(job for job in await ledger.list_jobs() if job.idempotency_key and job.idempotency_key.endswith(":2"))
    await ledger.cancel(detail.id)
    async with running_worker(ledger):
        state = await run
    reply = state["messages"][-1].content
    assert reply.startswith("Your showcase is made, with images missing: 3 of 4 image(s)")
    assert "Not made: image 3 (detail): the job was cancelled." in reply
    showcase = await ShowcaseStore.for_service(ledger).get(state["showcase"]["id"], owner="ana")
    assert showcase.status == "partial" and [i.image is not None for i in showcase.items] == [True, True, False, True]
    asked = str(llm.calls[1][-1].content)
    assert "1. hero" in asked and "3. detail" not in asked, "only the images made are captioned"


async def test_a_product_photo_becomes_every_shot_on_an_image_to_image_workflow(
    settings: Settings, ledger: LedgerService, fake_comfy: FakeComfyUI
) -> None:
    fake_comfy.set_vram(20 * 2**30, 24 * 2**30)  # room for Qwen-Image-Edit (12 GB)
    buffer = io.BytesIO()
    Image.new("RGB", (640, 480), (184, 115, 51)).save(buffer, "PNG")
    photo = InputStore(settings).put(buffer.getvalue(), filename="cup.png")
    llm = ScriptedChatModel(replies=[PLAN, COPY])
    graph = make_showcase(settings, llm, ledger, InMemorySaver())
    paused = await graph.ainvoke(ASK, config("photo", input_image=photo.name))
    assert {i["workflow"] for i in paused["__interrupt__"][0].value["images"]} == {"qwen-image-edit"}
    async with running_worker(ledger):
        state = await graph.ainvoke(Command(resume={"action": "approve"}), config("photo"))
    jobs = await ledger.list_jobs()
    assert {job.params["input_image"] for job in jobs} == {photo.name} and {j.workflow for j in jobs} == {
        "qwen-image-edit"}
    showcase = await ShowcaseStore.for_service(ledger).get(state["showcase"]["id"], owner="ana")
    assert showcase.status == "ready" and showcase.photo == photo.name
    # With little VRAM free, the router takes the small img2img workflow instead (cheap: ask anyway, to see it).
    settings.approval_cost = 0.001
    small = make_showcase(settings, ScriptedChatModel(replies=[PLAN]), ledger, InMemorySaver(), vram_gb=6.0)
    paused = await small.ainvoke(ASK, config("photo-small", input_image=photo.name))
    assert {i["workflow"] for i in paused["__interrupt__"][0].value["images"]} == {"img2img"}


async def test_a_photo_that_is_not_a_stored_input_is_refused_before_planning(
    settings: Settings, ledger: LedgerService
) -> None:
    llm = ScriptedChatModel(replies=[])
    graph = make_showcase(settings, llm, ledger, InMemorySaver())
    out = await graph.ainvoke(ASK, config("path", input_image="/etc/hostname"))
    assert out["messages"][-1].content.startswith("I could not start the showcase: input_image '/etc/hostname' is "
                                                  "a path on the server")
    assert llm.calls == [] and await ledger.list_jobs() == []


async def test_a_rejected_showcase_spends_nothing(settings: Settings, ledger: LedgerService) -> None:
    graph = make_showcase(settings, ScriptedChatModel(replies=[PLAN]), ledger, InMemorySaver())
    await graph.ainvoke(ASK, config("no"))
    out = await graph.ainvoke(Command(resume={"action": "reject"}), config("no"))
    assert out["messages"][-1].content == "Understood: nothing was generated."
    assert await ledger.list_jobs() == [] and await ShowcaseStore.for_service(ledger).recent("ana") == []


async def test_a_showcase_stopped_mid_wait_resumes_after_a_restart_without_queuing_twice(
    machine_pg_url: str, fake_comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """The first process dies while it waits for the images; a new graph on the same Postgres checkpointer
    continues the thread from the wait step: the same showcase, the same four jobs, no new plan."""
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "DATABASE_URL": machine_pg_url, "ATELIER_DATA_DIR": str(tmp_path / "d"),
           "COMFYUI_URLS": fake_comfy.url, "OLLAMA_URL": "http://127.0.0.1:9"}
    command = [sys.executable, "-m", "tests.integration.showcase_proc"]
    first = subprocess.Popen([*command, "start", "t-1"], cwd=root, env=env, stdout=subprocess.PIPE, text=True)
    assert first.stdout is not None
    line = first.stdout.readline()
    assert line.startswith("WAITING"), line
    _, showcase_id, stage, done, total = line.split()
    assert (stage, done, total) == ("images", "0", "6")
    first.kill()  # the process dies mid-wait: four jobs queued, nobody waiting for them
    first.wait(10)
    resumed = subprocess.run([*command, "resume", "t-1"], cwd=root, env=env, capture_output=True, text=True,
                             timeout=180)
    assert resumed.returncode == 0, resumed.stderr
    outcome = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert outcome["showcase"]["id"] == showcase_id and outcome["showcase"]["status"] == "ready"
    assert len(outcome["jobs"]) == 4, "the jobs were never queued twice"
    assert outcome["llm_calls"] == 1, "only the captions: the plan came from the checkpoint"
    assert outcome["trail"][-3:] == ["wait", "captions", "gallery"]
    assert outcome["reply"].startswith("Your showcase is ready: 4 of 4 image(s), captions and copy by the model.")
    settings = load_settings(data_dir=tmp_path / "d")
    async with LedgerService.open(settings, conninfo=machine_pg_url) as svc:
        assert [s.id for s in await ShowcaseStore.for_service(svc).recent("ana")] == [uuid.UUID(showcase_id)]


async def test_text_postgresql_cannot_store_is_cleaned_not_a_crash(settings: Settings, ledger: LedgerService) -> None:
    """A NUL character or a lone surrogate (in the brief, in a caption) never fails a write out of the graph."""
    broken = {**COPY, "images": [{**COPY["images"][0], "caption": "Cup\x00 hot"}, *COPY["images"][1:]]}
    graph = make_showcase(settings, ScriptedChatModel(replies=[PLAN, broken]), ledger, InMemorySaver())
    await graph.ainvoke({"messages": [HumanMessage("A copper cup\x00 for \ud800 you")]}, config("nul"))
    async with running_worker(ledger):
        state = await graph.ainvoke(Command(resume={"action": "approve"}), config("nul"))
    showcase = await ShowcaseStore.for_service(ledger).get(state["showcase"]["id"], owner="ana")
    assert showcase.status == "ready" and showcase.brief == "A copper cup for ? you"
    assert showcase.items[0].caption == "Cup hot" and "Cup hot" in Path((showcase.page_uri or "")[7:]).read_text()


async def test_follow_showcase_answers_continues_and_refuses_what_is_not_the_callers(
    settings: Settings, ledger: LedgerService
) -> None:
    """The runner the chat and the `showcase` tool share: approval, a run stopped mid-wait continued, and refusals."""
    from atelier.graphs.showcase_run import (
        ShowcaseApproval,
        ShowcaseEnded,
        ShowcaseProgressed,
        ShowcaseReply,
        follow_showcase,
        new_thread,
    )
    from atelier.tools.errors import AtelierError

    llm = ScriptedChatModel(replies=[PLAN, COPY])
    graph = make_showcase(settings, llm, ledger, InMemorySaver())
    thread = new_thread()
    events = [e async for e in follow_showcase(graph, thread, "ana", brief="A showcase for our copper cup")]
    assert isinstance(events[-1], ShowcaseApproval) and len(events[-1].images) == 4
    with pytest.raises(AtelierError, match="waits for your decision"):
        [e async for e in follow_showcase(graph, thread, "ana")]
    with pytest.raises(AtelierError, match="not finished yet"):
        [e async for e in follow_showcase(graph, thread, "ana", brief="another")]
    with pytest.raises(AtelierError, match=r"no showcase .* of yours"):
        [e async for e in follow_showcase(graph, thread, "bo", decision="approve")]

    stopped = follow_showcase(graph, thread, "ana", decision="approve")
    first = await anext(stopped)
    assert isinstance(first, ShowcaseReply) and first.text.startswith("Queued 4 image(s)")
    first = await anext(stopped)  # the showcase waits for its images: the run stops here (no worker)
    assert isinstance(first, ShowcaseProgressed) and (first.stage, first.done, first.total) == ("images", 0, 6)
    await stopped.aclose()
    async with running_worker(ledger):
        rest = [e async for e in follow_showcase(graph, thread, "ana")]
    assert rest[-1] == ShowcaseEnded(first.showcase_id, "ready") and len(await ledger.list_jobs()) == 4
    with pytest.raises(AtelierError, match="finished; give a brief"):
        [e async for e in follow_showcase(graph, thread, "ana")]
