"""Run the showcase graph in-process for one caller and follow it: the events the chat's Gallery tab draws, and the
`showcase` tool (MCP, LangChain, CrewAI, AutoGen), which turns them into progress notifications and one result.

A showcase runs in its own thread (`showcase-<uuid>`) of the checkpointer. A thread is answered only for the owner
who started it (its state's `owner`, recorded from the caller at the start of every turn), so a guessed thread id
neither shows nor continues someone else's showcase. Runs are durable (`durability="sync"`): a run stopped anywhere
continues from its last step with `continue_showcase`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, cast

from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from atelier.graphs.owner import OWNER_KEY
from atelier.graphs.showcase_nodes import ShowcaseState
from atelier.tools.errors import AtelierError
from atelier.tools.showcase.store import ShowcaseStore
from atelier.tools.toolkit import Progress, ShowcaseArgs, ShowcaseResult, ToolContext, showcase_info

__all__ = ["ShowcaseApproval", "ShowcaseEnded", "ShowcaseEvent", "ShowcaseGraph", "ShowcaseProgressed",
           "ShowcaseReply", "follow_showcase", "new_thread", "run_showcase_tool"]

ShowcaseGraph = CompiledStateGraph[ShowcaseState, Any, ShowcaseState, ShowcaseState]


@dataclass(frozen=True)
class ShowcaseProgressed:
    """How far the showcase is: `stage` (images, captions, gallery, done), `done` of `total` steps, a message."""

    showcase_id: str
    stage: str
    done: int
    total: int
    message: str


@dataclass(frozen=True)
class ShowcaseReply:
    """A message of the run (the plan refused, the gallery made …)."""

    text: str


@dataclass(frozen=True)
class ShowcaseApproval:
    """The run paused: the plan costs more than the thresholds; approve or reject."""

    question: str
    estimate: dict[str, Any]
    images: list[dict[str, Any]]


@dataclass(frozen=True)
class ShowcaseEnded:
    """The run ended; the showcase it made (None when it stopped before one was recorded)."""

    showcase_id: str | None
    status: str | None


ShowcaseEvent = ShowcaseProgressed | ShowcaseReply | ShowcaseApproval | ShowcaseEnded


def new_thread() -> str:
    """A fresh thread id for a showcase."""
    return f"showcase-{uuid.uuid4()}"


def _config(thread: str, owner: str, photo: str | None = None) -> RunnableConfig:
    """The run's config: the thread, who acts (the caller this process authenticated) and the product photo."""
    return {"configurable": {"thread_id": thread, OWNER_KEY: owner, "input_image": photo}}


async def _check_thread(graph: ShowcaseGraph, thread: str, owner: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """The thread's pending steps and values; AtelierError unless it is a showcase thread of `owner`."""
    snapshot = await graph.aget_state(_config(thread, owner))
    values = snapshot.values or {}
    if values.get("owner") != owner:
        raise AtelierError(f"no showcase {thread[:80]!r} of yours; leave thread_id empty to start one")
    return tuple(snapshot.next or ()), values


async def follow_showcase(graph: ShowcaseGraph, thread: str, owner: str, *, brief: str | None = None,
                          photo: str | None = None,
                          decision: str | None = None) -> AsyncGenerator[ShowcaseEvent, None]:
    """One run in `thread` for `owner`: a new `brief` (with an optional product `photo`, a stored input's name), a
    `decision` ("approve"/"reject") on a paused plan, or neither to continue a run that stopped midway."""
    payload: Any
    if brief is not None and brief.strip():
        payload = {"messages": [HumanMessage(brief, id=str(uuid.uuid4()))]}
        pending: tuple[str, ...] = ()
        if (await graph.aget_state(_config(thread, owner))).values:
            pending, _ = await _check_thread(graph, thread, owner)
        if pending:
            raise AtelierError("this showcase is not finished yet (it waits for your decision, or stopped midway); "
                               "answer or continue it, or start a new one")
    else:
        pending, _ = await _check_thread(graph, thread, owner)
        waits = "approve" in pending
        if decision is not None and not waits:
            raise AtelierError("nothing in this showcase waits for approval")
        if decision is None and (waits or not pending):
            raise AtelierError("this showcase waits for your decision (approve or reject)" if waits else
                               "this showcase is finished; give a brief to start another")
        payload = Command(resume={"action": decision}) if decision is not None else None
    config = _config(thread, owner, photo)
    async for item in graph.astream(payload, config, stream_mode=["custom", "updates"], durability="sync"):
        mode, chunk = cast(tuple[str, Any], item)
        if mode == "custom":
            yield ShowcaseProgressed(str(chunk.get("showcase", "")), str(chunk.get("stage", "")),
                                     int(chunk.get("done", 0)), int(chunk.get("total", 0)),
                                     str(chunk.get("message", "")))
            continue
        for node, update in chunk.items():
            if node == "__interrupt__":
                value = update[0].value if update else {}
                yield ShowcaseApproval(str(value.get("question", "Go ahead?")), dict(value.get("estimate", {})),
                                       list(value.get("images", [])))
                return
            for message in (update or {}).get("messages", []) if isinstance(update, dict) else []:
                if isinstance(message, AIMessage) and message.content:
                    yield ShowcaseReply(str(message.content))
    values = (await graph.aget_state(config)).values or {}
    recorded = values.get("showcase") or {}
    yield ShowcaseEnded(recorded.get("id"), recorded.get("status"))


async def run_showcase_tool(graph: ShowcaseGraph, ctx: ToolContext, args: ShowcaseArgs,
                            progress: Progress) -> ShowcaseResult:
    """The `showcase` tool on this graph: follow the run, report its progress, return the reply and the showcase."""
    thread = args.thread_id or new_thread()
    replies: list[str] = []
    approval: ShowcaseApproval | None = None
    ended: ShowcaseEnded | None = None
    brief = None if args.decision is not None else args.brief
    async for event in follow_showcase(graph, thread, ctx.owner, brief=brief, photo=args.input_image,
                                       decision=args.decision):
        if isinstance(event, ShowcaseProgressed):
            await progress(event.done, event.total, event.message)
        elif isinstance(event, ShowcaseReply):
            replies.append(event.text)
        elif isinstance(event, ShowcaseApproval):
            approval = event
        else:
            ended = event
    if approval is not None:
        estimate = approval.estimate
        replies.append(f"{approval.question} {estimate.get('images', len(approval.images))} image(s), "
                       f"~{float(estimate.get('seconds', 0)):g} s of GPU, cost {float(estimate.get('cost', 0)):.4f}. "
                       "Call showcase again with this thread_id and decision approve or reject.")
        return ShowcaseResult(thread_id=thread, reply="\n\n".join(replies), needs_approval=True,
                              approval={"estimate": estimate, "images": approval.images})
    info = None
    if ended is not None and ended.showcase_id:
        info = showcase_info(ctx, await ShowcaseStore.for_service(ctx.ledger).get(ended.showcase_id,
                                                                                  owner=ctx.owner))
    return ShowcaseResult(thread_id=thread, reply="\n\n".join(replies), showcase=info)
