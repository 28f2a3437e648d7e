"""A scripted chat model for graph tests: replies in order, records every call, supports structured output."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import BaseModel, Field, PrivateAttr


class ScriptedChatModel(BaseChatModel):
    """Answers each call with the next scripted reply (text, or a dict for structured output: one that does not fit
    the schema, such as {"briefs": []}, fails as a real model's misfit does)."""

    replies: list[str | dict[str, Any]] = Field(default_factory=list)
    _calls: list[list[BaseMessage]] = PrivateAttr(default_factory=list)

    @property
    def _llm_type(self) -> str:
        """LangChain's type tag."""
        return "scripted"

    @property
    def calls(self) -> list[list[BaseMessage]]:
        """The messages of every call so far."""
        return self._calls

    def _next(self, messages: Sequence[BaseMessage]) -> AIMessage:
        """Pop the next reply as an AIMessage with token usage."""
        self._calls.append(list(messages))
        if not self.replies:
            raise AssertionError(f"unexpected LLM call #{len(self._calls)}: {messages[-1].content!r}")
        reply = self.replies.pop(0)
        content = json.dumps(reply) if isinstance(reply, dict) else reply
        prompt_tokens = sum(len(str(m.content).split()) for m in messages)
        return AIMessage(content=content, usage_metadata={"input_tokens": prompt_tokens,
                                                          "output_tokens": len(content.split()),
                                                          "total_tokens": prompt_tokens + len(content.split())})

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None, **kwargs: Any) -> ChatResult:
        """One scripted reply."""
        return ChatResult(generations=[ChatGeneration(message=self._next(messages))])

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any) -> Runnable[Any, Any]:
        """Parse the next scripted reply into `schema` as ChatOllama does (langchain's PydanticOutputParser).

        A reply that does not fit (a dict the schema refuses, or text that is not JSON) fails as with ChatOllama:
        with `include_raw` the result carries `parsed=None` and the `parsing_error`; without, the parser raises.
        """
        parser: Any = PydanticOutputParser(pydantic_object=schema) if isinstance(schema, type) and issubclass(
            schema, BaseModel) else JsonOutputParser()

        def run(messages: Any) -> Any:
            raw = self._next(messages if isinstance(messages, list) else messages.to_messages())
            if not include_raw:
                return parser.parse(str(raw.content))
            try:
                return {"raw": raw, "parsed": parser.parse(str(raw.content)), "parsing_error": None}
            except OutputParserException as exc:
                return {"raw": raw, "parsed": None, "parsing_error": exc}

        return RunnableLambda(run)


class StreamingScriptedChatModel(ScriptedChatModel):
    """A scripted model that streams each text reply in pieces of `chunk_chars`, its token usage in the last chunk
    (as ChatOllama streams Ollama's reply)."""

    chunk_chars: int = 3

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        """The next scripted reply, a few characters at a time."""
        reply = self._next(messages)
        text = str(reply.content)
        for start in range(0, len(text), self.chunk_chars):
            yield ChatGenerationChunk(message=AIMessageChunk(content=text[start:start + self.chunk_chars]))
        yield ChatGenerationChunk(message=AIMessageChunk(content="", usage_metadata=reply.usage_metadata))
