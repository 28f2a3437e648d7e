"""Turn a job request into what the ledger stores: the resolved workflow, fixed seed, cache key and estimates."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier.tools.catalog import require_workflow_name
from atelier.tools.comfyui.direct import check_params, images_of
from atelier.tools.comfyui.templates import WorkflowTemplate, random_seed, required_models
from atelier.tools.gpu.holdings import model_keys
from atelier.tools.inputs import resolve_input
from atelier.tools.ledger.models import JobRequest
from atelier.tools.settings import Settings
from atelier.tools.workflow_library import resolve_effective

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
    images: int = 1


def _file_digest(path: Path) -> str:
    """sha256 of a stored input image, so a changed file is a different job."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_key(template: WorkflowTemplate, params: dict[str, Any], input_path: Path | None = None, *,
              owner: str = "") -> str:
    """Hash of the owner, the workflow's graph and every value sent to it (seed included): equal keys, equal images.

    The owner is part of it, so the result cache never answers one person with another's image (whether a
    `cached: true` came back would tell them what someone else asked for).
    """
    values = {key: value for key, value in params.items() if value is not None}
    if input_path is not None:
        values["input_image_sha256"] = _file_digest(input_path)
    blob = json.dumps({"owner": owner, "workflow": template.name, "graph": template.graph_digest, "values": values},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def plan_job(request: JobRequest, settings: Settings, template: WorkflowTemplate | None = None) -> PlannedJob:
    """Check what the request names (a catalog workflow, a stored input image) and carries (key and priority
    bounds; values within the workflow's limits and the server's: `check_params`), resolve the workflow
    (WorkflowError when it is unknown or broken), fix the seed, hash and estimate.

    Every job any front end submits is planned here, so this is where the trust boundary's checks on values live:
    each refusal is a WorkflowError (422 on the job API) raised before anything is stored.
    """
    request.check_bounds()
    require_workflow_name(request.workflow)
    template = template or resolve_effective(request.workflow, settings)
    params = request.params
    input_path = None
    if params.input_image is not None:
        input_path = resolve_input(params.input_image, settings)
        params = params.model_copy(update={"input_image": input_path.name})
    check_params(template, params, settings)
    if "seed" in template.bindings and params.seed is None:
        params = params.model_copy(update={"seed": random_seed()})
    images = images_of(template, params)
    if params.batch_size is None and images > 1:  # the workflow's own batch: recorded, so quotas count it
        params = params.model_copy(update={"batch_size": images})
    values = params.model_dump(mode="json")
    entry = template.catalog
    return PlannedJob(
        workflow=template.name,
        params=values,
        cache_key=cache_key(template, values, input_path, owner=request.owner),
        vram_gb=entry.vram_gb if entry else 0.0,
        estimated_seconds=entry.typical_seconds * images if entry else None,
        estimated_cost=entry.cost_per_image * images if entry else None,
        models=model_keys(required_models(template)),
        images=images,
    )
