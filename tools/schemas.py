"""Pydantic argument and result schemas shared by every front end (CLI, LangChain, MCP, CrewAI, AutoGen)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["MAX_PROMPT_CHARS", "GeneratedImage", "GenerationParams", "GenerationResult", "ImageRef", "check_storable",
           "parse_size"]

# Longer prompts are no prompts (CLIP reads 77 tokens a chunk); the cap keeps a row or a turn from being megabytes.
MAX_PROMPT_CHARS = 8000
_SIZE = re.compile(r"^\s*(\d+)\s*[xX×]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """Parse 'WxH' (e.g. '1024x768') into (width, height), with a message that shows the right form."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"size {text!r} is not of the form WIDTHxHEIGHT, e.g. 1024x768")
    width, height = int(match.group(1)), int(match.group(2))
    if width < 16 or height < 16 or width > 16384 or height > 16384:
        raise ValueError(f"size {text!r} is out of range: each side must be between 16 and 16384 pixels")
    return width, height


def check_storable(value: Any, where: str) -> None:
    """Reject text PostgreSQL cannot store, anywhere in `value`: NUL characters and lone surrogates (not UTF-8)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{where} contains a NUL character; remove it")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{where} is not valid UTF-8 text (a lone surrogate); send real characters") from None
    elif isinstance(value, dict):
        for key, item in value.items():
            check_storable(key, where)
            check_storable(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            check_storable(item, where)


class GenerationParams(BaseModel):
    """What a person may set for one generation; None means 'keep the workflow's own value'."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(..., min_length=1, max_length=MAX_PROMPT_CHARS, description="What to draw.")
    negative: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="What to avoid in the image.")
    seed: int | None = Field(None, ge=0, le=2**64 - 1, description="Noise seed; random when omitted.")
    steps: int | None = Field(None, ge=1, le=10000, description="Sampling steps.")
    cfg: float | None = Field(None, ge=0.0, le=100.0, description="Classifier-free guidance scale.")
    width: int | None = Field(None, ge=16, le=16384, description="Image width in pixels.")
    height: int | None = Field(None, ge=16, le=16384, description="Image height in pixels.")
    denoise: float | None = Field(None, ge=0.0, le=1.0, description="How much of an input image to repaint.")
    batch_size: int | None = Field(None, ge=1, le=64, description="Images per run.")
    input_image: str | None = Field(
        None, max_length=200,
        description="Input image for image-to-image / upscale: the name of an image in Atelier's inputs store "
                    "(upload it first: POST /inputs, or `atelier inputs add FILE`).",
    )

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        """Reject a prompt made only of whitespace."""
        if not value.strip():
            raise ValueError("prompt is empty: say what the image should show")
        return value


class ImageRef(BaseModel):
    """Where ComfyUI keeps one output image (the `/view` query)."""

    filename: str
    subfolder: str = ""
    type: str = "output"


class GeneratedImage(BaseModel):
    """One image Atelier saved locally, with where it came from."""

    path: Path
    ref: ImageRef
    node_id: str


class GenerationResult(BaseModel):
    """The outcome of one generation: the prompt id, the workflow used and the saved images."""

    prompt_id: str
    workflow: str
    server: str
    seed: int | None = None
    images: list[GeneratedImage] = Field(default_factory=list)
    seconds: float = 0.0
