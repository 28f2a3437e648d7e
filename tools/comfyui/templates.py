"""ComfyUI workflow templates: load API-format graphs, bind Atelier's parameters to node inputs, render, check.

Workflow files
--------------
A workflow is `NAME.json` in ComfyUI's API format (Workflow → Export (API), or "Save (API Format)"):
`{"<node id>": {"class_type": "KSampler", "inputs": {...}, "_meta": {"title": "..."}}}`, where an input
holds either a value or a link `["<source node id>", <output index>]`. Also accepted: a `POST /prompt`
style body `{"prompt": <graph>, "workflow": <UI workflow>}` (or with `extra_data.extra_pnginfo.workflow`),
and a PNG saved by ComfyUI (its `prompt` and `workflow` text chunks). A UI-format file (`nodes` and
`links` arrays) is refused with instructions to export the API format.

Shipped workflows live in the `workflows` package; user workflows in any folder passed as
`search_dirs` (a user `NAME.json` replaces a shipped one of the same name). Beside `NAME.json` may sit:

- `NAME.ui.json`: the same workflow in ComfyUI's UI format. It becomes `WorkflowTemplate.ui_workflow`,
  which callers send as `extra_pnginfo.workflow` so saved PNGs open in ComfyUI with their layout.
- `NAME.meta.json`, the sidecar (every key optional)::

    {
      "bindings": {
        "prompt":   ["6", "text"],
        "negative": {"title": "Negative prompt", "input": "text"},
        "seed":     [["3", "seed"], ["12", "noise_seed"]],
        "width":    {"node": "5", "input": "width"}
      },
      "limits":  {"steps": {"min": 1, "max": 10}, "width": {"max": 2048, "multiple_of": 64}},
      "catalog": {"purpose": "...", "task": "txt2img", "prompt_style": "natural|tags",
                  "quality": "fast|medium|high|ultra", "vram_gb": 4,
                  "typical_seconds": 10, "cost_per_image": 0.005, "recommended_steps": 4,
                  "max_steps": 10, "max_batch_size": 4,
                  "max_resolution": "1024x1024", "use_cases": ["rapid_prototyping"],
                  "models": {"checkpoints": ["sd_xl_turbo_1.0_fp16.safetensors"]}},
      "notes":   "free text for people"
    }

  `bindings` maps a `GenerationParams` field (prompt, negative, seed, steps, cfg, width, height, denoise,
  batch_size, input_image) to one target or a list of targets (all receive the value). A target is
  `[node_id, input]`, `{"node": node_id, "input": name}` or `{"title": title, "input": name}` (the one
  node whose `_meta.title` is that title). The input must exist on the node and hold a value, not a
  link, of the parameter's kind: text for prompt/negative/input_image, an integer for
  seed/steps/width/height/batch_size, a number for cfg/denoise. Shipped sidecars never rely on inference.
  `limits` narrows what `render` accepts (`min`, `max`, `multiple_of`; width and height must always be
  multiples of 8). `catalog` is a `tools.catalog.CatalogEntry`: user workflows may leave it out.

Inference
---------
Without `bindings` (no sidecar, or a sidecar with only a catalog) they are read off the graph, and
`WorkflowTemplate.inference_notes` says what was bound and why. Samplers are the nodes with a linked
`latent_image` (KSampler, KSamplerAdvanced, SamplerCustom, SamplerCustomAdvanced, most custom ones).

- prompt / negative: the text encoder (a node with a `text`, `prompt`, `text_g`, `text_l`, `clip_l`,
  `clip_g` or `t5xxl` input) reached from each sampler's `positive` / `negative` (or its guider's),
  through conditioning nodes (ConditioningCombine, ControlNetApply(Advanced), FluxGuidance, …). A text
  input linked from a primitive node binds the primitive's value. When several encoders qualify, a
  title decides ("Positive …" / "Negative …"), otherwise loading fails naming the candidates. A
  negative that comes from the positive encoder (ConditioningZeroOut) is not bound.
- seed / steps / cfg / denoise: the sampler's own input (`seed` or `noise_seed`), else the node feeding
  its `noise`, `sigmas` or `guider` (RandomNoise, a scheduler, CFGGuider), else a primitive linked to it.
  The seed binds every sampler; the others bind all samplers when their values agree, none otherwise.
- width / height / batch_size: the empty latent (EmptyLatentImage, EmptySD3LatentImage, …) at the start
  of the samplers' latent chain, when there is exactly one size.
- input_image: the only LoadImage (or the one titled "Input …" / "Source …").

Rendering and seeds
-------------------
`render` returns a deep copy of the graph with every set parameter written into its bound inputs; None
keeps the workflow's own value. The prompt is mandatory in `GenerationParams`, so a workflow with no
prompt input (upscale) ignores it; any other parameter set but not bound is an error naming what the
workflow accepts. Nothing is clamped: width and height that are not multiples of 8, values outside the
sidecar's `limits`, and (for catalogued workflows) sizes above `max_resolution`'s pixel count are
refused with the nearest valid values. `check_values` makes the same checks without rendering (the ledger's
planning runs them before a job is stored). `render` never invents a seed: the caller picks one
(`random_seed()` when the person gave none) and records it, so every run can be reproduced.

Checking: `check_against_object_info(graph, object_info)` lists what ComfyUI would refuse (unknown
classes, inputs the class does not declare, missing required inputs, bad links and types, out-of-range
numbers, COMBO values; a file name — a model file, an upload — is the only value allowed to be missing,
and is checked too with `check_models=True`), `check_bindings_against_object_info` checks the bindings'
inputs, and `required_models` says which model files go in which `ComfyUI/models/<folder>/`. Every shipped
graph passes it against ComfyUI 0.3.64's /object_info (tests/unit/test_templates.py).
"""

from __future__ import annotations

import copy
import secrets
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atelier.tools.comfyui.binding_inference import InferredBindings, current_value, infer_bindings
from atelier.tools.comfyui.graph_check import (
    check_against_object_info,
    check_bindings_against_object_info,
    required_models,
)
from atelier.tools.comfyui.template_graph import PARAM_KINDS, is_number
from atelier.tools.comfyui.template_models import Binding, Limit, Sidecar, WorkflowTemplate
from atelier.tools.comfyui.workflow_files import (
    check_binding_values,
    discover_workflows,
    load_graph_file,
    load_sidecar,
    load_ui,
    locate_workflow,
    resolve_bindings,
    unknown_param_error,
    workflow_name,
)
from atelier.tools.errors import WorkflowError
from atelier.tools.schemas import GenerationParams
from atelier.workflows import SHIPPED_DIR

__all__ = [
    "PARAM_KINDS",
    "SHIPPED_DIR",
    "Binding",
    "Limit",
    "Sidecar",
    "WorkflowTemplate",
    "check_against_object_info",
    "check_bindings_against_object_info",
    "check_values",
    "discover_workflows",
    "load_workflow",
    "random_seed",
    "render",
    "required_models",
]


def random_seed() -> int:
    """A fresh seed in 0..2**32-1; callers record it so the run can be reproduced."""
    return secrets.randbelow(2**32)


# ----------------------------------------------------------------------------- loading


def _check_limit_keys(limits: Mapping[str, Limit], where: str) -> None:
    """Sidecar limits may only name parameters."""
    for param in limits:
        if param not in PARAM_KINDS:
            raise unknown_param_error(param, where, "limits")


def load_workflow(name_or_path: str, search_dirs: Sequence[Path] = ()) -> WorkflowTemplate:
    """Load a shipped workflow by name, one from `search_dirs`, or a file (.json API export or ComfyUI PNG)."""
    path = locate_workflow(name_or_path, search_dirs)
    name, where = workflow_name(path), str(path)
    graph, ui = load_graph_file(path)
    sidecar = load_sidecar(path.with_name(f"{name}.meta.json"))
    _check_limit_keys(sidecar.limits, where)
    found = InferredBindings(graph=graph)
    if sidecar.bindings is not None:
        found.bindings = resolve_bindings(graph, sidecar.bindings, where)
    else:
        found = infer_bindings(graph, where)
    check_binding_values(graph, found.bindings, where)
    return WorkflowTemplate(
        name=name,
        graph=graph,
        bindings=found.bindings,
        catalog=sidecar.catalog,
        limits=sidecar.limits,
        ui_workflow=ui if ui is not None else load_ui(path.with_name(f"{name}.ui.json")),
        source=path,
        inferred=sidecar.bindings is None,
        inference_notes=found.notes,
        unbound=found.unbound,
    )


# ----------------------------------------------------------------------------- rendering


def _unbound_error(template: WorkflowTemplate, param: str, value: object) -> WorkflowError:
    """The error for a parameter set by the caller that the workflow cannot take."""
    accepts = ", ".join(template.accepts) or "nothing"
    why = f" ({template.unbound[param]})" if param in template.unbound else ""
    return WorkflowError(
        f"workflow '{template.name}' has no input for {param}{why}, but {param}={value!r} was asked for; "
        f"it accepts: {accepts}. Leave {param} out, or choose a workflow that takes it"
    )


def _requested(template: WorkflowTemplate, params: GenerationParams, uploaded_image: str | None) -> dict[str, Any]:
    """Parameter → value for everything the caller set (prompt is dropped when the workflow has none)."""
    wanted = {k: v for k, v in params.model_dump().items() if v is not None}
    if uploaded_image is not None:
        wanted["input_image"] = uploaded_image
    values: dict[str, Any] = {}
    for param, value in wanted.items():
        if param in template.bindings:
            values[param] = float(value) if PARAM_KINDS[param] == "number" else value
        elif param != "prompt":
            raise _unbound_error(template, param, value)
    return values


def _check_multiple(template: WorkflowTemplate, param: str, value: Any, limit: Limit | None) -> None:
    """Width and height must be multiples of 8 (or of the sidecar's `multiple_of`)."""
    step = limit.multiple_of if limit is not None and limit.multiple_of else (8 if param in ("width", "height") else 1)
    if isinstance(value, int) and value % step:
        lower, upper = value - value % step, value - value % step + step
        raise WorkflowError(
            f"{param} {value} is not a multiple of {step}, which workflow '{template.name}' needs; "
            f"use {lower} or {upper}"
        )


def _check_range(template: WorkflowTemplate, param: str, value: Any, limit: Limit | None) -> None:
    """A value must lie within the sidecar's min/max for that parameter."""
    if limit is None or not is_number(value):
        return
    if (limit.min is not None and value < limit.min) or (limit.max is not None and value > limit.max):
        low = f"{limit.min:g}" if limit.min is not None else "-∞"
        high = f"{limit.max:g}" if limit.max is not None else "∞"
        raise WorkflowError(f"{param} {value} is outside what workflow '{template.name}' can take ({low}..{high}); "
                            f"ask for a {param} in {low}..{high}, or leave it out for the workflow's own")


def _check_resolution(template: WorkflowTemplate, values: Mapping[str, Any]) -> None:
    """A requested size must not exceed the catalog's max_resolution (as a pixel count)."""
    if template.catalog is None or not ({"width", "height"} & set(values)):
        return
    if not ({"width", "height"} <= set(template.bindings)):
        return
    width = values.get("width", current_value(template.graph, template.bindings["width"][0]))
    height = values.get("height", current_value(template.graph, template.bindings["height"][0]))
    if width * height > template.catalog.max_pixels:
        raise WorkflowError(
            f"{width}x{height} is {width * height:,} pixels, more than workflow '{template.name}' makes well "
            f"({template.catalog.max_resolution}, {template.catalog.max_pixels:,} pixels); choose a smaller size "
            "or a workflow with a larger max_resolution (see `atelier workflows`)"
        )


def _checked(template: WorkflowTemplate, params: GenerationParams, uploaded_image: str | None) -> dict[str, Any]:
    """The values to write, once each passed the workflow's bindings, limits, multiples and max_resolution."""
    values = _requested(template, params, uploaded_image)
    for param, value in values.items():
        limit = template.limits.get(param)
        _check_multiple(template, param, value, limit)
        _check_range(template, param, value, limit)
    _check_resolution(template, values)
    return values


def check_values(template: WorkflowTemplate, params: GenerationParams) -> None:
    """Refuse (WorkflowError) what `render` would refuse: a value the workflow has no input for, one outside its
    sidecar `limits`, a width or height off its multiple, a size over its catalog's max_resolution."""
    _checked(template, params, None)


def render(
    template: WorkflowTemplate, params: GenerationParams, *, uploaded_image: str | None = None
) -> dict[str, Any]:
    """A copy of the graph with every parameter the caller set written into its bound inputs.

    `uploaded_image` is the name ComfyUI gave an uploaded input image; without it `params.input_image`
    is written as is (a name already in ComfyUI's input folder). The seed is never invented here: pass
    one (see `random_seed`) or the workflow's own seed is kept.
    """
    values = _checked(template, params, uploaded_image)
    graph = copy.deepcopy(template.graph)
    for param, value in values.items():
        for target in template.bindings[param]:
            graph[target.node_id]["inputs"][target.input] = value
    return graph


