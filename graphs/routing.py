"""Cheap routing first: clear intents are recognised by rules; only ambiguous requests cost an LLM call.

A request that matches no intent is a plain question (answered with exactly one LLM call). A request that
matches several intents with equal strength is ambiguous and goes to one structured-output call.
"""

from __future__ import annotations

import re

from atelier.graphs.state import Intent

__all__ = ["RULES", "classify"]

# Each intent: patterns and their weight. Word boundaries keep "draw" from matching "drawer".
RULES: dict[Intent, list[tuple[re.Pattern[str], int]]] = {
    "plan": [
        (re.compile(r"\b(showcase|campaign|product shots?|shot list|series of (images|pictures|photos))\b"), 3),
        (re.compile(r"\b(hero|lifestyle|detail|thumbnail)\b.*\b(hero|lifestyle|detail|thumbnail)\b"), 3),
        (re.compile(r"\bplan\b"), 1),
    ],
    "generate": [
        (re.compile(r"\b(generate|render|draw|paint|sketch)\b"), 2),
        (re.compile(r"\b(make|create|give me)\b.{0,20}\b(image|picture|photo|illustration|poster|logo)s?\b"), 2),
        (re.compile(r"^(an?|the)\b.{0,60}\b(in the style of|watercolou?r|oil painting|photo(graph)?)\b"), 1),
    ],
    "illustrate": [
        (re.compile(r"\b(show me|let me see|what does .{1,60} look like|illustrate|visuali[sz]e)\b"), 2),
        (re.compile(r"\bimagine\b"), 1),
    ],
    "retrieve": [
        (re.compile(r"\b(according to|in (our|the) (docs|documents|guide|notes|manual))\b"), 3),
        (re.compile(r"\b(brand guide|style guide|our docs|knowledge base|ingested)\b"), 2),
        (re.compile(r"\b(find|search|look up)\b.{0,30}\b(documents?|notes?)\b"), 2),
    ],
    "images": [
        (re.compile(r"\b(find|search|look up|show me)\b.{0,30}\b(earlier|previous|my|similar|options)\b.{0,30}"
                    r"\b(images?|pictures?|photos?|designs?|logos?)\b"), 3),
        (re.compile(r"\b(designs?|images?|options|pictures?) (similar to|like my)\b"), 3),
    ],
    "edit": [
        (re.compile(r"\b(edit|retouch)\b.{0,30}\b(image|picture|photo)\b"), 3),
    ],
    "cost": [
        (re.compile(r"\b(how much|cost|price|budget|how long|vram|gpu time|which workflow)\b"), 2),
    ],
}


def scores(text: str) -> dict[Intent, int]:
    """The weight of every intent whose rules match `text`."""
    lowered = " ".join(text.lower().split())
    found: dict[Intent, int] = {}
    for intent, rules in RULES.items():
        weight = sum(w for pattern, w in rules if pattern.search(lowered))
        if weight:
            found[intent] = weight
    return found


def classify(text: str) -> Intent | None:
    """The intent rules recognise; "answer" when none match; None when it is ambiguous (ask the LLM)."""
    found = scores(text)
    if not found:
        return "answer"
    ranked = sorted(found.items(), key=lambda item: -item[1])
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]
