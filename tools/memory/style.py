"""Style memory: what a person rated well (and badly), distilled into modifiers the visual designer can reuse."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from pydantic import BaseModel, Field

from atelier.tools.memory.records import ImageRecord

__all__ = ["StyleProfile", "build_profile", "liking"]


class StyleProfile(BaseModel):
    """A person's taste as their ratings show it."""

    owner: str
    rated: int = Field(description="How many of their images carry a rating or a thumb.")
    liked_modifiers: list[tuple[str, float]] = Field(default_factory=list, description="(phrase, weight), best first.")
    disliked_modifiers: list[tuple[str, float]] = Field(default_factory=list)
    liked_workflows: list[tuple[str, float]] = Field(default_factory=list)
    best_prompts: list[str] = Field(default_factory=list, description="Prompts of their best-rated images.")


def liking(record: ImageRecord) -> float:
    """+2…-2 from stars (3 is neutral) and ±1.5 from a thumb; 0 when unrated."""
    score = 0.0
    if record.rating is not None:
        score += record.rating - 3
    if record.thumb is not None:
        score += 1.5 * record.thumb
    return score


def _modifiers(prompt: str) -> list[str]:
    """The comma-separated phrases after the subject: 'a fox, watercolor, soft light' → watercolor, soft light."""
    phrases = [p.strip().lower() for p in prompt.split(",")]
    return [p for p in phrases[1:] if p]


def _top(weights: dict[str, float], limit: int) -> list[tuple[str, float]]:
    """The heaviest entries, heaviest first (ties by name)."""
    return sorted(weights.items(), key=lambda item: (-item[1], item[0]))[:limit]


def build_profile(owner: str, records: Iterable[ImageRecord], limit: int = 10) -> StyleProfile:
    """Weigh every modifier and workflow by how much the person liked the images that used it."""
    liked: defaultdict[str, float] = defaultdict(float)
    disliked: defaultdict[str, float] = defaultdict(float)
    workflows: defaultdict[str, float] = defaultdict(float)
    scored: list[tuple[float, str]] = []
    rated = 0
    for record in records:
        score = liking(record)
        if record.rating is None and record.thumb is None:
            continue
        rated += 1
        for phrase in _modifiers(record.prompt):
            if score > 0:
                liked[phrase] += score
            elif score < 0:
                disliked[phrase] += -score
        if score > 0:
            workflows[record.workflow] += score
            scored.append((score, record.prompt))
    scored.sort(key=lambda item: -item[0])
    return StyleProfile(
        owner=owner, rated=rated, liked_modifiers=_top(liked, limit),
        disliked_modifiers=_top(disliked, limit), liked_workflows=_top(workflows, limit),
        best_prompts=list(dict.fromkeys(prompt for _, prompt in scored))[:limit],
    )
