"""RAG retriever: answers from the person's documents with numbered citations, and finds reusable images."""

from __future__ import annotations

import asyncio

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from atelier.agents.llm import Meter, call_llm
from atelier.agents.prompts import RAG_SYSTEM
from atelier.tools.memory.records import DocumentHit
from atelier.tools.memory.store import MemoryStore

__all__ = ["answer_from_documents", "format_passages"]


def format_passages(hits: list[DocumentHit]) -> str:
    """Numbered passages with their sources, for the prompt."""
    return "\n\n".join(f"[{i}] {hit.citation()}\n{hit.text}" for i, hit in enumerate(hits, start=1))


async def answer_from_documents(llm: BaseChatModel, memory: MemoryStore | None, question: str, owner: str,
                                meter: Meter, k: int = 4, *,
                                unavailable: str | None = None) -> tuple[AIMessage, list[DocumentHit]]:
    """One LLM call over the best passages; without a memory or passages, say so without calling the model.

    `unavailable` is why the memory could not be opened: the reply says it instead of "found nothing".
    """
    if memory is None and unavailable:
        return AIMessage(f"I cannot read your documents right now: {unavailable}"), []
    hits = await asyncio.to_thread(memory.search_documents, question, owner, k) if memory is not None else []
    if not hits:
        return AIMessage("I found nothing about that in your documents (ingest them with `atelier ingest`)."), []
    reply = await call_llm(llm, [SystemMessage(RAG_SYSTEM.format(passages=format_passages(hits))),
                                 HumanMessage(question)], meter)
    sources = "\n".join(f"[{i}] {hit.citation()}" for i, hit in enumerate(hits, start=1))
    return AIMessage(f"{reply.content}\n\nSources:\n{sources}", usage_metadata=reply.usage_metadata), hits
