"""CrewAI front end: the toolkit's tools as CrewAI `BaseTool`s, Ollama as CrewAI's LLM, and a content crew.

Telemetry first: CrewAI (and the OpenTelemetry SDK under it) would otherwise send spans to CrewAI's collector on
every kickoff, ask about tracing and look up its newest version on PyPI. The switches in `TELEMETRY_SWITCHES` are
set (unless the person set them otherwise) before crewai is imported, so a crew talks to nothing but loopback:
Ollama, and our own ledger through the tools.

The bridge from CrewAI's threads to our async tools: CrewAI calls a tool's `_run` synchronously, from the thread
that runs `Crew.kickoff` (or a pool thread when it runs several tool calls at once). Our tools are coroutines
that use the ToolContext's connection pools, and the psycopg pool in `ctx.ledger` (like the ledger's event
listener) belongs to the event loop that opened it. So every tool call is sent through the adapters' `LoopBridge`
(atelier/adapters/bridge.py) to THAT loop, captured when the tools are made (`crew_tools` inside the studio's
async code, or `loop=`), and the calling CrewAI thread waits for the answer. The loop must stay free
while a crew runs: start the crew in a worker thread (`await run_crew(crew)` / `Crew.kickoff_async`, which uses
`asyncio.to_thread`). A call made on the loop's own thread would wait for itself; it is refused with a message
saying so instead of hanging, and a loop that stops while a call waits ends the wait with an error.
"""

from __future__ import annotations

import os

# Before crewai is imported anywhere in this process (setdefault: a person's explicit choice wins).
TELEMETRY_SWITCHES: dict[str, str] = {
    "CREWAI_DISABLE_TELEMETRY": "true",  # CrewAI's anonymous usage spans
    "CREWAI_DISABLE_TRACKING": "true",  # the same, older spelling
    "OTEL_SDK_DISABLED": "true",  # the OpenTelemetry SDK those spans go through
    "CREWAI_TRACING_ENABLED": "false",  # CrewAI's trace upload and its consent prompt
    "CREWAI_DISABLE_VERSION_CHECK": "true",  # the PyPI look-up behind "a new version is available"
}
for _name, _value in TELEMETRY_SWITCHES.items():
    os.environ.setdefault(_name, _value)

import asyncio  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable, Coroutine  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from typing import Any  # noqa: E402

from pydantic import PrivateAttr, ValidationError  # noqa: E402

from atelier.adapters.bridge import LoopBridge  # noqa: E402
from atelier.tools.errors import AtelierError, MissingExtraError  # noqa: E402

try:  # CrewAI is an extra: without it, importing this module is one line naming the pip install
    from crewai import LLM, Agent, Crew, CrewOutput, Process, Task
    from crewai.llms.base_llm import BaseLLM
    from crewai.tools import BaseTool
    from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
except ImportError as _missing:
    raise MissingExtraError("crewai", "CrewAI", "crewai", _missing) from None

from atelier.tools.service_errors import LLMUnavailableError, explain_ollama_error  # noqa: E402
from atelier.tools.settings import Settings  # noqa: E402
from atelier.tools.toolkit import TOOLS, JobInfo, ToolContext, ToolSpec, as_text  # noqa: E402

__all__ = [
    "TELEMETRY_SWITCHES",
    "AtelierCrewTool",
    "ContentResult",
    "ToolCall",
    "build_llm",
    "content_crew",
    "crew_tools",
    "explain_llm_error",
    "run_content_pipeline",
    "run_crew",
    "telemetry_disabled",
]

# How a crew is started off the studio's loop (the end of the refusal of a tool call that would block it).
_BLOCKED_ADVICE = "Start the crew in a worker thread: await run_crew(crew) or crew.kickoff_async()."
OnResult = Callable[["ToolCall"], None]


def _stop_early_telemetry() -> None:
    """Stop CrewAI's exporter if crewai was imported before this module (its import starts telemetry at once).

    Importing crewai creates its Telemetry singleton; created before the switches were set, it holds a live OTLP
    exporter and a batch thread. Its spans are gated by the (now set) switches at each call, but we also shut
    the exporter down without flushing (a shut exporter sends nothing) and mark the singleton not ready, so its
    exit hook does not flush either. A person who opted in (CREWAI_DISABLE_TELEMETRY=false …) keeps it.
    """
    from crewai.telemetry.telemetry import Telemetry

    telemetry = getattr(Telemetry, "_instance", None)
    if telemetry is None or not getattr(telemetry, "ready", False) or not Telemetry._is_telemetry_disabled():
        return
    exporter, provider = getattr(telemetry, "_exporter", None), getattr(telemetry, "provider", None)
    telemetry.ready = False
    if exporter is not None:
        exporter.shutdown()
    if provider is not None:
        provider.shutdown()


_stop_early_telemetry()


@dataclass(frozen=True)
class ToolCall:
    """One tool call a crew made: the tool's name, its validated arguments, and the result (None on failure)."""

    tool: str
    arguments: dict[str, Any]
    result: Any = None
    error: str | None = None


async def _no_progress(_done: float, _total: float | None, _message: str) -> None:
    """CrewAI has no progress channel."""


def _never_cache(_args: Any = None, _result: Any = None) -> bool:
    """Our tools report live state (a new image, a job's status): CrewAI must not replay an earlier answer."""
    return False


class AtelierCrewTool(BaseTool):
    """A toolkit `ToolSpec` as a CrewAI tool: same name, description and args model; runs on the studio's loop."""

    _spec: ToolSpec = PrivateAttr()
    _ctx: ToolContext = PrivateAttr()
    _bridge: LoopBridge = PrivateAttr()
    _on_result: OnResult | None = PrivateAttr(default=None)

    @classmethod
    def from_spec(cls, spec: ToolSpec, ctx: ToolContext, loop: asyncio.AbstractEventLoop,
                  on_result: OnResult | None = None) -> AtelierCrewTool:
        """The tool for `spec`, acting on `ctx` through `loop`."""
        tool = cls(name=spec.name, description=spec.description, args_schema=spec.args, cache_function=_never_cache)
        bridge = LoopBridge(loop, blocked_advice=_BLOCKED_ADVICE)
        tool._spec, tool._ctx, tool._bridge, tool._on_result = spec, ctx, bridge, on_result
        return tool

    @property
    def spec(self) -> ToolSpec:
        """The toolkit spec this tool wraps."""
        return self._spec

    def _coroutine(self, arguments: dict[str, Any]) -> Callable[[], Coroutine[Any, Any, Any]]:
        """A factory for the spec's coroutine on validated arguments (validation errors raise here)."""
        args = self._spec.args.model_validate(arguments)

        async def run() -> Any:
            return await self._spec.run(self._ctx, args, _no_progress)

        return run

    def _finish(self, arguments: dict[str, Any], outcome: Any, error: BaseException | None) -> str | ToolFailure:
        """The text the agent reads (a ToolFailure for our errors, so CrewAI records the call as failed)."""
        if error is not None:
            if isinstance(error, ValidationError):
                reason, message = ToolFailureReason.INVALID_INPUT, f"{self.name}: invalid arguments: {_said(error)}"
            else:
                reason, message = ToolFailureReason.TOOL_REPORTED, f"{self.name} failed: {error}"
            if self._on_result is not None:
                self._on_result(ToolCall(self.name, arguments, error=message))
            return ToolFailure(message=message, reason=reason, code=type(error).__name__)
        if self._on_result is not None:
            self._on_result(ToolCall(self.name, arguments, result=outcome))
        return as_text(outcome)

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Check the arguments against the spec's model first: invalid ones come back as text the agent reads."""
        if not args:
            try:
                self._spec.args.model_validate(kwargs)
            except ValidationError as exc:
                return self._finish(kwargs, None, exc)
        return super().run(*args, **kwargs)

    async def arun(self, *args: Any, **kwargs: Any) -> Any:
        """The async twin of `run` (same argument check)."""
        if not args:
            try:
                self._spec.args.model_validate(kwargs)
            except ValidationError as exc:
                return self._finish(kwargs, None, exc)
        return await super().arun(*args, **kwargs)

    def _unexpected(self, arguments: dict[str, Any], error: Exception) -> None:
        """Record a bug-like error before CrewAI reports it to the agent ("Error executing tool: …")."""
        if self._on_result is not None:
            self._on_result(ToolCall(self.name, arguments, error=f"{type(error).__name__}: {error}"))

    def _run(self, **kwargs: Any) -> str | ToolFailure:
        """Run the tool for a CrewAI thread (see the module docstring for why it goes through the loop)."""
        try:
            outcome = self._bridge.call(self._coroutine(kwargs))
        except (AtelierError, ValidationError) as exc:
            return self._finish(kwargs, None, exc)
        except Exception as exc:
            self._unexpected(kwargs, exc)
            raise
        return self._finish(kwargs, outcome, None)

    async def _arun(self, **kwargs: Any) -> str | ToolFailure:
        """Run the tool for CrewAI's native async paths (awaited on the studio's loop, whichever loop awaits)."""
        try:
            outcome = await self._bridge.acall(self._coroutine(kwargs))
        except (AtelierError, ValidationError) as exc:
            return self._finish(kwargs, None, exc)
        except Exception as exc:
            self._unexpected(kwargs, exc)
            raise
        return self._finish(kwargs, outcome, None)


def _said(error: ValidationError) -> str:
    """A validation error as one line per field (`steps: Input should be greater than or equal to 1`)."""
    return "; ".join(f"{'.'.join(str(part) for part in e['loc']) or 'arguments'}: {e['msg']}"
                     for e in error.errors(include_url=False))


def crew_tools(ctx: ToolContext, *, names: list[str] | None = None, loop: asyncio.AbstractEventLoop | None = None,
               on_result: OnResult | None = None) -> list[BaseTool]:
    """Every toolkit tool (or those in `names`, in that order) as a CrewAI tool acting on `ctx`.

    `loop` is the event loop that opened `ctx`'s ledger; it defaults to the running loop, so call this from the
    studio's async code (or pass `loop=`). `on_result` hears every call and its result.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise AtelierError("crew_tools needs the event loop that opened the studio: call it from that loop's "
                               "async code or pass loop=") from None
    specs = {spec.name: spec for spec in TOOLS}
    unknown = sorted(set(names or ()) - set(specs))
    if unknown:
        raise AtelierError(f"no toolkit tool named {', '.join(unknown)}; there are {', '.join(specs)}")
    chosen = [specs[name] for name in names] if names is not None else list(TOOLS)
    return [AtelierCrewTool.from_spec(spec, ctx, loop, on_result) for spec in chosen]


# --- the LLM -----------------------------------------------------------------------------------------------------


def build_llm(settings: Settings, *, model: str | None = None, temperature: float = 0.2,
              max_retries: int = 1) -> BaseLLM:
    """CrewAI's LLM for Ollama (OLLAMA_URL, ATELIER_CHAT_MODEL) through its native OpenAI-compatible provider.

    `provider="ollama"` selects CrewAI's OpenAICompatibleCompletion on Ollama's `/v1` endpoint (no LiteLLM).
    Nothing is contacted until the first call.
    """
    return LLM(model=model or settings.chat_model, provider="ollama", base_url=settings.ollama_url,
               temperature=temperature, max_retries=max_retries)


def explain_llm_error(exc: BaseException, llm: Any) -> LLMUnavailableError | None:
    """Our clear error for Ollama being down, a model not pulled or too slow (CrewAI says "OpenAI API"); else None."""
    return explain_ollama_error(exc, url=getattr(llm, "base_url", None), model=getattr(llm, "model", None))


async def run_crew(crew: Crew, inputs: dict[str, Any] | None = None) -> CrewOutput:
    """Kick the crew off in a worker thread (the studio's loop stays free for the tools); clear Ollama errors."""
    try:
        output = await asyncio.to_thread(crew.kickoff, inputs)
    except Exception as exc:
        llm = next((agent.llm for agent in crew.agents if agent.llm is not None), None)
        explained = explain_llm_error(exc, llm)
        if explained is None:
            raise
        raise explained from exc
    if not isinstance(output, CrewOutput):
        raise AtelierError("run_crew runs crews without stream=True; iterate a streaming crew's kickoff yourself")
    return output


def telemetry_disabled() -> bool:
    """Whether CrewAI's telemetry is off in this process (its own check, on its singleton)."""
    from crewai.telemetry import Telemetry

    telemetry = Telemetry()
    return not telemetry.ready and telemetry._is_telemetry_disabled()


# --- the content crew (integration-ideas §10: research → write → illustrate) ------------------------------------


@dataclass
class ContentResult:
    """What the content crew made: its research notes, the post, the illustrator's answer and the image jobs."""

    research: str
    post: str
    illustration: str
    images: list[JobInfo] = field(default_factory=list)
    calls: list[ToolCall] = field(default_factory=list)


@dataclass
class _Recorder:
    """Collects a crew's tool calls (thread-safe: CrewAI may run tool calls in parallel)."""

    calls: list[ToolCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, call: ToolCall) -> None:
        """Record one call."""
        with self.lock:
            self.calls.append(call)


def content_crew(ctx: ToolContext, llm: BaseLLM, *, loop: asyncio.AbstractEventLoop | None = None,
                 on_result: OnResult | None = None, verbose: bool = False) -> Crew:
    """A sequential crew: a researcher (search_documents), a writer, and an illustrator (generate_image).

    Kick it off with `inputs={"topic": ...}` (see `run_content_pipeline`).
    """
    research_tools = crew_tools(ctx, names=["search_documents"], loop=loop, on_result=on_result)
    image_tools = crew_tools(ctx, names=["generate_image"], loop=loop, on_result=on_result)
    common: dict[str, Any] = {"llm": llm, "allow_delegation": False, "verbose": verbose, "max_iter": 6}
    researcher = Agent(
        role="Researcher", goal="Find what the studio's documents say about {topic}, with sources.",
        backstory="You research in the studio's own documents before anyone writes; you cite every source and "
                  "never invent facts.", tools=research_tools, **common)
    writer = Agent(
        role="Writer", goal="Write a clear, engaging blog post about {topic} from the research.",
        backstory="You write concise posts for the studio's blog, grounded in the research you are given.",
        tools=[], **common)
    illustrator = Agent(
        role="Illustrator", goal="Make the header image for the post about {topic}.",
        backstory="You turn a post into one vivid, concrete image prompt and generate it on the studio's ComfyUI.",
        tools=image_tools, **common)
    research = Task(
        description="Search the studio's documents (search_documents) for {topic}. List the key facts, each with "
                    "its source.", expected_output="A bullet list of facts, each with its source.", agent=researcher)
    writing = Task(
        description="Write a short blog post about {topic} from the research: a title, an introduction, two or "
                    "three sections and a conclusion, in Markdown.",
        expected_output="The blog post in Markdown.", agent=writer, context=[research])
    illustration = Task(
        description="Generate one header image for the post with generate_image: a detailed prompt describing "
                    "the scene, style and lighting. Answer with the image file path and the job id.",
        expected_output="The image file path (or link), the job id and the prompt used.", agent=illustrator,
        context=[writing])
    return Crew(agents=[researcher, writer, illustrator], tasks=[research, writing, illustration],
                process=Process.sequential, verbose=verbose, tracing=False, share_crew=False, cache=False)


async def run_content_pipeline(ctx: ToolContext, llm: BaseLLM, topic: str, *, verbose: bool = False) -> ContentResult:
    """Research, write and illustrate a post about `topic` with the content crew (call on the studio's loop)."""
    recorder = _Recorder()
    crew = content_crew(ctx, llm, on_result=recorder, verbose=verbose)
    output = await run_crew(crew, {"topic": topic})
    texts = [task.raw for task in output.tasks_output]
    images = [call.result for call in recorder.calls if isinstance(call.result, JobInfo) and call.result.images]
    return ContentResult(research=texts[0], post=texts[1], illustration=texts[2], images=images,
                         calls=list(recorder.calls))
