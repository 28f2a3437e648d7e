"""The supervisor graph: route each request (rules first), run the agents for its intent, approve, submit.

Per intent, the supervisor runs a fixed pipeline of agents and checks a hop budget and repeats on every
step, so agents can never ping-pong:
    answer      → answer                      (exactly one LLM call)
    retrieve    → retrieve [→ design → approve → submit]  (one LLM call over cited passages, which also describes
                                                         the picture when the answer is illustrated)
    cost        → cost                        (no LLM call: the catalog and live VRAM)
    generate    → design → approve → submit   (no LLM call)
    illustrate  → answer → design → approve → submit   (one LLM call: the answer and its picture's description)
    images      → options → design → approve → submit  (no LLM call: earlier images beside new variations)
    edit        → edit → approve → submit     (no LLM call: the named or last image on an img2img/edit workflow)
    plan        → plan → design → approve → submit
Only a request the rules find ambiguous costs one extra structured-output call to classify it.
`approve` pauses with `interrupt()` when the estimate exceeds the settings' cost or GPU-time threshold;
`Command(resume={"action": "approve" | "reject" | "edit", "prompts": [...]})` continues. Jobs go to the
ledger under keys made of the thread, the turn's message and the image index: a resumed or repeated
run never queues an image twice.

Nothing in the state is trusted: the owner of every action is the caller (graphs/owner.py `acting_owner`), never
the state's `owner`, and whatever reaches `submit` — from the designer, an `update_state` or a `Command` — is
validated again as a job API request would be (catalog workflow names, stored input images, the values each
workflow accepts and its limits, at most ATELIER_MAX_IMAGES_PER_REQUEST images). Designs are fitted to their
workflow and checked the same way when they are planned, before approval: a plan the person approves does not fail
later for its values, and what fitting changed (a size, a value left out) is shown with each image.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Literal

import psycopg
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import RunnableConfig
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import interrupt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from atelier.agents.cost_router import RouteChoice, choose_route
from atelier.agents.design_check import planned_design
from atelier.agents.illustrated_answer import answer_with_picture
from atelier.agents.image_edit import edit_design, edit_instruction, image_to_edit
from atelier.agents.image_options import ImageOptions, find_earlier, options_subject, options_text, variation_briefs
from atelier.agents.llm import LLMUnavailableError, Meter, StructuredOutputError, call_llm, call_structured
from atelier.agents.planner import Brief, plan_request
from atelier.agents.prompts import ANSWER_SYSTEM, INTENT_SYSTEM
from atelier.agents.rag_retriever import answer_from_documents
from atelier.agents.route_request import parse_route_request
from atelier.agents.visual_designer import PURPOSE_LOOK, Design
from atelier.graphs.deps import SupervisorDeps
from atelier.graphs.owner import acting_owner
from atelier.graphs.routing import classify
from atelier.graphs.state import Intent, SupervisorState
from atelier.tools.catalog import require_workflow_name
from atelier.tools.comfyui.model_inventory import ModelInventory, folders_of
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.conversations import chat_job_key
from atelier.tools.errors import AtelierError
from atelier.tools.inputs import INPUT_NAME_PATTERN
from atelier.tools.memory.store import MemoryStore
from atelier.tools.memory.style import StyleProfile, build_profile
from atelier.tools.prompts.models import ChosenPrompt
from atelier.tools.prompts.selection import choose_prompt
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings, load_settings
from atelier.tools.workflow_library import WorkflowLibrary, load_library, resolve_effective

__all__ = ["PIPELINES", "IntentChoice", "build_supervisor", "graph"]

PIPELINES: dict[str, list[str]] = {
    "answer": ["answer"],
    "retrieve": ["retrieve", "design", "approve", "submit"],
    "images": ["options", "design", "approve", "submit"],
    "cost": ["cost"],
    "edit": ["edit", "approve", "submit"],
    "generate": ["design", "approve", "submit"],
    "illustrate": ["answer", "design", "approve", "submit"],
    "plan": ["plan", "design", "approve", "submit"],
}
log = logging.getLogger(__name__)
# Pipelines whose picture steps run only when their first step described a picture (an illustrated answer).
_PICTURE_OPTIONAL = frozenset({"retrieve"})
_COUNTS = frozenset({"similar", "variations"})  # run options where 0 means none (not "the default")
_LEADING = re.compile(r"^\s*(please\s+)?(generate|render|draw|paint|sketch|make|create|give me|show me|let me see|"
                      r"illustrate|visuali[sz]e)\s+(me\s+)?(an?\s+)?((hero|lifestyle|detail|thumbnail|product)\s+)?"
                      r"((image|picture|photo|shot|illustration)\s+(of\s+)?)?", re.I)
_LOOKS_LIKE = re.compile(r"^what\s+(?:does\s+|do\s+|would\s+|might\s+)?(?P<subject>.+?)\s+looks?\s+like$", re.I)


class RunOptions(BaseModel):
    """The per-run options the designer reads from `configurable` (validated: they come from callers)."""

    model_config = ConfigDict(extra="ignore")

    workflow: str | None = None
    quality: Literal["fast", "medium", "high", "ultra"] | None = None
    target_seconds: float | None = Field(None, gt=0, le=86400)
    similar: int | None = Field(None, ge=0, le=50)
    variations: int | None = Field(None, ge=0, le=16)
    input_image: str | None = Field(None, pattern=INPUT_NAME_PATTERN)

    @classmethod
    def of(cls, config: RunnableConfig) -> RunOptions:
        """The options of a run (AtelierError naming the bad one)."""
        values = {key: value if key in _COUNTS else value or None
                  for key, value in (config.get("configurable") or {}).items() if key in cls.model_fields}
        try:
            options = cls.model_validate(values)
        except ValidationError as exc:
            raise AtelierError(f"a run option is not valid ({_first_problem(exc)}): workflow is a catalog name, "
                               "quality one of fast/medium/high/ultra, target_seconds a number of seconds, similar "
                               "0–50 earlier images, variations 0–16 new ones") from None
        require_workflow_name(options.workflow)
        return options


class IntentChoice(BaseModel):
    """The LLM's classification of a request the rules are unsure of (any of the eight intents)."""

    intent: Intent


def _last_human(state: SupervisorState) -> HumanMessage:
    """The message that started this turn."""
    for message in reversed(state.get("messages", [])):
        if isinstance(message, HumanMessage):
            return message
    raise AtelierError("the conversation has no user message to act on")


def _text(message: BaseMessage) -> str:
    """A message's text content."""
    return message.content if isinstance(message.content, str) else str(message.content)


def _done(state: SupervisorState, agent: str, meter: Meter, **update: Any) -> dict[str, Any]:
    """A node's update: its hop, the trail extended, plus whatever it changed."""
    return {"trail": [*state.get("trail", []), agent], "hops": [meter.hop()], **update}


def _failure(state: SupervisorState, agent: str, meter: Meter, exc: AtelierError) -> dict[str, Any]:
    """End the turn with a message that names the problem and the fix (never a crash)."""
    return _done(state, agent, meter, messages=[AIMessage(f"I could not finish that: {exc}")], stopped=str(exc))


def build_supervisor(*, deps: SupervisorDeps, fixed_intent: Intent | None = None) -> StateGraph[SupervisorState]:
    """The uncompiled supervisor graph (the caller picks the checkpointer).

    `fixed_intent` skips routing: every turn runs that intent's pipeline (the showcase graph uses "plan").
    """
    settings = deps.settings

    async def begin(state: SupervisorState, config: RunnableConfig) -> dict[str, Any]:
        """A new turn: forget the previous turn's routing and designs (keeping its images for an edit); record who
        acts (the caller)."""
        return {"previous_jobs": _job_ids(state.get("jobs")) or _job_ids(state.get("previous_jobs")),
                "intent": fixed_intent, "routed_by": "fixed" if fixed_intent else None, "trail": [], "briefs": [],
                "options": {}, "estimate": {}, "decision": {}, "jobs": [], "stopped": None,
                "owner": acting_owner(config)}

    def supervise(state: SupervisorState) -> str:
        """The next agent for this turn's intent, or the end; stops loops and over-long turns."""
        if state.get("stopped"):
            return END
        intent = state.get("intent")
        if intent is None:
            return "classify"
        trail = state.get("trail", [])
        if len(trail) >= settings.max_hops or (len(trail) >= 3 and len(set(trail[-3:])) == 1):
            return "halt"
        for step in PIPELINES[intent]:
            if step == "design" and intent in _PICTURE_OPTIONAL and not state.get("briefs"):
                return END  # answered in words: no picture was asked for
            if step not in trail:
                return step
        return END

    async def halt(state: SupervisorState) -> dict[str, Any]:
        """End a turn that went round in circles, saying so."""
        trail = " → ".join(state.get("trail", []))
        message = f"I stopped after {len(state.get('trail', []))} steps without finishing ({trail}); please rephrase."
        return {"messages": [AIMessage(message)], "stopped": "hop budget"}

    async def classify_node(state: SupervisorState) -> dict[str, Any]:
        """Rules first; one structured LLM call only when they are unsure (a second only when the model's first answer
        did not fit; a second misfit ends the turn with a message saying so)."""
        meter = Meter("classify")
        text = _text(_last_human(state))
        intent: Intent | None = classify(text)
        routed_by = "rules"
        if state.get("mode") == "image" and intent == "answer":
            intent = "illustrate"
        if intent is None:
            try:
                choice = await call_structured(deps.chat_model(), IntentChoice,
                                               [SystemMessage(INTENT_SYSTEM), HumanMessage(text)], meter)
            except (LLMUnavailableError, StructuredOutputError) as exc:
                return _failure(state, "classify", meter, exc)
            intent, routed_by = choice.intent, "llm"
        if state.get("mode") == "text" and intent == "illustrate":
            intent = "answer"  # "never illustrate": words only (an explicit "generate" still makes an image)
        return {"intent": intent, "routed_by": routed_by, "hops": [meter.hop()]}

    async def answer(state: SupervisorState) -> dict[str, Any]:
        """Answer in words: one LLM call over the conversation. Illustrated, the same call describes the picture,
        which becomes the design's brief (what the answer says, not the request's words)."""
        meter = Meter("answer")
        messages = state.get("messages", [])
        try:
            if state.get("intent") != "illustrate":
                reply = await call_llm(deps.chat_model(), [SystemMessage(ANSWER_SYSTEM), *messages], meter)
                return _done(state, "answer", meter, messages=[reply])
            request = _text(_last_human(state))
            made = await answer_with_picture(deps.chat_model(), messages, _subject_of(request), meter)
        except AtelierError as exc:
            return _failure(state, "answer", meter, exc)
        brief = Brief.of_picture(_purpose_of(request), made.picture)
        return _done(state, "answer", meter, messages=[made.reply], briefs=[brief.model_dump()])

    async def retrieve(state: SupervisorState, config: RunnableConfig) -> dict[str, Any]:
        """An answer from the person's documents, with citations (one LLM call; earlier images are `images`)."""
        meter = Meter("retrieve")
        text = _text(_last_human(state))
        owner = acting_owner(config)
        memory = await deps.get_memory()
        mode = state.get("mode", "auto")
        pictured = mode == "image" or (mode == "auto" and bool(_SHOW.search(text)))
        try:
            found = await answer_from_documents(deps.chat_model(), memory, text, owner, meter,
                                                unavailable=deps.memory_problem,
                                                picture_of=_subject_of(text) if pictured else None)
        except LLMUnavailableError as exc:
            return _failure(state, "retrieve", meter, exc)
        briefs = [Brief.of_picture(_purpose_of(text), found.picture).model_dump()] if found.picture else []
        return _done(state, "retrieve", meter, messages=[found.reply], briefs=briefs)

    async def find_options(state: SupervisorState, config: RunnableConfig) -> dict[str, Any]:
        """The earlier images most like the request and briefs for new variations of it (no LLM call).

        `configurable` `similar` and `variations` override ATELIER_OPTIONS_SIMILAR / ATELIER_OPTIONS_VARIATIONS.
        """
        meter = Meter("options")
        try:
            run = RunOptions.of(config)
        except AtelierError as exc:
            return _failure(state, "options", meter, exc)
        similar = settings.options_similar if run.similar is None else run.similar
        count = min(settings.options_variations if run.variations is None else run.variations,
                    settings.max_images_per_request)
        subject = options_subject(_text(_last_human(state)))
        memory = await deps.get_memory()
        found = ImageOptions(query=subject, earlier=await find_earlier(memory, subject, acting_owner(config), similar),
                             variations=count)
        reply = AIMessage(options_text(found, None if memory is not None else deps.memory_problem))
        update: dict[str, Any] = {"messages": [reply], "options": found.model_dump(mode="json"),
                                  "briefs": [b.model_dump() for b in variation_briefs(subject, found.earlier, count)]}
        if count == 0:
            update["stopped"] = "no new variations asked for"
        return _done(state, "options", meter, **update)

    async def cost(state: SupervisorState) -> dict[str, Any]:
        """Which workflow, how long and how much: the models config's rules, the catalog, live VRAM and the servers'
        model files; no LLM call. The reply names the deciding rule and the alternatives."""
        meter = Meter("cost")
        text = _text(_last_human(state))
        try:
            library, inventories = await _library(deps)
            request = parse_route_request(text, library.config.routing_rules.by_purpose if library.config else ())
            vram = request.vram_free_gb if request.vram_free_gb is not None else await deps.vram_free_gb()
            route = await asyncio.to_thread(choose_route, request.purpose, urgency=request.urgency, vram_free_gb=vram,
                                            budget=request.budget, measured=await _measured(deps), library=library,
                                            inventories=inventories)
        except AtelierError as exc:
            return _failure(state, "cost", meter, exc)
        count = request.count
        reply = (f"For {count} image(s) I would use {route.reason}. Estimate: ~{route.seconds * count:g} s of GPU "
                 f"time and {route.cost * count:.4f} in cost.{_others(route)}")
        return _done(state, "cost", meter, messages=[AIMessage(reply)],
                     estimate={"images": count, "seconds": route.seconds * count, "cost": route.cost * count})

    async def edit(state: SupervisorState, config: RunnableConfig) -> dict[str, Any]:
        """An edit of the image the run names (`configurable.input_image`) or the previous turn made: one img2img or
        edit job, routed, fitted and checked (no LLM call)."""
        meter = Meter("edit")
        owner = acting_owner(config)
        thread = str((config.get("configurable") or {}).get("thread_id", "no-thread"))
        try:
            run = RunOptions.of(config)
            source, where = await image_to_edit(await deps.get_ledger(), settings, owner=owner, named=run.input_image,
                                                previous_jobs=_job_ids(state.get("previous_jobs")))
            library, inventories = await _library(deps)
            route = await asyncio.to_thread(
                choose_route, None, vram_free_gb=await deps.vram_free_gb(), workflow=run.workflow,
                quality=run.quality, target_seconds=run.target_seconds, measured=await _measured(deps),
                library=library, inventories=inventories, task="img2img")
            template = await asyncio.to_thread(resolve_effective, route.workflow, settings)
            design = await asyncio.to_thread(edit_design, edit_instruction(_text(_last_human(state))), source, route,
                                             template, settings, owner=owner,
                                             key=chat_job_key(thread, _last_human(state).id or "turn", 0))
        except AtelierError as exc:
            return _failure(state, "edit", meter, exc)
        reply = AIMessage(f"Editing {where} with {route.workflow}: “{design.params.prompt}”"
                          + _fitted_text(design.fitted))
        return _done(state, "edit", meter, messages=[reply], briefs=[design.model_dump(mode="json")],
                     estimate={"images": 1, "seconds": route.seconds, "cost": route.cost})

    async def plan(state: SupervisorState) -> dict[str, Any]:
        """The planner's briefs (one structured LLM call)."""
        meter = Meter("plan")
        try:
            result = await plan_request(deps.chat_model(), _text(_last_human(state)), meter)
        except (LLMUnavailableError, StructuredOutputError) as exc:
            return _failure(state, "plan", meter, exc)
        return _done(state, "plan", meter, briefs=[b.model_dump() for b in result.briefs])

    async def design(state: SupervisorState, config: RunnableConfig) -> dict[str, Any]:
        """Briefs → prompts and values, each routed to a workflow by purpose and live VRAM (no LLM call), fitted to
        that workflow and checked as the ledger and the worker will check its job (so approval comes last).

        Per-run options (`configurable`): `workflow` forces one workflow, `quality` a catalog tier, `target_seconds`
        steps quality down until the expected time (measured where known) fits.
        """
        meter = Meter("design")
        configurable = config.get("configurable") or {}
        thread = str(configurable.get("thread_id", "no-thread"))
        turn = _last_human(state).id or "turn"
        try:
            options = RunOptions.of(config)
            briefs = _checked_briefs(state.get("briefs", []), settings.max_images_per_request) or [_brief_from(state)]
            forced = bool(options.workflow or options.quality)
            vram = await deps.vram_free_gb()
            library, inventories = await _library(deps)
            style = await asyncio.to_thread(_style, await deps.get_memory(), acting_owner(config))
            measured = await _measured(deps)
            designs = []
            templates: dict[str, WorkflowTemplate] = {}
            for index, brief in enumerate(briefs):
                key = chat_job_key(thread, turn, index)
                chosen = await _library_prompt(deps, brief.purpose, key, forced, acting_owner(config))
                route = await asyncio.to_thread(
                    choose_route, brief.purpose, vram_free_gb=vram,
                    workflow=options.workflow or (chosen.workflow if chosen else None) or None,
                    quality=options.quality, target_seconds=options.target_seconds, measured=measured,
                    library=library, inventories=inventories)
                if route.workflow not in templates:  # the workflow the ledger and the worker will use
                    templates[route.workflow] = await asyncio.to_thread(resolve_effective, route.workflow, settings)
                # Fitted to the workflow and checked now, as the ledger and the worker will check the job.
                designs.append(await asyncio.to_thread(
                    planned_design, brief, route, templates[route.workflow], settings, owner=acting_owner(config),
                    key=key, number=index + 1, style=style, chosen=chosen))
        except AtelierError as exc:
            return _failure(state, "design", meter, exc)
        estimate = {"images": len(designs), "seconds": sum(d.route.seconds for d in designs),
                    "cost": round(sum(d.route.cost for d in designs), 6)}
        return _done(state, "design", meter, briefs=[d.model_dump(mode="json") for d in designs], estimate=estimate)

    async def approve(state: SupervisorState) -> dict[str, Any]:
        """Pause for a person when the estimate is above the thresholds; apply their decision."""
        meter = Meter("approve")
        estimate = state.get("estimate", {})
        needs = (estimate.get("cost", 0) > settings.approval_cost
                 or estimate.get("seconds", 0) > settings.approval_gpu_seconds)
        if not needs:
            return _done(state, "approve", meter, decision={"action": "approve", "by": "threshold"})
        designs = [Design.model_validate(d) for d in state.get("briefs", [])]
        answer = interrupt({
            "question": "Generate these images?", "estimate": estimate,
            "images": [{"purpose": d.brief.purpose, "workflow": d.route.workflow, "prompt": d.params.prompt,
                        "fitted": d.fitted} for d in designs],
            "options": ["approve", "edit", "reject"],
        })
        decision = answer if isinstance(answer, dict) else {"action": str(answer)}
        update: dict[str, Any] = {"decision": decision}
        if decision.get("action") == "edit" and isinstance(decision.get("prompts"), list):
            try:
                for d, prompt in zip(designs, decision["prompts"], strict=False):
                    d.params = GenerationParams.model_validate({**d.params.model_dump(), "prompt": str(prompt)})
            except ValidationError as exc:
                return _failure(state, "approve", meter, AtelierError(f"the edited prompts were refused: "
                                                                      f"{_first_problem(exc)}; nothing was queued"))
            update["briefs"] = [d.model_dump(mode="json") for d in designs]
        if decision.get("action") == "reject":
            update["messages"] = [AIMessage("Understood: nothing was generated.")]
            update["stopped"] = "rejected"
        return _done(state, "approve", meter, **update)

    async def submit(state: SupervisorState, config: RunnableConfig) -> dict[str, Any]:
        """Queue the approved images in the ledger, once each (idempotency keys), as the caller."""
        meter = Meter("submit")
        try:
            designs = _checked_designs(state.get("briefs", []), settings.max_images_per_request)
        except AtelierError as exc:
            return _failure(state, "submit", meter, exc)
        ledger = await deps.get_ledger()
        if ledger is None:
            summary = "; ".join(d.params.prompt for d in designs)
            return _done(state, "submit", meter, messages=[AIMessage(f"(No job ledger configured.) I would make: "
                                                                     f"{summary}")])
        thread = str((config.get("configurable") or {}).get("thread_id", "no-thread"))
        turn = _last_human(state).id or "turn"
        owner = acting_owner(config)
        requests = [d.job_request(owner, chat_job_key(thread, turn, i)) for i, d in enumerate(designs)]
        results = await ledger.submit_many(requests)
        for design_, request, result in zip(designs, requests, results, strict=True):
            if design_.prompt_ref is not None and not isinstance(result, AtelierError):
                try:
                    await ledger.prompts.record_use(result.job.id, design_.prompt_ref, request.idempotency_key)
                except (AtelierError, psycopg.Error) as exc:  # a prompt named in the state that is not there
                    log.warning("prompt use of job %s not recorded: %s", result.job.id, exc)
        jobs = [str(r.job.id) for r in results if not isinstance(r, AtelierError)]
        errors = [str(r) for r in results if isinstance(r, AtelierError)]
        lines = [f"- {d.brief.purpose}: {d.route.workflow} (job {str(r.job.id)[:8]})" + _fitted_text(d.fitted)
                 for d, r in zip(designs, results, strict=True) if not isinstance(r, AtelierError)]
        text = f"Queued {len(jobs)} image(s):\n" + "\n".join(lines)
        if errors:
            text += "\nNot queued: " + "; ".join(errors)
        if state.get("intent") == "plan" and fixed_intent is None and jobs:
            text += ("\nFor a gallery with captions and marketing copy, make it a product showcase: the chat's "
                     "Gallery tab, MCP `showcase`, `atelier showcase`, or the `showcase` graph.")
        return _done(state, "submit", meter, messages=[AIMessage(text)], jobs=jobs, owner=owner)

    builder: StateGraph[SupervisorState] = StateGraph(SupervisorState)
    nodes = (("begin", begin), ("classify", classify_node), ("answer", answer), ("retrieve", retrieve), ("cost", cost),
             ("options", find_options), ("edit", edit), ("plan", plan), ("design", design), ("approve", approve),
             ("submit", submit), ("halt", halt))
    for name, node in nodes:
        builder.add_node(name, node)
    builder.add_edge(START, "begin")
    targets = ["classify", "answer", "retrieve", "cost", "options", "edit", "plan", "design", "approve", "submit",
               "halt", END]
    builder.add_conditional_edges("begin", supervise, targets)
    for name in targets[:-2]:
        builder.add_conditional_edges(name, supervise, targets)
    builder.add_edge("halt", END)
    return builder


# The purposes a request can name, as whole words (the designer's looks; "illustration" is the default).
_PURPOSES = tuple((p, re.compile(rf"\b{p}\b", re.I)) for p in PURPOSE_LOOK if p != "illustration")
# An answer from documents is illustrated only when the person asks to see something (English and Portuguese).
_SHOW = re.compile(r"\b(looks? like|show me|picture|illustrat\w*|visuali[sz]e|mostr[ea]\w*|ilustr\w*|desenh\w*|"
                   r"como (é|fica|seria))\b", re.I)


def _first_problem(exc: ValidationError) -> str:
    """The first problem pydantic found, as `where: what`."""
    error = exc.errors()[0] if exc.errors() else {"loc": (), "msg": str(exc)}
    where = ".".join(str(part) for part in error.get("loc", ()))
    return f"{where}: {error.get('msg')}" if where else str(error.get("msg"))


def _checked_briefs(raw: Any, limit: int) -> list[Brief]:
    """The planner's briefs in the state, validated (AtelierError naming the problem)."""
    if not raw:
        return []
    if not isinstance(raw, list) or len(raw) > limit:
        raise AtelierError(f"the plan must be a list of at most {limit} images (ATELIER_MAX_IMAGES_PER_REQUEST); "
                           "ask for fewer")
    try:
        return [Brief.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise AtelierError(f"the plan in this conversation is not valid ({_first_problem(exc)}); ask again") from None


def _checked_designs(raw: Any, limit: int) -> list[Design]:
    """The state's designs, validated as any request is (AtelierError naming the problem; nothing half-queued).

    The ledger checks the rest when it plans each job (catalog workflow names, stored input images, limits).
    """
    if not isinstance(raw, list):
        raise AtelierError("the plan in this conversation is not a list of images; ask again")
    if len(raw) > limit:
        raise AtelierError(f"the plan has {len(raw)} images; one request may queue at most {limit} "
                           "(ATELIER_MAX_IMAGES_PER_REQUEST): ask for fewer")
    try:
        designs = [Design.model_validate(item) for item in raw]
    except ValidationError as exc:
        raise AtelierError(f"the plan in this conversation is not valid ({_first_problem(exc)}); ask again") from None
    for design in designs:
        require_workflow_name(design.route.workflow)
    return designs


def _job_ids(raw: Any, limit: int = 16) -> list[str]:
    """Job ids kept in the state (it is not trusted: anything but a list of short strings is dropped)."""
    if not isinstance(raw, list):
        return []
    return [item for item in raw if isinstance(item, str) and len(item) <= 64][:limit]


def _fitted_text(notes: list[str]) -> str:
    """What was changed so the workflow takes an image, for a reply line ('' when nothing was)."""
    return f"; fitted: {'; '.join(notes)}" if notes else ""


def _subject_of(text: str) -> str:
    """What a request asks to see, without the command words: 'show me what a cafe looks like' → 'a cafe'."""
    text = text.strip().rstrip("?.!")
    subject = _LEADING.sub("", text).strip() or text
    looks = _LOOKS_LIKE.match(subject)
    return looks.group("subject") if looks else subject


def _purpose_of(text: str) -> str:
    """The purpose a request names ('a hero image of …' → hero), else 'illustration'."""
    return next((purpose for purpose, word in _PURPOSES if word.search(text)), "illustration")


def _brief_from(state: SupervisorState) -> Brief:
    """A single brief from the request itself (generate, or illustrate without the answer's picture): its subject."""
    text = _text(_last_human(state))
    return Brief(purpose=_purpose_of(text), subject=_subject_of(text))


async def _library(deps: SupervisorDeps) -> tuple[WorkflowLibrary, list[ModelInventory]]:
    """The workflows to route between (the user's folders and models config) and the model files of each server."""
    library = await asyncio.to_thread(_load_library, deps.settings)
    return library, await deps.model_inventories(folders_of(library.templates))


def _load_library(settings: Settings) -> WorkflowLibrary:
    """`load_library`, logging the workflow files that could not be loaded."""
    library = load_library(settings)
    for problem in library.errors:
        log.warning("workflow skipped: %s", problem)
    return library


def _others(route: RouteChoice, shown: int = 4) -> str:
    """The rules that did not apply and the alternatives, as sentences for the cost agent's reply."""
    text = ""
    if route.rules_skipped:
        text += " Rules tried first: " + "; ".join(route.rules_skipped) + "."
    if route.alternatives:
        listed = "; ".join(f"{a.workflow} ({a.why})" for a in route.alternatives[:shown])
        more = f" and {len(route.alternatives) - shown} more" if len(route.alternatives) > shown else ""
        text += f" Also considered: {listed}{more}."
    return text


async def _measured(deps: SupervisorDeps) -> dict[str, float]:
    """Measured average seconds per workflow from the ledger (empty without one)."""
    ledger = await deps.get_ledger()
    return await ledger.timings.estimates() if ledger is not None else {}


async def _library_prompt(deps: SupervisorDeps, purpose: str, request_key: str, forced: bool,
                          owner: str) -> ChosenPrompt | None:
    """The prompt library's choice for one image of `owner` (A/B arm or best-rated prompt among the prompts and
    tests that may shape their images: theirs, admins', operators'); None without a ledger.

    When the person forced a workflow or quality and the running test has an arm that sets a workflow, the image
    stays out of the test (it could not get that arm's workflow, and letting it into the other arms only would
    bias them): it takes the best-rated prompt and counts for no arm.
    """
    ledger = await deps.get_ledger()
    if ledger is None:
        return None
    if forced:
        test = await ledger.abtests.running_for(purpose, for_owner=owner)
        if test is not None and any(variant.workflow is not None for variant in test.variants):
            best = await ledger.prompts.best_for(purpose, for_owner=owner)
            return ChosenPrompt(version=best[0], why="best-rated library prompt") if best else None
    return await choose_prompt(ledger.prompts, ledger.abtests, purpose, request_key, for_owner=owner)


def _style(memory: MemoryStore | None, owner: str) -> StyleProfile | None:
    """The owner's style profile from the memory (None without a memory)."""
    if memory is None:
        return None
    return build_profile(owner, memory.owned_images(owner))


def _default_graph() -> CompiledStateGraph[SupervisorState, Any, SupervisorState, SupervisorState]:
    """The graph `langgraph.json` serves: services opened on first use, the server's checkpointer."""
    deps = SupervisorDeps(settings=load_settings(), open_services=True)
    return build_supervisor(deps=deps).compile(name="supervisor")


graph = _default_graph()
