"""The agents' chat model (ChatOllama) and a metered call that turns Ollama failures into clear messages."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from pydantic import BaseModel

from atelier.tools.service_errors import LLMUnavailableError, explain_ollama_error
from atelier.tools.settings import Settings

__all__ = ["Hop", "LLMUnavailableError", "Meter", "build_chat_model", "call_llm", "call_structured"]

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


async def call_structured(llm: BaseChatModel, schema: type[T], messages: Sequence[BaseMessage], meter: Meter) -> T:
    """One metered structured-output call (the model answers with JSON matching `schema`)."""
    runnable = llm.with_structured_output(schema, include_raw=True)
    try:
        result: Any = await runnable.ainvoke(list(messages))
    except Exception as exc:
        explained = _explain(exc, llm)
        if explained is None:
            raise
        raise explained from exc
    raw = result.get("raw") if isinstance(result, dict) else None
    meter.record(raw if isinstance(raw, BaseMessage) else AIMessage(content=""))
    parsed = result.get("parsed") if isinstance(result, dict) else result
    if isinstance(parsed, schema):
        return parsed
    return schema.model_validate(parsed)
