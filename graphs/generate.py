"""A one-step LangGraph graph that turns generation parameters into saved images via the tool layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypedDict

from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from graphs.owner import require_admin
from tools.generate import generate_image
from tools.schemas import GenerationParams
from tools.settings import Settings, load_settings

__all__ = ["GenerateState", "build_generate_graph", "graph"]


class GenerateState(TypedDict, total=False):
    """Input: `params` (GenerationParams fields) and an optional `workflow`; output: `result`."""

    params: dict[str, Any]
    workflow: str | None
    result: dict[str, Any]


def build_generate_graph(*, settings: Settings) -> StateGraph[GenerateState]:
    """Build the (uncompiled) graph; per-run `configurable` may set `comfy_url` and `out_dir`.

    Through the LangGraph server with accounts, only admins may run it (graphs/owner.py `require_admin`).
    """

    async def generate(state: GenerateState, config: RunnableConfig) -> GenerateState:
        require_admin(config, settings, "the generate graph")
        options = config.get("configurable") or {}
        out_dir = options.get("out_dir")
        result = await generate_image(
            GenerationParams.model_validate(state["params"]),
            settings=settings,
            workflow=state.get("workflow"),
            comfy_url=options.get("comfy_url"),
            out_dir=Path(out_dir) if out_dir else None,
        )
        return {"result": result.model_dump(mode="json")}

    builder: StateGraph[GenerateState] = StateGraph(GenerateState)
    builder.add_node("generate", generate)
    builder.add_edge(START, "generate")
    builder.add_edge("generate", END)
    return builder


graph: CompiledStateGraph[GenerateState, Any, GenerateState, GenerateState] = build_generate_graph(
    settings=load_settings()
).compile(name="generate")
