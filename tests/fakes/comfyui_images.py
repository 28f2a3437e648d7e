"""What the fake's nodes compute: image sizes flowing through a graph, pixels from seeds, PNGs like SaveImage's."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from tests.fakes.comfyui_catalog import Catalog, combo_options, model_folder
from tests.fakes.comfyui_validation import annotated_path

OUTPUT_TYPES = {"SaveImage": "output", "PreviewImage": "temp"}
TEXT_ENCODERS = ("CLIPTextEncode", "TextEncodeQwenImageEdit", "TextEncodeQwenImageEditPlus")
# comfy_extras/nodes_flux.py PREFERED_KONTEXT_RESOLUTIONS: FluxKontextImageScale picks the nearest aspect ratio.
KONTEXT_SIZES = ((672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
                 (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
                 (1456, 720), (1504, 688), (1568, 672))
PICTURE_TYPES = ("IMAGE", "LATENT", "MASK")
SCHEDULER_SPLIT = "SplitSigmas"


class SaveOutsideOutputError(Exception):
    """SaveImage was given a prefix that leaves the output folder."""


@dataclass(frozen=True)
class Picture:
    """A batch of images or latents (sizes in pixels) and how to draw them: ('noise', key), ('file', path)…."""

    kind: str
    width: int
    height: int
    batch: int
    recipe: tuple[Any, ...]

    def describe(self) -> str:
        """How ComfyUI would print this tensor in an error's current_inputs (shape only)."""
        if self.kind == "LATENT":
            return f"{{'samples': tensor(<{self.batch}x4x{self.height // 8}x{self.width // 8}>)}}"
        return f"tensor(<{self.batch}x{self.height}x{self.width}x3>)"


@dataclass(frozen=True)
class Conditioning:
    """Encoded text (only the text matters to the fake)."""

    text: str


@dataclass(frozen=True)
class Noise:
    """A noise source (RandomNoise): its seed."""

    seed: Any


@dataclass(frozen=True)
class Sigmas:
    """A noise schedule: how many sampling steps it gives."""

    steps: int


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def render(picture: Picture, index: int = 0, size: tuple[int, int] | None = None) -> Image.Image:
    """Draw one image of a batch (deterministic for a recipe), optionally at another size."""
    width, height = size or (picture.width, picture.height)
    kind = picture.recipe[0]
    if kind == "solid":
        return Image.new("RGB", (width, height), tuple(picture.recipe[1]))
    if kind == "file":
        with Image.open(picture.recipe[1]) as source:
            return source.convert("RGB").resize((width, height), Image.Resampling.NEAREST)
    if kind == "resize":
        return render(picture.recipe[1], index).resize((width, height), Image.Resampling.NEAREST)
    if kind == "noise":
        rng = random.Random(f"{picture.recipe[1]}:{index}")
        grid = Image.new("RGB", (8, 8))
        grid.putdata([(rng.randrange(256), rng.randrange(256), rng.randrange(256)) for _ in range(64)])
        return grid.resize((width, height), Image.Resampling.NEAREST)
    return Image.new("RGB", (width, height), (128, 128, 128))


def preview_jpeg(picture: Picture | None, step: int, total: int) -> bytes:
    """A small JPEG like a latent preview: the picture-to-be, fading in with the steps."""
    base = Picture("IMAGE", 64, 64, 1, ("grey",)) if picture is None else picture
    size = (max(8, base.width // 8), max(8, base.height // 8))
    grey = Image.new("RGB", size, (128, 128, 128))
    image = Image.blend(grey, render(base, 0, size), step / max(total, 1))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def sampler_steps(class_type: str, inputs: dict[str, Any], outputs: list[str]) -> int | None:
    """How many progress steps a node reports while it runs (None: it is not a sampler)."""
    if class_type == "KSamplerAdvanced":
        steps = int(inputs.get("steps", 0))
        last = min(int(inputs.get("end_at_step", steps)), steps)
        start = int(inputs.get("start_at_step", 0))
        return last - start if start < last else 0
    sigmas = inputs.get("sigmas")
    if isinstance(sigmas, Sigmas):
        return sigmas.steps
    if isinstance(inputs.get("steps"), int) and any(t in ("LATENT", "IMAGE") for t in outputs):
        return int(inputs["steps"])
    return None


def kontext_size(width: int, height: int) -> tuple[int, int]:
    """The Kontext size FluxKontextImageScale scales an image of this size to (nearest aspect ratio)."""
    ratio = width / max(height, 1)
    _, best_width, best_height = min((abs(ratio - w / h), w, h) for w, h in KONTEXT_SIZES)
    return best_width, best_height


def _upscale_factor(model_name: str) -> int:
    match = re.search(r"(?:x(\d)|(\d)x)", model_name.lower())
    return int(match.group(1) or match.group(2)) if match else 4


def _pictures(inputs: dict[str, Any]) -> list[Picture]:
    return [v for v in inputs.values() if isinstance(v, Picture)]


def _texts(inputs: dict[str, Any]) -> list[str]:
    return [v.text for v in inputs.values() if isinstance(v, Conditioning)]


def _latent(width: Any, height: Any, batch: Any, recipe: tuple[Any, ...]) -> Picture:
    return Picture("LATENT", int(width) // 8 * 8, int(height) // 8 * 8, int(batch), recipe)


def _sample(class_type: str, inputs: dict[str, Any]) -> Picture:
    source = inputs.get("latent_image")
    noise = inputs.get("noise")
    fallback = noise.seed if isinstance(noise, Noise) else 0
    seed = next((inputs[k] for k in ("seed", "noise_seed") if k in inputs), fallback)
    keep = isinstance(source, Picture) and float(inputs.get("denoise", 1.0)) < 1.0
    key = _digest(class_type, seed, _texts(inputs), source.recipe if keep and source else None)
    if class_type == "ProbeTextToImage":
        return Picture("IMAGE", int(inputs["width"]), int(inputs["height"]), 1, ("noise", key))
    if isinstance(source, Picture):
        return Picture("LATENT", source.width, source.height, source.batch, ("noise", key))
    return Picture("LATENT", 512, 512, 1, ("noise", key))


def compute(class_type: str, spec: dict[str, Any], inputs: dict[str, Any], catalog: Catalog) -> list[Any]:
    """The outputs (one per slot) of a non-output node, given its resolved inputs."""
    returns = list(spec.get("output", []))
    declared = {**(spec["input"].get("optional") or {}), **(spec["input"].get("required") or {})}
    for name, value in inputs.items():  # loaders need their file to be there, or they raise like ComfyUI
        folder = model_folder(class_type, name)
        if folder is None or folder == "configs" or combo_options(declared.get(name)) is None:
            continue
        if isinstance(value, str) and value != "pixel_space" and not catalog.installed(folder, value):
            raise FileNotFoundError(f"Model in folder '{folder}' with filename '{value}' not found.")
    pictures = _pictures(inputs)
    first = pictures[0] if pictures else None
    if class_type == "ProbeFail":
        raise RuntimeError(str(inputs.get("message", "")))
    if class_type in ("LoadImage", "LoadImageMask"):
        path = annotated_path(str(inputs["image"]), catalog.input_dir)
        with Image.open(path) as image:
            picture = Picture("IMAGE", image.width, image.height, 1, ("file", str(path)))
        return [picture, Picture("MASK", picture.width, picture.height, 1, ("solid", (0, 0, 0)))]
    if class_type in TEXT_ENCODERS:
        return [Conditioning(str(inputs.get("text", inputs.get("prompt", ""))))]
    if class_type == "ConditioningZeroOut":
        return [Conditioning("")]
    if class_type == "FluxKontextImageScale" and first:
        width, height = kontext_size(first.width, first.height)
        return [Picture("IMAGE", width, height, first.batch, ("resize", first))]
    if class_type == "RandomNoise":
        return [Noise(inputs.get("noise_seed", 0))]
    if class_type == SCHEDULER_SPLIT and isinstance(inputs.get("sigmas"), Sigmas):
        total, step = inputs["sigmas"].steps, int(inputs.get("step", 0))
        return [Sigmas(min(step, total)), Sigmas(max(total - step, 0))]
    if returns == ["SIGMAS"] and isinstance(inputs.get("steps"), int):
        return [Sigmas(int(inputs["steps"]))]
    if sampler_steps(class_type, inputs, returns) is not None:
        return [_sample(class_type, inputs)] * len(returns)
    if class_type == "EmptyImage":
        color = int(inputs.get("color", 0))
        rgb = ((color >> 16) & 255, (color >> 8) & 255, color & 255)
        return [Picture("IMAGE", int(inputs["width"]), int(inputs["height"]), int(inputs.get("batch_size", 1)),
                        ("solid", rgb))]
    if class_type in ("ImageUpscaleWithModel",) and first:
        factor = _upscale_factor(str(inputs.get("upscale_model", "")))
        return [Picture("IMAGE", first.width * factor, first.height * factor, first.batch, ("resize", first))]
    if class_type == "UpscaleModelLoader":
        return [str(inputs.get("model_name", ""))]
    if class_type in ("ImageScaleBy", "LatentUpscaleBy") and first:
        scale = float(inputs.get("scale_by", 1.0))
        if first.kind == "LATENT":
            width, height = round(first.width // 8 * scale) * 8, round(first.height // 8 * scale) * 8
        else:
            width, height = round(first.width * scale), round(first.height * scale)
        return [Picture(first.kind, width, height, first.batch, ("resize", first))]
    if class_type in ("ImageScale", "LatentUpscale") and first:
        width, height = int(inputs.get("width", 0)), int(inputs.get("height", 0))
        width = width or round(first.width * height / max(first.height, 1))
        height = height or round(first.height * width / max(first.width, 1))
        if first.kind == "LATENT":
            width, height = width // 8 * 8, height // 8 * 8
        return [Picture(first.kind, width, height, first.batch, ("resize", first))]
    if class_type == "RepeatLatentBatch" and first:
        return [Picture(first.kind, first.width, first.height, first.batch * int(inputs.get("amount", 1)),
                        first.recipe)]
    if "width" in inputs and "height" in inputs and "LATENT" in returns and not first:
        return [_latent(inputs["width"], inputs["height"], inputs.get("batch_size", 1), ("grey",))]
    outputs: list[Any] = []
    texts = _texts(inputs)
    for kind in returns:  # anything else passes pictures / conditioning through, and knows nothing more
        if kind in PICTURE_TYPES and first:
            width, height = first.width, first.height
            if kind == "LATENT" and first.kind != "LATENT":
                width, height = width // 8 * 8, height // 8 * 8
            outputs.append(Picture(kind, width, height, first.batch, first.recipe))
        elif kind in ("MODEL", "CLIP", "VAE"):
            outputs.append(class_type)
        else:
            outputs.append(Conditioning(" ".join(texts)) if texts and kind not in PICTURE_TYPES else None)
    return outputs


def _compute_vars(prefix: str, width: int, height: int) -> str:
    now = time.localtime()
    for var, value in (("%width%", width), ("%height%", height), ("%year%", now.tm_year)):
        prefix = prefix.replace(var, str(value))
    for var, value in (("%month%", now.tm_mon), ("%day%", now.tm_mday), ("%hour%", now.tm_hour),
                       ("%minute%", now.tm_min), ("%second%", now.tm_sec)):
        prefix = prefix.replace(var, str(value).zfill(2))
    return prefix


def save_path(prefix: str, output_dir: Path, width: int, height: int) -> tuple[Path, str, int, str]:
    """folder_paths.get_save_image_path: (folder, file stem, next counter from the files there, subfolder)."""
    if "%" in prefix:
        prefix = _compute_vars(prefix, width, height)
    normalized = os.path.normpath(prefix)
    subfolder, stem = os.path.dirname(normalized), os.path.basename(normalized)
    root = os.path.abspath(output_dir)
    folder = os.path.abspath(os.path.join(root, subfolder))
    if os.path.commonpath((root, folder)) != root:
        raise SaveOutsideOutputError(
            "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: "
            f"{folder}\n         output_dir: {root}\n         commonpath: {os.path.commonpath((root, folder))}")
    counter = 1
    if os.path.isdir(folder):
        taken = []
        for name in os.listdir(folder):
            head, rest = name[: len(stem) + 1], name[len(stem) + 1:]
            if head[:-1] == stem and head[-1:] == "_":
                try:
                    taken.append(int(rest.split("_")[0]))
                except ValueError:
                    taken.append(0)
        counter = max(taken) + 1 if taken else 1
    else:
        os.makedirs(folder, exist_ok=True)
    return Path(folder), stem, counter, subfolder


def save_images(picture: Picture, *, kind: str, prefix: str, folder: Path, prompt: dict[str, Any],
                extra_pnginfo: Any) -> list[dict[str, str]]:
    """SaveImage / PreviewImage: write the batch as PNGs with `prompt` (+ extra_pnginfo) text chunks."""
    if kind == "temp":
        prefix += "_temp_" + "".join(random.choice(string.ascii_lowercase) for _ in range(5))
    target, stem, counter, subfolder = save_path(prefix, folder, picture.width, picture.height)
    results = []
    for batch_number in range(picture.batch):
        meta = PngInfo()
        meta.add_text("prompt", json.dumps(prompt))
        if isinstance(extra_pnginfo, dict):
            for key, value in extra_pnginfo.items():
                meta.add_text(key, json.dumps(value))
        filename = f"{stem.replace('%batch_num%', str(batch_number))}_{counter:05}_.png"
        render(picture, batch_number).save(target / filename, pnginfo=meta, compress_level=4 if kind == "output" else 1)
        results.append({"filename": filename, "subfolder": subfolder, "type": kind})
        counter += 1
    return results


def image_hash(path: Path) -> str:
    """LoadImage.IS_CHANGED: the sha256 of the file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()
