"""RAG with images (integration-ideas §5): the earlier images most like a request, and briefs for new variations.

"Show me designs similar to minimalist tech branding" → the 10 most similar images from the memory (the caller's
and shared ones) beside 3 new variations made in the same turn. No LLM call: the memory finds the earlier images,
and each variation is a brief the designer turns into a prompt for its routed workflow (with the person's liked
style, as every design), led by one of the earlier images so the new ones stay near what the person made before.
"""

from __future__ import annotations

import asyncio
import re

from pydantic import BaseModel, Field

from atelier.agents.planner import Brief
from atelier.tools.memory.records import EarlierImage
from atelier.tools.memory.store import MemoryStore

__all__ = ["ImageOptions", "find_earlier", "options_subject", "options_text", "variation_briefs"]

# Words that ask for options rather than describe them (English and Portuguese), stripped to leave the subject.
_ASKING = re.compile(
    r"^\s*(please\s+|por favor\s*,?\s*)?"
    r"(show|find|give|fetch|get|bring|mostre|mostra|me mostre|encontre|ache|busque|procure|traga|quero ver|veja)"
    r"(\s+(me|us|-me))?\s+"
    r"((some|a few|my|our|the|any|minhas|meus|as|os|algumas|alguns|umas|uns)\s+)?"
    r"((earlier|previous|past|old|other|anteriores|antigas|antigos)\s+)?"
    r"((imagens|fotos|opções|opcoes|ideias|variações|variacoes|versões|versoes|desenhos|designs?|images?|pictures?|"
    r"photos?|options?|ideas?|variations?|versions?)\b)?\s*"
    r"((anteriores|antigas|antigos|passadas|passados)\s+)?"
    r"((similar to|similar|like|resembling|in the style of|of|with|parecid[oa]s? com|semelhantes? a|como|de|do|da|dos|"
    r"das|com)\b)?\s*",
    re.I)


class ImageOptions(BaseModel):
    """One turn's options: what was asked, the earlier images found, and how many new variations were asked for."""

    query: str
    earlier: list[EarlierImage] = Field(default_factory=list)
    variations: int = 0


def options_subject(text: str) -> str:
    """What the options should show: the request without the words that ask for options."""
    cleaned = text.strip().rstrip("?.!")
    subject = _ASKING.sub("", cleaned, count=1).strip(" ,:;-")
    return subject or cleaned


async def find_earlier(memory: MemoryStore | None, query: str, owner: str, k: int) -> list[EarlierImage]:
    """The `k` earlier images (the owner's and shared) most like `query`, best first; none without a memory."""
    if memory is None or k <= 0:
        return []
    hits = await asyncio.to_thread(memory.search_images, query, owner, k)
    return [EarlierImage.of(hit) for hit in hits]


def variation_briefs(subject: str, earlier: list[EarlierImage], count: int) -> list[Brief]:
    """`count` briefs for new variations of `subject`: the first is a fresh take, each next one is led by the next
    most similar earlier image (so the set spans what the person made before); none when `count` is 0."""
    briefs = []
    for index in range(count):
        lead = earlier[index - 1] if 0 < index <= len(earlier) else None
        notes = f"a variation on an earlier image: {lead.caption or lead.prompt}" if lead is not None else ""
        briefs.append(Brief(purpose="illustration", subject=subject, notes=notes[:400]))
    return briefs


def options_text(options: ImageOptions, memory_problem: str | None = None, shown: int = 10) -> str:
    """The reply that goes with the grid: the earlier images found (best first) and the variations being made."""
    if memory_problem:
        head = f"I cannot search your earlier images right now: {memory_problem}."
    elif not options.earlier:
        head = f"I found no earlier image like “{options.query}”."
    else:
        lines = [f"- {image.caption or image.prompt} ({image.score:.2f}, job {image.job_id[:8]})"
                 for image in options.earlier[:shown]]
        more = f"\n…and {len(options.earlier) - shown} more" if len(options.earlier) > shown else ""
        head = f"{len(options.earlier)} earlier image(s) like “{options.query}”, most similar first:\n" + \
            "\n".join(lines) + more
    tail = (f"\nMaking {options.variations} new variation(s) beside them." if options.variations
            else "\nNo new variations were asked for.")
    return head + tail
