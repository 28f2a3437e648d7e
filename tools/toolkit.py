"""Atelier's tools for other agent frameworks, as plain typed functions: one pydantic args model each.

Every front end (LangChain, MCP, CrewAI, AutoGen) wraps exactly these `ToolSpec`s, so they share names,
descriptions and argument schemas. Who calls is not an argument: the `ToolContext` carries the owner, so an
agent cannot read another person's jobs or memory by naming them. Long work reports progress through a
callback (MCP turns it into progress notifications; the others ignore it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from atelier.tools.catalog import require_workflow_name, task_of
from atelier.tools.errors import AtelierError
from atelier.tools.ledger.events import JobEvent
from atelier.tools.ledger.models import Job, JobRequest
from atelier.tools.ledger.service import LedgerService
from atelier.tools.ledger.store import JobNotFoundError
from atelier.tools.memory.records import DocumentHit, EarlierImage, ImageHit
from atelier.tools.memory.store import MemoryStore
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings
from atelier.tools.showcase.models import Showcase, ShowcaseItem
from atelier.tools.showcase.store import ShowcaseStore
from atelier.tools.workflow_library import load_library

__all__ = [
    "TOOLS", "AskArgs", "AskResult", "FindPromptsArgs", "GenerateImageArgs", "GetShowcaseArgs", "ImageFile", "JobInfo",
    "JobStatusArgs", "ListWorkflowsArgs", "Progress", "PromptInfo", "PromptValue", "SearchDocumentsArgs",
    "SearchImagesArgs", "ShowcaseArgs", "ShowcaseInfo", "ShowcaseLinks", "ShowcaseResult", "SubmitJobArgs",
    "ToolContext", "ToolSpec", "WorkflowInfo", "as_json", "as_text", "image_paths", "job_info", "run_tool",
    "showcase_info",
]

Progress = Callable[[float, float | None, str], Awaitable[None]]
Asker = Callable[["AskArgs", str], Awaitable["AskResult"]]
Showcaser = Callable[["ToolContext", "ShowcaseArgs", Progress], Awaitable["ShowcaseResult"]]
# How often a waiting tool reports that it is still waiting (MCP clients drop a call silent for ~60 s).
KEEPALIVE_SECONDS = 10.0


async def _no_progress(_done: float, _total: float | None, _message: str) -> None:
    """Progress goes nowhere (frameworks without progress)."""


@dataclass
class ToolContext:
    """What the tools act on: settings, the ledger, the memory (optional), who calls, and the supervisor."""

    settings: Settings
    ledger: LedgerService
    owner: str
    memory: MemoryStore | None = None
    ask: Asker | None = None
    memory_problem: str | None = None  # why `memory` is None, when opening it failed
    showcase: Showcaser | None = None  # runs the showcase graph (the process supplies it, as `ask`)


# --- arguments and results -------------------------------------------------------------------------------------


class _ImageArgs(BaseModel):
    """The fields every image request has (generate_image and submit_job)."""

    prompt: str = Field(..., min_length=1, description="What the image shows.")
    negative: str | None = Field(None, description="What to keep out of the image.")
    workflow: str | None = Field(None, description="A workflow name from list_workflows (default: the studio's).")
    seed: int | None = Field(None, ge=0, description="Fix the seed to repeat an image; empty for a random one.")
    width: int | None = Field(None, ge=64, le=4096, description="Width in pixels (default: the workflow's).")
    height: int | None = Field(None, ge=64, le=4096, description="Height in pixels (default: the workflow's).")
    input_image: str | None = Field(None, max_length=200,
                                    description="For img2img/upscale workflows: the name of an uploaded input image "
                                                "(POST /inputs on the job API); never a file path.")


class GenerateImageArgs(_ImageArgs):
    """Make an image on the studio's ComfyUI and wait for it (or only queue it)."""

    steps: int | None = Field(None, ge=1, le=200, description="Sampler steps (default: the workflow's).")
    wait: bool = Field(True, description="Wait for the image; false returns the job id at once (see job_status).")
    timeout_seconds: float = Field(900, gt=0, le=3600,
                                   description="Stop waiting after this long; the job goes on (see job_status).")


class SubmitJobArgs(_ImageArgs):
    """Queue an image job in the studio's ledger and return its id at once."""

    priority: int = Field(0, ge=-100, le=100, description="Higher runs first.")
    idempotency_key: str | None = Field(None, min_length=1, max_length=200,
                                        description="Submitting the same key again returns the same job.")


class JobStatusArgs(BaseModel):
    """How a job is doing: status, error, and its images when done."""

    job_id: str = Field(..., min_length=4, description="The job id (or a unique start of it).")


class ListWorkflowsArgs(BaseModel):
    """The studio's workflows: what each is for, its quality, time, cost and VRAM."""


class SearchImagesArgs(BaseModel):
    """Find earlier images by what they show (yours and shared ones)."""

    query: str = Field(..., min_length=1, description="What the image should show.")
    k: int = Field(8, ge=1, le=50, description="How many images.")
    workflow: str | None = Field(None, description="Only images made by this workflow.")
    min_rating: int | None = Field(None, ge=1, le=5, description="Only images rated at least this.")


class SearchDocumentsArgs(BaseModel):
    """Find passages in the ingested documents (yours and shared ones), with their sources."""

    query: str = Field(..., min_length=1, description="The question or topic.")
    k: int = Field(5, ge=1, le=50, description="How many passages.")


class PromptValue(BaseModel):
    """One template variable's value."""

    name: str = Field(..., min_length=1, max_length=100, description="The variable, e.g. subject.")
    value: str = Field(..., max_length=2_000, description="Its value, e.g. a copper kettle.")


class FindPromptsArgs(BaseModel):
    """Find prompts in the studio's library, best-rated first, optionally rendered with your values."""

    purpose: str | None = Field(None, description="Only prompts for this purpose: hero, lifestyle, detail, thumbnail.")
    query: str | None = Field(None, min_length=1, description="A word in the prompt's name or description.")
    values: list[PromptValue] = Field(default_factory=list, max_length=50,
                                      description="Variable values (e.g. subject) to render each prompt's text with.")
    k: int = Field(5, ge=1, le=50, description="How many prompts.")


class PromptInfo(BaseModel):
    """A prompt version with how it did and, when values were given, its text."""

    name: str
    version: int
    purpose: str | None = None
    template: str
    variables: list[str]
    negative: str = ""
    rated: int
    liked: int
    score: float
    text: str | None = Field(None, description="The rendered prompt (when `values` covered its variables).")


class AskArgs(BaseModel):
    """Ask Atelier's supervisor (planner, designer, retriever, cost router) in a conversation."""

    message: str = Field("", description="What to ask; empty when only answering an approval.")
    thread_id: str | None = Field(None, min_length=1, max_length=200,
                                  description="Continue this conversation; empty starts a new one.")
    decision: Literal["approve", "reject"] | None = Field(
        None, description="Answer the conversation's pending approval (a costly plan) instead of asking.")


class ImageFile(BaseModel):
    """One image of a finished job."""

    path: str | None = Field(None, description="File path on the studio's machine (local output store).")
    url: str | None = Field(None, description="A link (S3-compatible output store).")
    content_type: str


class JobInfo(BaseModel):
    """A job as tools report it."""

    job_id: str
    status: str
    workflow: str
    prompt: str
    seed: int | None = None
    error: str | None = None
    images: list[ImageFile] = Field(default_factory=list)
    cached: bool = False
    gpu_seconds: float | None = None
    message: str = ""


class WorkflowInfo(BaseModel):
    """One workflow of the catalog."""

    name: str
    purpose: str | None = None
    task: str | None = None
    quality: str | None = None
    typical_seconds: float | None = None
    cost_per_image: float | None = None
    vram_gb: float | None = None
    accepts: list[str] = Field(default_factory=list)
    model: str | None = Field(None, description="The models_config.json model this workflow runs, if any.")


class AskResult(BaseModel):
    """The supervisor's answer in a conversation."""

    thread_id: str
    reply: str
    jobs: list[str] = Field(default_factory=list)
    earlier: list[EarlierImage] = Field(
        default_factory=list, description="For a request for options: the most similar earlier images, best first "
                                          "(the new variations are `jobs`).")
    needs_approval: bool = False
    approval: dict[str, Any] | None = None


class ShowcaseArgs(BaseModel):
    """Make a product showcase from a brief: the planner's shot list, images on the routed workflows (a costly plan
    waits for your approval first), a caption and marketing copy for every image, and a gallery (an HTML page, a
    manifest JSON and a zip)."""

    brief: str = Field("", max_length=4000,
                       description="The product and what the showcase is for; empty when answering an approval or "
                                   "continuing a showcase that stopped.")
    input_image: str | None = Field(None, max_length=200,
                                    description="A product photo every shot is made from (image-to-image): the name "
                                                "of an uploaded input image (POST /inputs); never a file path.")
    thread_id: str | None = Field(None, min_length=1, max_length=200,
                                  description="The showcase's conversation: give it back with a decision, or alone "
                                              "to continue a showcase that stopped (a restart).")
    decision: Literal["approve", "reject"] | None = Field(
        None, description="Answer the showcase's pending approval (a costly plan) instead of starting one.")


class GetShowcaseArgs(BaseModel):
    """One of your showcases: how far it is, every image with its workflow, seed, prompt, caption and copy, the
    gallery's manifest, and where its page and zip are."""

    showcase_id: str = Field(..., min_length=36, max_length=36, description="The showcase's id.")


class ShowcaseLinks(BaseModel):
    """Where a finished gallery is: files (or links) of the output store, and the job API's paths."""

    page: str | None = Field(None, description="The HTML page: a file path (local output store) or a link.")
    zip: str | None = Field(None, description="The zip (page, manifest, images): a file path or a link.")
    api_manifest: str = Field(..., description="GET this on the job API for the manifest.")
    api_page: str
    api_zip: str


class ShowcaseInfo(BaseModel):
    """A showcase as tools report it."""

    showcase_id: str
    status: str = Field(..., description="rendering, captioning, building; then ready, partial or failed.")
    brief: str
    headline: str = ""
    note: str = Field("", description="What did not go to plan (captions from the briefs, images not made).")
    progress: dict[str, Any] = Field(default_factory=dict)
    images: int = Field(0, description="Images made.")
    planned: int = Field(0, description="Images planned.")
    items: list[ShowcaseItem] = Field(default_factory=list)
    manifest: dict[str, Any] | None = None
    links: ShowcaseLinks


class ShowcaseResult(BaseModel):
    """The outcome of a `showcase` call: the reply, a pending approval, or the finished showcase."""

    thread_id: str
    reply: str
    needs_approval: bool = False
    approval: dict[str, Any] | None = None
    showcase: ShowcaseInfo | None = None


# --- the functions ---------------------------------------------------------------------------------------------


def job_info(ctx: ToolContext, job: Job, message: str = "") -> JobInfo:
    """A ledger job as a tool result (image files or links from the output store)."""
    images = []
    for output in job.outputs:
        local = output.uri.startswith("file://")
        images.append(ImageFile(path=output.uri.removeprefix("file://") if local else None,
                                url=None if local else ctx.ledger.link(output.uri), content_type=output.content_type))
    return JobInfo(job_id=str(job.id), status=job.status, workflow=job.workflow.rsplit("/", 1)[-1],
                   prompt=str(job.params.get("prompt", "")), seed=job.params.get("seed"), error=job.error,
                   images=images, cached=job.cached_from is not None, gpu_seconds=job.gpu_seconds, message=message)


def _request(ctx: ToolContext, args: _ImageArgs, *, priority: int = 0,
             key: str | None = None) -> JobRequest:
    """The ledger request for image arguments (workflow names and stored inputs only: a tool never reads server
    paths; the ledger checks both again)."""
    require_workflow_name(args.workflow)
    params = GenerationParams(prompt=args.prompt, negative=args.negative, seed=args.seed, width=args.width,
                              height=args.height, steps=getattr(args, "steps", None), input_image=args.input_image)
    return JobRequest(params=params, workflow=args.workflow, owner=ctx.owner, priority=priority,
                      idempotency_key=key)


async def _events(ctx: ToolContext, job: Job) -> AsyncGenerator[JobEvent | None, None]:
    """The job's events, with None every KEEPALIVE_SECONDS of silence (so callers can say they still wait)."""
    queue: asyncio.Queue[JobEvent | BaseException | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for event in ctx.ledger.events.follow([job.id]):
                await queue.put(event)
        except BaseException as exc:  # handed to the reader, which re-raises it
            await queue.put(exc)

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield None
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
            if item is not None and item.final:
                return
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def generate_image(ctx: ToolContext, args: GenerateImageArgs, progress: Progress = _no_progress) -> JobInfo:
    """Queue the image in the ledger, follow it with progress, and return it (or its id when not waiting)."""
    outcome = await ctx.ledger.submit(_request(ctx, args))
    job = outcome.job
    if job.done or not args.wait:
        note = "answered from an identical earlier image" if outcome.cached else (
            "" if job.done else "queued; ask job_status for it later")
        return job_info(ctx, job, note)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout_seconds
    await progress(0, None, f"queued as job {job.id}")
    steps: tuple[float, float | None] = (0, None)
    async with contextlib.aclosing(_events(ctx, job)) as events:
        async for event in events:
            if loop.time() > deadline:
                now = await ctx.ledger.get(job.id)
                return job_info(ctx, now, f"still {now.status} after {args.timeout_seconds:g} s; it goes on: ask "
                                          "job_status for it later")
            if event is None:
                await progress(*steps, f"job {str(job.id)[:8]} still waiting for the GPU")
            elif event.final and event.job is not None:
                return job_info(ctx, event.job)
            elif event.kind == "progress":
                steps = (float(event.data["step"]), float(event.data["max"]))
                await progress(*steps, f"step {event.data['step']}/{event.data['max']}")
            elif event.kind in {"submitted", "started", "retrying"}:
                await progress(*steps, _said(event))
    return job_info(ctx, await ctx.ledger.get(job.id))


def _said(event: JobEvent) -> str:
    """A progress message for a non-step event."""
    if event.kind == "retrying":
        return f"retrying: {event.data.get('error')}"
    return {"submitted": "waiting in ComfyUI's queue", "started": "ComfyUI started it"}[event.kind]


async def submit_job(ctx: ToolContext, args: SubmitJobArgs, progress: Progress = _no_progress) -> JobInfo:
    """Record the job; the same idempotency key returns the same job."""
    outcome = await ctx.ledger.submit(_request(ctx, args, priority=args.priority, key=args.idempotency_key))
    return job_info(ctx, outcome.job, "answered from an identical earlier image" if outcome.cached else "")


async def job_status(ctx: ToolContext, args: JobStatusArgs, progress: Progress = _no_progress) -> JobInfo:
    """One of the caller's jobs (another owner's is reported as not found, in the same words as an unknown id)."""
    refusal = AtelierError(f"no job {args.job_id!r} of yours (give the whole id if a shorter start is shared); "
                           "submit_job and generate_image return your job ids")
    try:
        job = await ctx.ledger.get(args.job_id, owner=ctx.owner)
    except JobNotFoundError as exc:
        raise refusal from exc
    return job_info(ctx, job)


async def list_workflows(ctx: ToolContext, args: ListWorkflowsArgs,
                         progress: Progress = _no_progress) -> list[WorkflowInfo]:
    """The catalog: shipped workflows and ATELIER_WORKFLOWS_DIR's (those without a catalog entry with the task read
    off their graph), with the figures of ATELIER_MODELS_CONFIG."""
    library = await asyncio.to_thread(load_library, ctx.settings)
    found = []
    for template in library.templates:
        entry = template.catalog
        found.append(WorkflowInfo(
            name=template.name, accepts=sorted(template.bindings), task=task_of(template),
            model=library.model_of(template.name),
            **({} if entry is None else {"purpose": entry.purpose, "quality": entry.quality,
                                         "typical_seconds": entry.typical_seconds,
                                         "cost_per_image": entry.cost_per_image, "vram_gb": entry.vram_gb})))
    return found


def _memory(ctx: ToolContext) -> MemoryStore:
    """The memory, or a clear error when this process runs without it."""
    if ctx.memory is None:
        raise AtelierError(f"the memory is not open in this process: {ctx.memory_problem}" if ctx.memory_problem
                           else "the memory is not open in this process")
    return ctx.memory


async def search_images(ctx: ToolContext, args: SearchImagesArgs,
                        progress: Progress = _no_progress) -> list[ImageHit]:
    """The caller's (and shared) earlier images closest to the query."""
    memory = _memory(ctx)
    return await asyncio.to_thread(memory.search_images, args.query, ctx.owner, args.k, workflow=args.workflow,
                                   min_rating=args.min_rating)


async def search_documents(ctx: ToolContext, args: SearchDocumentsArgs,
                           progress: Progress = _no_progress) -> list[DocumentHit]:
    """Passages from the caller's (and shared) documents, with sources."""
    memory = _memory(ctx)
    return await asyncio.to_thread(memory.search_documents, args.query, ctx.owner, args.k)


async def find_prompts(ctx: ToolContext, args: FindPromptsArgs,
                       progress: Progress = _no_progress) -> list[PromptInfo]:
    """Each matching prompt's best version (score = (liked + 1) / (rated + 2)), best first."""
    library = ctx.ledger.prompts
    found = []
    for prompt in await library.search(purpose=args.purpose.strip().lower() if args.purpose else None,
                                     query=args.query):
        stats = max(await library.stats(prompt.name), key=lambda s: (s.score, s.rated, s.version))
        version = await library.version(prompt.name, stats.version)
        try:
            values = {item.name: item.value for item in args.values}
            text: str | None = (await version.render_async(values, seconds=ctx.settings.template_seconds)
                                if values else None)
        except AtelierError:
            text = None  # the values do not cover this template's variables
        found.append(PromptInfo(name=prompt.name, version=version.version, purpose=prompt.purpose,
                                template=version.template, variables=version.variable_names(),
                                negative=version.negative, rated=stats.rated, liked=stats.liked,
                                score=round(stats.score, 4), text=text))
    found.sort(key=lambda p: (-p.score, -p.rated, p.name))
    return found[:args.k]


async def ask_atelier(ctx: ToolContext, args: AskArgs, progress: Progress = _no_progress) -> AskResult:
    """One turn of the supervisor graph (the process supplies it as `ctx.ask`)."""
    if ctx.ask is None:
        raise AtelierError("ask_atelier needs the supervisor; this process was started without it")
    if not args.message.strip() and args.decision is None:
        raise AtelierError("give a message, or a decision (approve/reject) for a pending approval")
    return await ctx.ask(args, ctx.owner)


def showcase_info(ctx: ToolContext, showcase: Showcase) -> ShowcaseInfo:
    """A showcase row as a tool result (its files as the output store links them)."""
    api = f"/showcases/{showcase.id}"
    links = ShowcaseLinks(page=ctx.ledger.link(showcase.page_uri) if showcase.page_uri else None,
                          zip=ctx.ledger.link(showcase.zip_uri) if showcase.zip_uri else None,
                          api_manifest=api, api_page=f"{api}/page", api_zip=f"{api}/zip")
    return ShowcaseInfo(showcase_id=str(showcase.id), status=showcase.status, brief=showcase.brief,
                        headline=showcase.headline, note=showcase.note, progress=showcase.progress,
                        images=sum(1 for item in showcase.items if item.made), planned=len(showcase.items),
                        items=showcase.items, manifest=showcase.manifest, links=links)


async def showcase(ctx: ToolContext, args: ShowcaseArgs, progress: Progress = _no_progress) -> ShowcaseResult:
    """Run the showcase graph (the process supplies it as `ctx.showcase`), reporting progress across the set."""
    if ctx.showcase is None:
        raise AtelierError("showcase needs the showcase graph; this process was started without it")
    if not args.brief.strip() and args.decision is None and args.thread_id is None:
        raise AtelierError("give a brief (the product and what the showcase is for), or a thread_id with a decision "
                           "(approve/reject) for a pending approval")
    return await ctx.showcase(ctx, args, progress)


async def get_showcase(ctx: ToolContext, args: GetShowcaseArgs, progress: Progress = _no_progress) -> ShowcaseInfo:
    """One of the caller's showcases (another owner's is reported as not found, like an unknown id)."""
    return showcase_info(ctx, await ShowcaseStore.for_service(ctx.ledger).get(args.showcase_id, owner=ctx.owner))


@dataclass(frozen=True)
class ToolSpec:
    """One tool: its name, what it does (the description every framework shows), arguments and function."""

    name: str
    description: str
    args: type[BaseModel]
    run: Callable[[ToolContext, Any, Progress], Awaitable[Any]]


def _spec(name: str, args: type[BaseModel], run: Callable[[ToolContext, Any, Progress], Awaitable[Any]],
          extra: str = "") -> ToolSpec:
    """A spec whose description is the args model's docstring (+ extra)."""
    return ToolSpec(name, " ".join(((args.__doc__ or "").strip() + " " + extra).split()), args, run)


TOOLS: tuple[ToolSpec, ...] = (
    _spec("generate_image", GenerateImageArgs, generate_image,
          "Returns the image (file path or link) with its seed and job id; reports progress while it runs."),
    _spec("submit_job", SubmitJobArgs, submit_job, "Use for many images or when you will check back later."),
    _spec("job_status", JobStatusArgs, job_status),
    _spec("list_workflows", ListWorkflowsArgs, list_workflows),
    _spec("search_images", SearchImagesArgs, search_images),
    _spec("search_documents", SearchDocumentsArgs, search_documents),
    _spec("find_prompts", FindPromptsArgs, find_prompts,
          "Use a prompt's text (or its template with your values) in generate_image."),
    _spec("ask_atelier", AskArgs, ask_atelier,
          "Returns the reply, the conversation's thread_id and any image jobs it queued."),
    _spec("showcase", ShowcaseArgs, showcase,
          "Reports progress (images done of total, then captions, then the gallery) and returns the gallery's "
          "manifest and where its page and zip are; a costly plan returns needs_approval: call again with the "
          "thread_id and decision approve or reject."),
    _spec("get_showcase", GetShowcaseArgs, get_showcase),
)


async def run_tool(spec: ToolSpec, ctx: ToolContext, arguments: dict[str, Any],
                   progress: Progress = _no_progress) -> Any:
    """Validate `arguments` against the spec's model and run it (pydantic's ValidationError names the field)."""
    return await spec.run(ctx, spec.args.model_validate(arguments), progress)


def image_paths(result: Any) -> list[Path]:
    """Local image files in a tool result (for front ends that show images)."""
    if isinstance(result, JobInfo):
        return [Path(image.path) for image in result.images if image.path]
    return []


def as_json(result: Any) -> Any:
    """A tool result as JSON-ready data (models dumped, lists of them too)."""
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if isinstance(result, list):
        return [as_json(item) for item in result]
    return result


def as_text(result: Any) -> str:
    """A tool result as the JSON text an LLM reads."""
    import json

    return json.dumps(as_json(result), ensure_ascii=False)
