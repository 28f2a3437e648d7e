"""Image prompts written for the model that draws them: sentences for Qwen-Image-like models, weighted tags for SD.

`write_prompt(picture, purpose, style, ...)` turns what the picture shows (`PictureBrief`: subject, setting, mood)
into the prompt and negative prompt its workflow's model family wants (tools/comfyui/prompt_style.py says which):

- "natural" (Qwen-Image, Flux, …): full sentences, no weights — "A grey heron catching a fish in shallow water at
  the edge of a reed marsh. Calm, soft morning light."
- "tags" (SD1.5, SDXL): the subject weighted, then setting, mood and light as tags — "(grey heron catching a
  fish:1.2), shallow water at the edge of a reed marsh, calm, soft morning light".

Only product purposes (hero, lifestyle, detail, thumbnail, product) add their studio "look" (in each family's
form); an illustration shows the scene as described. A negative prompt is written only for a workflow that has a
negative input; the sentence family's leaves out "text", which Qwen-Image is asked to draw (posters, labels).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import BaseModel, Field

from atelier.tools.comfyui.catalog_entry import PromptStyle

__all__ = ["BASE_NEGATIVE", "NATURAL_NEGATIVE", "PRODUCT_LOOKS", "PictureBrief", "WrittenPrompt", "is_product",
           "write_prompt"]

BASE_NEGATIVE = "blurry, low quality, watermark, text, deformed"
NATURAL_NEGATIVE = "blurry, low quality, watermark, deformed"
SUBJECT_WEIGHT = 1.2
FIELD_CHARS = 300  # the most of one PictureBrief field kept (the model's words; a prompt stays short)

# Product purposes and their look: (tags, sentence). Integration-ideas §7: hero, lifestyle, detail, thumbnail.
PRODUCT_LOOKS: dict[str, tuple[str, str]] = {
    "hero": ("hero shot, centred product, clean background, studio lighting",
             "A hero shot: the product centred on a clean background, in studio lighting."),
    "lifestyle": ("lifestyle scene, in use, natural light, shallow depth of field",
                  "A lifestyle scene with the product in use, in natural light with a shallow depth of field."),
    "detail": ("macro close-up, texture detail, soft side light",
               "A macro close-up of its texture and detail, in soft side light."),
    "thumbnail": ("simple composition, bold shapes, readable at small size",
                  "A simple composition with bold shapes that reads well at a small size."),
    "product": ("product photo, centred product, clean background, studio lighting",
                "A product photograph: the product centred on a clean background, in studio lighting."),
}
_PREPOSITIONS = ("in", "on", "at", "under", "near", "by", "beside", "among", "inside", "over", "above", "below",
                 "against", "through", "across", "along", "behind", "within", "around", "into", "from")
_NEUTRAL = ("in", "on", "at", "inside", "within")  # a tag drops these ("in shallow water" → "shallow water")
_WEIGHTED = re.compile(r"\([^()]*:\s*\d+(\.\d+)?\s*\)")
_ARTICLE = re.compile(r"^(a|an|the)\s+", re.I)


class PictureBrief(BaseModel):
    """What one picture shows: its subject, where it is, its mood and light (each a short phrase)."""

    subject: str = Field(..., min_length=1, description="The main subject doing something visible.")
    setting: str = Field("", description="Where it is, in a few words.")
    mood: str = Field("", description="The mood and light, in a few words.")

    @classmethod
    def of(cls, subject: str, setting: str = "", mood: str = "") -> PictureBrief:
        """A brief from the model's free text: one line each, markdown bold and quotes dropped, cut to FIELD_CHARS."""
        return cls(subject=_clean(subject), setting=_clean(setting), mood=_clean(mood))


@dataclass(frozen=True)
class WrittenPrompt:
    """A prompt and its negative (None: the workflow has no negative input)."""

    prompt: str
    negative: str | None


def is_product(purpose: str) -> bool:
    """Whether `purpose` is a product shot (it gets a studio look)."""
    return purpose.strip().lower() in PRODUCT_LOOKS


def write_prompt(picture: PictureBrief, purpose: str, style: PromptStyle, *, liked: Sequence[str] = (),
                 disliked: Sequence[str] = (), negative_input: bool = True) -> WrittenPrompt:
    """The prompt for `picture` in `style`, with the purpose's look (products only) and the liked modifiers; the
    negative prompt (with the disliked ones) only when `negative_input`."""
    look = PRODUCT_LOOKS.get(purpose.strip().lower())
    if style == "tags":
        prompt = _tags(picture, look[0] if look else "", liked)
        negative = ", ".join([BASE_NEGATIVE, *disliked])
    else:
        prompt = _sentences(picture, look[1] if look else "", liked)
        negative = ", ".join([NATURAL_NEGATIVE, *disliked])
    return WrittenPrompt(prompt=prompt, negative=negative if negative_input else None)


def _clean(text: str) -> str:
    """One line, single spaces, at most FIELD_CHARS characters (cut at a word)."""
    flat = " ".join(text.replace("**", "").split()).strip(" \"'`")
    if len(flat) <= FIELD_CHARS:
        return flat
    return flat[:FIELD_CHARS].rsplit(" ", 1)[0]


def _sentence(text: str) -> str:
    """`text` as a sentence: first letter capitalised, one full stop."""
    text = text.strip().rstrip(" .;,:")
    return f"{text[:1].upper()}{text[1:]}." if text else ""


def _joined(subject: str, setting: str) -> str:
    """Subject and setting in one clause: 'a heron in shallow water', 'a cup, dark walnut table'."""
    subject, setting = subject.strip().rstrip(" .;,"), setting.strip().rstrip(" .;,")
    if not setting:
        return subject
    first = setting.split(" ", 1)[0].lower()
    return f"{subject} {setting}" if first in _PREPOSITIONS else f"{subject}, {setting}"


def _sentences(picture: PictureBrief, look: str, liked: Sequence[str]) -> str:
    """The natural-language prompt: what is where, its mood and light, then the look and the liked style."""
    parts = [_sentence(_joined(picture.subject, picture.setting)), _sentence(picture.mood), look]
    if liked:
        parts.append(_sentence("Style: " + ", ".join(liked)))
    return " ".join(p for p in parts if p)


def _escaped(text: str) -> str:
    """Tag text with literal parentheses escaped (a weight someone wrote, '(fox:1.3)', is kept as written)."""
    return text if _WEIGHTED.search(text) else text.replace("(", r"\(").replace(")", r"\)")


def _tags(picture: PictureBrief, look: str, liked: Sequence[str]) -> str:
    """The tag prompt: the weighted subject (no leading article), the setting (without a leading 'in', 'on' or
    'at'), the mood and light split into tags, the look, the liked style."""
    subject = _ARTICLE.sub("", picture.subject.strip().rstrip(" .;,")) or picture.subject.strip()
    subject = subject if _WEIGHTED.search(subject) else f"({_escaped(subject)}:{SUBJECT_WEIGHT})"
    setting = picture.setting.strip().rstrip(" .;,")
    first, _, rest = setting.partition(" ")
    if first.lower() in _NEUTRAL and rest:
        setting = rest
    tags = [subject, _escaped(setting), *(_escaped(t) for t in re.split(r"[,;]|\band\b", picture.mood)), look,
            *liked]
    return ", ".join(dict.fromkeys(t.strip(" .") for t in tags if t.strip(" .")))
