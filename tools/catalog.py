"""The workflow catalog: what each workflow is for, what it costs, and which one to pick for a request.

Every catalog fact lives in the `catalog` object of a workflow's `NAME.meta.json` sidecar (the model is
tools/comfyui/catalog_entry.py, re-exported here; tools/comfyui/templates.py has the whole sidecar format); this
module only lists and ranks them.

Routing (`choose_workflow`), in the spirit of a model router:

1. Only workflows with a catalog entry and the requested `task` (default "txt2img") take part.
2. VRAM is a hard limit: a workflow whose `vram_gb` exceeds `vram_free_gb` is never chosen.
3. `purpose` keeps the workflows that list it in `use_cases` (case, spaces, hyphens and a plural
   "s" do not matter: "Hero image" matches "hero_images"). A purpose no workflow serves is an error.
4. `urgency` ranks what is left:
   - "immediate": the fastest (`typical_seconds`), the better quality first on a tie;
   - "standard" (the default): the best quality that typically finishes within 120 s, else the fastest;
   - "flexible": the best quality whatever the time, the faster first on a tie.
   Quality tiers rank fast < medium < high < ultra.

The agents' router (agents/cost_router.py) ranks the same way, with reasons for every workflow it passes over,
after the user's models_config.json `routing_rules` (tools/models_config.py); it also routes between workflows
without a catalog entry, whose task `task_of` reads off their graph (`infer_task`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atelier.tools.comfyui.catalog_entry import QUALITY_ORDER, CatalogEntry, Quality, normalize_purpose
from atelier.tools.comfyui.templates import SHIPPED_DIR, WorkflowTemplate, discover_workflows, load_workflow
from atelier.tools.errors import WorkflowError

__all__ = [
    "QUALITY_ORDER",
    "URGENCIES",
    "WORKFLOW_NAME_PATTERN",
    "CatalogEntry",
    "Quality",
    "TemplateListing",
    "choose_workflow",
    "infer_task",
    "list_templates",
    "normalize_purpose",
    "require_workflow_name",
    "task_of",
]

# Urgency → the longest typical run it prefers to wait for (None: any).
URGENCIES: dict[str, float | None] = {"immediate": 0.0, "standard": 120.0, "flexible": None}


@dataclass
class TemplateListing:
    """Every workflow found, plus one message per file that could not be loaded (those are skipped)."""

    templates: list[WorkflowTemplate] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def names(self) -> list[str]:
        """The names of the loaded workflows, in listing order."""
        return [t.name for t in self.templates]


def list_templates(search_dirs: Sequence[Path] = ()) -> TemplateListing:
    """Load the shipped workflows and those in `search_dirs`; broken files go to `errors`, never raise.

    A user folder's `NAME.json` replaces a shipped workflow of the same name. Shipped workflows come
    first, then user ones, each group by name.
    """
    listing = TemplateListing()
    for folder in search_dirs:
        if not Path(folder).expanduser().is_dir():
            listing.errors.append(f"workflows folder {folder} does not exist; create it or fix ATELIER_WORKFLOWS_DIR")
    found = discover_workflows(search_dirs)
    order = sorted(found, key=lambda name: (found[name].parent != SHIPPED_DIR, name))
    for name in order:
        try:
            listing.templates.append(load_workflow(str(found[name])))
        except WorkflowError as exc:
            listing.errors.append(str(exc))
    return listing


# Node classes that bring an image into a graph (a workflow with one takes an input image).
_IMAGE_INPUT_NODES = ("LoadImage", "LoadImageMask", "LoadImageOutput")


def infer_task(template: WorkflowTemplate) -> str:
    """The task of a workflow without a catalog entry, read off its graph: img2img when it takes an input image
    (an `input_image` binding or a LoadImage node), else txt2img."""
    if "input_image" in template.bindings:
        return "img2img"
    classes = {node.get("class_type") for node in template.graph.values() if isinstance(node, dict)}
    return "img2img" if classes & set(_IMAGE_INPUT_NODES) else "txt2img"


def task_of(template: WorkflowTemplate) -> str:
    """A workflow's task: its catalog entry's, else the one inferred from its graph (`infer_task`)."""
    return template.catalog.task if template.catalog is not None else infer_task(template)


def _eligible(templates: Sequence[WorkflowTemplate], task: str) -> list[WorkflowTemplate]:
    """Templates with a catalog entry for this task."""
    chosen = [t for t in templates if t.catalog is not None and t.catalog.task == task.strip().lower()]
    if not chosen:
        tasks = sorted({t.catalog.task for t in templates if t.catalog is not None})
        raise WorkflowError(
            f"no catalogued workflow does the task '{task}'; known tasks: {', '.join(tasks) or 'none'} "
            "(add a `catalog` with this `task` to a workflow's .meta.json sidecar)"
        )
    return chosen


def _entry(template: WorkflowTemplate) -> CatalogEntry:
    """The catalog entry of a template already known to have one."""
    assert template.catalog is not None
    return template.catalog


def _by_purpose(templates: list[WorkflowTemplate], purpose: str | None) -> list[WorkflowTemplate]:
    """Templates whose use cases include `purpose` (all when None); an error when none does."""
    if purpose is None or not purpose.strip():
        return templates
    chosen = [t for t in templates if _entry(t).serves(purpose)]
    if not chosen:
        known = sorted({case for t in templates for case in _entry(t).use_cases})
        raise WorkflowError(
            f"no workflow is catalogued for the purpose '{purpose}'; known purposes: {', '.join(known)}"
        )
    return chosen


def _by_vram(templates: list[WorkflowTemplate], vram_free_gb: float | None, wanted: str) -> list[WorkflowTemplate]:
    """Templates that fit in `vram_free_gb` (all when None); an error naming the smallest need otherwise."""
    if vram_free_gb is None:
        return templates
    chosen = [t for t in templates if _entry(t).vram_gb <= vram_free_gb]
    if not chosen:
        smallest = min(templates, key=lambda t: _entry(t).vram_gb)
        raise WorkflowError(
            f"no workflow for {wanted} fits in {vram_free_gb:g} GB of free VRAM: the smallest, '{smallest.name}', "
            f"needs {_entry(smallest).vram_gb:g} GB; free GPU memory (unload other models)"
            + (" or drop the purpose" if " purpose " in wanted else "")
        )
    return chosen


def _rank(templates: list[WorkflowTemplate], urgency: str) -> WorkflowTemplate:
    """The best template for this urgency (see the module docstring)."""
    fastest = min(templates, key=lambda t: (_entry(t).typical_seconds, -_entry(t).quality_rank, t.name))
    if urgency == "immediate":
        return fastest
    limit = URGENCIES[urgency]
    within = [t for t in templates if limit is None or _entry(t).typical_seconds <= limit]
    if not within:
        return fastest
    return max(within, key=lambda t: (_entry(t).quality_rank, -_entry(t).typical_seconds, t.name))


def choose_workflow(
    *,
    purpose: str | None = None,
    urgency: str | None = None,
    vram_free_gb: float | None = None,
    task: str = "txt2img",
    templates: Sequence[WorkflowTemplate] | None = None,
) -> WorkflowTemplate:
    """Pick the workflow for a request by task, purpose, urgency and free VRAM; WorkflowError when none fits.

    `templates` defaults to the shipped catalog; pass `list_templates([user_dir]).templates` to include
    user workflows whose sidecars carry a catalog entry.
    """
    level = (urgency or "standard").strip().lower()
    if level not in URGENCIES:
        raise WorkflowError(f"unknown urgency '{urgency}'; use one of: {', '.join(URGENCIES)}")
    pool = list(templates) if templates is not None else list_templates().templates
    wanted = f"{task}" + (f" with the purpose '{purpose}'" if purpose else "")
    candidates = _by_vram(_by_purpose(_eligible(pool, task), purpose), vram_free_gb, wanted)
    return _rank(candidates, level)


# A workflow as callers name it: the catalog name (its file's stem), never a path or a file name.
WORKFLOW_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,99}$"
_WORKFLOW_NAME = re.compile(WORKFLOW_NAME_PATTERN)


def require_workflow_name(workflow: str | None) -> None:
    """Refuse anything but a catalog name (a path, a file name, odd characters): the one check every front end,
    the ledger and the agents use for a workflow someone named."""
    if workflow is None:
        return
    if "/" in workflow or "\\" in workflow or workflow.lower().endswith((".json", ".png")):
        raise WorkflowError(f"workflow {workflow!r} is a file path; name a workflow from the catalog (GET /workflows, "
                            "the list_workflows tool, `atelier workflows`); your own workflows go in "
                            "ATELIER_WORKFLOWS_DIR on the server")
    if not _WORKFLOW_NAME.fullmatch(workflow):
        raise WorkflowError(f"workflow {workflow[:80]!r} is not a workflow name (letters, digits, spaces, '.', '_' and "
                            "'-', at most 100); name one from the catalog (GET /workflows, `atelier workflows`)")
