"""Cost/VRAM router: picks the workflow by purpose, urgency, live VRAM and budget, and says why and what it costs."""

from __future__ import annotations

from pydantic import BaseModel

from tools.catalog import choose_workflow
from tools.comfyui.templates import WorkflowTemplate
from tools.errors import WorkflowError

__all__ = ["RouteChoice", "choose_route", "purpose_key"]

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
                 budget: float | None = None) -> RouteChoice:
    """The catalog's best workflow for the purpose within VRAM and budget; explains the choice."""
    use_case = purpose_key(purpose or "") if purpose else None
    try:
        template = choose_workflow(purpose=use_case, urgency=urgency, vram_free_gb=vram_free_gb)
    except WorkflowError:
        if use_case is None:
            raise
        template = choose_workflow(urgency=urgency, vram_free_gb=vram_free_gb)  # no workflow for that purpose
    template = _within_budget(template, budget, vram_free_gb)
    entry = template.catalog
    assert entry is not None
    vram = f"{vram_free_gb:g} GB free" if vram_free_gb is not None else "VRAM unknown"
    reason = (f"{template.name}: {entry.quality} quality, ~{entry.typical_seconds:g} s and {entry.cost_per_image:g} "
              f"per image, needs {entry.vram_gb:g} GB ({vram}), {urgency} urgency"
              + (f", within a budget of {budget:g}" if budget is not None else ""))
    return RouteChoice(workflow=template.name, reason=reason, seconds=entry.typical_seconds,
                       cost=entry.cost_per_image, vram_gb=entry.vram_gb)


def _within_budget(template: WorkflowTemplate, budget: float | None, vram_free_gb: float | None) -> WorkflowTemplate:
    """The chosen template, or the cheapest that fits when it costs more than the budget."""
    if budget is None or template.catalog is None or template.catalog.cost_per_image <= budget:
        return template
    cheapest = choose_workflow(urgency="immediate", vram_free_gb=vram_free_gb)
    if cheapest.catalog is not None and cheapest.catalog.cost_per_image > budget:
        raise WorkflowError(f"no workflow costs {budget:g} or less per image; the cheapest, {cheapest.name}, costs "
                            f"{cheapest.catalog.cost_per_image:g}")
    return cheapest
