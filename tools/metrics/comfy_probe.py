"""Is each ComfyUI up? A scrape-time probe of `/system_stats` on every COMFYUI_URLS server, with a short timeout.

The API (not the workers) probes, so that "ComfyUI down" is reported even when no worker runs, and from the same
place that serves the ledger-wide series. All servers are probed at once; a scrape waits at most one timeout.
The `server` label is the URL's scheme://host:port only: user info, path and query never reach a metric.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from atelier.tools.comfyui.probe import ComfyStatus, probe_all_blocking
from atelier.tools.metrics.labels import server_label

__all__ = ["ComfyProbeCollector"]


class ComfyProbeCollector(Collector):
    """`atelier_comfyui_up`, probe time and total VRAM per server, probed on each scrape."""

    def __init__(self, servers: Sequence[str], *, timeout_seconds: float = 2.0) -> None:
        self.servers = list(servers)
        self.timeout_seconds = timeout_seconds

    def probe_all(self) -> list[ComfyStatus]:
        """Probe every server in parallel, on a loop of its own (a scrape may come from any thread)."""
        return probe_all_blocking(self.servers, timeout=self.timeout_seconds)

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
            label = [server_label(probe.url)]
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
