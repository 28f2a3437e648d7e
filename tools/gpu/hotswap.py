"""Make room on one ComfyUI's GPU before a job: `POST /free`, then idle Ollama models, re-reading free VRAM.

The decisions are plan.py's; this module performs them and records what happened. Ollama being down or
answering oddly never fails the job: hot-swap frees less and says why in the record's note.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from atelier.tools.comfyui.models import QueueState, SystemStats
from atelier.tools.gpu.holdings import ComfyHoldings
from atelier.tools.gpu.ollama_models import LoadedModel, OllamaAdminError, OllamaModels
from atelier.tools.gpu.plan import GpuSnapshot, HotswapPolicy, plan_hotswap

__all__ = ["ComfyMemory", "HotswapRecord", "Unload", "make_room", "roomiest"]

_POLL_SECONDS = 0.1
_STABLE_GB = 0.05


class ComfyMemory(Protocol):
    """The ComfyUI calls hot-swap needs (tools.comfyui.rest.ComfyREST has them)."""

    async def system_stats(self) -> SystemStats:
        """GET /system_stats."""

    async def queue(self) -> QueueState:
        """GET /queue."""

    async def free(self, *, unload_models: bool = True, free_memory: bool = True) -> None:
        """POST /free."""


@dataclass(frozen=True)
class Unload:
    """One unload: ComfyUI's models (one `POST /free`) or one Ollama model; `done` once it is gone."""

    target: Literal["comfyui", "ollama"]
    name: str
    vram_gb: float | None
    done: bool


@dataclass(frozen=True)
class HotswapRecord:
    """What hot-swap found and did for one job, for logs, metrics and the job's `vram` event."""

    server: str
    need_gb: float
    target_gb: float
    free_before_gb: float
    free_after_gb: float
    unloads: tuple[Unload, ...] = ()
    note: str = ""
    short_gb: float = 0.0

    @property
    def acted(self) -> bool:
        """Whether anything was unloaded."""
        return bool(self.unloads)

    @property
    def short(self) -> bool:
        """Whether the job is still expected to lack VRAM (nothing more could be unloaded)."""
        return self.short_gb > 0

    @property
    def freed_gb(self) -> float:
        """How much free VRAM grew (0 when it did not)."""
        return max(0.0, self.free_after_gb - self.free_before_gb)

    def as_event(self) -> dict[str, Any]:
        """The job event's data."""
        return {
            "server": self.server, "need_gb": self.need_gb, "free_before_gb": round(self.free_before_gb, 2),
            "free_after_gb": round(self.free_after_gb, 2), "freed_gb": round(self.freed_gb, 2),
            "unloaded": [{"target": u.target, "name": u.name, "vram_gb": u.vram_gb, "done": u.done}
                         for u in self.unloads],
            "short_gb": round(self.short_gb, 2), "note": self.note,
        }


def roomiest(stats: SystemStats) -> tuple[float, float]:
    """(free, total) GiB of the device with the most free memory (what claims use)."""
    if not stats.devices:
        return 0.0, 0.0
    device = max(stats.devices, key=lambda d: d.vram_free)
    return device.vram_free_gb, device.vram_total_gb


async def _free_gb(comfy: ComfyMemory) -> tuple[float, float]:
    """(free, total) GiB now."""
    return roomiest(await comfy.system_stats())


async def _settle(comfy: ComfyMemory, before: float, goal: float, seconds: float) -> tuple[float, bool]:
    """Re-read free VRAM until it reaches `goal`, or rose and holds still, or `seconds` pass: (free, settled).

    ComfyUI applies `/free` between prompts: while it runs one, memory cannot be seen coming back yet, so
    this returns at once with settled=False.
    """
    free, _ = await _free_gb(comfy)
    if free >= goal:
        return free, True
    if (await comfy.queue()).running:
        return free, False
    deadline = time.monotonic() + seconds
    previous: float | None = None
    while free < goal and time.monotonic() < deadline:
        if previous is not None and free > before + _STABLE_GB and abs(free - previous) < _STABLE_GB:
            break
        await asyncio.sleep(_POLL_SECONDS)
        previous, (free, _) = free, await _free_gb(comfy)
    return free, True


async def _ollama_models(ollama: OllamaModels | None, notes: list[str]) -> tuple[LoadedModel, ...]:
    """Ollama's loaded models; none (and a note) when it cannot be asked."""
    if ollama is None:
        return ()
    try:
        return tuple(await ollama.loaded())
    except OllamaAdminError as exc:
        notes.append(str(exc))
        return ()


async def _unload_ollama(ollama: OllamaModels, models: tuple[LoadedModel, ...], wait_seconds: float,
                         notes: list[str]) -> list[Unload]:
    """Unload these Ollama models; each Unload says whether /api/ps stopped listing it in time."""
    try:
        gone = set(await ollama.unload([m.name for m in models], wait_seconds=wait_seconds))
    except OllamaAdminError as exc:
        notes.append(str(exc))
        gone = set()
    if len(gone) < len(models):
        notes.append("an Ollama model still answering a request unloads when it is done")
    return [Unload("ollama", m.name, round(m.vram_gb, 2), m.name in gone) for m in models]


async def make_room(
    comfy: ComfyMemory,
    server: str,
    need_gb: float,
    job_models: frozenset[str],
    *,
    holdings: ComfyHoldings,
    ollama: OllamaModels | None,
    policy: HotswapPolicy,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> HotswapRecord:
    """Free VRAM on `server` until a job needing `need_gb` fits (see plan.py); return what was done.

    `ollama` is the Ollama sharing this GPU (None: none does). ComfyUI errors propagate (the job's own
    submission would meet them too); Ollama errors become notes.
    """
    free, total = await _free_gb(comfy)
    target = need_gb + policy.margin_gb
    if need_gb <= 0 or free >= target:
        return HotswapRecord(server, need_gb, target, free, free, note="enough free VRAM")
    notes: list[str] = []
    models = await _ollama_models(ollama, notes)
    plan = plan_hotswap(GpuSnapshot(free, total, holdings.get(server), models), need_gb, job_models, clock(), policy)
    unloads: list[Unload] = []
    now_free = free
    if plan.free_comfyui:
        await comfy.free(unload_models=True, free_memory=True)
        holdings.freed(server)
        unloads.append(Unload("comfyui", "all models", None, True))
        now_free, settled = await _settle(comfy, free, target, policy.settle_seconds)
        if settled:  # plan the rest on what ComfyUI really gave back
            snapshot = GpuSnapshot(now_free, total, holdings.get(server), models)
            plan = plan_hotswap(snapshot, need_gb, job_models, clock(), policy)
    expected = plan.expected_free_gb
    if plan.unload_ollama and ollama is not None:
        done = await _unload_ollama(ollama, plan.unload_ollama, policy.unload_wait_seconds, notes)
        unloads += done
        expected -= sum(u.vram_gb or 0.0 for u in done if not u.done)
        now_free, _ = await _settle(comfy, now_free, target, policy.settle_seconds)
    short = max(0.0, target - max(now_free, expected))
    return HotswapRecord(server, need_gb, target, free, now_free, tuple(unloads), "; ".join([plan.note, *notes]),
                         short_gb=short)
