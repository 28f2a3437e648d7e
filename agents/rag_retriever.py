"""RAG retriever: answers from the person's documents with numbered citations, illustrated when asked (the same call
describes the picture, agents/illustrated_answer.py)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from atelier.agents.illustrated_answer import answer_with_picture
from atelier.agents.image_prompt import PictureBrief
from atelier.agents.llm import Meter, call_llm
from atelier.agents.prompts import PICTURE_BLOCK, RAG_SYSTEM
from atelier.tools.memory.records import DocumentHit
from atelier.tools.memory.store import MemoryStore

__all__ = ["DocumentAnswer", "answer_from_documents", "format_passages"]


@dataclass
class DocumentAnswer:
    """The reply (with its sources), the passages it came from, and its picture when one was asked for."""

    reply: AIMessage
    hits: list[DocumentHit]
    picture: PictureBrief | None = None


def format_passages(hits: list[DocumentHit]) -> str:
    """Numbered passages with their sources, for the prompt."""
    return "\n\n".join(f"[{i}] {hit.citation()}\n{hit.text}" for i, hit in enumerate(hits, start=1))


async def answer_from_documents(llm: BaseChatModel, memory: MemoryStore | None, question: str, owner: str,
                                meter: Meter, k: int = 4, *, unavailable: str | None = None,
                                picture_of: str | None = None) -> DocumentAnswer:
    """One LLM call over the best passages; without a memory or passages, say so without calling the model.

    `unavailable` is why the memory could not be opened: the reply says it instead of "found nothing". With
    `picture_of` (what the person asked to see) the same call also describes a picture of what the answer says.
    """
    if memory is None and unavailable:
        return DocumentAnswer(AIMessage(f"I cannot read your documents right now: {unavailable}"), [])
    hits = await asyncio.to_thread(memory.search_documents, question, owner, k) if memory is not None else []
    if not hits:
        return DocumentAnswer(AIMessage("I found nothing about that in your documents (ingest them with "
                                        "`atelier ingest`)."), [])
    system = RAG_SYSTEM.format(passages=format_passages(hits))
    picture = None
    if picture_of is None:
        reply = await call_llm(llm, [SystemMessage(system), HumanMessage(question)], meter)
    else:
        made = await answer_with_picture(llm, [HumanMessage(question)], picture_of, meter,
                                         system=f"{system}\n\n{PICTURE_BLOCK}")
        reply, picture = made.reply, made.picture
    sources = "\n".join(f"[{i}] {hit.citation()}" for i, hit in enumerate(hits, start=1))
    return DocumentAnswer(AIMessage(f"{reply.content}\n\nSources:\n{sources}", usage_metadata=reply.usage_metadata),
                          hits, picture)
