"""Cost/VRAM router: picks the workflow by purpose, urgency, live VRAM and budget, and says why and what it costs."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from atelier.tools.catalog import choose_workflow, list_templates
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.errors import WorkflowError

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
                 budget: float | None = None, quality: str | None = None, workflow: str | None = None,
                 target_seconds: float | None = None, measured: Mapping[str, float] | None = None) -> RouteChoice:
    """The catalog's best workflow for the purpose within VRAM and budget; explains the choice.

    A person's choice narrows it: `workflow` names one outright, `quality` keeps the catalog's tier (fast,
    medium, high). With `target_seconds`, slower choices step down a quality tier at a time until one fits
    (adaptive quality). Times are the measured averages (`measured`, by workflow name) where a workflow has run,
    else the catalog's guess.
    """
    seen = dict(measured or {})
    if workflow:
        return _explain(_named(workflow), vram_free_gb, "chosen by you", budget, seen)
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
    why = f"{urgency} urgency"
    if target_seconds is not None and _seconds(template, seen) > target_seconds:
        template, why = _within_time(template, target_seconds, vram_free_gb, seen)
    return _explain(template, vram_free_gb, why, budget, seen)


def _seconds(template: WorkflowTemplate, measured: Mapping[str, float]) -> float:
    """A workflow's expected seconds: measured when it has run, else the catalog's guess."""
    entry = template.catalog
    return measured.get(template.name, entry.typical_seconds if entry else float("inf"))


def _within_time(template: WorkflowTemplate, target: float, vram_free_gb: float | None,
                 measured: Mapping[str, float]) -> tuple[WorkflowTemplate, str]:
    """Step down quality tiers (same task, VRAM permitting) to the best workflow expected within `target` s."""
    entry = template.catalog
    assert entry is not None
    lower = [(t, t.catalog) for t in list_templates().templates
             if t.catalog is not None and t.catalog.task == entry.task
             and t.catalog.quality_rank < entry.quality_rank
             and (vram_free_gb is None or t.catalog.vram_gb <= vram_free_gb)]
    lower.sort(key=lambda pair: (-pair[1].quality_rank, _seconds(pair[0], measured)))
    for candidate, _ in lower:
        if _seconds(candidate, measured) <= target:
            return candidate, (f"stepped down from {template.name} ({_seconds(template, measured):.3g} s) to fit a "
                               f"target of {target:g} s")
    fastest = min([template, *(t for t, _ in lower)], key=lambda t: _seconds(t, measured))
    return fastest, f"no workflow fits a target of {target:g} s; this is the fastest"


def _explain(template: WorkflowTemplate, vram_free_gb: float | None, why: str, budget: float | None,
             measured: Mapping[str, float]) -> RouteChoice:
    """The route for a template, with its estimate and the reasons in words."""
    entry = template.catalog
    if entry is None:
        raise WorkflowError(f"workflow '{template.name}' has no catalog entry (cost, time, VRAM); add one to its "
                            ".meta.json or pick a catalog workflow (`atelier workflows`)")
    seconds = _seconds(template, measured)
    timing = f"~{seconds:.3g} s measured" if template.name in measured else f"~{seconds:g} s"
    vram = f"{vram_free_gb:g} GB free" if vram_free_gb is not None else "VRAM unknown"
    reason = (f"{template.name}: {entry.quality} quality, {timing} and {entry.cost_per_image:g} "
              f"per image, needs {entry.vram_gb:g} GB ({vram}), {why}"
              + (f", within a budget of {budget:g}" if budget is not None else ""))
    return RouteChoice(workflow=template.name, reason=reason, seconds=round(seconds, 3),
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
