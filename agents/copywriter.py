"""Copywriter: a caption and marketing copy for every image of a showcase, and a headline, in ONE structured call.

When the call fails (Ollama down, an answer that does not fit the schema) or leaves images out, those images get
captions written from their shot briefs instead (`brief_copy`), and `CopyResult.note` says so: the gallery is
made either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage, SystemMessage
from pydantic import BaseModel, Field

from atelier.agents.llm import LLMUnavailableError, Meter, StructuredOutputError, call_structured
from atelier.agents.prompts import COPYWRITER_SYSTEM

__all__ = ["CopyResult", "ImageCopy", "Shot", "ShowcaseCopy", "brief_copy", "write_copy"]

# How much of the brief and of each shot the model is shown (a brief is a person's text, not a document).
_BRIEF_CHARS = 4000
_SHOT_CHARS = 400


class ImageCopy(BaseModel):
    """The words for one image."""

    image: int = Field(..., ge=1, description="The image's number in the list.")
    caption: str = Field(..., min_length=1, max_length=160, description="A short title for the image.")
    marketing_copy: str = Field(..., min_length=1, max_length=800,
                                description="One to three sentences selling the product as this image shows it.")


class ShowcaseCopy(BaseModel):
    """The copywriter's answer: a headline and the words for every image."""

    headline: str = Field(..., min_length=1, max_length=160, description="A headline for the whole gallery.")
    images: list[ImageCopy] = Field(..., min_length=1, max_length=64)


@dataclass(frozen=True)
class Shot:
    """One image to write for: its number, purpose, subject and notes (from the plan)."""

    number: int
    purpose: str
    subject: str
    notes: str = ""


@dataclass
class CopyResult:
    """The words for each shot (by number), the headline, who wrote them, and what went wrong (empty: nothing)."""

    by_number: dict[int, ImageCopy]
    headline: str
    written_by: dict[int, str] = field(default_factory=dict)
    note: str = ""


def _clip(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def brief_copy(shot: Shot) -> ImageCopy:
    """Words from the shot's brief alone (no model): the subject as the caption, purpose and notes as the copy."""
    subject = _clip(shot.subject, 150) or shot.purpose
    caption = subject[:1].upper() + subject[1:]
    notes = _clip(shot.notes, 600)
    copy = f"{shot.purpose.capitalize()} image: {subject}" + (f" ({notes})" if notes else "") + "."
    return ImageCopy(image=shot.number, caption=caption, marketing_copy=copy[:800])


def _request(brief: str, shots: Sequence[Shot]) -> str:
    """The user message: the brief, then the numbered images."""
    lines = [f"{s.number}. {_clip(s.purpose, 40)}: {_clip(s.subject, _SHOT_CHARS)}"
             + (f" ({_clip(s.notes, _SHOT_CHARS)})" if s.notes.strip() else "") for s in shots]
    return f"Product brief:\n{_clip(brief, _BRIEF_CHARS)}\n\nImages:\n" + "\n".join(lines)


def _fallback_headline(brief: str) -> str:
    """A headline from the brief's first words."""
    return _clip(brief, 80) or "Product showcase"


async def write_copy(llm: BaseChatModel, brief: str, shots: Sequence[Shot], meter: Meter) -> CopyResult:
    """One structured call for every shot; brief-made words (and a note saying why) for what the model did not give.

    Never raises for the model's sake: Ollama unreachable, an answer that does not fit ShowcaseCopy, or one that
    leaves images out all end in brief-made words for those images.
    """
    if not shots:
        return CopyResult(by_number={}, headline=_fallback_headline(brief), note="")
    messages = [SystemMessage(COPYWRITER_SYSTEM), HumanMessage(_request(brief, shots))]
    try:
        answer: ShowcaseCopy | None = await call_structured(llm, ShowcaseCopy, messages, meter)
        problem = ""
    except LLMUnavailableError as exc:
        answer, problem = None, str(exc)
    except StructuredOutputError as exc:  # the answer did not fit, and neither did the one retry
        answer, problem = None, f"its answer did not fit ({_clip(str(exc), 200)})"
    wanted = {shot.number for shot in shots}
    given: dict[int, ImageCopy] = {}
    for item in answer.images if answer is not None else []:
        if item.image in wanted and item.image not in given:
            given[item.image] = item
    by_number = {shot.number: given.get(shot.number) or brief_copy(shot) for shot in shots}
    written_by = {number: "model" if number in given else "brief" for number in by_number}
    missing = sorted(wanted - set(given))
    if answer is None:
        note = f"Captions and copy come from the shot briefs: the copywriter model could not write them ({problem})."
    elif missing:
        listed = ", ".join(str(n) for n in missing)
        note = f"Captions and copy of image(s) {listed} come from their briefs: the model's answer left them out."
    else:
        note = ""
    headline = answer.headline.strip() if answer is not None and answer.headline.strip() else _fallback_headline(brief)
    return CopyResult(by_number=by_number, headline=headline, written_by=written_by, note=note)
