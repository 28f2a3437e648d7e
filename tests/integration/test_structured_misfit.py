"""A model answer that does not fit its schema, through the compiled supervisor: one retry that tells the model what
was wrong, and when that fails too, a message in the conversation naming the problem (never a raw exception)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver

from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.settings import Settings, load_settings
from tests.fakes.chat_model import ScriptedChatModel
from tests.integration.test_supervisor import SHOWCASE

pytestmark = pytest.mark.asyncio


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """No ledger and no ComfyUI are needed: the runs end before anything is queued."""
    return load_settings(data_dir=tmp_path / "d", comfyui_urls="http://127.0.0.1:9", approval_cost=0.0001)


def make_graph(settings: Settings, llm: ScriptedChatModel) -> Any:
    """The compiled supervisor with an in-memory checkpointer and 24 GB of free VRAM."""

    async def vram() -> float:
        return 24.0

    return build_supervisor(deps=SupervisorDeps(settings=settings, llm=llm, vram_probe=vram)).compile(
        checkpointer=InMemorySaver())


def run_config(thread: str) -> dict[str, Any]:
    """A run as `ana`."""
    return {"configurable": {"thread_id": thread, "owner": "ana"}}


async def test_a_plan_that_does_not_fit_twice_ends_the_turn_with_a_message(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=[{"briefs": []}, {"briefs": []}])
    graph = make_graph(settings, llm)
    out = await graph.ainvoke({"messages": [HumanMessage("Plan a product showcase for our copper espresso cup")]},
                              run_config("misfit-plan"))
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and "__interrupt__" not in out
    assert last.content == ("I could not finish that: the model's answer did not fit: briefs: List should have at "
                            "least 1 item after validation, not 0; tried twice")
    assert out["intent"] == "plan" and out["trail"] == ["plan"] and out["stopped"] and out["jobs"] == []
    assert [(h["agent"], h["llm_calls"]) for h in out["hops"]] == [("classify", 0), ("plan", 2)]
    assert "briefs: List should have at least 1 item" in str(llm.calls[1][-1].content)


async def test_a_plan_that_fits_on_the_retry_goes_on_to_approval(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=[{"briefs": []}, SHOWCASE])
    graph = make_graph(settings, llm)
    out = await graph.ainvoke({"messages": [HumanMessage("Plan a product showcase for our copper espresso cup")]},
                              run_config("retry-plan"))
    pending = out["__interrupt__"][0].value
    assert [i["purpose"] for i in pending["images"]] == ["hero", "lifestyle", "detail", "thumbnail"]
    assert [(h["agent"], h["llm_calls"]) for h in out["hops"]] == [("classify", 0), ("plan", 2), ("design", 0)]


async def test_a_classification_that_does_not_fit_is_retried_then_reported(settings: Settings) -> None:
    llm = ScriptedChatModel(replies=[{"intent": "paint"}, {"intent": "cost"}])
    out = await make_graph(settings, llm).ainvoke({"messages": [HumanMessage("draw how much it would cost")]},
                                                  run_config("retry-intent"))
    assert out["routed_by"] == "llm" and out["intent"] == "cost" and len(llm.calls) == 2
    assert out["hops"][0] == {**out["hops"][0], "agent": "classify", "llm_calls": 2}
    assert "intent: Input should be 'answer', 'generate'" in str(llm.calls[1][-1].content)
    assert "txt2img" in out["messages"][-1].content  # the cost agent answered

    llm = ScriptedChatModel(replies=[{"intent": "paint"}, {"kind": "cost"}])
    out = await make_graph(settings, llm).ainvoke({"messages": [HumanMessage("draw how much it would cost")]},
                                                  run_config("misfit-intent"))
    last = out["messages"][-1]
    assert isinstance(last, AIMessage) and last.content == (
        "I could not finish that: the model's answer did not fit: intent: Field required; tried twice")
    assert out.get("intent") is None and out["stopped"] and len(llm.calls) == 2
