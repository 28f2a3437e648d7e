"""Pydantic views of ComfyUI's info responses: /system_stats, /queue and upload results."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = ["Device", "QueueState", "SystemStats", "UploadedImage"]


class Device(BaseModel):
    """One compute device ComfyUI reports, with its memory in bytes."""

    name: str
    type: str
    index: int | None = None
    vram_total: int = 0
    vram_free: int = 0

    @property
    def vram_free_gb(self) -> float:
        """Free VRAM in GiB."""
        return self.vram_free / 2**30

    @property
    def vram_total_gb(self) -> float:
        """Total VRAM in GiB."""
        return self.vram_total / 2**30


class SystemStats(BaseModel):
    """What `/system_stats` says about a ComfyUI server."""

    comfyui_version: str = "unknown"
    python_version: str = ""
    pytorch_version: str = ""
    devices: list[Device] = Field(default_factory=list)

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> SystemStats:
        """Parse the raw JSON of `/system_stats`."""
        system = body.get("system") or {}
        return cls(
            comfyui_version=str(system.get("comfyui_version", "unknown")),
            python_version=str(system.get("python_version", "")),
            pytorch_version=str(system.get("pytorch_version", "")),
            devices=[Device.model_validate(d) for d in body.get("devices") or []],
        )

    @property
    def vram_free_gb(self) -> float:
        """Free memory of the roomiest device, in GiB (0 when none is reported)."""
        return max((d.vram_free_gb for d in self.devices), default=0.0)


class QueueState(BaseModel):
    """Prompt ids ComfyUI is running and holding, in queue order."""

    running: list[str] = Field(default_factory=list)
    pending: list[str] = Field(default_factory=list)

    @classmethod
    def from_response(cls, body: dict[str, Any]) -> QueueState:
        """Parse `/queue` (items are `[number, prompt_id, prompt, extra_data, outputs]`)."""

        def ids(items: list[Any]) -> list[str]:
            ordered = sorted((i for i in items if isinstance(i, list) and len(i) > 1), key=lambda i: i[0])
            return [str(i[1]) for i in ordered]

        return cls(running=ids(body.get("queue_running") or []), pending=ids(body.get("queue_pending") or []))

    def __contains__(self, prompt_id: object) -> bool:
        """True when the prompt is running or waiting."""
        return prompt_id in self.running or prompt_id in self.pending


class UploadedImage(BaseModel):
    """Where `/upload/image` stored a file: pass `name` to a LoadImage node."""

    name: str
    subfolder: str = ""
    type: str = "input"

    @property
    def load_image_value(self) -> str:
        """The value a LoadImage node's `image` input takes for this file."""
        return f"{self.subfolder}/{self.name}" if self.subfolder else self.name
