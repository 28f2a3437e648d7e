"""Cost/VRAM router: picks the workflow by purpose, urgency, live VRAM and budget, and says why and what it costs."""

from __future__ import annotations

from pydantic import BaseModel

from tools.catalog import choose_workflow, list_templates
from tools.comfyui.templates import WorkflowTemplate
from tools.errors import WorkflowError

__all__ = ["QUALITIES", "RouteChoice", "choose_route", "purpose_key"]

QUALITIES = ("fast", "medium", "high")

_PURPOSES = {"hero": "hero_images", "lifestyle": "product_shots", "detail": "product_shots",
             "thumbnail": "thumbnails", "illustration": "illustration"}


class RouteChoice(BaseModel):
    """The workflow chosen for one image, with the reasons and the estimate."""

    workflow: str
    reason: str
    seconds: float
    cost: float
    vram_gb: float


def purpose_key(purpose: str) -> str | None:
    """The catalog use case a brief's purpose maps to (None: any)."""
    return _PURPOSES.get(purpose.strip().lower())


def choose_route(purpose: str | None, *, urgency: str = "standard", vram_free_gb: float | None = None,
                 budget: float | None = None, quality: str | None = None,
                 workflow: str | None = None) -> RouteChoice:
    """The catalog's best workflow for the purpose within VRAM and budget; explains the choice.

    A person's choice narrows it: `workflow` names one outright, `quality` keeps the catalog's tier (fast,
    medium, high).
    """
    if workflow:
        return _explain(_named(workflow), vram_free_gb, "chosen by you", budget)
    use_case = purpose_key(purpose or "") if purpose else None
    pool = _of_quality(quality) if quality else None
    try:
        template = choose_workflow(purpose=use_case, urgency=urgency, vram_free_gb=vram_free_gb, templates=pool)
    except WorkflowError:
        if use_case is None:
            raise
        # no workflow for that purpose
        template = choose_workflow(urgency=urgency, vram_free_gb=vram_free_gb, templates=pool)
    template = _within_budget(template, budget, vram_free_gb)
    return _explain(template, vram_free_gb, f"{urgency} urgency", budget)


def _explain(template: WorkflowTemplate, vram_free_gb: float | None, why: str, budget: float | None) -> RouteChoice:
    """The route for a template, with its estimate and the reasons in words."""
    entry = template.catalog
    if entry is None:
        raise WorkflowError(f"workflow '{template.name}' has no catalog entry (cost, time, VRAM); add one to its "
                            ".meta.json or pick a catalog workflow (`atelier workflows`)")
    vram = f"{vram_free_gb:g} GB free" if vram_free_gb is not None else "VRAM unknown"
    reason = (f"{template.name}: {entry.quality} quality, ~{entry.typical_seconds:g} s and {entry.cost_per_image:g} "
              f"per image, needs {entry.vram_gb:g} GB ({vram}), {why}"
              + (f", within a budget of {budget:g}" if budget is not None else ""))
    return RouteChoice(workflow=template.name, reason=reason, seconds=entry.typical_seconds,
                       cost=entry.cost_per_image, vram_gb=entry.vram_gb)


def _named(name: str) -> WorkflowTemplate:
    """A catalog workflow by name."""
    templates = {t.name: t for t in list_templates().templates}
    if name not in templates:
        raise WorkflowError(f"unknown workflow '{name}'; choose one of: {', '.join(sorted(templates))}")
    return templates[name]


def _of_quality(quality: str) -> list[WorkflowTemplate]:
    """The catalog's workflows of one quality tier."""
    level = quality.strip().lower()
    if level not in QUALITIES:
        raise WorkflowError(f"unknown quality '{quality}'; use one of: {', '.join(QUALITIES)}")
    return [t for t in list_templates().templates if t.catalog is not None and t.catalog.quality == level]


def _within_budget(template: WorkflowTemplate, budget: float | None, vram_free_gb: float | None) -> WorkflowTemplate:
    """The chosen template, or the cheapest that fits when it costs more than the budget."""
    if budget is None or template.catalog is None or template.catalog.cost_per_image <= budget:
        return template
    cheapest = choose_workflow(urgency="immediate", vram_free_gb=vram_free_gb)
    if cheapest.catalog is not None and cheapest.catalog.cost_per_image > budget:
        raise WorkflowError(f"no workflow costs {budget:g} or less per image; the cheapest, {cheapest.name}, costs "
                            f"{cheapest.catalog.cost_per_image:g}")
    return cheapest
