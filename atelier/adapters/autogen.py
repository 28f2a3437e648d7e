"""AutoGen (ag2's classic API: AssistantAgent, UserProxyAgent, llm_config) on Atelier's tools, plus a design pair.

`register_tools(caller, executor, ctx)` gives an AutoGen agent the toolkit's tools with exactly the toolkit's
names, descriptions and JSON schemas: each spec becomes an `autogen.tools.Tool` built with
`parameters_json_schema=spec.args.model_json_schema()`, which ag2 puts into the caller's `llm_config["tools"]`
verbatim (`register_function` would derive a schema from a Python signature instead). `ollama_llm_config` is a
classic `llm_config` on Ollama's OpenAI-compatible endpoint; `design_pair` and `run_design_review` are a designer
who makes images and a critic who approves them or asks for one revision.

Where the tools run: a ToolContext's connection pools (the ledger's psycopg pool) belong to the event loop that
opened them, so every call runs there, whichever way ag2 calls it:

- `await agent.a_initiate_chat(...)` on that loop: ag2 awaits the call on the loop itself.
- a chat on another thread (`await asyncio.to_thread(agent.initiate_chat, ...)`, or `a_initiate_chat` on
  another loop): the call is handed to the owning loop (the adapters' `LoopBridge`, atelier/adapters/bridge.py)
  and its answer waited for.
- a sync `initiate_chat` called on the owning loop's own thread blocks that loop, so no tool could ever run:
  the model gets an error naming the two ways above instead of a deadlock.

Errors the model can act on (AtelierError, invalid arguments) come back to it as text. ag2 is used with no
cache, no code execution (hence no Docker probe) and no runtime logging: it contacts nothing but Ollama.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from atelier.adapters.bridge import LoopBridge, LoopBridgeError, running_loop
from atelier.tools.errors import AtelierError, MissingExtraError
from atelier.tools.service_errors import explain_ollama_error

try:  # ag2 is an extra: without it, importing this module is one line naming the pip install
    from autogen import AssistantAgent, ConversableAgent
    from autogen.tools import Tool
except ImportError as _missing:
    raise MissingExtraError("autogen", "AutoGen (ag2)", "autogen", _missing) from None

from atelier.tools.settings import Settings
from atelier.tools.toolkit import (
    TOOLS,
    AskResult,
    JobInfo,
    Progress,
    ToolContext,
    ToolSpec,
    as_text,
    image_paths,
    run_tool,
)

__all__ = [
    "CRITIC_PROMPT",
    "DESIGNER_PROMPT",
    "DesignReview",
    "ToolCall",
    "ToolLog",
    "Turn",
    "design_pair",
    "ollama_errors",
    "ollama_llm_config",
    "record_turns",
    "register_tools",
    "run_design_review",
    "tool_schemas",
]

logger = logging.getLogger(__name__)
APPROVED = re.compile(r"\bAPPROVED\b")
REVISE = re.compile(r"\bREVISE\b")

DESIGNER_PROMPT = (
    "You are Atelier's visual designer. Turn the brief into one image: call generate_image with a precise prompt "
    "(subject, composition, light, palette, style). When it is made, present it to the critic in a few lines: "
    "the job id, the prompt you used and why it fits the brief. When the critic asks for a revision, call "
    "generate_image once more with that change, then present the new image the same way. Never approve your own "
    "work."
)
CRITIC_PROMPT = (
    "You are Atelier's art critic. Review the designer's image against the brief. You may call search_images "
    "once to compare it with earlier images. Then answer with APPROVED and one sentence why, or with REVISE and "
    "the one change to make. Ask for at most {revisions}: after that, answer APPROVED unless no image was made."
)


# --- the tools ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolCall:
    """One tool call an agent made: its arguments, whether it worked, the text the model read, the typed result."""

    name: str
    arguments: dict[str, Any]
    ok: bool
    text: str
    result: Any = None

    @property
    def job_ids(self) -> list[str]:
        """The image jobs this call made or reported."""
        if isinstance(self.result, JobInfo):
            return [self.result.job_id]
        if isinstance(self.result, AskResult):
            return list(self.result.jobs)
        return []


@dataclass
class ToolLog:
    """The tool calls made through `register_tools`, in order (appended on the loop that owns the context)."""

    calls: list[ToolCall] = field(default_factory=list)

    @property
    def job_ids(self) -> list[str]:
        """Every job id the calls made or reported, first occurrence first."""
        return list(dict.fromkeys(job for call in self.calls for job in call.job_ids))

    @property
    def images(self) -> list[Path]:
        """The local image files of the calls' results."""
        return [path for call in self.calls if call.ok for path in image_paths(call.result)]


def tool_schemas(names: Collection[str] | None = None) -> list[dict[str, Any]]:
    """The OpenAI-style tool entries AutoGen sends: name, description and the args model's JSON schema."""
    return [{"type": "function", "function": {"name": spec.name, "description": spec.description,
                                              "parameters": spec.args.model_json_schema()}}
            for spec in _chosen(names)]


def _chosen(names: Collection[str] | None) -> list[ToolSpec]:
    """The specs named (all when None); an unknown name is an error naming the known ones."""
    if names is None:
        return list(TOOLS)
    known = {spec.name: spec for spec in TOOLS}
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise AtelierError(f"no tool named {', '.join(unknown)}; the tools are {', '.join(known)}")
    return [spec for spec in TOOLS if spec.name in names]


def _invalid(spec: ToolSpec, exc: ValidationError) -> str:
    """Pydantic's errors as one line the model can fix its call from."""
    problems = "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'arguments'}: {error['msg']}"
                         for error in exc.errors())
    return f"Error: invalid arguments for {spec.name}: {problems}"


# How an ag2 chat is started off the studio's loop (the end of the refusal of a tool call that would block it).
_BLOCKED_ADVICE = ("This chat was started with the synchronous initiate_chat there: use `await "
                   "agent.a_initiate_chat(...)` on that loop, or `await asyncio.to_thread(agent.initiate_chat, ...)`.")
_OFF_LOOP = ("register_tools must be called on the event loop that opened the ToolContext (its database pool lives "
             "there): call it from async code, e.g. inside `async with studio(settings)`")


class _ToolRunner:
    """Runs ag2's tool calls on the event loop that owns the ToolContext (through the adapters' LoopBridge)."""

    def __init__(self, ctx: ToolContext, log: ToolLog) -> None:
        self.ctx = ctx
        self.log = log
        self.bridge = LoopBridge.here(blocked_advice=_BLOCKED_ADVICE, elsewhere=_OFF_LOOP)

    async def run(self, spec: ToolSpec, arguments: dict[str, Any]) -> str:
        """Validate and run one call on the owning loop; the model's text, errors included."""
        try:
            result = await run_tool(spec, self.ctx, arguments, self.progress(spec))
        except ValidationError as exc:
            text, ok, result = _invalid(spec, exc), False, None
        except AtelierError as exc:
            text, ok, result = f"Error: {exc}", False, None
        else:
            text, ok = as_text(result), True
        self.log.calls.append(ToolCall(spec.name, dict(arguments), ok, text, result))
        return text

    def progress(self, spec: ToolSpec) -> Progress:
        """A progress callback that logs (AutoGen has no progress channel)."""

        async def report(done: float, total: float | None, message: str) -> None:
            logger.debug("%s (%s): %s", spec.name, self.ctx.owner, message)

        return report

    def function(self, spec: ToolSpec) -> Callable[..., str | Awaitable[str]]:
        """The function ag2 executes: a plain function answering text, or an awaitable when a loop runs here.

        It is deliberately not `async def`: for a coroutine function ag2's sync chat spins up a throwaway thread and
        event loop per call, where the context's pool cannot be used. This function decides itself, knowing which
        thread and loop call it.
        """
        runner = self

        def call(**arguments: Any) -> str | Awaitable[str]:
            here = running_loop()
            if here is None:  # a sync chat on a plain thread (e.g. asyncio.to_thread): wait for the owning loop
                return runner.wait(spec, arguments)
            return runner.awaited(spec, arguments, here)

        call.__name__ = spec.name
        call.__doc__ = spec.description
        return call

    def wait(self, spec: ToolSpec, arguments: dict[str, Any]) -> str:
        """Run the call on the owning loop from a thread without a loop, and wait (an error text if it cannot)."""
        try:
            return self.bridge.call(lambda: self.run(spec, arguments))
        except LoopBridgeError as exc:
            return f"Error: {exc}"

    async def awaited(self, spec: ToolSpec, arguments: dict[str, Any], created_on: asyncio.AbstractEventLoop) -> str:
        """The call as awaited by ag2: directly on the owning loop, else handed over to it."""
        if created_on is self.bridge.loop and not self.bridge.on_owner():
            return f"Error: {self.bridge.blocked()}"  # ag2's sync path moved the call off a loop its caller blocks
        try:
            return await self.bridge.acall(lambda: self.run(spec, arguments))
        except LoopBridgeError as exc:
            return f"Error: {exc}"


def register_tools(caller: ConversableAgent, executor: ConversableAgent, ctx: ToolContext, *,
                   names: Collection[str] | None = None, log: ToolLog | None = None) -> ToolLog:
    """Offer the toolkit's tools (or those named) to `caller`'s LLM and let `executor` run them on `ctx`.

    Call it on the event loop that opened `ctx`. The caller's `llm_config["tools"]` gets each spec's name,
    description and `args.model_json_schema()` unchanged; the executor's calls land in the returned log.
    """
    log = log if log is not None else ToolLog()
    runner = _ToolRunner(ctx, log)
    for spec in _chosen(names):
        tool = Tool(name=spec.name, description=spec.description, func_or_tool=runner.function(spec),
                    parameters_json_schema=spec.args.model_json_schema())
        tool.register_for_llm(caller)
        # serialize=False: the function already answers text, and ag2 must see its awaitable, not a string of it
        executor.register_for_execution(serialize=False, silent_override=True)(tool)
    return log


# --- the model ----------------------------------------------------------------------------------------------------


def ollama_llm_config(settings: Settings, *, model: str | None = None, temperature: float = 0.2,
                      timeout: int = 600) -> dict[str, Any]:
    """A classic `llm_config` on Ollama's OpenAI-compatible endpoint ({OLLAMA_URL}/v1), without a cache.

    A fresh dict per call (give each agent its own). The API key is a placeholder Ollama ignores; the zero price
    keeps ag2 from warning that it cannot cost a local model.
    """
    return {
        "config_list": [{
            "api_type": "openai",
            "model": model or settings.chat_model,
            "base_url": f"{settings.ollama_url.rstrip('/')}/v1",
            "api_key": "ollama",
            "price": [0.0, 0.0],
            "max_retries": 1,
        }],
        "cache_seed": None,
        "temperature": temperature,
        "timeout": timeout,
    }


@contextlib.contextmanager
def ollama_errors(settings: Settings, model: str | None = None) -> Iterator[None]:
    """Around a chat: Ollama being down, a model missing or no answer in time raises LLMUnavailableError naming the
    fix."""
    try:
        yield
    except Exception as exc:
        explained = explain_ollama_error(exc, url=settings.ollama_url, model=model or settings.chat_model)
        if explained is None:
            raise
        raise explained from exc


# --- the design pair ----------------------------------------------------------------------------------------------


def _text(message: dict[str, Any]) -> str:
    """A message's text ("" for tool calls without text)."""
    content = message.get("content")
    return content if isinstance(content, str) else ""


def _verdict(text: str) -> str | None:
    """The critic's verdict in a text: "APPROVED" or "REVISE", whichever it says first; None for neither."""
    found = [(match.start(), match.group()) for pattern in (APPROVED, REVISE) if (match := pattern.search(text))]
    return min(found)[1] if found else None


def _approves(message: dict[str, Any]) -> bool:
    """Whether a message is the critic's approval."""
    return _verdict(_text(message)) == "APPROVED"


def design_pair(ctx: ToolContext, settings: Settings, *, log: ToolLog | None = None, max_revisions: int = 1,
                max_replies: int = 12, critic_model: str | None = None) -> tuple[AssistantAgent, AssistantAgent]:
    """A designer (proposes, calls generate_image) and a critic (reviews, may call search_images), on Ollama.

    Each executes the other's tool calls. The designer stops at the critic's APPROVED, or at a REVISE beyond
    `max_revisions` (the review then ends unapproved); `max_replies` bounds each agent's automatic replies
    whatever the model says. Call it on the loop that opened `ctx`.
    """
    def finished(message: dict[str, Any]) -> bool:
        # stateless (ag2 may ask twice per message); the received message is already in the designer's history
        if _approves(message):
            return True
        if _verdict(_text(message)) != "REVISE":
            return False
        asked = sum(1 for m in designer.chat_messages.get(critic, []) if m.get("name") == critic.name
                    and not m.get("tool_calls") and _verdict(_text(m)) == "REVISE")
        return asked > max_revisions

    designer = AssistantAgent("designer", system_message=DESIGNER_PROMPT, llm_config=ollama_llm_config(settings),
                              is_termination_msg=finished, max_consecutive_auto_reply=max_replies,
                              human_input_mode="NEVER", code_execution_config=False)
    revisions = "no revision" if max_revisions == 0 else (
        "one revision" if max_revisions == 1 else f"{max_revisions} revisions")
    critic = AssistantAgent("critic", system_message=CRITIC_PROMPT.format(revisions=revisions),
                            llm_config=ollama_llm_config(settings, model=critic_model),
                            max_consecutive_auto_reply=max_replies, human_input_mode="NEVER",
                            code_execution_config=False)
    log = log if log is not None else ToolLog()
    register_tools(designer, critic, ctx, names=["generate_image"], log=log)
    register_tools(critic, designer, ctx, names=["search_images"], log=log)
    return designer, critic


@dataclass(frozen=True)
class Turn:
    """One message of a chat: who sent it, its text, and the tool calls it asked for (name and arguments)."""

    speaker: str
    text: str
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


def _turn(speaker: str, message: dict[str, Any] | str) -> Turn:
    """A message as ag2 sends it (text, a tool-call request or tool results) as a Turn."""
    if isinstance(message, str):
        return Turn(speaker, message)
    calls = []
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) else dict(arguments)
        except ValueError:
            parsed = {"unparsed": arguments}
        calls.append({"name": function.get("name", ""), "arguments": parsed})
    content = message.get("content")
    return Turn(speaker, content if isinstance(content, str) else "", calls)


def record_turns(*agents: ConversableAgent) -> list[Turn]:
    """A list that fills with every message these agents send, in order (ag2's process_message_before_send hook)."""
    turns: list[Turn] = []

    def hook(sender: ConversableAgent, message: dict[str, Any] | str, recipient: Any,
             silent: bool) -> dict[str, Any] | str:
        turns.append(_turn(sender.name, message))
        return message

    for agent in agents:
        agent.register_hook("process_message_before_send", hook)
    return turns


@dataclass(frozen=True)
class DesignReview:
    """What a design review produced: the critic's last word, whether it approved, the jobs and the transcript."""

    summary: str
    approved: bool
    job_ids: list[str]
    images: list[Path]
    transcript: list[Turn]
    tool_calls: list[ToolCall]


async def run_design_review(ctx: ToolContext, settings: Settings, brief: str, *, max_revisions: int = 1,
                            max_replies: int = 12, silent: bool = True) -> DesignReview:
    """Run the designer and critic on a brief (the critic opens with it): its verdict, the jobs and the transcript.

    The review ends at the critic's APPROVED, at a REVISE beyond `max_revisions` (unapproved), or when
    `max_replies` run out. Ollama down or the model missing raises LLMUnavailableError naming the fix.
    """
    log = ToolLog()
    designer, critic = design_pair(ctx, settings, log=log, max_revisions=max_revisions, max_replies=max_replies)
    turns = record_turns(critic, designer)
    with ollama_errors(settings):
        await critic.a_initiate_chat(designer, message=brief, summary_method=None, silent=silent)
    verdicts = [turn.text for turn in turns[1:] if turn.speaker == critic.name and turn.text and not turn.tool_calls]
    summary = verdicts[-1] if verdicts else ""
    return DesignReview(summary=summary, approved=_verdict(summary) == "APPROVED", job_ids=log.job_ids,
                        images=log.images, transcript=turns, tool_calls=list(log.calls))
