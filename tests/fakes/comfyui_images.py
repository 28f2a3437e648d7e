"""What the fake's nodes 'compute': image sizes flowing through a graph, and PNGs like SaveImage writes."""

from __future__ import annotations

import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

SAMPLERS = {"KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced", "ProbeTextToImage"}
OUTPUT_TYPES = {"SaveImage": "output", "PreviewImage": "temp"}


@dataclass(frozen=True)
class Picture:
    """A batch of images (or latents) of one size, with a colour derived from what produced it."""

    width: int
    height: int
    batch: int
    tint: bytes


def _tint(*parts: Any) -> bytes:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()[:3]


def _linked(inputs: dict[str, Any], values: dict[str, list[Any]]) -> list[Any]:
    found = []
    for value in inputs.values():
        if isinstance(value, list) and len(value) == 2 and value[0] in values:
            slot_values = values[value[0]]
            found.append(slot_values[value[1]] if value[1] < len(slot_values) else None)
    return found


def sampler_steps(node: dict[str, Any], prompt: dict[str, dict[str, Any]]) -> int:
    """How many progress steps a sampler-like node reports (its own `steps`, or its scheduler's)."""
    inputs = node.get("inputs", {})
    if isinstance(inputs.get("steps"), int):
        return int(inputs["steps"])
    sigmas = inputs.get("sigmas")
    if isinstance(sigmas, list) and sigmas and sigmas[0] in prompt:
        steps = prompt[sigmas[0]].get("inputs", {}).get("steps")
        if isinstance(steps, int):
            return steps
    return 1


def compute(class_type: str, inputs: dict[str, Any], values: dict[str, list[Any]], input_dir: Path) -> list[Any]:
    """The outputs (per slot) of one node: Pictures for IMAGE/LATENT, None for everything else."""
    upstream = [v for v in _linked(inputs, values) if isinstance(v, Picture)]
    first = upstream[0] if upstream else None
    if class_type == "ProbeFail":
        raise RuntimeError(str(inputs.get("message", "boom")))
    if class_type == "LoadImage":
        name = str(inputs.get("image", ""))
        with Image.open(input_dir / name) as img:
            return [Picture(img.width, img.height, 1, _tint(name)), None]
    if class_type == "ImageUpscaleWithModel" and first:
        model = next((str(v) for v in _linked(inputs, values) if isinstance(v, str)), "x4")
        factor = int(m.group(1)) if (m := re.search(r"x(\d)", model)) else 4
        return [Picture(first.width * factor, first.height * factor, first.batch, first.tint)]
    if class_type == "UpscaleModelLoader":
        return [str(inputs.get("model_name", "x4"))]
    if class_type in ("ImageScaleBy", "LatentUpscaleBy") and first:
        scale = float(inputs.get("scale_by", 1.0))
        return [Picture(round(first.width * scale), round(first.height * scale), first.batch, first.tint)]
    if "width" in inputs and "height" in inputs and isinstance(inputs["width"], int):
        batch = int(inputs.get("batch_size", first.batch if first else 1))
        return [Picture(inputs["width"], inputs["height"], batch, _tint(class_type, inputs))] * 2
    if first is not None:
        tint = _tint(first.tint.hex(), class_type, {k: v for k, v in inputs.items() if not isinstance(v, list)})
        return [Picture(first.width, first.height, first.batch, tint)] * 2
    return [None, None, None]


def png_bytes(picture: Picture, index: int, prompt: dict[str, Any], workflow: Any) -> bytes:
    """A PNG like ComfyUI's SaveImage: `prompt` text chunk always, `workflow` only when it was sent."""
    image = Image.new("RGB", (picture.width, picture.height), tuple(picture.tint))
    for x in range(0, picture.width, max(1, picture.width // 8)):  # a little structure: stripes per batch item
        for y in range(picture.height):
            image.putpixel((x, y), ((index * 40) % 256, 255 - picture.tint[0], 128))
    meta = PngInfo()
    meta.add_text("prompt", json.dumps(prompt))
    if workflow is not None:
        meta.add_text("workflow", json.dumps(workflow))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=meta, compress_level=4)
    return buffer.getvalue()


def preview_jpeg(step: int, total: int) -> bytes:
    """A tiny JPEG like a latent preview."""
    shade = int(255 * step / max(total, 1))
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (shade, shade, 255 - shade)).save(buffer, format="JPEG")
    return buffer.getvalue()
