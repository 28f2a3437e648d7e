"""Test workflows that take less than the shipped ones: no negative prompt (Flux, Qwen-Image; prompted in sentences),
native sizes on a multiple of 16, tight sidecar limits. Copies of the shipped SD1.5 graph with edited sidecars,
written to a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from atelier.workflows import SHIPPED_DIR

__all__ = ["FIT_WORKFLOWS", "QWEN_NATIVE", "write_fit_workflows", "write_workflow"]

_ALL_BINDINGS: dict[str, Any] = {
    "prompt": ["6", "text"], "negative": ["7", "text"], "seed": ["3", "seed"], "steps": ["3", "steps"],
    "cfg": ["3", "cfg"], "denoise": ["3", "denoise"], "width": ["5", "width"], "height": ["5", "height"],
    "batch_size": ["5", "batch_size"],
}
QWEN_NATIVE = ["1328x1328", "1664x928", "928x1664", "1472x1140", "1140x1472", "1584x1056", "1056x1584"]


def _catalog(**entry: Any) -> dict[str, Any]:
    """A txt2img catalog entry with test defaults."""
    return {"purpose": "test workflow", "task": "txt2img", "cost_per_image": 0.002,
            "models": {"checkpoints": ["v1-5-pruned-emaonly.safetensors"]}, **entry}


# name → (bindings left out, sidecar limits, catalog entry, graph edits {node: {input: value}})
FIT_WORKFLOWS: dict[str, tuple[tuple[str, ...], dict[str, Any], dict[str, Any], dict[str, dict[str, Any]]]] = {
    # Flux-like: no negative prompt, no CFG, no denoise input.
    "t2i-no-negative": (("negative", "cfg", "denoise"), {},
                        _catalog(quality="high", vram_gb=12, typical_seconds=20, recommended_steps=20,
                                 max_resolution="1024x1024", prompt_style="natural",
                                 use_cases=["hero_images", "product_shots", "illustration", "thumbnails"]), {}),
    # Qwen-Image-like: no negative prompt, native sizes (one off the multiple), sides in multiples of 16.
    "t2i-qwen-like": (("negative", "denoise"), {"steps": {"min": 1, "max": 60}},
                      _catalog(quality="ultra", vram_gb=16, typical_seconds=60, recommended_steps=50,
                               recommended_cfg=4.0, max_resolution="1328x1328", native_resolutions=QWEN_NATIVE,
                               prompt_style="natural",
                               resolution_multiple=16, use_cases=["hero_images", "product_shots", "illustration"]),
                      {}),
    # A small fast model: at most 512x512 pixels, sides in multiples of 64, a height range, few steps, low CFG.
    "t2i-tiny": ((), {"width": {"max": 512}, "height": {"min": 256, "max": 512}, "steps": {"min": 1, "max": 4},
                      "cfg": {"min": 1, "max": 2}},
                 _catalog(quality="fast", vram_gb=2, typical_seconds=3, recommended_steps=4, recommended_cfg=1.5,
                          max_batch_size=1, max_resolution="512x512", resolution_multiple=64,
                          use_cases=["thumbnails", "rapid_prototyping", "illustration"]), {}),
    # Sidecar limits tighter than its catalog's advice, and its own batch of 4 over its max_batch_size.
    "t2i-limits": ((), {"width": {"max": 768, "multiple_of": 64}, "height": {"max": 768, "multiple_of": 64},
                        "steps": {"min": 10, "max": 30}, "cfg": {"min": 1, "max": 5}},
                   _catalog(quality="medium", vram_gb=6, typical_seconds=7, recommended_steps=40, max_steps=50,
                            recommended_cfg=7.0, max_batch_size=2, max_resolution="1024x1024",
                            use_cases=["hero_images", "product_shots", "web_images", "illustration", "thumbnails"]),
                   {"5": {"batch_size": 4}}),
}


def write_workflow(folder: Path, name: str, *, drop: tuple[str, ...] = (), limits: dict[str, Any] | None = None,
                   catalog: dict[str, Any] | None = None, edits: dict[str, dict[str, Any]] | None = None) -> Path:
    """`NAME.json` (the shipped SD1.5 graph, edited) and its sidecar in `folder`; the graph's path."""
    folder.mkdir(parents=True, exist_ok=True)
    graph = json.loads((SHIPPED_DIR / "txt2img.json").read_text())
    for node, inputs in (edits or {}).items():
        graph[node]["inputs"].update(inputs)
    sidecar: dict[str, Any] = {"bindings": {k: v for k, v in _ALL_BINDINGS.items() if k not in drop}}
    if limits:
        sidecar["limits"] = limits
    if catalog is not None:
        sidecar["catalog"] = catalog
    (folder / f"{name}.json").write_text(json.dumps(graph))
    (folder / f"{name}.meta.json").write_text(json.dumps(sidecar))
    return folder / f"{name}.json"


def write_fit_workflows(folder: Path) -> list[str]:
    """Every FIT_WORKFLOWS workflow in `folder`; their names."""
    for name, (drop, limits, catalog, edits) in FIT_WORKFLOWS.items():
        write_workflow(folder, name, drop=drop, limits=limits, catalog=catalog, edits=edits)
    return list(FIT_WORKFLOWS)
