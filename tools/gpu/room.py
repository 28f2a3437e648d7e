"""A worker's GPU bookkeeping: ComfyUI holdings per server, Ollama's models on shared GPUs, claimable VRAM, hot-swap.

Which ComfyUI shares its GPU with Ollama (ATELIER_OLLAMA_GPU_PEERS): by default those on OLLAMA_URL's host
(localhost, 127.0.0.1 and ::1 are one host); `none`; or a list of ComfyUI URLs (say so on a machine with
several GPUs, or when Ollama and ComfyUI reach each other by different names).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from urllib.parse import urlsplit

from atelier.tools.comfyui.models import SystemStats
from atelier.tools.gpu.holdings import ComfyHoldings
from atelier.tools.gpu.hotswap import ComfyMemory, HotswapRecord, make_room, roomiest
from atelier.tools.gpu.ollama_models import LoadedModel, OllamaAdminError, OllamaModels
from atelier.tools.gpu.plan import GpuSnapshot, HotswapPolicy, claimable_gb
from atelier.tools.settings import Settings

__all__ = ["GpuRoom", "host_key"]

log = logging.getLogger(__name__)

_LOOPBACK = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}
# After Ollama failed to answer, claims stop asking it for this long.
_OLLAMA_RETRY_SECONDS = 10.0


def host_key(url: str) -> str:
    """The machine a URL points at, with every loopback spelling as one."""
    host = (urlsplit(url).hostname or "").lower()
    return "loopback" if host in _LOOPBACK or host.startswith("127.") else host


class GpuRoom:
    """What one worker knows about its GPUs, and hot-swap before a job; see the module docstring."""

    def __init__(self, settings: Settings, *, ollama: OllamaModels | None = None, cache_seconds: float = 2.0,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.enabled = settings.hotswap
        self.policy = HotswapPolicy.from_settings(settings)
        self.holdings = ComfyHoldings()
        self.cache_seconds = cache_seconds
        self.clock = clock
        peers = settings.ollama_gpu_peers
        self._ollama_host = host_key(settings.ollama_url)
        self._peers: set[str] | None = None if peers == "auto" else set() if peers == "none" else {
            url.rstrip("/") for url in peers.split(",")}
        if ollama is None and self.enabled and self._peers != set():
            ollama = OllamaModels(settings.ollama_url, timeout=min(settings.http_timeout_seconds, 5.0))
        self.ollama = ollama
        self._locks: dict[str, asyncio.Lock] = {}
        self._seen: tuple[float, tuple[LoadedModel, ...]] | None = None
        self._ollama_down = False

    async def aclose(self) -> None:
        """Close the Ollama client."""
        if self.ollama is not None:
            await self.ollama.aclose()

    def shares_gpu(self, server: str) -> bool:
        """Whether Ollama's models live on this ComfyUI's GPU."""
        if self.ollama is None:
            return False
        if self._peers is not None:
            return server.rstrip("/") in self._peers
        return host_key(server) == self._ollama_host

    # --- holdings ------------------------------------------------------------------------------------------

    def loaded(self, server: str) -> tuple[str, ...]:
        """The models the server most likely has loaded (the last job's), for claim affinity."""
        return tuple(sorted(self.holdings.get(server).last))

    def ran(self, server: str, models: Iterable[str]) -> None:
        """A job with these models was queued or started on the server."""
        self.holdings.ran(server, models)

    def forget(self, server: str) -> None:
        """The server was unreachable or reconnected: what it holds is unknown again."""
        self.holdings.forget(server)

    # --- Ollama --------------------------------------------------------------------------------------------

    async def _ollama_models(self) -> tuple[LoadedModel, ...]:
        """Ollama's loaded models, cached briefly; none while it does not answer (logged once)."""
        now = time.monotonic()
        if self._seen is not None and now - self._seen[0] < self.cache_seconds:
            return self._seen[1]
        assert self.ollama is not None
        try:
            models = tuple(await self.ollama.loaded())
        except OllamaAdminError as exc:
            if not self._ollama_down:
                log.warning("hot-swap cannot see Ollama's models: %s", exc)
            self._ollama_down = True
            self._seen = (now - self.cache_seconds + _OLLAMA_RETRY_SECONDS, ())
            return ()
        if self._ollama_down:
            log.info("Ollama at %s answers again", self.ollama.base_url)
        self._ollama_down = False
        self._seen = (now, models)
        return models

    # --- claims and hot-swap -------------------------------------------------------------------------------

    async def claimable_gb(self, server: str, stats: SystemStats) -> float:
        """The largest job the server can take: free VRAM plus what hot-swap could reclaim (free VRAM when off)."""
        free, total = roomiest(stats)
        if not self.enabled:
            return stats.vram_free_gb
        models = await self._ollama_models() if self.shares_gpu(server) else ()
        snapshot = GpuSnapshot(free, total, self.holdings.get(server), models)
        return claimable_gb(snapshot, self.clock(), self.policy)

    async def make_room(self, comfy: ComfyMemory, server: str, need_gb: float, job_models: frozenset[str]
                        ) -> HotswapRecord | None:
        """Hot-swap before a job goes to `server` (None when hot-swap is off); one job per server at a time."""
        if not self.enabled:
            return None
        lock = self._locks.setdefault(server, asyncio.Lock())
        async with lock:
            record = await make_room(comfy, server, need_gb, job_models, holdings=self.holdings,
                                     ollama=self.ollama if self.shares_gpu(server) else None, policy=self.policy,
                                     clock=self.clock)
        if record.acted:
            self._seen = None  # Ollama's list changed
        return record
