"""A user's workflow folder for tests: Qwen-Image-like tiers (copies of shipped graphs under new names and model
files) with sidecars, and workflows without any catalog entry; plus the §12 models_config.json verbatim."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from atelier.workflows import SHIPPED_DIR

S12_CONFIG = Path(__file__).parent / "unit" / "data" / "models_config_s12.json"
QWEN_FILE = "qwen_image_fp8_e4m3fn.safetensors"
QWEN_EDIT_FILE = "qwen_image_edit_2509_fp8_e4m3fn.safetensors"

# Sidecar figures deliberately unlike the §12 file's, so tests see the file's win.
_TIERS: dict[str, dict[str, Any]] = {
    "qwen-image": {"quality": "high", "vram_gb": 12, "typical_seconds": 45, "cost_per_image": 0.03},
    "qwen-image-ultra": {"quality": "ultra", "vram_gb": 15, "typical_seconds": 150, "cost_per_image": 0.08},
    "qwen-image-fast": {"quality": "fast", "vram_gb": 9, "typical_seconds": 12, "cost_per_image": 0.02},
}


def _copy(source: str, target: Path, model_file: str) -> dict[str, Any]:
    """A shipped graph saved under a new name, loading `model_file` instead of its checkpoint."""
    graph: dict[str, Any] = json.loads((SHIPPED_DIR / f"{source}.json").read_text())
    for node in graph.values():
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = model_file
    target.write_text(json.dumps(graph, indent=1))
    return graph


def _sidecar(source: str, target: Path, model_file: str, **catalog: Any) -> None:
    """The shipped sidecar with catalog changes and the new model file."""
    meta: dict[str, Any] = json.loads((SHIPPED_DIR / f"{source}.meta.json").read_text())
    meta["catalog"].pop("prompt_style", None)  # read off the new model file (a Qwen file: sentences)
    meta["catalog"] |= {"purpose": f"test copy of {source} as {target.stem.removesuffix('.meta')}",
                        "models": {"checkpoints": [model_file]}, "max_steps": 60, "max_resolution": "1328x1328",
                        **catalog}
    target.write_text(json.dumps(meta, indent=1))


def make_user_workflows(folder: Path, *, qwen: bool = True, uncatalogued: bool = True) -> Path:
    """Fill `folder` with the test workflows and return it.

    qwen: qwen-image, qwen-image-ultra, qwen-image-fast (text-to-image, catalogued) and qwen-image-edit (img2img,
    task "edit"). uncatalogued: my-sketch (a text-to-image graph, no sidecar) and my-restyle (an image-to-image
    graph, no sidecar).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if qwen:
        for name, figures in _TIERS.items():
            _copy("txt2img", folder / f"{name}.json", QWEN_FILE)
            _sidecar("txt2img", folder / f"{name}.meta.json", QWEN_FILE, **figures)
        _copy("img2img", folder / "qwen-image-edit.json", QWEN_EDIT_FILE)
        _sidecar("img2img", folder / "qwen-image-edit.meta.json", QWEN_EDIT_FILE, task="edit", quality="high",
                 vram_gb=12, typical_seconds=50, cost_per_image=0.03)
    if uncatalogued:
        shutil.copyfile(SHIPPED_DIR / "txt2img.json", folder / "my-sketch.json")
        shutil.copyfile(SHIPPED_DIR / "img2img.json", folder / "my-restyle.json")
    return folder
