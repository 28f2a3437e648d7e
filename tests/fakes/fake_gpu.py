"""A simulated GPU that a fake ComfyUI and a fake Ollama can share: free VRAM is total − what both hold.

Each fake registers what it holds (`attach`: a function returning {model: bytes} now), and reports its loads
and unloads (`note`), so a test reads one timeline across both fakes (`events`). Nothing here is clever:
sizes come from the fakes (a ComfyUI model-size table, Ollama's `size` of each model).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.fakes.comfyui_catalog import gpu_device

GIB = 2**30


@dataclass(frozen=True)
class GpuEvent:
    """One load, unload or prompt run on the GPU: who, what, when (one clock for every fake), free bytes after."""

    holder: str
    action: str
    model: str
    at: float
    free: int


class FakeGpu:
    """`FakeGpu(total=12 * GIB)`: pass it to FakeComfyUI(gpu=…) and FakeOllama(gpu=…) to make them share it."""

    def __init__(self, total: int, *, reserved: int = 0, name: str = "NVIDIA GeForce RTX 4070") -> None:
        self.total = total
        self.reserved = reserved  # the CUDA context, a desktop: never freed
        self.name = name
        self._holders: dict[str, Callable[[], Mapping[str, int]]] = {}
        self._events: list[GpuEvent] = []
        self._lock = threading.Lock()

    def attach(self, holder: str, holdings: Callable[[], Mapping[str, int]]) -> None:
        """Count what `holdings()` returns (model → bytes) as `holder`'s memory from now on."""
        with self._lock:
            self._holders[holder] = holdings

    def note(self, holder: str, action: str, model: str) -> None:
        """Record a load, an unload or a prompt starting (what the fakes call as their memory changes)."""
        free = self.free
        with self._lock:
            self._events.append(GpuEvent(holder, action, model, time.monotonic(), free))

    def held(self) -> dict[str, dict[str, int]]:
        """What each holder holds now."""
        with self._lock:
            holders = dict(self._holders)
        return {holder: dict(holdings()) for holder, holdings in holders.items()}

    @property
    def used(self) -> int:
        """Bytes in use: the reserve plus every holder's models."""
        return self.reserved + sum(sum(models.values()) for models in self.held().values())

    @property
    def free(self) -> int:
        """Bytes free (never below 0)."""
        return max(0, self.total - self.used)

    @property
    def events(self) -> list[GpuEvent]:
        """Every load and unload so far, in order."""
        with self._lock:
            return list(self._events)

    def device(self) -> dict[str, Any]:
        """A CUDA /system_stats device entry reporting this GPU's total and free memory."""
        return gpu_device(vram_total=self.total, vram_free=self.free, name=self.name)
