"""A routing request read from a person's words: how many images, for what, how urgent, free VRAM and budget.

"urgent thumbnail", "a hero image with 16 GB free", "10 social media posts under $0.5" — the cost agent and
`atelier workflows --explain` read requests this way (no LLM call).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel

__all__ = ["PURPOSE_WORDS", "RouteRequest", "parse_route_request"]

# Purposes a request can name (besides the models config's by_purpose keys).
PURPOSE_WORDS = ("hero", "lifestyle", "detail", "thumbnail", "social media", "preview")

_IMMEDIATE = re.compile(r"\b(urgent(ly)?|asap|fast|quick(ly)?|now|immediate(ly)?|right away|rush)\b", re.I)
_FLEXIBLE = re.compile(r"\b(no rush|no hurry|whenever|flexible|take your time|best (possible )?quality)\b", re.I)
_COUNT = re.compile(r"\b(\d{1,4})\s+(?:[a-z-]+\s+){0,2}?(?:images?|pictures?|photos?|thumbnails?|previews?|posts?|"
                    r"renders?|shots?|illustrations?|banners?)\b", re.I)
_VRAM = re.compile(r"(\d+(?:\.\d+)?)\s*gb\b", re.I)
_BUDGET = re.compile(r"(?:budget (?:of )?|under |below |at most |max(?:imum)? )\$?(\d+(?:\.\d+)?)", re.I)


class RouteRequest(BaseModel):
    """What a request asks of the router."""

    count: int = 1
    purpose: str | None = None
    urgency: str = "standard"
    vram_free_gb: float | None = None
    budget: float | None = None


def _phrase(purpose: str) -> re.Pattern[str]:
    """A purpose as a loose pattern: words joined by spaces, '_' or '-', an optional plural 's'."""
    words = [re.escape(w) for w in re.findall(r"[a-z0-9]+", purpose.casefold())]
    return re.compile(r"\b" + r"[\s_-]+".join(words) + r"s?\b", re.I)


def parse_route_request(text: str, purposes: Iterable[str] = ()) -> RouteRequest:
    """Read a request; `purposes` adds names to look for (a models config's by_purpose keys). The longest purpose
    named wins ("hero image" over "hero"); a "budget of N" is per request, so it is divided by the count."""
    count = int(match.group(1)) if (match := _COUNT.search(text)) else 1
    count = max(count, 1)
    named = sorted({*PURPOSE_WORDS, *(p.replace("_", " ") for p in purposes)}, key=len, reverse=True)
    purpose = next((p for p in named if _phrase(p).search(text)), None)
    urgency = "immediate" if _IMMEDIATE.search(text) else "flexible" if _FLEXIBLE.search(text) else "standard"
    vram = float(match.group(1)) if (match := _VRAM.search(text)) else None
    budget = float(match.group(1)) / count if (match := _BUDGET.search(text)) else None
    return RouteRequest(count=count, purpose=purpose, urgency=urgency, vram_free_gb=vram, budget=budget)
