"""The supervisor plans images that fit their workflow: checked before approval, fitted values shown, and the queued
jobs render as the worker renders them (issue 18: "Draw a kingfisher on a branch" on a workflow without a negative
prompt input)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from langchain_core.messages import HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from atelier.chat.render import approval_text
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.supervisor import build_supervisor
from atelier.studio import Approval
from atelier.tools.comfyui.direct import resolve_workflow
from atelier.tools.comfyui.templates import render
from atelier.tools.ledger.service import LedgerService
from atelier.tools.outputs.store import LocalOutputStore
from atelier.tools.settings import Settings, load_settings
from tests.fakes.chat_model import ScriptedChatModel
from tests.fit_workflows import write_workflow
from tests.integration.test_supervisor import SHOWCASE

pytestmark = pytest.mark.asyncio

SD15 = {"purpose": "SD1.5 without a negative prompt input", "task": "txt2img", "quality": "medium", "vram_gb": 4,
        "typical_seconds": 8, "cost_per_image": 0.004, "recommended_steps": 20, "max_resolution": "768x768",
        "use_cases": ["general", "illustration", "thumbnails"]}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """A user workflows folder; thresholds that make a four-image plan wait for approval."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9", approval_cost=0.01,
                         approval_gpu_seconds=30, workflows_dir=tmp_path / "workflows")


@pytest_asyncio.fixture
async def ledger(machine_pg_url: str, settings: Settings) -> AsyncIterator[LedgerService]:
    """A ledger on a fresh database."""
    async with LedgerService.open(settings, conninfo=machine_pg_url,
                                  store=LocalOutputStore(settings.data_dir / "out")) as svc:
        yield svc


def make_graph(settings: Settings, ledger: LedgerService, llm: ScriptedChatModel, vram_gb: float) -> Any:
    """The compiled supervisor with `vram_gb` of free VRAM."""

    async def vram() -> float:
        return vram_gb

    deps = SupervisorDeps(settings=settings, llm=llm, ledger=ledger, vram_probe=vram)
    return build_supervisor(deps=deps).compile(checkpointer=InMemorySaver())


def run_config(thread: str, **options: Any) -> dict[str, Any]:
    """A run config acting for ana."""
    return {"configurable": {"thread_id": thread, "owner": "ana", **options}}


async def test_a_kingfisher_on_a_workflow_without_a_negative_input_is_queued_without_one(
    settings: Settings, ledger: LedgerService
) -> None:
    assert settings.workflows_dir is not None
    write_workflow(settings.workflows_dir, "txt2img", drop=("negative",), catalog=SD15)  # the user's own txt2img
    graph = make_graph(settings, ledger, ScriptedChatModel(replies=[]), vram_gb=5.0)
    out = await graph.ainvoke({"messages": [HumanMessage("Draw a kingfisher on a branch")]}, run_config("k"))
    reply = out["messages"][-1].content
    assert reply.startswith("Queued 1 image(s)"), reply
    assert "negative" not in reply, "the designer wrote none for a workflow without the input: nothing to leave out"
    (job,) = await ledger.list_jobs()
    assert job.workflow == "txt2img" and job.params["prompt"] == "(kingfisher on a branch:1.2)", "SD1.5 graph: tags"
    assert job.params.get("negative") is None and (job.params["width"], job.params["height"]) == (768, 768)
    template = resolve_workflow(job.workflow, settings)  # as the worker resolves it
    graph_sent = render(template, job.generation)
    assert graph_sent["6"]["inputs"]["text"] == "(kingfisher on a branch:1.2)"
    assert graph_sent["7"]["inputs"]["text"] == "text, watermark"


async def test_a_plan_on_768_pixel_workflows_shows_the_fitted_sizes_before_approval(
    settings: Settings, ledger: LedgerService
) -> None:
    graph = make_graph(settings, ledger, ScriptedChatModel(replies=[SHOWCASE]), vram_gb=16.0)
    ask = {"messages": [HumanMessage("Plan a product showcase for our copper espresso cup")]}
    paused = await graph.ainvoke(ask, run_config("plan", quality="medium"))
    asked = paused["__interrupt__"][0].value
    assert [i["workflow"] for i in asked["images"]] == ["txt2img"] * 4 and await ledger.list_jobs() == []
    assert [i["fitted"] for i in asked["images"]] == [
        ["size 1024×1024 → 768×768 (txt2img takes at most 768x768 pixels)"],
        ["size 1024×768 → 888×664 (txt2img takes at most 768x768 pixels)"], [], []]
    text = approval_text(Approval(asked["question"], asked["estimate"], asked["images"]))
    assert "(fitted: size 1024×768 → 888×664 (txt2img takes at most 768x768 pixels))" in text
    done = await graph.ainvoke(Command(resume={"action": "approve"}), run_config("plan", quality="medium"))
    assert "Queued 4 image(s)" in done["messages"][-1].content
    template = resolve_workflow("txt2img", settings)
    jobs = await ledger.list_jobs()
    assert len(jobs) == 4
    for job in jobs:
        render(template, job.generation)  # what failed in the worker before plans were fitted
        assert job.params["steps"] == 20, "the catalog's recommended steps"


async def test_an_image_that_cannot_fit_is_refused_when_planned_naming_image_workflow_and_value(
    settings: Settings, ledger: LedgerService
) -> None:
    assert settings.workflows_dir is not None
    write_workflow(settings.workflows_dir, "txt2img", catalog=SD15,
                   limits={"height": {"min": 100, "max": 120, "multiple_of": 64}})
    graph = make_graph(settings, ledger, ScriptedChatModel(replies=[]), vram_gb=5.0)
    out = await graph.ainvoke({"messages": [HumanMessage("Draw a kingfisher on a branch")]}, run_config("bad"))
    assert out["messages"][-1].content == (
        "I could not finish that: image 1 (illustration: kingfisher on a branch) cannot be made with workflow "
        "'txt2img': workflow 'txt2img' takes no height: a multiple of 64 within 100..120 does not exist; fix "
        "`limits.height` or the catalog's `resolution_multiple` in its .meta.json")
    assert out["trail"] == ["design"] and await ledger.list_jobs() == []
