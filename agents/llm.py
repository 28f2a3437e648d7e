"""The agents' chat model (ChatOllama) and metered calls that turn Ollama failures and answers that do not fit
their schema into clear messages."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from pydantic import BaseModel, ValidationError

from atelier.tools.errors import AtelierError
from atelier.tools.service_errors import LLMUnavailableError, explain_ollama_error
from atelier.tools.settings import Settings

__all__ = ["Hop", "LLMUnavailableError", "Meter", "StructuredOutputError", "build_chat_model", "call_llm",
           "call_structured"]

T = TypeVar("T", bound=BaseModel)


def build_chat_model(settings: Settings, model: str | None = None) -> BaseChatModel:
    """ChatOllama on OLLAMA_URL with the configured model (nothing is contacted until the first call)."""
    from langchain_ollama import ChatOllama

    return ChatOllama(model=model or settings.chat_model, base_url=settings.ollama_url, temperature=0.2)


class Hop(TypedDict):
    """One agent step: who acted, how many LLM calls and tokens it spent, and how long it took."""

    agent: str
    llm_calls: int
    prompt_tokens: int
    output_tokens: int
    seconds: float


@dataclass
class Meter:
    """Counts one agent's LLM calls, tokens and time, and turns them into a Hop."""

    agent: str
    calls: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    started: float = field(default_factory=time.perf_counter)

    def record(self, message: BaseMessage) -> None:
        """Add one call and its token usage (when the model reports it)."""
        self.calls += 1
        usage = getattr(message, "usage_metadata", None) or {}
        self.prompt_tokens += int(usage.get("input_tokens", 0))
        self.output_tokens += int(usage.get("output_tokens", 0))

    def hop(self) -> Hop:
        """The finished hop."""
        return Hop(agent=self.agent, llm_calls=self.calls, prompt_tokens=self.prompt_tokens,
                   output_tokens=self.output_tokens, seconds=round(time.perf_counter() - self.started, 4))


def _explain(exc: BaseException, llm: BaseChatModel) -> LLMUnavailableError | None:
    """A clear error for Ollama being down, a model not pulled or no answer in time; None for other errors."""
    return explain_ollama_error(exc, url=getattr(llm, "base_url", None), model=getattr(llm, "model", None))


async def call_llm(llm: BaseChatModel, messages: Sequence[BaseMessage], meter: Meter) -> AIMessage:
    """One metered call; LLMUnavailableError naming the fix when Ollama cannot answer."""
    try:
        reply = await llm.ainvoke(list(messages))
    except Exception as exc:
        explained = _explain(exc, llm)
        if explained is None:
            raise
        raise explained from exc
    meter.record(reply)
    return reply if isinstance(reply, AIMessage) else AIMessage(content=str(reply.content))


class StructuredOutputError(AtelierError):
    """The model's answer did not fit the schema asked for, on the first try and on the one retry."""


# What a structured call can fail with when the model's answer does not fit: the parser's own error (ChatOllama wraps
# pydantic's and JSON's in OutputParserException), or a ValidationError / JSONDecodeError from models that do not.
_MISFIT = (OutputParserException, ValidationError, json.JSONDecodeError)


async def call_structured(llm: BaseChatModel, schema: type[T], messages: Sequence[BaseMessage], meter: Meter) -> T:
    """A metered structured-output call (the model answers with JSON matching `schema`).

    An answer that does not fit is asked for once more, with what was wrong and the schema's fields; a second misfit
    raises StructuredOutputError naming the problem. Every try is metered.
    """
    asked = list(messages)
    problem = ""
    for attempt in (1, 2):
        raw, parsed = await _structured_once(llm, schema, asked, meter)
        try:
            if isinstance(parsed, BaseException):
                raise parsed
            return parsed if isinstance(parsed, schema) else schema.model_validate(parsed)
        except _MISFIT as exc:
            problem = _misfit(exc)
        if attempt == 1:
            asked = [*asked, AIMessage(content=raw), HumanMessage(_retry_text(schema, problem))]
    raise StructuredOutputError(f"the model's answer did not fit: {problem}; tried twice")


async def _structured_once(llm: BaseChatModel, schema: type[T], messages: list[BaseMessage],
                           meter: Meter) -> tuple[str, Any]:
    """One metered try: the raw answer's text and what was parsed from it (the parsing error when it failed)."""
    runnable = llm.with_structured_output(schema, include_raw=True)
    try:
        result: Any = await runnable.ainvoke(messages)
    except _MISFIT as exc:  # a model that raises instead of reporting `parsing_error`
        meter.record(AIMessage(content=""))
        return "", exc
    except Exception as exc:
        explained = _explain(exc, llm)
        if explained is None:
            raise
        raise explained from exc
    if not isinstance(result, dict):
        meter.record(AIMessage(content=""))
        return "", result
    raw = result.get("raw")
    meter.record(raw if isinstance(raw, BaseMessage) else AIMessage(content=""))
    text = raw.content if isinstance(raw, BaseMessage) and isinstance(raw.content, str) else ""
    error = result.get("parsing_error")
    return text, error if isinstance(error, BaseException) else result.get("parsed")


def _misfit(exc: BaseException) -> str:
    """What was wrong with an answer, for a person and for the model: pydantic's problems (up to three) as
    `where: what`, or the JSON error."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ValidationError | json.JSONDecodeError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ValidationError):
        problems = []
        for error in cause.errors()[:3]:
            where = ".".join(str(part) for part in error.get("loc", ()))
            problems.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
        return "; ".join(problems) or "it did not match the schema"
    if isinstance(cause, json.JSONDecodeError):
        return f"it was not valid JSON ({cause.msg} at line {cause.lineno} column {cause.colno})"
    return str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__


def _retry_text(schema: type[BaseModel], problem: str) -> str:
    """The message that asks the model again: what was wrong, and the fields the answer must have."""
    fields = ", ".join(f"{name}{'' if field.is_required() else ' (optional)'}"
                       for name, field in schema.model_fields.items())
    return (f"Your answer did not fit the required JSON schema {schema.__name__}: {problem}. Answer again with only "
            f"a JSON object with the fields: {fields}.")
