"""The showcase graph's own steps (graphs/showcase.py): begin a turn, design from a product photo, and after submit
wait for the images in the ledger, write their captions and copy (one LLM call), and make the gallery.

Every step after submit is idempotent and reads what it needs from the ledger and the `showcases` row, so a run
stopped anywhere (a restart mid-wait) continues from its last checkpoint without queuing an image twice (the jobs
carry idempotency keys), writing a second showcase (one row per owner, thread and turn) or asking the model again
(captions already stored are reused). Progress across the whole set (images done of total, then captions, then the
gallery; `total` = images + 2) goes to the graph's custom stream as
`{"showcase": id, "stage": …, "done": n, "total": t, "message": …}` and into the row, where the job API, MCP and the
chat read it. Waiting is bounded by ATELIER_SHOWCASE_WAIT_SECONDS: the gallery is then made with the images finished
and names the others.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.runnables import RunnableConfig
from langgraph.config import get_stream_writer
from pydantic import ValidationError

from atelier.agents.copywriter import Shot, write_copy
from atelier.agents.cost_router import RouteChoice, choose_route
from atelier.agents.design_check import DesignError, check_design
from atelier.agents.llm import Meter
from atelier.agents.planner import Brief
from atelier.agents.visual_designer import Design, design_image
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.owner import acting_owner
from atelier.graphs.state import SupervisorState
from atelier.graphs.supervisor import RunOptions
from atelier.tools.catalog import require_workflow_name
from atelier.tools.comfyui.model_inventory import folders_of
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.conversations import chat_job_key
from atelier.tools.errors import AtelierError, WorkflowError
from atelier.tools.inputs import resolve_input
from atelier.tools.ledger.models import TERMINAL_STATUSES, Job
from atelier.tools.ledger.service import LedgerService
from atelier.tools.memory.style import StyleProfile, build_profile
from atelier.tools.settings import Settings
from atelier.tools.showcase.models import Showcase, ShowcaseItem, ShowcaseProgress
from atelier.tools.showcase.publish import publish_gallery
from atelier.tools.showcase.store import ShowcaseStore
from atelier.tools.workflow_library import load_library, resolve_effective

__all__ = ["KEEPALIVE_SECONDS", "ShowcaseState", "ShowcaseSteps"]

# While waiting, a progress event at least this often (MCP clients drop a call that is silent for about a minute).
KEEPALIVE_SECONDS = 10.0


class ShowcaseState(SupervisorState, total=False):
    """The supervisor's state plus the showcase's: the product photo of this turn and where its showcase stands."""

    photo: str | None
    showcase: dict[str, Any]


def _last_human(state: SupervisorState) -> BaseMessage:
    """The message that started this turn (the product brief)."""
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            return message
    raise AtelierError("the conversation has no product brief to act on; send one")


def _text(message: BaseMessage) -> str:
    """A message's text content."""
    return message.content if isinstance(message.content, str) else str(message.content)


def _thread(config: RunnableConfig) -> str:
    """The run's thread (as the supervisor's submit step names it in idempotency keys)."""
    return str((config.get("configurable") or {}).get("thread_id", "no-thread"))


def _step(state: SupervisorState, agent: str, meter: Meter, **update: Any) -> dict[str, Any]:
    """A step's update: its hop, the trail extended, plus whatever it changed."""
    return {"trail": [*state.get("trail", []), agent], "hops": [meter.hop()], **update}


def _stop(state: SupervisorState, agent: str, meter: Meter, exc: AtelierError) -> dict[str, Any]:
    """End the turn with a message naming the problem and the fix (never a crash)."""
    return _step(state, agent, meter, messages=[AIMessage(f"I could not finish the showcase: {exc}")],
                 stopped=str(exc))


def _emit(showcase_id: uuid.UUID, progress: ShowcaseProgress) -> None:
    """Send progress to the graph's custom stream (a no-op when nobody streams it)."""
    get_stream_writer()({"showcase": str(showcase_id), **progress.model_dump()})


def _checked(raw: Any, model: type[Brief] | type[Design], limit: int) -> list[Any]:
    """The state's briefs (or designs) validated as any request is (AtelierError naming the problem)."""
    if not isinstance(raw, list) or not raw:
        raise AtelierError("the plan in this conversation has no images; describe the product again")
    if len(raw) > limit:
        raise AtelierError(f"the plan has {len(raw)} images; one showcase may make at most {limit} "
                           "(ATELIER_MAX_IMAGES_PER_REQUEST): ask for fewer")
    try:
        return [model.model_validate(item) for item in raw]
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error.get("loc", ()))
        raise AtelierError(f"the plan in this conversation is not valid ({where}: {error.get('msg')}); "
                           "ask again") from None


def _photo_design(brief: Brief, route: RouteChoice, template: WorkflowTemplate, settings: Settings, *, photo: str,
                  owner: str, key: str, number: int, style: StyleProfile | None) -> Design:
    """Image `number` made from the product photo: designed for the route's image-to-image workflow, the photo as
    its input image, and checked as the ledger and the worker will check its job."""
    try:
        design = design_image(brief, route, style, template_seconds=settings.template_seconds, template=template,
                              settings=settings)
    except WorkflowError as exc:
        raise DesignError(f"image {number} ({brief.purpose}) cannot be made with workflow '{template.name}': "
                          f"{exc}") from exc
    design.params = design.params.model_copy(update={"input_image": photo})
    check_design(design, template, settings, owner=owner, key=key, number=number)
    return design


def _job_problem(job: Job) -> str | None:
    """Why a finished job has no image (None when it succeeded)."""
    if job.status == "succeeded":
        return None if job.outputs else "the job finished without an image"
    if job.status == "cancelled":
        return "the job was cancelled"
    if job.status == "failed":
        return f"the job failed: {job.error or 'no reason recorded'}"
    return None


def _item(number: int, design: Design, job: Job | None) -> ShowcaseItem:
    """The showcase item of one design and the job queued for it (None: not queued)."""
    return ShowcaseItem(
        number=number, purpose=design.brief.purpose, subject=design.brief.subject, notes=design.brief.notes,
        workflow=job.workflow.rsplit("/", 1)[-1] if job else design.route.workflow, prompt=design.params.prompt,
        negative=design.params.negative, seed=job.params.get("seed") if job else design.params.seed,
        job_id=str(job.id) if job else None, status=job.status if job else "not queued",
        error=_job_problem(job) if job else "it was not queued (the conversation says why)")


def _updated(item: ShowcaseItem, job: Job) -> ShowcaseItem:
    """An item with its job's current status (and why it has no image, when it ended without one)."""
    return item.model_copy(update={"status": job.status, "error": _job_problem(job)})


def _late(item: ShowcaseItem, job: Job | None, timeout: float) -> ShowcaseItem:
    """An item once the wait is over: as its job ended, or timed out (named, with where to follow its job)."""
    if job is None or item.status in TERMINAL_STATUSES:
        return item
    if job.done:
        return _updated(item, job)
    return item.model_copy(update={
        "status": "timed out",
        "error": f"not finished after {timeout:g} s (job {job.id} is still {job.status}; it goes on: GET "
                 f"/jobs/{job.id} or job_status shows it)"})


async def _finishing(ledger: LedgerService, job_ids: Sequence[str],
                     timeout: float) -> AsyncGenerator[Job | None, None]:
    """Each job as it finishes, with None after KEEPALIVE_SECONDS of silence; TimeoutError once `timeout` passes."""
    if not job_ids:
        return
    queue: asyncio.Queue[Job | BaseException | None] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for job in ledger.watch(job_ids, timeout):
                await queue.put(job)
        except BaseException as exc:  # handed to the reader, which re-raises it
            await queue.put(exc)
        else:
            await queue.put(None)  # every job finished

    task = asyncio.create_task(pump())
    try:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), KEEPALIVE_SECONDS)
            except TimeoutError:
                yield None
                continue
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _gallery_note(showcase: Showcase) -> str:
    """The note on the page: what the copywriter could not do, and every image that was not made and why."""
    parts = [showcase.note] if showcase.note else []
    missing = [item for item in showcase.items if not item.made]
    if missing:
        parts.append("Not made: " + "; ".join(f"image {item.number} ({item.purpose}): {item.error or item.status}"
                                             for item in missing) + ".")
    return " ".join(parts)


def _ready_message(showcase: Showcase) -> str:
    """The turn's closing message: how the showcase came out and where its gallery is."""
    made = [item for item in showcase.items if item.image]
    writers = {item.copy_by for item in made}
    by = ("by the model" if writers == {"model"} else "from the shot briefs" if writers == {"brief"}
          else "partly from the shot briefs" if writers else "")
    head = {"ready": "Your showcase is ready", "partial": "Your showcase is made, with images missing",
            "failed": "No image of the showcase could be made"}.get(showcase.status, "Your showcase is made")
    words = f", captions and copy {by}" if by else ""
    text = (f"{head}: {len(made)} of {len(showcase.items)} image(s){words}.\n"
            f"Gallery page: GET /showcases/{showcase.id}/page · zip: GET /showcases/{showcase.id}/zip · manifest: "
            f"GET /showcases/{showcase.id} on the job API; in the chat: the Gallery tab.")
    return text + (f"\n{showcase.note}" if showcase.note else "")


def _where(showcase: Showcase) -> dict[str, Any]:
    """The state's record of the showcase (the row stays the source of truth)."""
    return {"id": str(showcase.id), "status": showcase.status, "made": sum(1 for i in showcase.items if i.made),
            "planned": len(showcase.items)}


class ShowcaseSteps:
    """The showcase graph's own nodes, on the supervisor's dependencies."""

    def __init__(self, deps: SupervisorDeps) -> None:
        self.deps = deps
        self.settings = deps.settings

    async def begin(self, state: ShowcaseState, config: RunnableConfig) -> dict[str, Any]:
        """A new turn: forget the previous turn's plan and showcase; take this run's product photo, if any
        (`configurable["input_image"]`: the name of a stored input image), checked at once."""
        update: dict[str, Any] = {"intent": "plan", "routed_by": "fixed", "trail": [], "briefs": [], "estimate": {},
                                  "decision": {}, "jobs": [], "stopped": None, "owner": acting_owner(config),
                                  "photo": None, "showcase": {}}
        photo = (config.get("configurable") or {}).get("input_image")
        if photo:
            try:
                update["photo"] = (await asyncio.to_thread(resolve_input, str(photo), self.settings)).name
            except AtelierError as exc:
                update |= {"stopped": str(exc), "messages": [AIMessage(f"I could not start the showcase: {exc}")]}
        return update

    async def design_photo(self, state: ShowcaseState, config: RunnableConfig) -> dict[str, Any]:
        """Briefs → images made from the product photo: each routed among the image-to-image workflows (img2img,
        qwen-image-edit …) by purpose, live VRAM and the models each server has, designed, given the photo and
        checked (no LLM call)."""
        meter = Meter("design")
        settings, deps = self.settings, self.deps
        owner, thread, turn = acting_owner(config), _thread(config), _last_human(state).id or "turn"
        try:
            options = RunOptions.of(config)
            briefs: list[Brief] = _checked(state.get("briefs"), Brief, settings.max_images_per_request)
            photo = str(state.get("photo"))
            vram = await deps.vram_free_gb()
            library = await asyncio.to_thread(load_library, settings)
            inventories = await deps.model_inventories(folders_of(library.templates))
            ledger = await deps.get_ledger()
            measured = await ledger.timings.estimates() if ledger is not None else {}
            memory = await deps.get_memory()
            style = None if memory is None else await asyncio.to_thread(
                lambda: build_profile(owner, memory.owned_images(owner)))
            templates: dict[str, WorkflowTemplate] = {}
            designs = []
            for index, brief in enumerate(briefs):
                route = await asyncio.to_thread(
                    choose_route, brief.purpose, task="img2img", vram_free_gb=vram, workflow=options.workflow,
                    quality=options.quality, target_seconds=options.target_seconds, measured=measured,
                    library=library, inventories=inventories)
                if route.workflow not in templates:
                    templates[route.workflow] = await asyncio.to_thread(resolve_effective, route.workflow, settings)
                designs.append(await asyncio.to_thread(
                    _photo_design, brief, route, templates[route.workflow], settings, photo=photo, owner=owner,
                    key=chat_job_key(thread, turn, index), number=index + 1, style=style))
        except AtelierError as exc:
            return _stop(state, "design", meter, exc)
        estimate = {"images": len(designs), "seconds": sum(d.route.seconds for d in designs),
                    "cost": round(sum(d.route.cost for d in designs), 6)}
        return _step(state, "design", meter, briefs=[d.model_dump(mode="json") for d in designs], estimate=estimate)

    async def wait(self, state: ShowcaseState, config: RunnableConfig) -> dict[str, Any]:
        """Record the showcase (once per turn) and wait for its images in the ledger, reporting each as it finishes;
        after ATELIER_SHOWCASE_WAIT_SECONDS the unfinished ones are named and the showcase goes on without them."""
        meter = Meter("wait")
        ledger = await self.deps.get_ledger()
        if ledger is None:  # submit already said that nothing could be queued
            return _step(state, "wait", meter, stopped="no job ledger")
        owner, thread, human = acting_owner(config), _thread(config), _last_human(state)
        turn = human.id or "turn"
        try:
            designs: list[Design] = _checked(state.get("briefs"), Design, self.settings.max_images_per_request)
            for design in designs:
                require_workflow_name(design.route.workflow)
        except AtelierError as exc:
            return _stop(state, "wait", meter, exc)
        store = ShowcaseStore.for_service(ledger)
        keys = [chat_job_key(thread, turn, index) for index in range(len(designs))]
        jobs = await store.jobs_by_key(owner, keys)
        showcase = await store.start(owner=owner, thread=thread, turn=turn, brief=_text(human),
                                     photo=state.get("photo"),
                                     items=[_item(n, d, jobs.get(k)) for n, (d, k) in enumerate(zip(designs, keys,
                                                                                                    strict=True), 1)])
        items = [_updated(item, jobs[key]) if key in jobs else item
                 for item, key in zip(showcase.items, keys, strict=True)]
        total = len(items) + 2

        async def report(message: str | None = None, *, store_it: bool = True) -> None:
            done = sum(1 for item in items if item.status in TERMINAL_STATUSES or item.job_id is None)
            progress = ShowcaseProgress(stage="images", done=done, total=total,
                                        message=message or f"{done} of {len(items)} image(s) finished")
            if store_it:
                await store.record(showcase.id, status="rendering", progress=progress, items=items)
            _emit(showcase.id, progress)

        await report()
        pending = [item.job_id for item in items if item.job_id and item.status not in TERMINAL_STATUSES]
        timeout = self.settings.showcase_wait_seconds
        try:
            async with contextlib.aclosing(_finishing(ledger, pending, timeout)) as finishing:
                async for job in finishing:
                    if job is None:
                        waiting = sum(1 for item in items if item.job_id and item.status not in TERMINAL_STATUSES)
                        await report(f"still waiting for {waiting} image(s) on the GPU", store_it=False)
                        continue
                    items = [_updated(item, job) if item.job_id == str(job.id) else item for item in items]
                    await report()
        except TimeoutError:
            late = {str(job.id): job for job in [await ledger.get(job_id) for job_id in pending]}
            items = [_late(item, late.get(item.job_id or ""), timeout) for item in items]
        made = sum(1 for item in items if item.made)
        progress = ShowcaseProgress(stage="captions", done=len(items), total=total,
                                    message=f"{made} of {len(items)} image(s) made; writing captions")
        showcase = await store.record(showcase.id, status="captioning", progress=progress, items=items)
        _emit(showcase.id, progress)
        return _step(state, "wait", meter, showcase=_where(showcase))

    async def _showcase(self, state: ShowcaseState, config: RunnableConfig) -> tuple[LedgerService, ShowcaseStore,
                                                                                       Showcase]:
        """The ledger, the store and this turn's showcase row (as the caller)."""
        ledger = await self.deps.get_ledger()
        if ledger is None:
            raise AtelierError("no job ledger is configured, so there is no showcase")
        store = ShowcaseStore.for_service(ledger)
        recorded = (state.get("showcase") or {}).get("id")
        return ledger, store, await store.get(str(recorded), owner=acting_owner(config))

    async def captions(self, state: ShowcaseState, config: RunnableConfig) -> dict[str, Any]:
        """A caption and marketing copy for every image made, in one LLM call (reused when already stored);
        brief-made words, and a note saying so, when the model cannot write them."""
        meter = Meter("captions")
        try:
            _, store, showcase = await self._showcase(state, config)
        except AtelierError as exc:
            return _stop(state, "captions", meter, exc)
        if showcase.status == "captioning":
            made = [item for item in showcase.items if item.made]
            shots = [Shot(item.number, item.purpose, item.subject, item.notes) for item in made]
            written = await write_copy(self.deps.chat_model(), showcase.brief, shots, meter)
            items = [item.model_copy(update={"caption": words.caption, "marketing_copy": words.marketing_copy,
                                             "copy_by": written.written_by[item.number]})
                     if (words := written.by_number.get(item.number)) is not None else item
                     for item in showcase.items]
            note = written.note if made else "No image was made, so nothing was captioned."
            total = len(items) + 2
            progress = ShowcaseProgress(stage="gallery", done=total - 1, total=total,
                                        message="captions written; making the gallery")
            showcase = await store.record(showcase.id, status="building", progress=progress, items=items,
                                          headline=written.headline, note=note)
            _emit(showcase.id, progress)
        return _step(state, "captions", meter, showcase=_where(showcase))

    async def gallery(self, state: ShowcaseState, config: RunnableConfig) -> dict[str, Any]:
        """The gallery: page, manifest and zip made from the images and their words, stored, and the showcase
        finished (ready, partial or failed); the turn ends with where to find it."""
        meter = Meter("gallery")
        try:
            ledger, store, showcase = await self._showcase(state, config)
            if not showcase.finished:
                showcase, _ = await publish_gallery(ledger, store, showcase, showcase.items,
                                                    headline=showcase.headline, note=_gallery_note(showcase))
        except AtelierError as exc:
            return _stop(state, "gallery", meter, exc)
        total = len(showcase.items) + 2
        _emit(showcase.id, ShowcaseProgress(stage="done", done=total, total=total,
                                            message=f"the gallery is made ({showcase.status})"))
        return _step(state, "gallery", meter, messages=[AIMessage(_ready_message(showcase))],
                     showcase=_where(showcase))
