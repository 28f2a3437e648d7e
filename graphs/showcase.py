"""The product-showcase pipeline as its own graph: plan → design → approve → submit (integration-ideas §7).

The same agents and approval as the supervisor, without routing: every message is a product to showcase
(hero, lifestyle, detail and thumbnail by default).
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph

from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.state import SupervisorState
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.settings import load_settings

__all__ = ["build_showcase", "graph"]


def build_showcase(*, deps: SupervisorDeps) -> StateGraph[SupervisorState]:
    """The uncompiled showcase graph."""
    return build_supervisor(deps=deps, fixed_intent="plan")


graph: CompiledStateGraph[SupervisorState, Any, SupervisorState, SupervisorState] = build_showcase(
    deps=SupervisorDeps(settings=load_settings(), open_services=True)
).compile(name="showcase")
