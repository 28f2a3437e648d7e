"""What the fake ComfyUI has installed: node classes (/object_info), model files, folders and system stats."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

DATA = Path(__file__).parent / "data"

# GET /models on the captured 0.3.64, in its order.
MODEL_FOLDERS = [
    "checkpoints", "configs", "loras", "vae", "text_encoders", "diffusion_models", "clip_vision", "style_models",
    "embeddings", "diffusers", "vae_approx", "controlnet", "gligen", "upscale_models", "custom_nodes",
    "hypernetworks", "photomaker", "classifiers", "model_patches", "audio_encoders",
]

DEFAULT_MODELS: dict[str, list[str]] = {
    "checkpoints": ["v1-5-pruned-emaonly.safetensors", "sd_xl_turbo_1.0_fp16.safetensors"],
    "upscale_models": ["RealESRGAN_x4plus.pth"],
}

# Which models/<folder> a loader's file input lists: by input name, then (class, input) where the name is generic.
FOLDER_BY_INPUT: dict[str, str] = {
    "ckpt_name": "checkpoints", "lora_name": "loras", "vae_name": "vae", "control_net_name": "controlnet",
    "clip_name": "text_encoders", "clip_name1": "text_encoders", "clip_name2": "text_encoders",
    "clip_name3": "text_encoders", "clip_name4": "text_encoders", "unet_name": "diffusion_models",
    "style_model_name": "style_models", "gligen_name": "gligen", "hypernetwork_name": "hypernetworks",
    "model_path": "diffusers", "photomaker_model_name": "photomaker", "audio_encoder_name": "audio_encoders",
}
FOLDER_BY_CLASS_INPUT: dict[tuple[str, str], str] = {
    ("UpscaleModelLoader", "model_name"): "upscale_models",
    ("CLIPVisionLoader", "clip_name"): "clip_vision",
    ("ModelPatchLoader", "name"): "model_patches",
    ("CheckpointLoader", "config_name"): "configs",
}
# LoadImage-like nodes list the image files at the top of the input folder.
INPUT_IMAGE_NODES = ("LoadImage", "LoadImageMask")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# /system_stats of the captured server (CPU mode, no GPU).
CAPTURED_SYSTEM: dict[str, Any] = {
    "os": "posix", "ram_total": 25276510208, "ram_free": 24191004672, "comfyui_version": "0.3.64",
    "required_frontend_version": "1.27.10", "installed_templates_version": "0.1.95",
    "required_templates_version": "0.1.95",
    "python_version": "3.11.7 (main, May  9 2026, 07:35:25) [GCC 12.2.0]", "pytorch_version": "2.14.1+cu130",
    "embedded_python": False,
    "argv": ["main.py", "--cpu", "--listen", "127.0.0.1", "--port", "8199", "--disable-auto-launch"],
}
CAPTURED_CPU_DEVICE: dict[str, Any] = {
    "name": "cpu", "type": "cpu", "index": None, "vram_total": 25276510208, "vram_free": 24191004672,
    "torch_vram_total": 25276510208, "torch_vram_free": 24191004672,
}
# What a 0.3.64 server answers to a client's `feature_flags` message (and on GET /features).
SERVER_FEATURES: dict[str, Any] = {
    "supports_preview_metadata": True, "max_upload_size": 104857600,
    "extension": {"manager": {"supports_v4": True}},
}


def gpu_device(vram_total: int = 24 * 2**30, vram_free: int = 22 * 2**30, name: str = "NVIDIA GeForce RTX 4090"
               ) -> dict[str, Any]:
    """A /system_stats device entry shaped like a CUDA card's, for tests that need a GPU."""
    return {"name": f"cuda:0 {name} : cudaMallocAsync", "type": "cuda", "index": 0, "vram_total": vram_total,
            "vram_free": vram_free, "torch_vram_total": 0, "torch_vram_free": 0}


def combo_options(config: Any) -> list[Any] | None:
    """The choices of a COMBO input in either object_info format, or None for any other input."""
    if not isinstance(config, list) or not config:
        return None
    if isinstance(config[0], list):
        return list(config[0])
    if config[0] == "COMBO" and len(config) > 1 and isinstance(config[1], dict):
        return list(config[1].get("options", []))
    return None


@cache
def _base_object_info() -> str:
    """The captured /object_info with the probe nodes merged in, as JSON text (parsed per instance)."""
    info: dict[str, Any] = json.loads((DATA / "object_info.json").read_text())
    info.update(json.loads((DATA / "probe_nodes.json").read_text()))
    return json.dumps(info)


def model_folder(class_type: str, input_name: str) -> str | None:
    """The models/<folder> whose files a (class, input) combo lists, or None."""
    return FOLDER_BY_CLASS_INPUT.get((class_type, input_name)) or FOLDER_BY_INPUT.get(input_name)


class Catalog:
    """Node classes and installed model files of one fake server."""

    def __init__(self, models: dict[str, list[str]] | None, input_dir: Path) -> None:
        self.input_dir = input_dir
        self._base: dict[str, Any] = json.loads(_base_object_info())
        self._shipped = {"configs": combo_options(self._base["CheckpointLoader"]["input"]["required"]["config_name"])
                         or []}
        self.models: dict[str, list[str]] = {}
        self.info: dict[str, Any] = {}
        self.set_models(DEFAULT_MODELS if models is None else models)

    def set_models(self, models: dict[str, list[str]]) -> None:
        """Install exactly these model files (folder → file names) and rebuild the combo lists."""
        self.models = {folder: list(files) for folder, files in models.items()}
        info = copy.deepcopy(self._base)
        for class_type, node in info.items():
            for section in ("required", "optional"):
                for input_name, config in (node["input"].get(section) or {}).items():
                    folder = model_folder(class_type, input_name)
                    options = combo_options(config)
                    if folder is None or options is None:
                        continue
                    files = self.files(folder)
                    listed = files + [o for o in options if o not in files] if folder == "vae" else sorted(
                        set(files) | set(options))
                    if isinstance(config[0], list):
                        config[0] = listed
                    else:
                        config[1]["options"] = listed
        self.info = info

    def files(self, folder: str) -> list[str]:
        """GET /models/{folder}: the installed files of one model folder, sorted like ComfyUI's listing."""
        return sorted(set(self.models.get(folder, [])) | set(self._shipped.get(folder, [])))

    def installed(self, folder: str, name: Any) -> bool:
        """Whether models/<folder>/<name> exists."""
        return isinstance(name, str) and name in self.files(folder)

    def embeddings(self) -> list[str]:
        """GET /embeddings: embedding names without their extension."""
        return [Path(name).stem if "." in name else name for name in self.files("embeddings")]

    def input_images(self) -> list[str]:
        """The image files at the top of the input folder, as LoadImage lists them."""
        if not self.input_dir.is_dir():
            return []
        return sorted(p.name for p in self.input_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    def object_info(self) -> dict[str, Any]:
        """The current /object_info (LoadImage lists the input folder as it is now)."""
        images = self.input_images()
        for class_type in INPUT_IMAGE_NODES:
            self.info[class_type]["input"]["required"]["image"][0] = images
        return self.info
