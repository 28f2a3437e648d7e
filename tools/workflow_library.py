"""The workflows one installation lists and routes between: shipped ones, the user's folders, and their models_config.

Every front end and agent that lists workflows or picks one goes through `load_library(settings)`, so a workflow
in ATELIER_WORKFLOWS_DIR (with a catalog entry or not) and the figures of ATELIER_MODELS_CONFIG are seen the same
way everywhere; `resolve_effective` gives the ledger and the workers the same catalog entry for one workflow.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from atelier.tools.catalog import TemplateListing, list_templates
from atelier.tools.comfyui.direct import resolve_workflow
from atelier.tools.comfyui.templates import WorkflowTemplate
from atelier.tools.models_config import (
    ModelMapping,
    ModelsConfig,
    ModelsConfigError,
    apply_mappings,
    load_models_config,
    map_models,
)
from atelier.tools.settings import Settings

__all__ = ["WorkflowLibrary", "build_library", "load_library", "resolve_effective"]

log = logging.getLogger(__name__)


@dataclass
class WorkflowLibrary:
    """The workflows found (catalog entries with the models config applied), what could not be loaded, and the
    config with each model's workflow."""

    templates: list[WorkflowTemplate] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    config: ModelsConfig | None = None
    config_file: Path | None = None
    mappings: dict[str, ModelMapping] = field(default_factory=dict)

    def names(self) -> list[str]:
        """The workflows' names, in listing order."""
        return [t.name for t in self.templates]

    def get(self, name: str) -> WorkflowTemplate | None:
        """One workflow by name (None when there is none)."""
        return next((t for t in self.templates if t.name == name), None)

    def model_of(self, workflow: str) -> str | None:
        """The models_config model that maps to this workflow, if any."""
        return next((m.model for m in self.mappings.values() if m.workflow == workflow), None)


def build_library(listing: TemplateListing, config: ModelsConfig | None = None, config_file: Path | None = None
                  ) -> WorkflowLibrary:
    """A library from a listing and an optional models config (ModelsConfigError when a model maps to nothing)."""
    if config is None:
        return WorkflowLibrary(list(listing.templates), list(listing.errors))
    mappings = map_models(config, listing.templates, str(config_file or "models_config.json"))
    return WorkflowLibrary(apply_mappings(listing.templates, mappings), list(listing.errors), config, config_file,
                           mappings)


def load_library(settings: Settings) -> WorkflowLibrary:
    """Shipped workflows, those in the settings' folders and the settings' models_config.json (ModelsConfigError
    naming the key and the fix when that file is bad)."""
    listing = list_templates(settings.workflow_dirs)
    file = settings.models_config_file
    config = load_models_config(file) if file is not None else None
    return build_library(listing, config, file)


def resolve_effective(ref: str | None, settings: Settings) -> WorkflowTemplate:
    """`resolve_workflow` with the catalog entry the models config gives that workflow (the same the router saw).

    A models config that has become unreadable is logged and left out here (the workflow keeps its sidecar's
    entry): jobs already planned still run, while routing and listings report the file's problem."""
    template = resolve_workflow(ref, settings)
    if settings.models_config_file is None:
        return template
    try:
        library = load_library(settings)
    except ModelsConfigError as exc:
        log.warning("workflow %s uses its own catalog entry: %s", template.name, exc)
        return template
    listed = library.get(template.name)
    if listed is None or listed.source != template.source or listed.catalog == template.catalog:
        return template
    return template.model_copy(update={"catalog": listed.catalog})
