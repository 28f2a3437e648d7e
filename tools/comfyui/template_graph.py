"""Small helpers and constants for reading ComfyUI API-format graphs (shared by the template modules)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, TypeGuard

Graph = dict[str, dict[str, Any]]


# What kind of value each GenerationParams field writes into a node input.
PARAM_KINDS: dict[str, str] = {
    "prompt": "text",
    "negative": "text",
    "seed": "int",
    "steps": "int",
    "cfg": "number",
    "width": "int",
    "height": "int",
    "denoise": "number",
    "batch_size": "int",
    "input_image": "text",
}
KIND_WORDS = {"text": "text", "int": "an integer", "number": "a number"}
# object_info input types a parameter of each kind may be written into.
KIND_TYPES = {"text": {"STRING", "COMBO"}, "int": {"INT"}, "number": {"FLOAT", "INT"}}

TEXT_INPUTS = ("text", "prompt", "text_g", "text_l", "clip_l", "clip_g", "t5xxl")
SAMPLER_VALUES: dict[str, tuple[str, ...]] = {
    "seed": ("seed", "noise_seed"),
    "steps": ("steps",),
    "cfg": ("cfg",),
    "denoise": ("denoise",),
}
SAMPLER_HELPERS = ("noise", "sigmas", "guider")
LATENT_LINKS = ("latent_image", "samples", "latent")
IMAGE_LOADERS = ("LoadImage", "LoadImageOutput")
UPLOAD_FLAGS = ("image_upload", "file_upload", "audio_upload", "video_upload")
EXPORT_HINT = "in ComfyUI: Workflow → Export (API); older versions: enable dev mode, then 'Save (API Format)'"


# ----------------------------------------------------------------------------- small graph helpers


def is_link(value: object) -> TypeGuard[list[Any]]:
    """Whether an input value is a link `[node_id, output_index]` (after normalisation)."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def is_number(value: object) -> TypeGuard[int | float]:
    """An int or float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def node_inputs(graph: Mapping[str, Any], node_id: str) -> dict[str, Any]:
    """A node's inputs."""
    inputs: dict[str, Any] = graph[node_id].get("inputs") or {}
    return inputs


def node_class(graph: Mapping[str, Any], node_id: str) -> str:
    """A node's class_type."""
    return str(graph[node_id].get("class_type", "?"))


def node_title(graph: Mapping[str, Any], node_id: str) -> str:
    """A node's `_meta.title` ('' when it has none)."""
    meta = graph[node_id].get("_meta")
    return str(meta.get("title") or "") if isinstance(meta, dict) else ""


def node_label(graph: Mapping[str, Any], node_id: str) -> str:
    """`CLIPTextEncode 'Positive'` (the title only when it says more than the class)."""
    cls, title = node_class(graph, node_id), node_title(graph, node_id)
    same = re.sub(r"[^a-z0-9]", "", title.casefold()) == re.sub(r"[^a-z0-9]", "", cls.casefold())
    return f"{cls} '{title}'" if title and not same else cls


def node_ref(graph: Mapping[str, Any], node_id: str) -> str:
    """`node 6 (CLIPTextEncode 'Positive')`."""
    return f"node {node_id} ({node_label(graph, node_id)})"


def input_link(graph: Mapping[str, Any], node_id: str, name: str) -> tuple[str, int] | None:
    """The (source, slot) a node's input links to, or None."""
    value = node_inputs(graph, node_id).get(name)
    return (value[0], value[1]) if is_link(value) else None


def natural_key(node_id: str) -> list[Any]:
    """Sort key putting node '9' before '10'."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", node_id)]


def node_ids(graph: Mapping[str, Any]) -> list[str]:
    """Node ids in natural order."""
    return sorted(graph, key=natural_key)


