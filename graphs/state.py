"""The supervisor's typed state: the conversation, the routing trail and what each hop cost."""

from __future__ import annotations

import operator
from typing import Annotated, Any, Literal, TypedDict

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages

from atelier.agents.llm import Hop

__all__ = ["INTENTS", "Hop", "Intent", "SupervisorState"]

# answer: words only · generate: make the image described · illustrate: answer and show a picture · retrieve: answer
# from the person's documents · images: earlier images from the memory beside new variations · plan: a series (a
# product showcase) · cost: time, cost, VRAM, which workflow · edit: change an image the person has (img2img/edit).
Intent = Literal["answer", "generate", "illustrate", "retrieve", "images", "plan", "cost", "edit"]
INTENTS: tuple[str, ...] = ("answer", "generate", "illustrate", "retrieve", "images", "plan", "cost", "edit")


class SupervisorState(TypedDict, total=False):
    """Per-thread data; `messages` and `hops` accumulate, the rest is replaced by each node."""

    messages: Annotated[list[AnyMessage], add_messages]
    owner: str
    mode: Literal["auto", "text", "image"]
    intent: Intent
    routed_by: Literal["rules", "llm", "fixed"]
    briefs: list[dict[str, Any]]
    options: dict[str, Any]
    estimate: dict[str, Any]
    decision: dict[str, Any]
    jobs: list[str]
    previous_jobs: list[str]
    trail: list[str]
    hops: Annotated[list[Hop], operator.add]
    stopped: str
