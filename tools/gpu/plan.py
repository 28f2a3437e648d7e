"""Hot-swap decisions, free of I/O: is there room, should ComfyUI free its models, which Ollama models go.

Definitions (GiB throughout, as ComfyUI's `/system_stats` and the catalog's `vram_gb` are read):

- A job needs its catalog `vram_gb`; hot-swap aims at that plus `margin_gb` free.
- ComfyUI's reclaimable memory is what the GPU uses beyond Ollama's models (`total − free − Ollama`), counted
  only while ComfyUI may hold models (see holdings.py). `/free` gives it back; a job whose models are the
  only ones loaded reuses it without a `/free`.
- An Ollama model's idle time is read from `/api/ps`: every finished request sets `expires_at` to now +
  keep-alive, so `idle for = keep_alive − (expires_at − now)`. A model is
  - "pinned" when `expires_at` lies further ahead than the keep-alive (loaded with `keep_alive: -1` or a
    longer one on purpose): kept unless `unload_pinned`;
  - "recent" when used within `idle_seconds` (or answering now: a model being loaded reports now +
    keep-alive): kept;
  - "idle" otherwise: may be unloaded.
  A model answering a long request whose `expires_at` dates from its previous request looks idle; Ollama
  then unloads it only once that request ends, so nothing breaks — hot-swap just frees less in time.
- Idle models go largest first, only as many as needed; when one model alone covers what is still
  missing, the smallest such model goes instead (fewer gigabytes evicted for the same single unload).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from atelier.tools.gpu.holdings import Holdings
from atelier.tools.gpu.ollama_models import LoadedModel
from atelier.tools.settings import Settings

__all__ = [
    "GpuSnapshot",
    "HotswapPlan",
    "HotswapPolicy",
    "OllamaUse",
    "claimable_gb",
    "comfy_reclaimable_gb",
    "ollama_use",
    "pick_ollama",
    "plan_hotswap",
]

OllamaUse = Literal["idle", "recent", "pinned", "unknown"]

# Clocks and rounding: an expiry up to this much beyond the keep-alive still counts as "not pinned".
_SLACK_SECONDS = 5.0
# Less than this (GiB) is nothing worth a `/free`.
_EPSILON_GB = 0.05


@dataclass(frozen=True)
class HotswapPolicy:
    """The knobs of hot-swap (see the module docstring)."""

    margin_gb: float = 0.5
    keep_alive_seconds: float = 300.0
    idle_seconds: float = 60.0
    unload_pinned: bool = False
    settle_seconds: float = 3.0
    unload_wait_seconds: float = 5.0

    @classmethod
    def from_settings(cls, settings: Settings) -> HotswapPolicy:
        """The policy the settings describe."""
        return cls(margin_gb=settings.hotswap_margin_gb, keep_alive_seconds=settings.ollama_keep_alive_seconds,
                   idle_seconds=settings.hotswap_ollama_idle_seconds, unload_pinned=settings.hotswap_unload_pinned)


@dataclass(frozen=True)
class GpuSnapshot:
    """One look at a server's GPU: ComfyUI's free and total memory, its holdings, and Ollama's models on it.

    `ollama` is empty when Ollama does not share this GPU or could not be asked.
    """

    free_gb: float
    total_gb: float
    holdings: Holdings
    ollama: tuple[LoadedModel, ...] = ()

    @property
    def ollama_gb(self) -> float:
        """VRAM Ollama's models take on this GPU."""
        return sum(m.vram_gb for m in self.ollama)


@dataclass(frozen=True)
class HotswapPlan:
    """What to do for one job: free ComfyUI's models or not, which Ollama models to unload, and why."""

    free_comfyui: bool
    unload_ollama: tuple[LoadedModel, ...]
    expected_free_gb: float
    note: str

    @property
    def acts(self) -> bool:
        """Whether anything is to be unloaded."""
        return self.free_comfyui or bool(self.unload_ollama)


def ollama_use(model: LoadedModel, now: datetime, policy: HotswapPolicy) -> OllamaUse:
    """idle, recent, pinned, or unknown (no readable `expires_at`: kept)."""
    if model.expires_at is None:
        return "unknown"
    remaining = (model.expires_at - now).total_seconds()
    if remaining > policy.keep_alive_seconds + _SLACK_SECONDS:
        return "pinned"
    idle_for = policy.keep_alive_seconds - remaining
    return "idle" if idle_for >= policy.idle_seconds else "recent"


def _unloadable(models: Sequence[LoadedModel], now: datetime, policy: HotswapPolicy) -> list[list[LoadedModel]]:
    """Models hot-swap may unload, in the order it would: the idle ones, then (when allowed) the pinned ones."""
    uses = [(m, ollama_use(m, now, policy)) for m in models if m.size_vram > 0]
    tiers = [[m for m, use in uses if use == "idle"]]
    if policy.unload_pinned:
        tiers.append([m for m, use in uses if use == "pinned"])
    return tiers


def pick_ollama(short_gb: float, models: Sequence[LoadedModel], now: datetime, policy: HotswapPolicy
                ) -> tuple[LoadedModel, ...]:
    """The Ollama models to unload to free `short_gb`: as few as possible (all unloadable ones if not enough)."""
    picks: list[LoadedModel] = []
    remaining = short_gb
    for tier in _unloadable(models, now, policy):
        pool = sorted(tier, key=lambda m: (-m.size_vram, m.name))
        while remaining > 0 and pool:
            enough = [m for m in pool if m.vram_gb >= remaining]
            choice = min(enough, key=lambda m: (m.size_vram, m.name)) if enough else pool[0]
            picks.append(choice)
            pool.remove(choice)
            remaining -= choice.vram_gb
    return tuple(picks)


def comfy_reclaimable_gb(snapshot: GpuSnapshot) -> float:
    """Memory ComfyUI would give back (or a job of its loaded models reuses): 0 when it holds nothing."""
    if not snapshot.holdings.may_hold_anything:
        return 0.0
    return max(0.0, snapshot.total_gb - snapshot.free_gb - snapshot.ollama_gb)


def claimable_gb(snapshot: GpuSnapshot, now: datetime, policy: HotswapPolicy) -> float:
    """The largest job this server can be made to fit: free + ComfyUI's reclaimable + unloadable Ollama models."""
    ollama = sum(m.vram_gb for tier in _unloadable(snapshot.ollama, now, policy) for m in tier)
    return snapshot.free_gb + comfy_reclaimable_gb(snapshot) + ollama


def plan_hotswap(snapshot: GpuSnapshot, need_gb: float, job_models: frozenset[str], now: datetime,
                 policy: HotswapPolicy) -> HotswapPlan:
    """Decide the fewest unloads that let a job needing `need_gb` (plus the margin) fit; see the module docstring."""
    target = need_gb + policy.margin_gb
    free = snapshot.free_gb
    if need_gb <= 0 or free >= target:
        return HotswapPlan(False, (), free, "enough free VRAM")
    if need_gb > snapshot.total_gb:
        return HotswapPlan(False, (), free, f"needs {need_gb:g} GB, more than the GPU's {snapshot.total_gb:.1f} GB")
    reclaim = comfy_reclaimable_gb(snapshot)
    free_comfy = reclaim > _EPSILON_GB and not snapshot.holdings.only(job_models)
    expected = free + reclaim
    short = target - expected
    unload = pick_ollama(short, snapshot.ollama, now, policy) if short > 0 else ()
    expected += sum(m.vram_gb for m in unload)
    if expected < target:
        note = f"still {target - expected:.1f} GB short after unloading what may be unloaded"
    elif free_comfy or unload:
        note = "unloading to make room"
    else:
        note = "the job's models are already loaded"
    return HotswapPlan(free_comfy, unload, expected, note)
