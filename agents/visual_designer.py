"""Visual designer: turns a brief into prompt, negative prompt and values (with the person's style memory)."""

from __future__ import annotations

from pydantic import BaseModel

from agents.cost_router import RouteChoice
from agents.planner import Brief
from tools.ledger.models import JobRequest
from tools.memory.style import StyleProfile
from tools.schemas import GenerationParams

__all__ = ["BASE_NEGATIVE", "PURPOSE_LOOK", "Design", "design_image"]

BASE_NEGATIVE = "blurry, low quality, watermark, text, deformed"
# What each purpose asks of the picture (integration-ideas §7: hero, lifestyle, detail, thumbnail).
PURPOSE_LOOK: dict[str, tuple[str, tuple[int, int]]] = {
    "hero": ("hero shot, centred product, clean background, studio lighting", (1024, 1024)),
    "lifestyle": ("lifestyle scene, in use, natural light, shallow depth of field", (1024, 768)),
    "detail": ("macro close-up, texture detail, soft side light", (768, 768)),
    "thumbnail": ("simple composition, bold shapes, readable at small size", (512, 512)),
    "illustration": ("illustration, coherent style", (768, 768)),
}


class Design(BaseModel):
    """A brief made concrete: the request for the ledger and why it looks like this."""

    brief: Brief
    route: RouteChoice
    params: GenerationParams
    style_used: list[str]

    def job_request(self, owner: str, key: str) -> JobRequest:
        """The ledger request (idempotent under `key`)."""
        return JobRequest(params=self.params, workflow=self.route.workflow, owner=owner, idempotency_key=key)


def design_image(brief: Brief, route: RouteChoice, style: StyleProfile | None = None, *, max_modifiers: int = 3,
                 seed: int | None = None) -> Design:
    """Compose the prompt: subject, notes, the purpose's look and the person's best-liked modifiers."""
    look, (width, height) = PURPOSE_LOOK.get(brief.purpose.lower(), PURPOSE_LOOK["illustration"])
    liked = [phrase for phrase, _ in (style.liked_modifiers if style else [])][:max_modifiers]
    disliked = [phrase for phrase, _ in (style.disliked_modifiers if style else [])][:max_modifiers]
    parts = [brief.subject.strip(), brief.notes.strip(), look, *liked]
    prompt = ", ".join(dict.fromkeys(p for p in parts if p))
    negative = ", ".join([BASE_NEGATIVE, *disliked])
    params = GenerationParams(prompt=prompt, negative=negative, width=width, height=height, seed=seed)
    return Design(brief=brief, route=route, params=params, style_used=liked)
