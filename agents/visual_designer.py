"""Visual designer: turns a brief into prompt, negative prompt and values (with the person's style memory), written
for the route's model family (agents/image_prompt.py) and fitted to the route's workflow."""

from __future__ import annotations

import logging

from pydantic import BaseModel, Field

from atelier.agents.cost_router import RouteChoice
from atelier.agents.image_prompt import BASE_NEGATIVE, PRODUCT_LOOKS, PictureBrief, write_prompt
from atelier.agents.planner import Brief
from atelier.tools.comfyui.direct import resolve_workflow
from atelier.tools.comfyui.fitting import fit_params
from atelier.tools.comfyui.prompt_style import prompt_style_of
from atelier.tools.comfyui.templates import WorkflowTemplate, load_workflow
from atelier.tools.ledger.models import JobRequest
from atelier.tools.memory.style import StyleProfile
from atelier.tools.prompts.models import ChosenPrompt
from atelier.tools.prompts.templating import PromptTemplateError
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings

__all__ = ["BASE_NEGATIVE", "PROMPT_VARIABLES", "PURPOSE_LOOK", "Design", "design_image", "picture_of"]

log = logging.getLogger(__name__)

# What each purpose asks of the picture (integration-ideas §7: hero, lifestyle, detail, thumbnail) and its size. The
# looks are what a library prompt's `look` reads; the built-in prompt adds them to product purposes only.
PURPOSE_LOOK: dict[str, tuple[str, tuple[int, int]]] = {
    "hero": (PRODUCT_LOOKS["hero"][0], (1024, 1024)),
    "lifestyle": (PRODUCT_LOOKS["lifestyle"][0], (1024, 768)),
    "detail": (PRODUCT_LOOKS["detail"][0], (768, 768)),
    "thumbnail": (PRODUCT_LOOKS["thumbnail"][0], (512, 512)),
    "product": (PRODUCT_LOOKS["product"][0], (1024, 1024)),
    "illustration": ("illustration, coherent style", (768, 768)),
}


class Design(BaseModel):
    """A brief made concrete: the request for the ledger and why it looks like this."""

    brief: Brief
    route: RouteChoice
    params: GenerationParams
    style_used: list[str]
    prompt_ref: ChosenPrompt | None = None
    fitted: list[str] = Field(default_factory=list,
                              description="What was changed so the route's workflow takes it (size, values left out).")

    def job_request(self, owner: str, key: str) -> JobRequest:
        """The ledger request (idempotent under `key`)."""
        return JobRequest(params=self.params, workflow=self.route.workflow, owner=owner, idempotency_key=key)


# What a library prompt's template can read when the designer renders it.
PROMPT_VARIABLES = ("subject", "notes", "look", "purpose", "style")


def picture_of(brief: Brief) -> PictureBrief:
    """What the brief's picture shows: as its answer described it, else its subject with the notes as setting."""
    return brief.picture or PictureBrief.of(brief.subject.strip() or brief.purpose, brief.notes)


def design_image(brief: Brief, route: RouteChoice, style: StyleProfile | None = None, *, max_modifiers: int = 3,
                 seed: int | None = None, chosen: ChosenPrompt | None = None,
                 template_seconds: float | None = None, template: WorkflowTemplate | None = None,
                 settings: Settings | None = None) -> Design:
    """Write the prompt for the workflow's model family (agents/image_prompt.py: sentences or weighted tags) from
    what the picture shows (`picture_of`), with the purpose's look for product purposes only and the person's
    best-liked modifiers, and a negative prompt (with the disliked ones) only when the workflow has a negative
    input; fit the values to the route's workflow.

    With a library prompt (`chosen`), its template is rendered with PROMPT_VARIABLES instead, in a rendering
    worker within `template_seconds` (settings.template_seconds; this call blocks its thread meanwhile, so async
    callers run it in one); the liked modifiers are appended unless the template places `style` itself. A
    template that needs a variable the designer lacks (and has no default for), or fails or overruns in the
    sandbox, falls back to the built-in prompt, with a warning, and the image counts for neither that
    prompt nor its A/B arm.

    The purpose's size and the negative prompt are then fitted to the workflow (tools/comfyui/fitting.py
    `fit_params`): only the values it takes, a size it accepts with the purpose's aspect ratio, its recommended
    steps and CFG, within the server's step and batch caps; `Design.fitted` says what changed. The workflow is
    `template`, else `route.workflow` as the ledger resolves it with `settings` (its user folder), else as shipped.
    """
    look, (width, height) = PURPOSE_LOOK.get(brief.purpose.lower(), PURPOSE_LOOK["illustration"])
    liked = [phrase for phrase, _ in (style.liked_modifiers if style else [])][:max_modifiers]
    disliked = [phrase for phrase, _ in (style.disliked_modifiers if style else [])][:max_modifiers]
    if template is None:
        template = resolve_workflow(route.workflow, settings) if settings else load_workflow(route.workflow)
    prompt: str | None = None
    negative: str | None = None
    version = chosen.version if chosen is not None else None
    if chosen is not None and version is not None:
        values = {"subject": brief.subject.strip(), "notes": brief.notes.strip(), "look": look,
                  "purpose": brief.purpose, "style": ", ".join(liked)}
        try:
            rendered = version.render(values, seconds=template_seconds)
        except PromptTemplateError as exc:
            log.warning("library prompt %s not used: %s", version.ref, exc)
            chosen = None  # the image did not get this prompt (nor its A/B arm): record no use
        else:
            extra = [] if "style" in version.variable_names() else liked
            prompt = ", ".join(dict.fromkeys(p for p in [rendered, *extra] if p))
            negative = ", ".join([version.negative or BASE_NEGATIVE, *disliked])  # fitting drops it without input
    if prompt is None:
        written = write_prompt(picture_of(brief), brief.purpose, prompt_style_of(template), liked=liked,
                               disliked=disliked, negative_input="negative" in template.bindings)
        prompt, negative = written.prompt, written.negative
    params = GenerationParams(prompt=prompt, negative=negative, width=width, height=height, seed=seed)
    fitted = fit_params(template, params, max_steps=settings.max_steps if settings else None,
                        max_batch_size=settings.max_batch_size if settings else None)
    used = chosen if chosen is not None and (chosen.version is not None or chosen.ab_test is not None) else None
    return Design(brief=brief, route=route, params=fitted.params, style_used=liked, prompt_ref=used,
                  fitted=list(fitted.notes))
