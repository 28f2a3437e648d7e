"""A chat turn on the supervisor graph as a stream of typed events any front end can render.

`ChatServices.open(settings)` opens what the chat needs (ledger, Postgres checkpointer, memory, the compiled
supervisor); `run_turn` streams one turn — answer tokens, finished messages, an approval question when the
graph pauses, the images it queued and their progress until each is done — and `thread_history` rebuilds a
saved conversation with its images. No UI code here: the Gradio chat (atelier/chat) only draws these events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import Command

from atelier.agents.image_options import ImageOptions
from atelier.graphs.checkpoint import postgres_checkpointer
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.owner import OWNER_KEY
from atelier.graphs.showcase import build_showcase
from atelier.graphs.showcase_run import ShowcaseGraph, run_showcase_tool
from atelier.graphs.state import SupervisorState
from atelier.graphs.supervisor import build_supervisor
from atelier.tools.conversations import ThreadDirectory
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.backends import open_memory_or_reason
from atelier.tools.memory.records import EarlierImage
from atelier.tools.memory.store import MemoryStore
from atelier.tools.settings import Settings
from atelier.tools.toolkit import AskArgs, AskResult, Progress, ShowcaseArgs, ShowcaseResult, ToolContext

__all__ = [
    "Approval",
    "ChatOptions",
    "ChatServices",
    "EarlierImages",
    "HistoryItem",
    "ImagesQueued",
    "JobProgress",
    "Reply",
    "Token",
    "TurnEvent",
    "ask_supervisor",
    "run_turn",
    "studio",
    "thread_history",
    "tool_context",
]

log = logging.getLogger(__name__)

# Nodes whose LLM output is the answer a person reads (the classifier's JSON is not).
STREAMED_NODES = frozenset({"answer", "retrieve"})
Illustrate = Literal["auto", "always", "never"]


@dataclass(frozen=True)
class ChatOptions:
    """Per-run choices from the page: a workflow, quality tier or time target for images, when to illustrate."""

    workflow: str | None = None
    quality: str | None = None
    illustrate: Illustrate = "auto"
    target_seconds: float | None = None

    def mode(self) -> Literal["auto", "text", "image"]:
        """The graph's `mode` for this choice of illustrating."""
        return {"auto": "auto", "always": "image", "never": "text"}[self.illustrate]  # type: ignore[return-value]

    def configurable(self, thread_id: str) -> RunnableConfig:
        """The run's config: the thread plus the options the designer reads."""
        return {"configurable": {"thread_id": thread_id, "workflow": self.workflow, "quality": self.quality,
                                 "target_seconds": self.target_seconds}}


@dataclass(frozen=True)
class Token:
    """A piece of the answer being written by `node`."""

    node: str
    text: str


@dataclass(frozen=True)
class Reply:
    """A finished assistant message from `node` (replaces what `node` streamed)."""

    node: str
    text: str


@dataclass(frozen=True)
class Approval:
    """The graph paused: these images cost more than the thresholds; approve, edit or reject."""

    question: str
    estimate: dict[str, Any]
    images: list[dict[str, Any]]


@dataclass(frozen=True)
class EarlierImages:
    """The turn found these earlier images (best first) and is making `variations` new ones beside them."""

    query: str
    earlier: list[EarlierImage]
    variations: int


@dataclass(frozen=True)
class ImagesQueued:
    """The turn queued these jobs (in order)."""

    jobs: list[Job]


@dataclass(frozen=True)
class JobProgress:
    """Something happened to a queued job (progress, preview, retry, or its end with the job row)."""

    event: JobEvent


TurnEvent = Token | Reply | Approval | EarlierImages | ImagesQueued | JobProgress
Graph = CompiledStateGraph[SupervisorState, Any, SupervisorState, SupervisorState]


@dataclass
class ChatServices:
    """What a chat page acts through; open with `ChatServices.open`."""

    settings: Settings
    ledger: LedgerService
    threads: ThreadDirectory
    graph: Graph
    deps: SupervisorDeps
    showcase: ShowcaseGraph
    memory: MemoryStore | None = None
    memory_problem: str | None = None

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, settings: Settings, *, llm: BaseChatModel | None = None, conninfo: str | None = None,
                   with_memory: bool = True) -> AsyncIterator[ChatServices]:
        """Open the ledger, checkpointer and memory; compile the supervisor and the showcase graph on them; close all
        on exit."""
        async with contextlib.AsyncExitStack() as stack:
            ledger = await stack.enter_async_context(LedgerService.open(settings, conninfo=conninfo))
            saver = await stack.enter_async_context(postgres_checkpointer(settings, ledger.conninfo))
            memory, problem = ((await open_memory_or_reason(settings, "the chat")) if with_memory
                               else (None, "memory disabled"))
            if memory is not None:
                stack.callback(memory.close)
            deps = SupervisorDeps(settings=settings, llm=llm, ledger=ledger, memory=memory)
            graph: Graph = build_supervisor(deps=deps).compile(checkpointer=saver, name="supervisor")
            showcase: ShowcaseGraph = build_showcase(deps=deps).compile(checkpointer=saver, name="showcase")
            yield cls(settings=settings, ledger=ledger, threads=ThreadDirectory.for_service(ledger), graph=graph,
                      deps=deps, showcase=showcase, memory=memory, memory_problem=problem)


@contextlib.asynccontextmanager
async def studio(settings: Settings, *, llm: BaseChatModel | None = None, conninfo: str | None = None,
                 worker: bool = True, with_memory: bool = True) -> AsyncIterator[ChatServices]:
    """ChatServices plus, while the block runs, a ledger worker (unless `worker=False`) and the memory indexer."""
    from atelier.tools.memory.indexer import MemoryIndexer
    from atelier.tools.worker.worker import Worker

    stop = asyncio.Event()
    async with ChatServices.open(settings, llm=llm, conninfo=conninfo, with_memory=with_memory) as services:
        ledger = services.ledger
        tasks = []
        if worker:
            tasks.append(asyncio.create_task(Worker.for_service(ledger).run(stop), name="worker"))
        if services.memory is not None:
            indexer = MemoryIndexer.for_service(ledger, services.memory)
            tasks.append(asyncio.create_task(indexer.follow(stop), name="memory-indexer"))
        try:
            yield services
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)


def tool_context(services: ChatServices, owner: str) -> ToolContext:
    """The toolkit's context on these services, for `owner` (ask_atelier runs this supervisor, showcase this
    showcase graph)."""

    async def ask(args: AskArgs, who: str) -> AskResult:
        return await ask_supervisor(services, args, who)

    async def showcase(ctx: ToolContext, args: ShowcaseArgs, progress: Progress) -> ShowcaseResult:
        return await run_showcase_tool(services.showcase, ctx, args, progress)

    return ToolContext(settings=services.settings, ledger=services.ledger, owner=owner, memory=services.memory,
                       memory_problem=services.memory_problem, ask=ask, showcase=showcase)




def _text(message: BaseMessage) -> str:
    """A message's text content."""
    return message.content if isinstance(message.content, str) else str(message.content)


async def run_turn(services: ChatServices, thread_id: str, owner: str, *, message: str | None = None,
                   resume: dict[str, Any] | None = None, options: ChatOptions | None = None,
                   follow_jobs: bool = True) -> AsyncIterator[TurnEvent]:
    """One turn (a new `message`, or `resume` after an approval): stream it, then follow the images it queued."""
    options = options or ChatOptions()
    config = options.configurable(thread_id)
    config["configurable"][OWNER_KEY] = owner  # who acts: the caller this process authenticated (graphs/owner.py)
    payload: Any
    if message is not None:
        await services.threads.touch(thread_id, owner, message)
        payload = {"messages": [HumanMessage(message, id=str(uuid.uuid4()))], "mode": options.mode()}
    else:
        if await services.threads.get(thread_id, owner) is None:
            raise AtelierError(f"no conversation {thread_id!r} of yours waits for an answer")
        payload = Command(resume=resume or {"action": "approve"})
    job_ids: list[str] = []
    # durability="sync": each step is in PostgreSQL before the next starts, so a restart (or a page closed right
    # after a pause) never loses the pending approval or the turn.
    async for item in services.graph.astream(payload, config, stream_mode=["messages", "updates"],
                                             durability="sync"):
        mode, chunk = cast(tuple[str, Any], item)
        if mode == "messages":
            piece, meta = chunk
            node = str(meta.get("langgraph_node", ""))
            if isinstance(piece, AIMessageChunk) and node in STREAMED_NODES and piece.content:
                yield Token(node, _text(piece))
            continue
        for node, update in chunk.items():
            if node == "__interrupt__":
                value = update[0].value if update else {}
                yield Approval(str(value.get("question", "Go ahead?")), dict(value.get("estimate", {})),
                               list(value.get("images", [])))
                return
            if not isinstance(update, dict):
                continue
            for reply in update.get("messages", []):
                if isinstance(reply, AIMessage):
                    yield Reply(node, _text(reply))
            if update.get("options"):
                found = ImageOptions.model_validate(update["options"])
                yield EarlierImages(found.query, found.earlier, found.variations)
            job_ids.extend(update.get("jobs") or [])
    if not job_ids:
        return
    jobs = {str(job.id): job for job in await _jobs(services, job_ids)}
    yield ImagesQueued([jobs[j] for j in job_ids if j in jobs])
    if follow_jobs:
        async for event in services.ledger.events.follow(job_ids):
            yield JobProgress(event)


async def _jobs(services: ChatServices, job_ids: list[str]) -> list[Job]:
    """Job rows by id."""
    return [await services.ledger.get(j) for j in job_ids]


@dataclass(frozen=True)
class HistoryItem:
    """One entry of a saved conversation: a message (`role`, `text`) or an image job of the turn before it."""

    role: Literal["user", "assistant"]
    text: str = ""
    job: Job | None = None


async def thread_history(services: ChatServices, thread_id: str) -> tuple[list[HistoryItem], Approval | None]:
    """A saved conversation in order, each turn's images after its messages; plus a pending approval, if any."""
    snapshot = await services.graph.aget_state({"configurable": {"thread_id": thread_id}})
    messages: list[BaseMessage] = list(snapshot.values.get("messages", [])) if snapshot.values else []
    jobs_by_turn = await services.threads.jobs(thread_id)
    items: list[HistoryItem] = []
    turn: str | None = None
    for message in messages:
        if isinstance(message, HumanMessage):
            items.extend(HistoryItem("assistant", job=job) for job in jobs_by_turn.get(turn or "", []))
            turn = message.id
            items.append(HistoryItem("user", _text(message)))
        elif isinstance(message, AIMessage) and _text(message):
            items.append(HistoryItem("assistant", _text(message)))
    items.extend(HistoryItem("assistant", job=job) for job in jobs_by_turn.get(turn or "", []))
    pending = None
    if "approve" in (snapshot.next or ()):
        values = snapshot.values or {}
        asked = next((i.value for t in snapshot.tasks or () for i in t.interrupts if isinstance(i.value, dict)), {})
        images = asked.get("images") or [
            {"purpose": d["brief"]["purpose"], "workflow": d["route"]["workflow"], "prompt": d["params"]["prompt"]}
            for d in values.get("briefs", [])]
        pending = Approval(str(asked.get("question", "Generate these images?")),
                           dict(asked.get("estimate") or values.get("estimate", {})), list(images))
    return items, pending


async def ask_supervisor(services: ChatServices, args: AskArgs, owner: str) -> AskResult:
    """The `ask_atelier` tool: one turn (or an approval answer) in a thread, its replies and queued job ids."""
    thread = args.thread_id or f"{owner}-{uuid.uuid4()}"
    known = await services.threads.get(thread, owner)
    if args.thread_id and known is None:
        raise AtelierError(f"no conversation {args.thread_id!r} of yours; leave thread_id empty to start one")
    replies: list[str] = []
    jobs: list[str] = []
    earlier: list[EarlierImage] = []
    pending: Approval | None = None
    resume = {"action": args.decision} if args.decision else None
    turn = run_turn(services, thread, owner, message=None if resume else args.message, resume=resume,
                    follow_jobs=False)
    async for event in turn:
        if isinstance(event, Reply):
            replies.append(event.text)
        elif isinstance(event, ImagesQueued):
            jobs.extend(str(job.id) for job in event.jobs)
        elif isinstance(event, EarlierImages):
            earlier = event.earlier
        elif isinstance(event, Approval):
            pending = event
    if pending is not None:
        replies.append(f"{pending.question} {pending.estimate.get('images', len(pending.images))} image(s), "
                       f"~{float(pending.estimate.get('seconds', 0)):g} s of GPU, cost "
                       f"{float(pending.estimate.get('cost', 0)):.4f}. Call again with decision approve or reject.")
    return AskResult(thread_id=thread, reply="\n\n".join(replies), jobs=jobs, earlier=earlier,
                     needs_approval=pending is not None,
                     approval=None if pending is None else {"estimate": pending.estimate, "images": pending.images})
