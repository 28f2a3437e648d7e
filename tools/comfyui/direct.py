"""A workflow run straight on ComfyUI, outside the ledger (`atelier generate`, the generate graph).

Resolve the workflow, check the values, upload the input image, render, run and save. The same value checks as the
ledger's planning apply (`check_params`); the ledger and its workers reuse the helpers here (`resolve_workflow`,
`prepare_graph`, `chosen_refs`)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from atelier.tools.comfyui.binding_inference import current_value
from atelier.tools.comfyui.client import ComfyClient, EventCallback
from atelier.tools.comfyui.probe import first_up
from atelier.tools.comfyui.templates import WorkflowTemplate, check_values, load_workflow, random_seed, render
from atelier.tools.errors import WorkflowError
from atelier.tools.inputs import resolve_input
from atelier.tools.schemas import GeneratedImage, GenerationParams, GenerationResult, ImageRef
from atelier.tools.settings import Settings

__all__ = [
    "check_params",
    "chosen_refs",
    "images_of",
    "pick_server",
    "prepare_graph",
    "resolve_workflow",
    "run_workflow",
]


def resolve_workflow(name_or_path: str | None, settings: Settings) -> WorkflowTemplate:
    """Load a shipped, user-folder or file workflow (the settings' default when None)."""
    return load_workflow(name_or_path or settings.default_workflow, search_dirs=settings.workflow_dirs)


def images_of(template: WorkflowTemplate, params: GenerationParams) -> int:
    """How many images a run makes: the requested batch size, else the workflow's own, else 1."""
    if params.batch_size is not None:
        return params.batch_size
    targets = template.bindings.get("batch_size")
    own = current_value(template.graph, targets[0]) if targets else None
    return own if isinstance(own, int) and not isinstance(own, bool) and own >= 1 else 1


def _check_cap(template: WorkflowTemplate, param: str, value: int | None, server: int, catalog: int | None,
               variable: str, key: str, *, own: bool = False) -> None:
    """Refuse a value over the lower of the server's setting and the workflow's catalog limit, naming both
    (`own`: the value is the workflow's own, not asked for)."""
    limit = min(server, catalog) if catalog is not None else server
    if value is None or value <= limit:
        return
    where = (f"its catalog's `{key}`; the server allows {server} ({variable})" if limit < server
             else f"the server's {variable}")
    whose = " (the workflow's own)" if own else ""
    raise WorkflowError(
        f"{param} {value}{whose} is more than workflow '{template.name}' allows: "
        f"at most {limit} ({where}). "
        f"Ask for {limit} or fewer (raising it is for the server's admin: {variable}, or `{key}` in the catalog of "
        f"the workflow's .meta.json)"
    )


def check_params(template: WorkflowTemplate, params: GenerationParams, settings: Settings) -> None:
    """Refuse, before any work, values the workflow cannot take or the server does not allow (WorkflowError naming
    the value, the limit and the fix): the sidecar's limits and max_resolution, and steps and batch size over
    ATELIER_MAX_STEPS / ATELIER_MAX_BATCH_SIZE or the workflow's catalog `max_steps` / `max_batch_size`."""
    if params.input_image is not None and "input_image" not in template.bindings:
        raise WorkflowError(
            f"workflow '{template.name}' takes no input image; choose img2img or upscale, or drop the image"
        )
    check_values(template, params)
    entry = template.catalog
    _check_cap(template, "steps", params.steps, settings.max_steps, entry.max_steps if entry else None,
               "ATELIER_MAX_STEPS", "max_steps")
    _check_cap(template, "batch_size", images_of(template, params), settings.max_batch_size,
               entry.max_batch_size if entry else None, "ATELIER_MAX_BATCH_SIZE", "max_batch_size",
               own=params.batch_size is None)


async def pick_server(urls: list[str], *, timeout: float = 5.0) -> str:
    """The first ComfyUI in `urls` that answers /system_stats (a lone one is not asked); else ComfyUnreachableError."""
    if len(urls) == 1:
        return urls[0]
    return await first_up(urls, timeout=timeout)


async def prepare_graph(comfy: ComfyClient, template: WorkflowTemplate, params: GenerationParams,
                        settings: Settings) -> dict[str, Any]:
    """Upload the input image from the inputs store when there is one, then render the template's API graph."""
    uploaded = None
    if params.input_image is not None:
        local = await asyncio.to_thread(resolve_input, params.input_image, settings)
        data = await asyncio.to_thread(local.read_bytes)
        uploaded = (await comfy.upload_image(data, name=local.name)).load_image_value
    return render(template, params, uploaded_image=uploaded)


def chosen_refs(images: list[tuple[str, ImageRef]]) -> list[tuple[str, ImageRef]]:
    """Saved outputs when the workflow has any, else its previews."""
    saved = [(node, ref) for node, ref in images if ref.type == "output"]
    return saved or images


async def run_workflow(
    params: GenerationParams,
    *,
    settings: Settings,
    workflow: str | WorkflowTemplate | None = None,
    comfy_url: str | None = None,
    out_dir: Path | None = None,
    prompt_id: str | None = None,
    on_event: EventCallback | None = None,
) -> GenerationResult:
    """Render the workflow with `params`, run it on ComfyUI, save its images and say where they are."""
    started = time.perf_counter()
    if isinstance(workflow, WorkflowTemplate):
        template = workflow
    else:  # reads files: off the event loop (servers such as langgraph's reject blocking calls there)
        template = await asyncio.to_thread(resolve_workflow, workflow, settings)
    check_params(template, params, settings)
    if "seed" in template.bindings and params.seed is None:
        params = params.model_copy(update={"seed": random_seed()})
    url = comfy_url or await pick_server(settings.comfyui_urls)
    target = out_dir or settings.outputs
    async with ComfyClient(
        url,
        timeout=settings.http_timeout_seconds,
        silence_seconds=settings.comfyui_silence_seconds,
        down_seconds=settings.comfyui_down_seconds,
    ) as comfy:
        graph = await prepare_graph(comfy, template, params, settings)
        outcome = await comfy.run(graph, prompt_id=prompt_id, ui_workflow=template.ui_workflow, on_event=on_event)
        images = [
            GeneratedImage(path=await comfy.save(ref, target), ref=ref, node_id=node)
            for node, ref in chosen_refs(outcome.images)
        ]
    return GenerationResult(
        prompt_id=outcome.prompt_id,
        workflow=template.name,
        server=url,
        seed=params.seed,
        images=images,
        seconds=time.perf_counter() - started,
    )
