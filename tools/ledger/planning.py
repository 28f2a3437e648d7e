"""Turn a job request into what the ledger stores: the resolved workflow, fixed seed, cache key and estimates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.comfyui.templates import WorkflowTemplate, random_seed, required_models
from tools.errors import WorkflowError
from tools.generate import resolve_workflow
from tools.gpu.holdings import model_keys
from tools.ledger.models import JobRequest
from tools.settings import Settings

__all__ = ["PlannedJob", "cache_key", "plan_job"]


@dataclass(frozen=True)
class PlannedJob:
    """A request made concrete: everything a worker needs, and what it will likely cost."""

    workflow: str
    params: dict[str, Any]
    cache_key: str
    vram_gb: float
    estimated_seconds: float | None
    estimated_cost: float | None
    models: tuple[str, ...] = ()


def _file_digest(path: str) -> str | None:
    """sha256 of a local input image, so a changed file is a different job; None when it is not a local file."""
    local = Path(path).expanduser()
    if not local.is_file():
        return None
    return hashlib.sha256(local.read_bytes()).hexdigest()


def cache_key(template: WorkflowTemplate, params: dict[str, Any]) -> str:
    """Hash of the workflow's graph and every value sent to it (seed included): equal keys, equal images."""
    values = {key: value for key, value in params.items() if value is not None}
    if isinstance(values.get("input_image"), str):
        values["input_image_sha256"] = _file_digest(values["input_image"])
    blob = json.dumps({"workflow": template.name, "graph": template.graph_digest, "values": values}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _workflow_ref(requested: str | None, template: WorkflowTemplate) -> str:
    """What a worker resolves again: a file's absolute path when a file was given, else the name."""
    if requested and Path(requested).expanduser().is_file():
        return str(Path(requested).expanduser().resolve())
    return template.name


def plan_job(request: JobRequest, settings: Settings, template: WorkflowTemplate | None = None) -> PlannedJob:
    """Resolve the workflow (WorkflowError when it is unknown or broken), fix the seed, hash and estimate."""
    template = template or resolve_workflow(request.workflow, settings)
    params = request.params
    if "seed" in template.bindings and params.seed is None:
        params = params.model_copy(update={"seed": random_seed()})
    if params.input_image is not None and "input_image" not in template.bindings:
        raise WorkflowError(
            f"workflow '{template.name}' takes no input image; choose img2img or upscale, or drop the image"
        )
    values = params.model_dump(mode="json")
    entry = template.catalog
    images = params.batch_size or 1
    return PlannedJob(
        workflow=_workflow_ref(request.workflow, template),
        params=values,
        cache_key=cache_key(template, values),
        vram_gb=entry.vram_gb if entry else 0.0,
        estimated_seconds=entry.typical_seconds * images if entry else None,
        estimated_cost=entry.cost_per_image * images if entry else None,
        models=model_keys(required_models(template)),
    )
