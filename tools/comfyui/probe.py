"""Is a ComfyUI up, and how much VRAM is free: one probe of `/system_stats`, asked by every caller the same way.

`probe(url)` asks one server and never raises: it answers a `ComfyStatus` (up or not, how long it took, the
stats, the error). Around it: `probe_all` (every server at once), `most_free_vram` (the agents' router),
`first_up` (where a generation runs), `probe_stats` (a client already open, e.g. the worker's), and
`probe_all_blocking` for synchronous callers such as the Prometheus collector, from any thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import httpx

from atelier.tools.comfyui.models import SystemStats
from atelier.tools.comfyui.rest import ComfyREST
from atelier.tools.errors import ComfyUIError, ComfyUnreachableError

__all__ = ["ComfyStatus", "StatsSource", "first_up", "most_free_vram", "probe", "probe_all", "probe_all_blocking",
           "probe_stats"]


class StatsSource(Protocol):
    """Anything that can ask a ComfyUI for `/system_stats` (ComfyREST, ComfyClient)."""

    async def system_stats(self) -> SystemStats:
        """GET /system_stats."""


@dataclass(frozen=True)
class ComfyStatus:
    """What one probe of one server found (`url` as given: a metric label or a message must mask it itself)."""

    url: str
    up: bool
    seconds: float
    stats: SystemStats | None = None
    error: ComfyUIError | None = None

    @property
    def vram_free_gb(self) -> float | None:
        """Free VRAM of the roomiest device in GiB; None when the server is down."""
        return self.stats.vram_free_gb if self.stats is not None else None

    @property
    def vram_total_bytes(self) -> int | None:
        """VRAM of the largest device in bytes; None when down or no device reports any."""
        if self.stats is None:
            return None
        return max((device.vram_total for device in self.stats.devices), default=0) or None

    @property
    def reason(self) -> str:
        """Why the server is not up, briefly ("" when it is): the transport's reason, else the error's message."""
        if self.error is None:
            return ""
        return self.error.reason if isinstance(self.error, ComfyUnreachableError) else str(self.error)


async def probe_stats(source: StatsSource, url: str) -> ComfyStatus:
    """Ask an open client for `/system_stats` once: up with the stats, or down with the error (never raises it)."""
    started = time.monotonic()
    try:
        stats = await source.system_stats()
    except ComfyUIError as exc:  # unreachable, an HTTP error, or an answer that is not ComfyUI's
        return ComfyStatus(url, False, time.monotonic() - started, error=exc)
    return ComfyStatus(url, True, time.monotonic() - started, stats)


async def probe(url: str, *, timeout: float = 5.0, transport: httpx.AsyncBaseTransport | None = None) -> ComfyStatus:
    """Probe one ComfyUI on a fresh connection (`timeout` per connect and read)."""
    try:
        rest = ComfyREST(url, timeout=timeout, transport=transport)
    except httpx.InvalidURL as exc:
        return ComfyStatus(url, False, 0.0, error=ComfyUnreachableError(url, f"not a valid URL: {exc}"))
    try:
        return await probe_stats(rest, url)
    finally:
        await rest.aclose()


async def probe_all(urls: Sequence[str], *, timeout: float = 5.0) -> list[ComfyStatus]:
    """Probe every server at once, in the order given (waits about one timeout at most)."""
    return list(await asyncio.gather(*(probe(url, timeout=timeout) for url in urls)))


async def most_free_vram(urls: Sequence[str], *, timeout: float = 3.0) -> float | None:
    """The most free VRAM any server reports (GiB); None when none answers."""
    free = [status.vram_free_gb for status in await probe_all(urls, timeout=timeout)]
    return max((gb for gb in free if gb is not None), default=None)


async def first_up(urls: Sequence[str], *, timeout: float = 5.0) -> str:
    """The first server in `urls` that answers (asked in order); ComfyUnreachableError naming all when none does."""
    reasons = []
    for url in urls:
        status = await probe(url, timeout=timeout)
        if status.up:
            return url
        reasons.append(status.reason)
    raise ComfyUnreachableError(", ".join(urls), "; ".join(reasons) or "no server configured")


def probe_all_blocking(urls: Sequence[str], *, timeout: float = 5.0) -> list[ComfyStatus]:
    """`probe_all` for synchronous code on any thread, even one running an event loop (it runs on its own)."""
    if not urls:
        return []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="comfy-probe") as pool:
        return pool.submit(asyncio.run, probe_all(urls, timeout=timeout)).result()
