"""A one-step LangGraph graph that turns generation parameters into saved images via the tool layer."""

from __future__ import annotations

import asyncio
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from atelier.graphs.owner import require_admin
from atelier.tools.catalog import require_workflow_name
from atelier.tools.comfyui.direct import run_workflow
from atelier.tools.errors import AtelierError
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.workflow_library import resolve_effective

__all__ = ["GenerateRefusedError", "GenerateState", "build_generate_graph", "graph"]


class GenerateRefusedError(AtelierError, ValueError):
    """A run the generate graph could not carry out (a ValueError too: the LangGraph server shows its message)."""


class GenerateState(TypedDict, total=False):
    """Input: `params` (GenerationParams fields) and an optional `workflow`; output: `result`."""

    params: dict[str, Any]
    workflow: str | None
    result: dict[str, Any]


def build_generate_graph(*, settings: Settings) -> StateGraph[GenerateState]:
    """Build the (uncompiled) graph: ComfyUI servers and the output folder come from `settings` only.

    What a run may name is what any caller may: a catalog workflow and values (an input image only as a stored
    input's name, tools/inputs.py). Through the LangGraph server with accounts, only admins may run it
    (graphs/owner.py `require_admin`): it renders outside the ledger and its quotas.
    """

    async def generate(state: GenerateState, config: RunnableConfig) -> GenerateState:
        require_admin(config, settings, "the generate graph")
        workflow = state.get("workflow")
        try:
            require_workflow_name(workflow)
            template = await asyncio.to_thread(resolve_effective, workflow, settings)
            result = await run_workflow(GenerationParams.model_validate(state.get("params")), settings=settings,
                                        workflow=template)
        except AtelierError as exc:
            raise GenerateRefusedError(str(exc)) from exc
        return {"result": result.model_dump(mode="json")}

    builder: StateGraph[GenerateState] = StateGraph(GenerateState)
    builder.add_node("generate", generate)
    builder.add_edge(START, "generate")
    builder.add_edge("generate", END)
    return builder


graph: CompiledStateGraph[GenerateState, Any, GenerateState, GenerateState] = build_generate_graph(
    settings=load_settings()
).compile(name="generate")
