"""A workflow's catalog entry: the `catalog` object of its `NAME.meta.json` sidecar (what it is for and needs).

Only the data and its checks live here; tools/catalog.py lists workflows and routes between them.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from atelier.tools.schemas import parse_size

__all__ = ["QUALITY_ORDER", "CatalogEntry", "ModelFile", "PromptStyle", "Quality", "normalize_purpose"]

Quality = Literal["fast", "medium", "high", "ultra"]

QUALITY_ORDER: tuple[str, ...] = ("fast", "medium", "high", "ultra")
# How a workflow's model reads its prompt: sentences (Qwen-Image, Flux) or weighted tags (SD1.5, SDXL).
PromptStyle = Literal["natural", "tags"]

class ModelFile(BaseModel):
    """One model file a workflow loads: where ComfyUI keeps it, how big it is and where to get it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    folder: str = Field(..., min_length=1, description="ComfyUI's models folder: checkpoints, diffusion_models, "
                                                       "text_encoders, vae, loras, upscale_models, …")
    name: str = Field(..., min_length=1, description="The file name as ComfyUI lists it.")
    size_gb: float | None = Field(None, ge=0, description="Download size in GB.")
    url: str | None = Field(None, description="Where to download it.")


class CatalogEntry(BaseModel):
    """What one workflow is for and what it needs: the `catalog` object of its sidecar."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    purpose: str = Field(..., min_length=1, description="One line: what this workflow makes.")
    task: str = Field("txt2img", min_length=1, description="txt2img, img2img, upscale, … (routing never mixes them).")
    quality: Quality = Field(..., description="Quality tier: fast, medium, high or ultra.")
    vram_gb: float = Field(..., ge=0, description="GPU memory it needs, in GB.")
    typical_seconds: float = Field(..., gt=0, description="Typical time for one image on a mid-range GPU.")
    cost_per_image: float = Field(..., ge=0, description="Estimated cost of one image (energy, amortised GPU).")
    recommended_steps: int | None = Field(None, ge=1, description="Sampling steps it is tuned for (None: no sampler).")
    max_steps: int | None = Field(None, ge=1, description="Most sampling steps a job may ask for (None: the server's "
                                                          "ATELIER_MAX_STEPS; it can only lower that).")
    max_batch_size: int | None = Field(None, ge=1, description="Most images one job may make (None: the server's "
                                                               "ATELIER_MAX_BATCH_SIZE; it can only lower that).")
    max_resolution: str = Field(..., description="Largest size it makes well, as WIDTHxHEIGHT (its pixel count).")
    use_cases: list[str] = Field(default_factory=list, description="Purposes it serves, e.g. hero_images.")
    models: dict[str, list[str]] = Field(default_factory=dict, description="Model folder → files it loads.")
    model_files: list[ModelFile] = Field(default_factory=list,
                                         description="The files it loads with size and source (for readiness).")
    recommended_cfg: float | None = Field(None, ge=0, description="CFG it is tuned for (None: no CFG input).")
    native_resolutions: list[str] = Field(default_factory=list,
                                          description="Sizes its model was trained at, as WIDTHxHEIGHT.")
    resolution_multiple: int = Field(8, ge=8, description="Width and height must be multiples of this.")
    source: str | None = Field(None, description="Where the graph comes from, e.g. a ComfyUI template and version.")
    prompt_style: PromptStyle | None = Field(None, description="How its model reads prompts: 'natural' (described "
                                                               "in sentences: Qwen-Image, Flux) or 'tags' (weighted "
                                                               "tags: SD1.5, SDXL); None: read off its model files.")

    @field_validator("max_resolution")
    @classmethod
    def _valid_resolution(cls, value: str) -> str:
        """Accept only WIDTHxHEIGHT."""
        parse_size(value)
        return value

    @field_validator("native_resolutions")
    @classmethod
    def _valid_natives(cls, values: list[str]) -> list[str]:
        """Accept only WIDTHxHEIGHT sizes."""
        for value in values:
            parse_size(value)
        return values

    @field_validator("task")
    @classmethod
    def _lower_task(cls, value: str) -> str:
        """Tasks compare case-insensitively."""
        return value.strip().lower()

    @model_validator(mode="after")
    def _steps_fit(self) -> CatalogEntry:
        """The steps it is tuned for must be allowed."""
        steps, most = self.recommended_steps, self.max_steps
        if steps is not None and most is not None and steps > most:
            raise ValueError(f"recommended_steps {self.recommended_steps} is more than max_steps {self.max_steps}; "
                             "raise max_steps or lower recommended_steps")
        return self

    @property
    def resolution(self) -> tuple[int, int]:
        """`max_resolution` as (width, height)."""
        return parse_size(self.max_resolution)

    @property
    def max_width(self) -> int:
        """Width part of `max_resolution`."""
        return self.resolution[0]

    @property
    def max_height(self) -> int:
        """Height part of `max_resolution`."""
        return self.resolution[1]

    @property
    def max_pixels(self) -> int:
        """The pixel count `max_resolution` stands for (render refuses sizes above it)."""
        width, height = self.resolution
        return width * height

    @property
    def quality_rank(self) -> int:
        """0 for fast … 3 for ultra."""
        return QUALITY_ORDER.index(self.quality)

    def serves(self, purpose: str) -> bool:
        """Whether `purpose` is one of its use cases (loosely spelled)."""
        wanted = normalize_purpose(purpose)
        return any(normalize_purpose(case) == wanted for case in self.use_cases)


def normalize_purpose(text: str) -> str:
    """Lower-case words joined by '_' without a plural 's': 'Hero images' → 'hero_image'."""
    words = re.findall(r"[a-z0-9]+", text.casefold())
    joined = "_".join(words)
    return joined[:-1] if joined.endswith("s") and len(joined) > 3 else joined
