"""Design an image for its route's workflow and check it at once, with the checks its job meets later (the ledger's
planning, the worker's render), so nothing approved can fail for its values."""

from __future__ import annotations

from atelier.agents.cost_router import RouteChoice
from atelier.agents.planner import Brief
from atelier.agents.visual_designer import Design, design_image
from atelier.tools.comfyui.templates import WorkflowTemplate, render
from atelier.tools.errors import AtelierError, WorkflowError
from atelier.tools.ledger.planning import PlannedJob, plan_job
from atelier.tools.memory.style import StyleProfile
from atelier.tools.prompts.models import ChosenPrompt
from atelier.tools.schemas import GenerationParams
from atelier.tools.settings import Settings

__all__ = ["DesignError", "check_design", "planned_design"]


class DesignError(WorkflowError):
    """A planned image its workflow would refuse: names the image, the workflow and the value."""


def _refused(brief: Brief, workflow: str, number: int, exc: AtelierError) -> DesignError:
    """The error for image `number`: which image, which workflow, and the refusal (which names the value)."""
    subject = brief.subject if len(brief.subject) <= 60 else brief.subject[:57] + "…"
    return DesignError(f"image {number} ({brief.purpose}: {subject}) cannot be made with workflow '{workflow}': {exc}")


def check_design(design: Design, template: WorkflowTemplate, settings: Settings, *, owner: str, key: str,
                 number: int) -> PlannedJob:
    """Plan the design's job as the ledger will (under `owner` and idempotency `key`) and render it as the worker
    will; DesignError naming image `number`, its workflow and the refused value otherwise. Nothing is stored."""
    try:
        planned = plan_job(design.job_request(owner, key), settings, template)
        render(template, GenerationParams.model_validate(planned.params))
    except AtelierError as exc:
        raise _refused(design.brief, template.name, number, exc) from exc
    return planned


def planned_design(brief: Brief, route: RouteChoice, template: WorkflowTemplate, settings: Settings, *, owner: str,
                   key: str, number: int, style: StyleProfile | None = None,
                   chosen: ChosenPrompt | None = None) -> Design:
    """Image `number` designed for `template` (the route's workflow as the ledger resolves it) and checked
    (`check_design`); DesignError naming the image, the workflow and the value when it cannot be made."""
    try:
        design = design_image(brief, route, style, chosen=chosen, template_seconds=settings.template_seconds,
                              template=template, settings=settings)
    except WorkflowError as exc:  # the workflow's limits admit no value (tools/comfyui/fitting.py FitError)
        raise _refused(brief, template.name, number, exc) from exc
    check_design(design, template, settings, owner=owner, key=key, number=number)
    return design
