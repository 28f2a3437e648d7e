"""Which workflows a ComfyUI server can run now: the model files each needs against the files the server has.

A workflow needs the files its loader nodes name (`graph_check.required_models`); the server lists what it has
per folder (`GET /models/{folder}`, through tools/comfyui/model_inventory.py, which the router uses too). A
missing file is reported with its folder and, when the workflow's catalog entry names it in `model_files`, its
size and where to download it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from atelier.tools.comfyui.graph_check import required_models
from atelier.tools.comfyui.model_inventory import ModelInventory, fetch_inventory, folders_of, missing_on
from atelier.tools.comfyui.template_models import WorkflowTemplate

__all__ = ["MissingFile", "ServerReadiness", "WorkflowReadiness", "check_server", "workflow_readiness"]


@dataclass(frozen=True)
class MissingFile:
    """A model file a workflow needs and the server lacks: where it goes and where to get it."""

    folder: str
    name: str
    size_gb: float | None = None
    url: str | None = None

    def describe(self) -> str:
        """'models/<folder>/<name> (20.4 GB, from <url>)'."""
        extra = [f"{self.size_gb:g} GB" if self.size_gb is not None else "", f"from {self.url}" if self.url else ""]
        details = ", ".join(part for part in extra if part)
        return f"models/{self.folder}/{self.name}" + (f" ({details})" if details else "")


@dataclass(frozen=True)
class WorkflowReadiness:
    """One workflow on one server: ready, or the files it lacks."""

    workflow: str
    missing: list[MissingFile] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        """Whether every model file it needs is on the server."""
        return not self.missing


@dataclass
class ServerReadiness:
    """One server's answer: the workflows it can run now and those it cannot (or why it could not be asked)."""

    url: str
    workflows: list[WorkflowReadiness] = field(default_factory=list)
    error: str | None = None

    @property
    def ready(self) -> list[str]:
        """Names of the workflows it can run now."""
        return [w.workflow for w in self.workflows if w.ready]

    @property
    def not_ready(self) -> list[WorkflowReadiness]:
        """The workflows it lacks files for."""
        return [w for w in self.workflows if not w.ready]


def workflow_readiness(template: WorkflowTemplate, installed: ModelInventory) -> WorkflowReadiness:
    """Compare what `template` loads with the files `installed` lists per folder."""
    known = {(f.folder, f.name): f for f in (template.catalog.model_files if template.catalog else [])}
    missing = []
    for folder, name in missing_on(required_models(template), installed):
        entry = known.get((folder, name))
        missing.append(MissingFile(folder, name, entry.size_gb if entry else None, entry.url if entry else None))
    return WorkflowReadiness(template.name, missing)


async def check_server(url: str, templates: Sequence[WorkflowTemplate], *, timeout: float = 5.0) -> ServerReadiness:
    """Ask one server for its model files and say which of `templates` it can run now."""
    installed = await fetch_inventory(url, folders_of(templates), timeout=timeout)
    if installed is None:
        return ServerReadiness(url, error="it did not answer GET /models/{folder}")
    return ServerReadiness(url, [workflow_readiness(t, installed) for t in templates])
