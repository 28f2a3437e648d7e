"""The supervisor's typed state: the conversation, the routing trail and what each hop cost."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from atelier.agents.llm import Hop

__all__ = ["INTENTS", "Hop", "Intent", "SupervisorState"]

Intent = Literal["answer", "generate", "illustrate", "retrieve", "plan", "cost"]
INTENTS: tuple[str, ...] = ("answer", "generate", "illustrate", "retrieve", "plan", "cost")


class SupervisorState(TypedDict, total=False):
    """Per-thread data; `messages` and `hops` accumulate, the rest is replaced by each node."""

    messages: Annotated[list[AnyMessage], add_messages]
    owner: str
    mode: Literal["auto", "text", "image"]
    intent: Intent
    routed_by: Literal["rules", "llm", "fixed"]
    briefs: list[dict[str, Any]]
    estimate: dict[str, Any]
    decision: dict[str, Any]
    jobs: list[str]
    trail: list[str]
    hops: Annotated[list[Hop], operator.add]
    stopped: str
