"""Which way a workflow's model reads its prompt: described in sentences ("natural") or as weighted tags ("tags").

The catalog says so (`CatalogEntry.prompt_style`, set on every shipped workflow). A workflow without it (a user's,
or one without a catalog entry) is read off the model files it loads — its catalog's `models` and `model_files`,
then its graph's loaders: Qwen-Image, Flux, SD3 and other models with a language-model text encoder read
sentences; SD1.5 and SDXL checkpoints (and their fine-tunes) read CLIP tags with `(tag:1.2)` weights. A model
neither list knows is prompted in sentences, which every model can read.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import PurePosixPath

from atelier.tools.comfyui.catalog_entry import PromptStyle
from atelier.tools.comfyui.graph_check import required_models
from atelier.tools.comfyui.template_models import WorkflowTemplate

__all__ = ["family_of_file", "prompt_style_of"]

# Parts of model file names, lower-cased, that give the family away (sentences are checked first: "sd3" is no SD1.5).
_SENTENCES = ("qwen", "flux", "sd3", "stable-diffusion-3", "hidream", "auraflow", "chroma", "lumina", "hunyuan",
              "wan2", "cosmos", "omnigen", "kolors", "pixart")
_TAGS = ("sdxl", "sd_xl", "sd-xl", "v1-5", "v1_5", "sd15", "sd_15", "sd1.5", "sd-1-5", "sd_1.5", "v2-1", "sd21",
         "pony", "illustrious", "noobai", "animagine", "juggernaut", "dreamshaper", "realisticvision",
         "realistic_vision", "deliberate", "epicrealism", "xl_base", "xl_refiner", "xl_turbo")


def family_of_file(name: str) -> PromptStyle | None:
    """The prompt style a model file's name gives away, or None when it says nothing."""
    base = PurePosixPath(name.replace("\\", "/")).name.lower()
    if any(part in base for part in _SENTENCES):
        return "natural"
    if any(part in base for part in _TAGS):
        return "tags"
    return None


def _model_names(template: WorkflowTemplate) -> Iterable[str]:
    """The model files a workflow loads: its catalog's first (as written by its author), then its graph's."""
    if template.catalog is not None:
        yield from (name for files in template.catalog.models.values() for name in files)
        yield from (model.name for model in template.catalog.model_files)
    yield from (name for files in required_models(template).values() for name in files)


def prompt_style_of(template: WorkflowTemplate) -> PromptStyle:
    """How to write prompts for `template`: its catalog's `prompt_style`, else its model files', else sentences."""
    if template.catalog is not None and template.catalog.prompt_style is not None:
        return template.catalog.prompt_style
    for name in _model_names(template):
        family = family_of_file(name)
        if family is not None:
            return family
    return "natural"
