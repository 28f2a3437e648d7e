"""Is each ComfyUI up? A scrape-time probe of `/system_stats` on every COMFYUI_URLS server, with a short timeout.

The API (not the workers) probes, so that "ComfyUI down" is reported even when no worker runs, and from the same
place that serves the ledger-wide series. All servers are probed at once; a scrape waits at most one timeout.
The `server` label is the URL's scheme://host:port only: user info, path and query never reach a metric.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from atelier.tools.comfyui.models import SystemStats
from atelier.tools.worker.metrics import server_label

__all__ = ["ComfyProbe", "ComfyProbeCollector", "probe_comfyui"]


@dataclass(frozen=True)
class ComfyProbe:
    """What one probe of one server found (`server` is the URL as configured: never a label as it is)."""

    server: str
    up: bool
    seconds: float
    vram_total_bytes: int | None = None


def probe_comfyui(server: str, timeout: float) -> ComfyProbe:
    """GET /system_stats once; up when it answers 200 with a JSON object."""
    started = time.monotonic()
    try:
        response = httpx.get(f"{server}/system_stats", timeout=timeout)
        body = response.json() if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        body = None
    seconds = time.monotonic() - started
    if not isinstance(body, dict):
        return ComfyProbe(server, False, seconds)
    try:
        stats = SystemStats.from_response(body)
    except ValueError:  # pydantic's ValidationError: an answer that is not ComfyUI's
        return ComfyProbe(server, False, seconds)
    total = max((d.vram_total for d in stats.devices), default=0)
    return ComfyProbe(server, True, seconds, total or None)


class ComfyProbeCollector(Collector):
    """`atelier_comfyui_up`, probe time and total VRAM per server, probed on each scrape."""

    def __init__(self, servers: Sequence[str], *, timeout_seconds: float = 2.0) -> None:
        self.servers = list(servers)
        self.timeout_seconds = timeout_seconds

    def probe_all(self) -> list[ComfyProbe]:
        """Probe every server in parallel."""
        if not self.servers:
            return []
        with ThreadPoolExecutor(max_workers=min(8, len(self.servers)), thread_name_prefix="comfy-probe") as pool:
            return list(pool.map(lambda url: probe_comfyui(url, self.timeout_seconds), self.servers))

    def collect(self) -> Iterator[Metric]:
        """Yield the probe results (a probe never raises: an unreachable server is up 0)."""
        probes = self.probe_all()
        up = GaugeMetricFamily("atelier_comfyui_up", "1 when the ComfyUI server answered /system_stats.",
                               labels=["server"])
        took = GaugeMetricFamily("atelier_comfyui_probe_seconds", "How long the /system_stats probe took.",
                                 labels=["server"])
        total = GaugeMetricFamily("atelier_comfyui_vram_total_bytes", "VRAM of the server's largest device.",
                                  labels=["server"])
        seen: set[str] = set()
        for probe in probes:
            label = [server_label(probe.server)]
            if label[0] in seen:  # two URLs of one server (say, with and without credentials): one series
                continue
            seen.add(label[0])
            up.add_metric(label, 1 if probe.up else 0)
            took.add_metric(label, probe.seconds)
            if probe.vram_total_bytes is not None:
                total.add_metric(label, probe.vram_total_bytes)
        yield up
        yield took
        yield total
