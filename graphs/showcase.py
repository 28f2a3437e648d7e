"""The product-showcase graph (integration-ideas §7): a brief, and optionally a product photo, to a finished gallery.

    begin → plan → design (or design_photo) → approve → submit → wait → captions → gallery

`plan`, `design`, `approve` and `submit` are the supervisor's own nodes (taken from `build_supervisor`, so the
showcase plans, routes, asks for approval before spending and queues exactly as the supervisor does, and the
supervisor's plan intent still ends at submit); the rest are graphs/showcase_nodes.py. With a product photo
(`configurable["input_image"]`, a stored input image) every shot is made from it on an image-to-image workflow
(img2img, qwen-image-edit) instead. After submit the graph waits for the images in the ledger, writes a caption
and marketing copy for each in one LLM call, and makes the gallery: an HTML page, a manifest JSON and a zip,
recorded in the `showcases` table and served by the job API (GET /showcases/{id}, …/page, …/zip). Progress goes
to the custom stream (`stream_mode="custom"`); a run stopped after submit resumes from its checkpoint
(`graph.ainvoke(None, config)` on the same thread) without queuing anything twice.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.showcase_nodes import ShowcaseState, ShowcaseSteps
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.settings import load_settings

__all__ = ["SHARED_STEPS", "STEPS", "build_showcase", "graph", "next_step"]

STEPS = ("plan", "design", "approve", "submit", "wait", "captions", "gallery")
SHARED_STEPS = ("plan", "design", "approve", "submit")
"""The supervisor's nodes the showcase runs as they are."""


def next_step(state: ShowcaseState) -> str:
    """The first step of the turn not yet done (`design_photo` for `design` when there is a product photo), or the
    end once one stopped the turn (a refusal, a rejected plan) or all are done. The order is fixed: no loops."""
    if state.get("stopped"):
        return END
    trail = state.get("trail", [])
    for step in STEPS:
        if step not in trail:
            return "design_photo" if step == "design" and state.get("photo") else step
    return END


def build_showcase(*, deps: SupervisorDeps) -> StateGraph[ShowcaseState]:
    """The uncompiled showcase graph (the caller picks the checkpointer)."""
    supervisor = build_supervisor(deps=deps, fixed_intent="plan")
    steps = ShowcaseSteps(deps)
    builder: StateGraph[ShowcaseState] = StateGraph(ShowcaseState)
    builder.add_node("begin", steps.begin)
    for name in SHARED_STEPS:
        spec = supervisor.nodes[name]
        builder.add_node(name, spec.runnable, input_schema=spec.input_schema)
    builder.add_node("design_photo", steps.design_photo)
    builder.add_node("wait", steps.wait)
    builder.add_node("captions", steps.captions)
    builder.add_node("gallery", steps.gallery)
    builder.add_edge(START, "begin")
    targets = [*STEPS, "design_photo", END]
    for name in ("begin", *STEPS, "design_photo"):
        builder.add_conditional_edges(name, next_step, targets)
    return builder


graph: CompiledStateGraph[ShowcaseState, Any, ShowcaseState, ShowcaseState] = build_showcase(
    deps=SupervisorDeps(settings=load_settings(), open_services=True)
).compile(name="showcase")
